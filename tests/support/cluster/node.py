"""One lab Kubernetes node: containerd, kubelet and kube-proxy inside a lab network namespace.

Each node's processes share the host's mount namespace (``nsenter --net`` only, not ``ip netns
exec``, which gives a private one): the kubelet mounts volumes that containerd's runc must see.
Everything a node writes lives under its own directory (containerd root and state, the kubelet's
root, pod logs, CNI configuration) and its own cgroup (``cgroupRoot`` of the kubelet, and the
cgroup its daemons start in), so three nodes share one machine, and :meth:`LabNode.destroy`
(also run for the leftovers of a dead test process) kills everything in that cgroup, unmounts
everything under that directory and removes both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CGROUP_FS = Path("/sys/fs/cgroup")
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
POD_SUPERNET = "10.244.0.0/16"


# --- cgroups ---------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (``cpu``, ``memory``, ..., and the named ``systemd``)."""
    found = []
    for entry in sorted(CGROUP_FS.iterdir()):
        if entry.name == "unified" or not (entry / "cgroup.procs").exists():
            continue
        found.append(entry)
    return found


@dataclass(frozen=True)
class NodeCgroup:
    """``/<name>`` in every v1 hierarchy: the node's daemons and, below it, its pods."""

    name: str

    def paths(self) -> list[Path]:
        return [hierarchy / self.name for hierarchy in cgroup_hierarchies()]

    def create(self) -> None:
        for path in self.paths():
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset" or (path / "cpuset.cpus").exists():
                # A v1 cpuset starts empty, and a task cannot join an empty one.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((path.parent / name).read_text())

    def attach(self, pid: int) -> None:
        for path in self.paths():
            with contextlib.suppress(OSError):
                (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths():
            if not path.exists():
                continue
            for procs in path.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    found.update(int(line) for line in procs.read_text().split())
        return found

    def destroy(self, timeout: float = 20.0) -> None:
        """Kill every process in the tree, then remove the tree (deepest first)."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        for path in self.paths():
            if not path.exists():
                continue
            for directory in sorted(
                (p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                path.rmdir()


def unmount_under(root: Path) -> None:
    """Detach every mount at or below ``root`` (volumes, rootfs overlays, netns files)."""
    prefix = str(root).rstrip("/") + "/"
    for _ in range(5):
        points = []
        with open("/proc/self/mountinfo") as mountinfo:
            for line in mountinfo:
                point = line.split()[4].encode().decode("unicode_escape")
                if point.startswith(prefix):
                    points.append(point)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)


def remove_tree(root: Path) -> None:
    unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)
    logs = Path("/var/log/containers")
    if logs.is_dir():  # the kubelet's symlinks to its pod logs, always in this one place
        for link in logs.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(str(root)):
                    link.unlink()


# --- processes -------------------------------------------------------------------------------


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    netns: str,
    cgroup: NodeCgroup,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``argv`` in network namespace ``netns`` (host mounts), in ``cgroup``, dying with us."""
    prefix = ["nsenter", f"--net=/var/run/netns/{netns}", "--", "setpriv", "--pdeathsig", "KILL"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd, start_new_session=True, env=env,
        )  # fmt: skip
    cgroup.attach(proc.pid)  # before it execs much: children (shims, containers) inherit it
    return proc


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


# --- the node --------------------------------------------------------------------------------


@dataclass
class LabNode:
    """A node's files and daemons; :class:`~tests.support.cluster.cluster.LabCluster` runs it."""

    name: str
    netns: str
    address: str  # the lab0 address: the Node's InternalIP, where peers probe it
    pod_cidr: str
    root: Path
    cgroup: NodeCgroup
    k8s_bin: Path
    runtime_bin: Path
    kubeconfig: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    def log(self, daemon: str) -> Path:
        return self.root / f"{daemon}.log"

    # -- configuration ------------------------------------------------------------------------

    def write_config(self, sandbox_image: str) -> None:
        for sub in ("containerd/root", "containerd/state", "kubelet", "pod-logs", "cni/net.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cni_bin = self.runtime_bin / "cni"
        state = self.root / "containerd" / "state"
        (self.root / "containerd" / "config.toml").write_text(
            f"""version = 3
root = '{self.root / "containerd" / "root"}'
state = '{state}'
[grpc]
  address = '{self.socket}'
[ttrpc]
  address = '{self.socket}.ttrpc'
[plugins.'io.containerd.internal.v1.opt']
  path = '{self.root / "containerd" / "opt"}'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{sandbox_image}'
[plugins.'io.containerd.cri.v1.runtime']
  disable_apparmor = true
  # No CAP_SYS_RESOURCE on the test machines: oom_score_adj can only be raised, never lowered.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{shutil.which("runc") or "/usr/sbin/runc"}'
        Root = '{state / "runc"}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni_bin}']
    conf_dir = '{self.root / "cni" / "net.d"}'
"""
        )
        conflist = {
            "cniVersion": "1.0.0",
            "name": "monlat-lab",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # pod-network agents must see each other's pod addresses
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.root / "cni" / "net.d" / "10-monlat-lab.conflist").write_text(json.dumps(conflist))
        # CoreDNS forwards nothing (no outside network); TEST-NET-2 is never on a test machine.
        (self.root / "resolv.conf").write_text("nameserver 198.51.100.53\n")
        kubelet: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.address,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            # The API server calls without a client certificate (logs, exec): lab only.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup.name}",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDNS": [CLUSTER_DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(self.root / "resolv.conf"),
            "failSwapOn": False,
            "podLogsDir": str(self.root / "pod-logs"),
            # The host's disks and memory are shared with the other nodes and the tests.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "localStorageCapacityIsolation": False,
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s",
            "maxPods": 40,
        }
        (self.root / "kubelet.json").write_text(json.dumps(kubelet, indent=1))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": POD_SUPERNET,
            "metricsBindAddress": "127.0.0.1:10249",
            # Conntrack limits are the host's (read-only in a namespace): leave them alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (self.root / "kube-proxy.json").write_text(json.dumps(proxy, indent=1))

    # -- daemons ------------------------------------------------------------------------------

    def _spawn(self, daemon: str, argv: Sequence[str]) -> None:
        # containerd finds its shim, and the kubelet mount and umount, on PATH.
        path = f"{self.runtime_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self.procs[daemon] = spawn(
            argv,
            self.log(daemon),
            netns=self.netns,
            cgroup=self.cgroup,
            cwd=self.root,
            env={**os.environ, "PATH": path},
        )

    def start_containerd(self, timeout: float = 60.0) -> None:
        self._spawn(
            "containerd",
            [str(self.runtime_bin / "containerd"), "--config",
             str(self.root / "containerd" / "config.toml")],
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["containerd"].poll() is not None:
                raise RuntimeError(
                    f"containerd on {self.name} exited:\n{tail(self.log('containerd'))}"
                )
            if self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"containerd on {self.name} not up:\n{tail(self.log('containerd'))}")

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.runtime_bin / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io",
             *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} on {self.name}: {proc.stderr.strip()}")
        return proc

    def import_images(self, archives: Sequence[Path]) -> None:
        for archive in archives:
            self.ctr("images", "import", "--label", "io.cri-containerd.image=managed", str(archive))

    def start_kubelet(self) -> None:
        self._spawn(
            "kubelet",
            [
                str(self.k8s_bin / "kubelet"),
                f"--config={self.root / 'kubelet.json'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.root / 'kubelet'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.address}",
                "--v=1",
            ],
        )

    def start_kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            [
                str(self.k8s_bin / "kube-proxy"),
                f"--config={self.root / 'kube-proxy.json'}",
                "--v=1",
            ],
        )

    def start_policy_firewall(self) -> None:
        """kube-router's NetworkPolicy firewall alone (no routing, no service proxy, no CNI):
        iptables chains and ipsets in this node's namespace, for the pods on this node."""
        self._spawn(
            "kube-router",
            [
                str(self.runtime_bin / "kube-router"),
                f"--kubeconfig={self.kubeconfig}",
                f"--hostname-override={self.name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                "--enable-ipv6=false",
                "--health-port=0",
                "--metrics-port=0",
                "--v=1",
            ],
        )

    def check_alive(self) -> None:
        for daemon, proc in self.procs.items():
            if proc.poll() is not None:
                log = tail(self.log(daemon))
                raise RuntimeError(f"{daemon} on {self.name} exited with {proc.returncode}:\n{log}")

    def stop_daemon(self, daemon: str) -> None:
        stop(self.procs.pop(daemon, None))

    def destroy(self) -> None:
        """Stop the daemons, kill what is left in the node's cgroup, remove its files."""
        for daemon in ("kube-router", "kube-proxy", "kubelet", "containerd"):
            self.stop_daemon(daemon)
        self.cgroup.destroy()
        remove_tree(self.root)
