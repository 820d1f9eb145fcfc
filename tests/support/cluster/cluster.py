"""A real three-node Kubernetes cluster in the lab: the :class:`LabCluster`.

    with LabCluster.launch(["n1", "n2", "n3"], links=...) as cluster:
        cluster.apply_kustomize("deploy/k8s")       # the shipped manifests, our images
        cluster.kubectl("-n", "monlat", "get", "pods")
        cluster.http_get("n1", "10.96.x.y", 9090, "/metrics")   # as a pod on n1 would

Layout. The nodes are lab namespaces (:class:`tests.support.lab.Lab`): their ``lab0``
addresses (198.18.0.x) are the Nodes' InternalIPs and every packet between nodes, pod traffic
included (each node's pod CIDR 10.244.<i+1>.0/24 is routed through the lab switch), crosses the
emulated links. A management bridge on the host (10.201.0.1) joins every node through a veth
``mgmt0``: the API server listens there, and the host routes each node address and pod CIDR
back over it, so the API server reaches kubelets and pods reach the API server (the
``kubernetes`` Service's endpoint) without delay emulation. etcd, kube-apiserver,
kube-controller-manager and kube-scheduler run on the host; each node runs containerd (runc from
Debian, CNI bridge/host-local/portmap), a kubelet, kube-proxy (iptables) and kube-router's
NetworkPolicy firewall (iptables and ipset; no routing, no proxy), so policies are enforced as an
enforcing CNI does. CoreDNS runs as a Deployment behind ``kube-dns`` (10.96.0.10).

Credentials: every component uses the control plane's admin token; the kubelets accept the API
server anonymously. This is a lab; what is tested is monlat's side of the install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.agent_process import SocketFactory, http_get
from tests.support.control_plane import ControlPlane, kubectl_binary
from tests.support.lab import Lab, Link
from tests.support.lab import netns as ns
from tests.support.lab.fixtures import skip_or_fail

from .images import LabImages, build_lab_images, save
from .node import CLUSTER_DNS_IP, LabNode, NodeCgroup, remove_tree, spawn, stop, tail

REPO = Path(__file__).resolve().parents[3]
MGMT_BRIDGE = "mltc0"
MGMT_HOST = "10.201.0.1"
KUBERNETES_SERVICE_IP = "10.96.0.1"
ROOT_PREFIX = "/tmp/mltc-"  # short: containerd's socket paths must fit in 108 bytes
CACHE = Path(os.environ.get("MONLAT_CACHE") or Path.home() / ".cache" / "monlat")


# What a kubelet sets on the host when it starts (protectKernelDefaults false, the default):
# put back when the cluster is closed, since the "nodes" share the test machine's kernel.
KUBELET_HOST_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


def read_host_sysctls() -> dict[str, str]:
    values = {}
    for key in KUBELET_HOST_SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = Path("/proc/sys", key).read_text().strip()
    return values


def mgmt_address(index: int) -> str:
    return f"10.201.0.{10 + index}"


def pod_cidr(index: int) -> str:
    return f"10.244.{index + 1}.0/24"


# --- binaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterBinaries:
    k8s: Path  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
    runtime: Path  # containerd, shim, ctr, cni/, kube-router, coredns, helm


def _build(script: str, *args: str) -> Path:
    try:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / script), *args],
            capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        skip_or_fail(f"scripts/{script} took longer than an hour")
        raise
    if proc.returncode != 0:
        skip_or_fail(f"scripts/{script} failed: {proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def find_cluster_binaries() -> ClusterBinaries:
    """Build (or find in the cache) everything the cluster runs; skip-or-fail otherwise."""
    if os.geteuid() != 0:
        skip_or_fail("a lab cluster needs root (namespaces, cgroups, mounts)")
    for tool in ("nsenter", "setpriv", "runc", "iptables", "ipset", "gcc", "podman"):
        if shutil.which(tool) is None:
            skip_or_fail(f"'{tool}' is not installed (scripts/test-deps.sh installs it)")
    return ClusterBinaries(
        k8s=_build("build-control-plane.sh", "--cluster"),
        runtime=_build("build-cluster-runtime.sh"),
    )


# --- leftovers ------------------------------------------------------------------------------


def cleanup_stale() -> None:
    """Remove what a cluster of a test process that no longer runs left behind."""
    for root in Path("/tmp").glob("mltc-*"):
        try:
            pid = int(root.name.removeprefix("mltc-"))
        except ValueError:
            continue
        if pid == os.getpid() or ns.pid_alive(pid):
            continue
        for state in root.glob("nodes/*/cgroup"):
            NodeCgroup(state.read_text().strip()).destroy()
        remove_tree(root)
    if not any(
        ns.pid_alive(int(r.name[5:])) for r in Path("/tmp").glob("mltc-*") if r.name[5:].isdigit()
    ):
        subprocess.run(["ip", "link", "del", MGMT_BRIDGE], capture_output=True, check=False)


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class LabCluster:
    root: Path
    binaries: ClusterBinaries
    images: LabImages
    lab: Lab
    control_plane: ControlPlane
    nodes: dict[str, LabNode] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    host_sysctls: dict[str, str] = field(default_factory=read_host_sysctls)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def launch(
        cls,
        names: Sequence[str],
        links: Mapping[tuple[str, str], Link] | None = None,
        default: Link | None = None,
    ) -> Iterator[LabCluster]:
        binaries = find_cluster_binaries()
        images = build_lab_images(binaries.runtime, CACHE / "lab-cluster" / "images")
        cleanup_stale()
        root = Path(f"{ROOT_PREFIX}{os.getpid()}")
        root.mkdir(exist_ok=True)
        lab = Lab.create(
            names,
            links=links,
            default=default or Link(delay_ms=0.5),
            prefixes={name: [pod_cidr(i)] for i, name in enumerate(names)},
        )
        control_plane = ControlPlane(
            root=root / "control-plane",
            bindir=binaries.k8s,
            kubectl_path=kubectl_binary(binaries.k8s),
            bind_address=MGMT_HOST,
            extra_ips=(KUBERNETES_SERVICE_IP,),
            extra_apiserver_args=(
                # The bridge address is a real endpoint for the kubernetes Service here.
                "--endpoint-reconciler-type=lease",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ),
        )
        cluster = cls(root, binaries, images, lab, control_plane)
        try:
            cluster._boot()
            yield cluster
        finally:
            cluster.close()

    def _boot(self) -> None:
        self._management_network()
        self.control_plane.boot()
        self._start_controllers()
        for name in self.lab.nodes:
            self.add_node(name, wait=False)
        self.wait_nodes_ready(timeout=180)
        for node in self.nodes.values():
            node.start_policy_firewall()  # it finds its Node by name: once the kubelet made it
        self._install_dns()

    def add_node(self, name: str, *, wait: bool = True) -> LabNode:
        """Start a fresh node in lab namespace ``name``: containerd, images, kubelet, kube-proxy.

        The kubelet registers the Node itself; with ``wait``, until it is Ready.
        """
        index = self.lab.nodes.index(name)
        node = LabNode(
            name=name,
            netns=self.lab.netns(name),
            address=self.lab.address(name),
            pod_cidr=pod_cidr(index),
            root=self.root / "nodes" / name,
            cgroup=NodeCgroup(f"{self.root.name}-{name}"),
            k8s_bin=self.binaries.k8s,
            runtime_bin=self.binaries.runtime,
            kubeconfig=self.control_plane.kubeconfig,
        )
        node.root.mkdir(parents=True, exist_ok=True)
        (node.root / "cgroup").write_text(node.cgroup.name)
        node.cgroup.create()
        node.write_config(self.images.pause)
        self.nodes[name] = node
        node.start_containerd()
        node.import_images(self.images.archives)
        node.start_kubelet()
        node.start_kube_proxy()
        if wait:
            self.wait_nodes_ready(timeout=180, names=[name])
            node.start_policy_firewall()  # it finds its Node by name: once the kubelet made it
        return node

    def power_off(self, name: str) -> None:
        """The machine goes away: every process of the node (its pods too) is killed and its
        files removed. The Node object stays until someone deletes it, as in a real cluster."""
        self.nodes.pop(name).destroy()

    def import_image(self, ref: str) -> None:
        """Save ``ref`` (a podman image) and import it into every node's containerd."""
        archive = save(ref, self.root / "images")
        for node in self.nodes.values():
            node.import_images([archive])

    def _management_network(self) -> None:
        host_cmds = [
            f"link add {MGMT_BRIDGE} type bridge",
            f"addr add {MGMT_HOST}/24 dev {MGMT_BRIDGE}",
            f"link set {MGMT_BRIDGE} up",
        ]
        ns.ip("-batch", "-", input="\n".join(host_cmds) + "\n")
        for index, name in enumerate(self.lab.nodes):
            netns = self.lab.netns(name)
            host_end = f"mltc{index}h"
            ns.ip("link", "add", host_end, "type", "veth", "peer", "name", "mgmt0", "netns", netns)
            ns.ip("link", "set", host_end, "master", MGMT_BRIDGE, "up")
            ns.ip_batch(
                netns,
                [
                    f"addr add {mgmt_address(index)}/24 dev mgmt0",
                    "link set mgmt0 up",
                    f"route add default via {MGMT_HOST} dev mgmt0",
                ],
            )
            ns.ip("route", "add", f"{self.lab.address(name)}/32", "via", mgmt_address(index))
            ns.ip("route", "add", pod_cidr(index), "via", mgmt_address(index))
            ns.write_sysctl(netns, "net.ipv4.ip_forward", "1")
            with contextlib.suppress(OSError):  # per namespace since Linux 5.3, when loaded
                ns.write_sysctl(netns, "net.bridge.bridge-nf-call-iptables", "1")

    def _start_controllers(self) -> None:
        kubeconfig = str(self.control_plane.kubeconfig)
        pki = self.control_plane.pki
        self._host_daemon(
            "kube-controller-manager",
            [
                str(self.binaries.k8s / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--node-monitor-grace-period=20s",
                "--v=1",
            ],
        )
        self._host_daemon(
            "kube-scheduler",
            [
                str(self.binaries.k8s / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def _host_daemon(self, name: str, argv: list[str]) -> None:
        prefix = ["setpriv", "--pdeathsig", "KILL"]
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [*prefix, *argv], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def _install_dns(self) -> None:
        manifest = (
            (Path(__file__).parent / "coredns.yaml")
            .read_text()
            .replace("COREDNS_IMAGE", self.images.coredns)
            .replace("CLUSTER_DNS_IP", CLUSTER_DNS_IP)
        )
        self.kubectl("apply", "-f", "-", input=manifest)
        self.kubectl(
            "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s",
            timeout=200,
        )  # fmt: skip

    def close(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.destroy()
        for proc in self.procs.values():
            stop(proc)
        with contextlib.suppress(Exception):
            self.control_plane.close()
        with contextlib.suppress(Exception):
            self.lab.close()
        subprocess.run(["ip", "link", "del", MGMT_BRIDGE], capture_output=True, check=False)
        remove_tree(self.root)
        for key, value in self.host_sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)

    # -- health -------------------------------------------------------------------------------

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{tail(self.root / f'{name}.log')}")
        for node in self.nodes.values():
            node.check_alive()

    def wait_nodes_ready(self, timeout: float, names: Sequence[str] | None = None) -> None:
        wanted = set(names or self.nodes)
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        while time.monotonic() < deadline:
            self.check_alive()
            ready = {
                item["metadata"]["name"]
                for item in self.kubectl_json("get", "nodes")["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in item.get("status", {}).get("conditions", [])
                )
            }
            if wanted <= ready:
                return
            time.sleep(1)
        logs = "\n".join(
            f"--- {n} kubelet\n{tail(self.nodes[n].log('kubelet'))}" for n in wanted - ready
        )
        raise RuntimeError(f"nodes not Ready after {timeout} s: {sorted(wanted - ready)}\n{logs}")

    # -- kubectl ------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.control_plane.kubectl_path, f"--kubeconfig={self.control_plane.kubeconfig}",
             *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def kustomization(self, *bases: str, agent_tag: str | None = None, extra: str = "") -> Path:
        """A kustomization of ``bases`` (repo paths) that only swaps in the lab's images (and
        adds ``extra``, e.g. the patches a user makes to an overlay)."""
        directory = Path(tempfile.mkdtemp(prefix="kustomize-", dir=self.root))
        agent_name, _, tag = self.images.agent.rpartition(":")
        collector_name, _, collector_tag = self.images.collector.rpartition(":")
        resources = "".join(f"  - {os.path.relpath(REPO / base, directory)}\n" for base in bases)
        (directory / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            f"resources:\n{resources}"
            "images:\n"
            f"  - name: docker.io/monlat/monlat\n    newName: {agent_name}\n"
            f"    newTag: {agent_tag or tag}\n"
            f"  - name: docker.io/monlat/monlat-otelcol\n    newName: {collector_name}\n"
            f"    newTag: {collector_tag}\n" + extra
        )
        return directory

    # -- reaching into the cluster ---------------------------------------------------------------

    def connect(self, node: str) -> SocketFactory:
        """New sockets inside ``node``'s namespace: Service IPs work there (kube-proxy)."""
        return lambda: self.lab.socket(node)

    def http_get(self, node: str, host: str, port: int, path: str) -> tuple[int, str]:
        return http_get(self.connect(node), host, port, path)

    def service_ip(self, namespace: str, name: str) -> str:
        service = self.kubectl_json("-n", namespace, "get", "service", name)
        return str(service["spec"]["clusterIP"])

    @contextlib.contextmanager
    def pod(self, namespace: str, name: str, node: str) -> Iterator[str]:
        """A pod on ``node`` (pod network, the lab's agent image, idle) for :meth:`exec_in`:
        long-lived, as the workloads a NetworkPolicy speaks of are, so that policy engines
        have it in their sets. Yields its pod IP; deleted on exit."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {"name": name, "image": self.images.agent, "command": ["sleep", "infinity"]}
                ],
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(pod))
        try:
            self.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}",
                         "--timeout=120s", timeout=150)  # fmt: skip
            yield str(self.kubectl_json("-n", namespace, "get", "pod", name)["status"]["podIP"])
        finally:
            self.kubectl("-n", namespace, "delete", "pod", name, "--wait=false", check=False)

    def exec_in(self, namespace: str, name: str, command: Sequence[str]) -> str:
        """``kubectl exec`` ``command`` in a pod of :meth:`pod`; its standard output."""
        return self.kubectl("-n", namespace, "exec", name, "--", *command, timeout=60).stdout

    def spawn_in(self, node: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """A helper process (a Prometheus, a sink) in ``node``'s namespace, outside its pods."""
        proc = spawn(
            argv, log, netns=self.lab.netns(node), cgroup=self.nodes[node].cgroup, cwd=self.root
        )
        self.procs[f"{node}:{Path(argv[0]).name}:{proc.pid}"] = proc
        return proc
