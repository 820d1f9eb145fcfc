"""monlat against a REAL Kubernetes API server (kube-apiserver 1.32 + etcd,
tests/support/control_plane.py).

1. The manifests: ``kubectl apply -k`` and the plain files in their documented order, on fresh
   clusters, with strict server-side field validation; the overlays; server-side dry runs.
2. RBAC as the agents get it: the ServiceAccount can read Nodes and nothing else.
3. Agents in lab namespaces, authenticated with that ServiceAccount's token, discover their peers
   from Node objects and measure the emulated links. The API server listens on the root
   namespace's loopback only, so tests/support/api_relay.py relays each namespace's
   127.0.0.1:6443 to it.
4. Node churn reaches the probes within seconds.
5. A one-minute API server outage: the last peers stay probed, the outage is logged once, and the
   agents resynchronise afterwards through a 410 Gone and a relist.
6. Scale: one agent discovering 1,000 Nodes (memory, CPU, time to first publish).

Nothing schedules pods here (no scheduler, no kubelet): the manifests create API objects only.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime
import json
import os
import shlex
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import k8s_schema
from tests.support.agent_process import AgentProcess, series
from tests.support.api_relay import ApiRelay
from tests.support.control_plane import ControlPlane, node_object, write_kubeconfig
from tests.support.lab import Lab, Link
from tests.support.lab.fixtures import skip_or_fail
from tests.support.lab.rtt import rtt_ok
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
PLAIN_FILES = ("rbac.yaml", "agents.yaml", "monlat.yaml")  # the documented order
OVERLAYS = ("deploy/overlays/net-raw", "deploy/overlays/otlp-backend")
NOT_MANIFESTS = {"kustomization.yaml", "monlat.template.yaml"}

NAMESPACE = "monlat"
AGENT_SA = "monlat-agent"
AGENT_USER = f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}"
RELAY_PORT = 6443
AGENT_PORT = 9090

MESH = ("n1", "n2", "n3")  # nodes running an agent
SPARE = "n4"  # a lab node with no agent: joins and leaves the cluster as a Node object
LINKS = {
    ("n1", "n2"): Link(delay_ms=0.5), ("n2", "n1"): Link(delay_ms=1.5),
    ("n1", "n3"): Link(delay_ms=1.0), ("n3", "n1"): Link(delay_ms=3.0),
    ("n2", "n3"): Link(delay_ms=2.5), ("n3", "n2"): Link(delay_ms=4.5),
}  # fmt: skip
DEFAULT_LINK = Link(delay_ms=0.5)  # to and from the spare node: 1 ms RTT

Samples = list[tuple[str, dict[str, str], float]]


# --- small helpers ------------------------------------------------------------------------------


def event_fields(line: str) -> dict[str, str]:
    """A logfmt event line as a dict (values unquoted)."""
    return dict(part.split("=", 1) for part in shlex.split(line) if "=" in part)


def event_time(line: str) -> float:
    """The event's own timestamp (wall clock, UTC) as a Unix time."""
    return datetime.datetime.fromisoformat(event_fields(line)["time"]).timestamp()


def events_for(agent: AgentProcess, name: str, **match: str) -> list[str]:
    lines = agent.events(name)
    return [line for line in lines if all(event_fields(line).get(k) == v for k, v in match.items())]


def to_labels(samples: Samples) -> set[str]:
    """Every peer named by any series of a scrape."""
    return {labels["to"] for _, labels, _ in samples if "to" in labels}


def probes_total(samples: Samples) -> float:
    return sum(value for name, _, value in samples if name == "monlat_probes_total")


def gauge(samples: Samples, name: str) -> float | None:
    return next((value for n, _, value in samples if n == name), None)


def kubectl_lines(result: Any) -> list[str]:
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def apply_strict(cp: ControlPlane, *args: str, dry_run: bool = False) -> list[str]:
    """``kubectl apply --validate=strict ARGS`` (strict server-side field validation): its lines.

    Fails on any warning as well (unknown or duplicate fields, deprecated APIs, Pod Security).
    """
    argv = ["apply", "--validate=strict", *(["--dry-run=server"] if dry_run else []), *args]
    result = cp.kubectl(*argv)
    assert "warning" not in result.stderr.lower(), result.stderr
    lines = kubectl_lines(result)
    assert lines, f"kubectl {' '.join(argv)} applied nothing"
    return lines


def apply_agent_rbac(cp: ControlPlane) -> None:
    """rbac.yaml as shipped, and wait until the RBAC authorizer sees the binding."""
    apply_strict(cp, "-f", str(K8S / "rbac.yaml"))
    wait_until(
        lambda: can_i(cp, "list", "nodes"), 15, "the agent's ClusterRoleBinding takes effect"
    )


def can_i(cp: ControlPlane, *args: str, kubeconfig: Path | None = None) -> bool:
    """``kubectl auth can-i ARGS`` as the agent (impersonated, or with ``kubeconfig``'s token)."""
    who = [] if kubeconfig else [f"--as={AGENT_USER}"]
    result = cp.kubectl("auth", "can-i", *args, *who, check=False, kubeconfig=kubeconfig)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {result.stdout!r} {result.stderr!r}"
    assert result.returncode == (0 if answer == "yes" else 1)
    return answer == "yes"


def agent_kubeconfig(cp: ControlPlane, path: Path, server: str) -> Path:
    """A kubeconfig as a pod of the DaemonSet would use: the ServiceAccount's token, the
    cluster CA, and ``server`` (the relay's address inside the lab namespace)."""
    token = cp.service_account_token(NAMESPACE, AGENT_SA, create=False, duration="2h")
    return write_kubeconfig(path, server, cp.ca_file, token, AGENT_USER)


def etcd_request(cp: ControlPlane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """etcd's v3 JSON gateway (the fixture's etcd serves it on its client URL)."""
    request = urllib.request.Request(
        f"{cp.etcd_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def etcd_put_node(cp: ControlPlane, node: dict[str, Any]) -> int:
    """Store a Node straight into etcd, past the API server (which may be down): how a Node
    written meanwhile through another API server, or restored from a backup, looks to it.

    The API server decodes JSON from storage as well as protobuf. Returns etcd's new revision.
    """
    node = json.loads(json.dumps(node))
    node["metadata"]["uid"] = str(uuid.uuid4())
    node["metadata"]["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    key = f"/registry/minions/{node['metadata']['name']}"
    answer = etcd_request(
        cp,
        "/v3/kv/put",
        {
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(json.dumps(node).encode()).decode(),
        },
    )
    return int(answer["header"]["revision"])


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def proc_memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


# --- 1. manifests -------------------------------------------------------------------------------


@pytest.fixture(name="fresh_cluster")
def fresh_cluster_fixture(control_plane_binaries: Path, tmp_path: Path) -> Iterator[ControlPlane]:
    """A private control plane that has never seen monlat (a Namespace, once created, can never
    be deleted here: there is no controller-manager to finalise it)."""
    with ControlPlane.launch(tmp_path / "control-plane", control_plane_binaries) as cp:
        yield cp


def kubernetes_manifests() -> list[Path]:
    """Every YAML file under deploy/ that holds Kubernetes objects (not kustomizations, the
    render template, collector and Prometheus configuration, or the Helm chart, whose templates
    are not YAML until helm renders them: tests/cluster/test_helm.py)."""
    found = []
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        if path.name in NOT_MANIFESTS or (REPO / "deploy" / "helm") in path.parents:
            continue
        docs = [doc.data for doc in k8s_schema.load_documents(path.read_text())]
        if docs and all(
            isinstance(doc, dict)
            and {"apiVersion", "kind"} <= doc.keys()
            and doc["kind"] not in ("Kustomization", "Component")
            for doc in docs
        ):
            found.append(path)
    return found


def assert_all(lines: list[str], outcome: str) -> None:
    assert lines and all(line.endswith(f" {outcome}") for line in lines), lines


def stored_pod_spec(cp: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    return dict(cp.kubectl_json("get", kind, name, "-n", NAMESPACE)["spec"]["template"]["spec"])


def check_stored_base(cp: ControlPlane) -> None:
    """The objects the base creates are stored as written (spot checks of what matters)."""
    role = cp.kubectl_json("get", "clusterrole", AGENT_SA)
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
    ]
    pod = stored_pod_spec(cp, "daemonset", AGENT_SA)
    assert pod["serviceAccountName"] == AGENT_SA and pod["hostNetwork"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    names = cp.kubectl("get", "deployment,service,configmap", "-n", NAMESPACE, "-o", "name")
    assert {"deployment.apps/monlat", "service/monlat", "configmap/monlat-otelcol"} <= set(
        names.stdout.split()
    )


@pytest.mark.timeout(180)
def test_plain_files_in_documented_order_then_kustomize(fresh_cluster: ControlPlane) -> None:
    cp = fresh_cluster
    for name in PLAIN_FILES:  # each file on a cluster holding only the files before it
        assert_all(apply_strict(cp, "-f", str(K8S / name)), "created")
    check_stored_base(cp)
    # The kustomization renders exactly the plain files: applying it changes nothing.
    assert_all(apply_strict(cp, "-k", str(REPO / "deploy" / "k8s")), "unchanged")


@pytest.mark.timeout(240)
def test_kustomize_overlays_and_server_dry_run(fresh_cluster: ControlPlane) -> None:
    cp = fresh_cluster
    assert_all(apply_strict(cp, "-k", str(REPO / "deploy" / "k8s")), "created")
    check_stored_base(cp)
    for name in PLAIN_FILES:
        assert_all(apply_strict(cp, "-f", str(K8S / name)), "unchanged")

    lines = apply_strict(cp, "-k", str(REPO / OVERLAYS[0]))  # net-raw
    assert "daemonset.apps/monlat-agent configured" in lines, lines
    container = stored_pod_spec(cp, "daemonset", AGENT_SA)["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert {"name": "MONLAT_SOCKET", "value": "raw"} in container["env"]

    lines = apply_strict(cp, "-k", str(REPO / OVERLAYS[1]))  # otlp-backend (Secret comes later)
    assert "configmap/monlat-otelcol-backend created" in lines, lines
    assert "deployment.apps/monlat configured" in lines, lines
    collector = stored_pod_spec(cp, "deployment", "monlat")["containers"][0]
    assert collector["envFrom"] == [{"secretRef": {"name": "monlat-backend"}}]
    assert "--config=/etc/otelcol-backend/config.backend.yaml" in collector["args"]

    lines = apply_strict(cp, "-k", str(REPO / "deploy" / "k8s"))  # and back to the base
    assert "deployment.apps/monlat configured" in lines, lines
    check_stored_base(cp)

    # Server-side dry runs of every manifest and kustomization, now that the namespace exists
    # (a dry run creates nothing, so namespaced objects need the real Namespace first).
    manifests = kubernetes_manifests()
    assert {path.relative_to(REPO).as_posix() for path in manifests} >= {
        *(f"deploy/k8s/{name}" for name in (*PLAIN_FILES, "agents-net-raw.yaml")),
        "deploy/k8s/optional/servicemonitor.yaml",
        "deploy/k8s/components/otlp-backend/backend-configmap.yaml",
        "deploy/prometheus/prometheusrule.yaml",
    }
    crds = install_crds_for(cp, manifests)
    assert {"servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"} <= (
        set(crds)
    )
    for path in manifests:
        dry = apply_strict(cp, "-f", str(path), dry_run=True)
        assert all(line.endswith("(server dry run)") for line in dry), (path, dry)
    for directory in ("deploy/k8s", *OVERLAYS):
        dry = apply_strict(cp, "-k", str(REPO / directory), dry_run=True)
        assert all(line.endswith("(server dry run)") for line in dry), (directory, dry)
    # A dry run is checked as strictly as the real thing: an unknown field is refused.
    broken = (K8S / "agents.yaml").read_text().replace("hostNetwork: true", "hostNetwrk: true")
    refused = cp.kubectl(
        "apply", "--validate=strict", "--dry-run=server", "-f", "-", input=broken, check=False
    )
    assert refused.returncode != 0 and 'unknown field "spec.template.spec.hostNetwrk"' in (
        refused.stderr
    ), refused.stderr


def install_crds_for(cp: ControlPlane, manifests: list[Path]) -> list[str]:
    """Install the CRDs of every custom kind in ``manifests`` (ServiceMonitor, PrometheusRule),
    with the prometheus-operator schemas pinned in tests/support/k8s_schema.py; returns their
    names."""
    try:
        crd_dir = k8s_schema.ensure_source(k8s_schema.CRD_SOURCE)
    except k8s_schema.SchemaFetchError as err:  # includes "no Go toolchain"
        skip_or_fail(f"prometheus-operator CRDs unavailable: {err}")
        raise
    index = json.loads((crd_dir / "index.json").read_text())
    files = {
        index[doc.data["apiVersion"]][doc.data["kind"]]
        for path in manifests
        for doc in k8s_schema.load_documents(path.read_text())
        if doc.data["kind"] in index.get(doc.data["apiVersion"], {})
    }
    names = []
    for file_name in sorted(files):
        document = json.loads((crd_dir / file_name).read_text())
        group, kind = document["group"], document["kind"]
        plural = file_name.removesuffix(".json").split("_", 1)[1]  # group_plural.json
        versions = list(document["versions"].items())
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "names": {
                    "kind": kind,
                    "listKind": f"{kind}List",
                    "plural": plural,
                    "singular": kind.lower(),
                },
                "scope": document["scope"],
                "versions": [
                    {
                        "name": version,
                        "served": True,
                        "storage": i == 0,
                        "schema": {"openAPIV3Schema": schema},
                    }
                    for i, (version, schema) in enumerate(versions)
                ],
            },
        }
        cp.kubectl("create", "-f", "-", input=json.dumps(crd))
        names.append(f"{plural}.{group}")
    for name in names:
        cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}")
    return names


# --- 2. RBAC ------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_agent_service_account_reads_nodes_and_nothing_else(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    apply_agent_rbac(cp)
    cp.create_node("rbac-n1", "10.0.3.1")

    for verb in ("get", "list", "watch"):
        assert can_i(cp, verb, "nodes"), verb
    assert can_i(cp, "get", "nodes/rbac-n1")  # one Node by name: a plain get
    denied = [
        *[(verb, "nodes") for verb in ("create", "update", "patch", "delete", "deletecollection")],
        # (`can-i VERB nodes/x` would ask about the Node named x: subresources need the flag)
        ("patch", "nodes", "--subresource=status"), ("update", "nodes", "--subresource=status"),
        ("get", "nodes", "--subresource=proxy"), ("create", "nodes", "--subresource=proxy"),
        ("get", "namespaces"), ("list", "events"), ("create", "events"),
        ("create", "leases.coordination.k8s.io"),
        ("impersonate", "users"), ("escalate", "clusterroles"), ("bind", "clusterroles"),
        ("*", "*"),
    ]  # fmt: skip
    for namespace in (["-n", NAMESPACE], ["--all-namespaces"]):
        for resource in ("secrets", "pods", "configmaps", "serviceaccounts", "daemonsets.apps"):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                denied.append((verb, resource, *namespace))
        denied += [
            ("create", "pods", "--subresource=exec", *namespace),
            ("create", "serviceaccounts", "--subresource=token", *namespace),
        ]
    allowed_wrongly = [args for args in denied if can_i(cp, *args)]
    assert allowed_wrongly == [], allowed_wrongly

    # Everything the account may do, as the API server computes it (what `can-i --list` shows).
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": NAMESPACE},
    }
    # (--validate=false: kubectl's client-side check would look up CRDs as the agent.)
    answer = cp.kubectl(
        "create", f"--as={AGENT_USER}", "--validate=false", "-o", "json", "-f", "-",
        input=json.dumps(review),
    )  # fmt: skip
    status = json.loads(answer.stdout)["status"]
    assert not status.get("incomplete"), status
    resource_rules = {
        (tuple(rule.get("apiGroups", [])), tuple(rule["resources"])): sorted(rule["verbs"])
        for rule in status["resourceRules"]
    }
    # The agent's role, and what every authenticated user may do (ask who they are, and what).
    assert resource_rules == {
        (("",), ("nodes",)): ["get", "list", "watch"],
        (("authentication.k8s.io",), ("selfsubjectreviews",)): ["create"],
        (("authorization.k8s.io",), ("selfsubjectaccessreviews", "selfsubjectrulesreviews")): [
            "create"
        ],
    }, status["resourceRules"]
    assert {verb for rule in status["nonResourceRules"] for verb in rule["verbs"]} == {"get"}

    # The account's own token, as the pod gets it (no impersonation).
    kubeconfig = cp.service_account_kubeconfig(
        NAMESPACE, AGENT_SA, create=False, path=tmp_path / "agent.kubeconfig"
    )
    whoami = cp.kubectl_json("auth", "whoami", kubeconfig=kubeconfig)
    assert whoami["status"]["userInfo"]["username"] == AGENT_USER
    assert cp.kubectl("get", "nodes", "-o", "name", kubeconfig=kubeconfig).stdout.split() == [
        "node/rbac-n1"
    ]
    assert can_i(cp, "watch", "nodes", kubeconfig=kubeconfig)
    assert not can_i(cp, "list", "pods", "-A", kubeconfig=kubeconfig)
    for args in (
        ("get", "pods", "-n", NAMESPACE),
        ("get", "pods", "--all-namespaces"),
        ("get", "secrets", "-n", NAMESPACE),
        ("get", "configmaps", "--all-namespaces"),
        ("label", "node", "rbac-n1", "monlat/touched=yes"),
        ("delete", "node", "rbac-n1", "--wait=false"),
    ):
        result = cp.kubectl(*args, kubeconfig=kubeconfig, check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (args, result)
        assert AGENT_USER in result.stderr
    created = cp.kubectl(
        "create", "-f", "-", input=json.dumps(node_object("rbac-n2", "10.0.3.2")),
        kubeconfig=kubeconfig, check=False,
    )  # fmt: skip
    assert created.returncode != 0 and "forbidden" in created.stderr.lower(), created.stderr

    # The agent's own client library over the same token: list and watch work, pods do not.
    kubernetes = pytest.importorskip("kubernetes")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    with kubernetes.client.ApiClient(configuration) as client:
        core = kubernetes.client.CoreV1Api(client)
        listed = core.list_node()
        assert [node.metadata.name for node in listed.items] == ["rbac-n1"]
        stream = kubernetes.watch.Watch().stream(
            core.list_node, resource_version=listed.metadata.resource_version, timeout_seconds=1
        )
        assert list(stream) == []  # accepted, and nothing happened within the second
        with pytest.raises(kubernetes.client.ApiException) as forbidden:
            core.list_pod_for_all_namespaces()
        assert forbidden.value.status == 403


# --- 3-5. agents in the lab, through the relay --------------------------------------------------


@dataclass
class Cluster:
    cp: ControlPlane
    lab: Lab
    relay: ApiRelay
    kubeconfig: Path
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def start_agent(self, node: str, *extra: str, interval: str = "200ms") -> AgentProcess:
        args = [
            "--discovery", "kubernetes", "--node-name", node, "--kubeconfig", str(self.kubeconfig),
            "--interval", interval, "--timeout", "500ms",
            # No collector in the lab: OTLP (the default with kubernetes discovery) stays off.
            "--exporters", "prometheus", "--prometheus", f"127.0.0.1:{AGENT_PORT}",
            *extra,
        ]  # fmt: skip
        agent = AgentProcess(
            args,
            port=AGENT_PORT,
            prefix=self.lab.exec_argv(node, []),
            connect=lambda: self.lab.socket(node),
        )
        self.agents[node] = agent
        return agent

    def create_node(self, node: str) -> None:
        self.cp.create_node(node, self.lab.address(node))

    def wait_for_mesh(
        self, peers: dict[str, set[str]], timeout: float = 20.0
    ) -> dict[str, Samples]:
        """Every agent measures exactly ``peers[node]``, each within tolerance of the link."""
        scrapes = {}
        for node, wanted in peers.items():

            def measured(samples: Samples, node: str = node, wanted: set[str] = wanted) -> bool:
                latency = series(samples, "latency_between_nodes")
                return set(latency) == wanted and all(
                    rtt_ok(latency[peer], self.lab.expected_rtt_ms(node, peer)) for peer in wanted
                )

            scrapes[node] = self.agents[node].wait_for(measured, timeout)
        return scrapes


@pytest.fixture(name="cluster")
def cluster_fixture(
    control_plane: ControlPlane, lab_factory: Callable[..., Lab], tmp_path: Path
) -> Iterator[Cluster]:
    """The lab (n1..n3 with agents to be started, n4 spare), the relay from every lab node's
    127.0.0.1:6443 to the API server, Nodes n1..n3, and the agents' kubeconfig."""
    cp = control_plane
    apply_agent_rbac(cp)
    lab = lab_factory([*MESH, SPARE], links=LINKS, default=DEFAULT_LINK)
    relay = ApiRelay(("127.0.0.1", cp.port))
    for node in lab.nodes:
        relay.listen(lab.socket(node), ("127.0.0.1", RELAY_PORT), name=node)
    kubeconfig = agent_kubeconfig(
        cp, tmp_path / "agent.kubeconfig", f"https://127.0.0.1:{RELAY_PORT}"
    )
    cluster = Cluster(cp, lab, relay, kubeconfig)
    for node in MESH:
        cluster.create_node(node)
    try:
        yield cluster
    finally:
        codes = {}
        try:
            for node, agent in cluster.agents.items():
                codes[node] = agent.stop()
        finally:
            relay.close()
        failed = {node: cluster.agents[node].stderr[-20:] for node, code in codes.items() if code}
        assert not failed, f"agents exited non-zero: {codes} {failed}"


def start_mesh(cluster: Cluster) -> None:
    for node in MESH:
        cluster.start_agent(node)
    for node in MESH:
        cluster.agents[node].wait_ready()


@pytest.mark.timeout(120)
def test_lab_agents_discover_peers_from_node_objects(cluster: Cluster) -> None:
    start_mesh(cluster)
    scrapes = cluster.wait_for_mesh({node: set(MESH) - {node} for node in MESH})
    for node, samples in scrapes.items():
        froms = {
            labels.get("from") for name, labels, _ in samples if name == "latency_between_nodes"
        }
        assert froms == {node}
        latency = series(samples, "latency_between_nodes")
        print(f"{node}: " + ", ".join(
            f"{peer} {value:.2f} ms (emulated {cluster.lab.expected_rtt_ms(node, peer):.1f})"
            for peer, value in sorted(latency.items())
        ))  # fmt: skip
        agent = cluster.agents[node]
        listed = events_for(agent, "nodes_listed")
        assert event_fields(listed[0])["nodes"] == "3" and event_fields(listed[0])["peers"] == "2"
        assert sorted(event_fields(line)["peer"] for line in agent.events("peer_added")) == sorted(
            set(MESH) - {node}
        )
        assert not agent.events("api_error") and not agent.events("api_unreachable")
    # Every agent reached the API server through its own namespace's relay, and the probes went
    # across the emulated links, not anywhere else.
    assert {name for name, _ in cluster.relay.stats.accept_times} == set(MESH)
    links = cluster.lab.stats()["links"]
    for a in MESH:
        for b in set(MESH) - {a}:
            assert links[f"{a}>{b}"]["echo_requests"] > 0, (a, b)
        assert links[f"{a}>{SPARE}"]["echo_requests"] == 0


@pytest.mark.timeout(120)
def test_node_churn_reaches_the_probes_within_seconds(cluster: Cluster) -> None:
    start_mesh(cluster)
    cluster.wait_for_mesh({node: set(MESH) - {node} for node in MESH})
    agents = cluster.agents

    # Timed from kubectl returning (the object is stored); kubectl's own exit takes a few ms,
    # so the agent may log the event before that: the time from issuing it is printed as well.
    issued = time.time()
    cluster.create_node(SPARE)
    created = time.time()
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while len(seen) < len(MESH) and time.monotonic() < deadline:
        for node in MESH:
            if node not in seen and SPARE in series(
                agents[node].metrics(), "latency_between_nodes"
            ):
                seen[node] = time.time() - created
        time.sleep(0.02)
    assert set(seen) == set(MESH), f"{SPARE} measured only by {seen}"
    for node in MESH:
        added = events_for(agents[node], "peer_added", peer=SPARE)
        assert len(added) == 1, agents[node].stderr[-10:]
        to_event = event_time(added[0]) - created
        print(f"{node}: {SPARE} added: peer_added {to_event * 1000:+.0f} ms after kubectl "
              f"returned ({(event_time(added[0]) - issued) * 1000:.0f} ms after it was run), "
              f"measured in /metrics after {seen[node] * 1000:.0f} ms")  # fmt: skip
        assert to_event < 2.0, to_event
        assert seen[node] < 2.0, seen
    cluster.wait_for_mesh({node: set(MESH) - {node} | {SPARE} for node in MESH}, timeout=10)

    issued = time.time()
    cluster.cp.kubectl("delete", "node", SPARE)
    deleted = time.time()
    gone: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while len(gone) < len(MESH) and time.monotonic() < deadline:
        for node in MESH:
            if node not in gone and SPARE not in to_labels(agents[node].metrics()):
                gone[node] = time.time() - deleted
        time.sleep(0.02)
    assert set(gone) == set(MESH), f"series of {SPARE} still served by {set(MESH) - set(gone)}"
    for node in MESH:
        removed = events_for(agents[node], "peer_removed", peer=SPARE)
        assert len(removed) == 1
        print(f"{node}: {SPARE} deleted: peer_removed "
              f"{(event_time(removed[0]) - deleted) * 1000:+.0f} ms after kubectl returned "
              f"({(event_time(removed[0]) - issued) * 1000:.0f} ms after it was run), "
              f"series gone from /metrics after {gone[node] * 1000:.0f} ms")  # fmt: skip
        assert gone[node] < 2.0, gone

    # Probing stopped: no echo request enters a link to the departed node any more.
    time.sleep(0.5)  # probes already in flight when the peer left
    before = cluster.lab.stats()["links"]
    time.sleep(2.0)
    after = cluster.lab.stats()["links"]
    for node in MESH:
        link = f"{node}>{SPARE}"
        assert after[link]["echo_requests"] == before[link]["echo_requests"], link
        assert after[link]["echo_requests"] > 0  # it had been probed
    for node in MESH:  # the others still are
        other = next(n for n in MESH if n != node)
        assert (
            after[f"{node}>{other}"]["echo_requests"] > before[f"{node}>{other}"]["echo_requests"]
        )


POD_NETWORK_SA = "monlat-agent-pod-network"
POD_NETWORK_USER = f"system:serviceaccount:{NAMESPACE}:{POD_NETWORK_SA}"
POD_AGENT_PORT = 9091


def agent_pod(node: str, ip: str | None = None) -> dict[str, Any]:
    """What the pod-network DaemonSet would create on ``node`` (nothing runs it here)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{POD_NETWORK_SA}-{node}",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": POD_NETWORK_SA},
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": POD_NETWORK_SA,
            "containers": [{"name": "agent", "image": "docker.io/monlat/monlat:0.1.0"}],
        },
    }


def run_pod(core: Any, node: str, ip: str) -> None:
    """Report the pod running with ``ip``, as its kubelet would (status subresource)."""
    core.patch_namespaced_pod_status(
        f"{POD_NETWORK_SA}-{node}",
        NAMESPACE,
        {
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )


@pytest.mark.timeout(180)
def test_pod_network_agents_find_each_other_through_their_pods(cluster: Cluster) -> None:
    """The pod-network manifest as shipped, its ServiceAccount's token, agents in the lab that
    discover their peers from the agent Pods (not the Nodes) and label every series network=pod,
    beside a host-network agent measuring the same pairs without the label."""
    cp = cluster.cp
    apply_strict(cp, "-k", str(K8S / "pod-network"))
    pod_user = ["--as", POD_NETWORK_USER]
    wait_until(
        lambda: cp.kubectl("auth", "can-i", "watch", "pods", "-n", NAMESPACE, *pod_user,
                           check=False).stdout.strip() == "yes",
        15, "the pod-network RoleBinding takes effect",
    )  # fmt: skip
    for args in (("list", "nodes"), ("list", "pods", "-n", "default"), ("get", "secrets", "-n",
                 NAMESPACE), ("patch", "pods", "-n", NAMESPACE)):  # fmt: skip
        assert cp.kubectl("auth", "can-i", *args, *pod_user, check=False).stdout.strip() == "no"
    token = cp.service_account_token(NAMESPACE, POD_NETWORK_SA, create=False, duration="2h")
    kubeconfig = write_kubeconfig(
        cluster.kubeconfig.with_name("pod-agent.kubeconfig"),
        f"https://127.0.0.1:{RELAY_PORT}", cp.ca_file, token, POD_NETWORK_USER,
    )  # fmt: skip

    core = admin_core_api(cp)
    # The pod IPs are the lab nodes' IPv6 addresses, while the Nodes carry IPv4 only: what the
    # agents probe can only have come from the Pods.
    pod_ip = {node: cluster.lab.address6(node) for node in (*MESH, SPARE)}
    for node in MESH:
        cp.apply(agent_pod(node))
        run_pod(core, node, pod_ip[node])

    pod_agents: dict[str, AgentProcess] = {}
    for node in MESH:
        args = [
            "--discovery", "pods", "--node-name", node, "--kubeconfig", str(kubeconfig),
            "--pod-namespace", NAMESPACE, "--socket", "dgram",
            "--interval", "200ms", "--timeout", "500ms",
            "--exporters", "prometheus", "--prometheus", f"127.0.0.1:{POD_AGENT_PORT}",
        ]  # fmt: skip
        cluster.lab.run(
            node, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True
        )
        pod_agents[node] = AgentProcess(
            args,
            port=POD_AGENT_PORT,
            prefix=cluster.lab.exec_argv(node, []),
            connect=lambda node=node: cluster.lab.socket(node),  # type: ignore[misc]
        )
        cluster.agents[f"{node}-pod"] = pod_agents[node]
    host = cluster.start_agent("n1")  # the host-network agent on the same node
    for agent in (*pod_agents.values(), host):
        agent.wait_ready()

    def pod_series(samples: Samples) -> dict[str, float]:
        return {
            labels["to"]: value
            for name, labels, value in samples
            if name == "latency_between_nodes" and labels.get("network") == "pod"
        }

    for node, agent in pod_agents.items():
        wanted = set(MESH) - {node}
        samples = agent.wait_for(lambda s, wanted=wanted: set(pod_series(s)) == wanted, timeout=20)  # type: ignore[misc]
        latency = pod_series(samples)
        for peer in wanted:
            assert rtt_ok(latency[peer], cluster.lab.expected_rtt_ms(node, peer)), (
                node, peer, latency,
            )  # fmt: skip
        assert all(
            labels.get("network") == "pod"
            for name, labels, _ in samples
            if name.startswith(("latency_between_nodes", "monlat_"))
        )
        listed = event_fields(events_for(agent, "pods_listed")[0])
        assert listed["pods"] == "3" and listed["peers"] == "2", listed
        added = {
            event_fields(line)["peer"]: event_fields(line)["address"]
            for line in agent.events("peer_added")
        }
        assert added == {peer: pod_ip[peer] for peer in wanted}
    # The host agent on n1 measures the same pairs over the Nodes' addresses, unlabelled.
    host_samples = host.wait_for(
        lambda s: set(series(s, "latency_between_nodes")) == {"n2", "n3"}, timeout=20
    )
    assert not any(labels.get("network") for _, labels, _ in host_samples)

    # A pod appears on the spare node: pending first (no IP: not a peer), then running.
    cp.apply(agent_pod(SPARE))
    time.sleep(1.0)
    assert SPARE not in pod_series(pod_agents["n1"].metrics())
    run_pod(core, SPARE, pod_ip[SPARE])
    pod_agents["n1"].wait_for(lambda s: SPARE in pod_series(s), timeout=5)
    # Its node goes NotReady: the node lifecycle controller marks the pod not ready, and the
    # pod agents leave it out (as the host agents leave out a NotReady Node).
    core.patch_namespaced_pod_status(
        f"{POD_NETWORK_SA}-{SPARE}",
        NAMESPACE,
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
    )
    pod_agents["n1"].wait_for(lambda s: SPARE not in pod_series(s), timeout=5)
    run_pod(core, SPARE, pod_ip[SPARE])
    pod_agents["n1"].wait_for(lambda s: SPARE in pod_series(s), timeout=5)
    # Deleting it takes it out of every pod agent's peers, while the host agent never saw it
    # (no Node object for the spare node).
    cp.kubectl("delete", "pod", f"{POD_NETWORK_SA}-{SPARE}", "-n", NAMESPACE, "--grace-period=0",
               "--force")  # fmt: skip
    for agent in pod_agents.values():
        agent.wait_for(lambda s: SPARE not in pod_series(s), timeout=5)
    assert SPARE not in series(host.metrics(), "latency_between_nodes")
    links = cluster.lab.stats()["links"]
    assert links[f"n1>{SPARE}"]["echo_requests"] > 0


# Long enough for every agent to notice and keep probing through it; the relist after the restart
# comes from etcd's revision moving on, not from the length of the outage.
OUTAGE_S = 20.0


@pytest.mark.timeout(300)
def test_api_server_outage_keeps_peers_then_relists_after_410(cluster: Cluster) -> None:
    """The API server stops for OUTAGE_S. Meanwhile a Node is written to etcd behind its back,
    which also moves etcd's revision past every agent's last resourceVersion: the restarted API
    server's watch cache starts at the newer revision and answers the agents' re-watch with
    410 Gone ("too old resource version"), so they must relist to see the new Node."""
    cp = cluster.cp
    start_mesh(cluster)
    mesh = {node: set(MESH) - {node} for node in MESH}
    cluster.wait_for_mesh(mesh)
    agents = cluster.agents
    pids = {node: agent.proc.pid for node, agent in agents.items()}
    # (The API's NodeList: `kubectl get -o json` would wrap the items in a List without one.)
    version_before = json.loads(cp.kubectl("get", "--raw", "/api/v1/nodes").stdout)["metadata"][
        "resourceVersion"
    ]
    assert version_before

    stopped_at = time.time()
    # Graceful: SIGTERM. The fixture sets --shutdown-watch-termination-grace-period=2s: open
    # watches (the agents') are closed after that, instead of holding the exit for 30 s. The
    # outage counts from its exit.
    started_stop = time.monotonic()
    cp.stop()
    stop_s = time.monotonic() - started_stop
    stopped = time.monotonic()
    wait_until(
        lambda: all(agent.events("api_unreachable") for agent in agents.values()),
        15, "every agent notices the outage",
    )  # fmt: skip
    checks = 0
    totals = {node: probes_total(agent.metrics()) for node, agent in agents.items()}
    while time.monotonic() - stopped < OUTAGE_S - 3:
        time.sleep(3)
        for node, agent in agents.items():
            samples = agent.metrics()
            assert set(series(samples, "latency_between_nodes")) == mesh[node], samples
            total = probes_total(samples)
            assert total > totals[node], (node, "probing stopped during the outage")
            totals[node] = total
            assert agent.get("/readyz")[0] == 200  # the last peer set stays good
        checks += 1
    assert checks >= 4

    revision = etcd_put_node(cp, node_object(SPARE, cluster.lab.address(SPARE)))
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    restarted_at = time.time()
    cp.start()
    outage = time.monotonic() - stopped
    stored = cp.kubectl_json("get", "node", SPARE)
    assert stored["metadata"]["resourceVersion"] == str(revision)
    # What the agents get: a watch from any resourceVersion before the outage is too old for the
    # watch cache, which the restarted server filled from etcd at the newer revision.
    watch = cp.kubectl(
        "get", "--raw", f"/api/v1/nodes?watch=1&resourceVersion={version_before}&timeoutSeconds=2"
    )  # fmt: skip
    gone = json.loads(watch.stdout.splitlines()[0])
    assert gone["type"] == "ERROR" and gone["object"]["code"] == 410, gone
    assert gone["object"]["message"].startswith("too old resource version"), gone

    # Backoff doubles up to 30 s between attempts: the agents come back within that.
    with_spare = {node: peers | {SPARE} for node, peers in mesh.items()}
    cluster.wait_for_mesh(with_spare, timeout=45)
    back = time.time() - restarted_at
    noticed = max(event_time(a.events("api_unreachable")[0]) for a in agents.values())
    print(f"outage {outage:.1f} s (graceful stop took {stop_s:.1f} s, every agent had logged "
          f"api_unreachable {noticed - stopped_at:.1f} s after the stop began; probing checked "
          f"{checks} times; etcd revision {revision} written during it; a re-watch from "
          f"{version_before} after the restart: 410 {gone['object']['message']!r}); "
          f"all agents measure {SPARE} {back:.1f} s after the restart")  # fmt: skip

    for node, agent in agents.items():
        assert agent.proc.poll() is None and agent.proc.pid == pids[node]
        assert len(agent.events("started")) == 1  # the same process throughout
        unreachable = agent.events("api_unreachable")
        assert len(unreachable) == 1, unreachable  # once per outage, not per retry
        assert agent.events("api_recovered"), agent.stderr[-20:]
        expired = events_for(agent, "watch_expired", action="relist")
        assert len(expired) == 1, agent.stderr[-20:]
        assert event_time(expired[0]) >= restarted_at - 1
        after = agent.stderr[agent.stderr.index(expired[0]) :]
        relisted = [line for line in after if " event=nodes_listed" in line]
        assert relisted, after
        fields = event_fields(relisted[0])
        assert (fields["nodes"], fields["peers"]) == ("4", "3"), relisted[0]
        assert events_for(agent, "peer_added", peer=SPARE)
        assert not agent.events("peer_removed")  # no peer was dropped at any point
        print(f"{node}: " + " | ".join(
            f"{event_fields(line)['event']}@{event_time(line) - restarted_at:+.1f}s"
            for line in agent.stderr
            if any(f" event={e}" in line for e in (
                "api_unreachable", "api_error", "api_recovered", "watch_expired", "nodes_listed"))
        ))  # fmt: skip


# --- 6. scale -----------------------------------------------------------------------------------


SCALE_NODES = 1000
SCALE_LABEL = "monlat-test/scale"
FAKE_NET = "198.19.0.0/16"  # benchmarking range; routed into the lab switch, which drops it


def scale_address(i: int) -> str:
    return f"198.19.{i // 250}.{i % 250 + 1}"


def kubelet_like_node(i: int) -> dict[str, Any]:
    """A Node about the size a kubelet registers (conditions, capacity, node info, images)."""
    name = f"scale-{i:04d}"
    now = "2025-01-01T00:00:00Z"
    conditions = [
        {"type": kind, "status": "False", "reason": f"Kubelethas{kind}", "message": "ok",
         "lastHeartbeatTime": now, "lastTransitionTime": now}
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
          "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
          "lastTransitionTime": now}]  # fmt: skip
    resources = {"cpu": "8", "memory": "32863084Ki", "pods": "110",
                 "ephemeral-storage": "203056560Ki", "hugepages-2Mi": "0"}  # fmt: skip
    images = [
        {"names": [f"registry.example/team{j}/image{j}@sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}",
                   f"registry.example/team{j}/image{j}:v1.{j}.0"], "sizeBytes": 10_000_000 + j}
        for j in range(12)
    ]  # fmt: skip
    node = node_object(
        name,
        scale_address(i),
        labels={
            SCALE_LABEL: "true",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "m5.2xlarge",
            "topology.kubernetes.io/region": "eu-west-1",
            "topology.kubernetes.io/zone": f"eu-west-1{'abc'[i % 3]}",
        },
    )
    node["metadata"]["annotations"] = {
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    node["spec"] = {
        "podCIDR": f"10.{100 + i // 256}.{i % 256}.0/24",
        "providerID": f"aws:///{name}",
    }
    node["status"].update(
        conditions=conditions,
        capacity=resources,
        allocatable=resources,
        daemonEndpoints={"kubeletEndpoint": {"Port": 10250}},
        nodeInfo={
            "machineID": uuid.uuid4().hex, "systemUUID": str(uuid.uuid4()),
            "bootID": str(uuid.uuid4()), "kernelVersion": "6.1.0-28-cloud-amd64",
            "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.24",
            "kubeletVersion": "v1.32.13", "kubeProxyVersion": "v1.32.13",
            "operatingSystem": "linux", "architecture": "amd64",
        },
        images=images,
    )  # fmt: skip
    return node


def admin_core_api(cp: ControlPlane) -> Any:
    kubernetes = pytest.importorskip("kubernetes")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cp.kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = 16
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


@pytest.mark.timeout(420)
def test_one_agent_with_a_thousand_nodes(
    control_plane: ControlPlane, lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    cp = control_plane
    apply_agent_rbac(cp)
    core = admin_core_api(cp)
    lab = lab_factory(["big"])
    # The Nodes' addresses exist nowhere: routed into the lab switch, which drops them.
    lab.run("big", ["ip", "route", "add", FAKE_NET, "dev", "lab0"], check=True)
    kubeconfig = agent_kubeconfig(
        cp, tmp_path / "agent.kubeconfig", f"https://127.0.0.1:{RELAY_PORT}"
    )
    relay = ApiRelay(("127.0.0.1", cp.port))
    figures: dict[str, str] = {}
    agent: AgentProcess | None = None
    try:
        started = time.monotonic()
        bodies = [kubelet_like_node(i) for i in range(SCALE_NODES)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(core.create_node, bodies))
        figures["create 1,000 Nodes (8 client threads)"] = f"{time.monotonic() - started:.1f} s"
        listed = json.loads(core.list_node(_preload_content=False).data)
        figures["list size (JSON)"] = f"{len(json.dumps(listed)) / 1e6:.2f} MB"
        assert len(listed["items"]) == SCALE_NODES

        # The agent starts while its API server address is still closed: it is fully up (imports,
        # sockets, HTTP) but has listed nothing, which gives the baseline.
        agent = AgentProcess(
            ["--discovery", "kubernetes", "--node-name", "big", "--kubeconfig", str(kubeconfig),
             "--interval", "60s", "--timeout", "1s", "--log-measurements", "false",
             # Every peer: this measures discovery and publishing of 1,000 peers (the default
             # would probe 10 of them plus one per other zone).
             "--max-peers", "all",
             "--exporters", "prometheus", "--prometheus", f"127.0.0.1:{AGENT_PORT}"],
            port=AGENT_PORT,
            prefix=lab.exec_argv("big", []),
            connect=lambda: lab.socket("big"),
        )  # fmt: skip
        pid = agent.proc.pid
        wait_until(lambda: agent.events("api_unreachable"), 30, "the agent tries the API server")
        wait_until(lambda: agent.get("/healthz")[0] == 200, 15, "the agent serves /healthz")
        assert "monlat" in Path(f"/proc/{pid}/cmdline").read_text()  # `ip netns exec` exec'd it
        time.sleep(1)
        before = proc_memory_mib(pid)
        cpu_before = proc_cpu_seconds(pid)

        relay.listen(lab.socket("big"), ("127.0.0.1", RELAY_PORT), name="big")
        opened = time.time()

        def all_peers() -> bool:
            return gauge(agent.metrics(), "monlat_peers") == SCALE_NODES

        wait_until(all_peers, 60, f"the agent publishes {SCALE_NODES} peers", interval=0.05)
        published = time.time()
        first_contact = relay.stats.accept_times[0][1]
        nodes_listed = events_for(agent, "nodes_listed")
        assert len(nodes_listed) == 1
        fields = event_fields(nodes_listed[0])
        assert (fields["nodes"], fields["peers"]) == (str(SCALE_NODES), str(SCALE_NODES))
        added = agent.events("peer_added")
        assert len(added) == SCALE_NODES
        to_publish = event_time(added[-1]) - first_contact
        figures["time to first publish (first API connection -> last peer_added)"] = (
            f"{to_publish:.2f} s (listed after "
            f"{event_time(nodes_listed[0]) - first_contact:.2f} s; "
            f"/metrics showed {SCALE_NODES} peers {published - first_contact:.2f} s after first "
            f"contact, {published - opened:.2f} s after the API opened)"
        )
        assert to_publish < 30
        time.sleep(3)  # the watch is established; first probes are going out
        after_list = proc_memory_mib(pid)
        cpu_list = proc_cpu_seconds(pid) - cpu_before
        figures["RSS before list"] = f"{before['VmRSS']:.1f} MiB"
        figures["RSS after list + watch"] = (
            f"{after_list['VmRSS']:.1f} MiB (peak {after_list['VmHWM']:.1f} MiB)"
        )
        figures["CPU for list + publish + watch start"] = f"{cpu_list:.2f} s"

        idle_s = 10.0
        cpu_start = proc_cpu_seconds(pid)
        time.sleep(idle_s)
        cpu_idle = proc_cpu_seconds(pid) - cpu_start
        figures[f"CPU idle watch ({idle_s:.0f} s, probing 1,000 peers every 60 s)"] = (
            f"{cpu_idle:.2f} s ({100 * cpu_idle / idle_s:.1f}% of a core)"
        )

        # Steady churn: 100 Nodes' labels patched every second for 20 s (100 MODIFIED events/s),
        # none of which changes a peer.
        churn_s, per_tick = 20, 100
        patched = 0
        cpu_start = proc_cpu_seconds(pid)
        churn_started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for tick in range(churn_s):
                names = [
                    f"scale-{(tick * per_tick + k) % SCALE_NODES:04d}" for k in range(per_tick)
                ]
                body = {"metadata": {"labels": {"monlat-test/tick": str(tick)}}}
                list(pool.map(core.patch_node, names, [body] * len(names)))
                patched += len(names)
                pause = churn_started + tick + 1 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        churn_elapsed = time.monotonic() - churn_started
        time.sleep(1)  # the last events drain
        cpu_churn = proc_cpu_seconds(pid) - cpu_start
        during = proc_memory_mib(pid)
        figures["node label patches"] = f"{patched} in {churn_elapsed:.1f} s"
        figures["CPU during churn"] = (
            f"{cpu_churn:.2f} s over {churn_elapsed + 1:.1f} s "
            f"({100 * cpu_churn / (churn_elapsed + 1):.1f}% of a core; "
            f"{1000 * (cpu_churn - cpu_idle * (churn_elapsed + 1) / idle_s) / patched:.2f} ms "
            "per event above idle)"
        )
        figures["RSS after churn"] = f"{during['VmRSS']:.1f} MiB (peak {during['VmHWM']:.1f} MiB)"
        samples = agent.metrics()
        assert gauge(samples, "monlat_peers") == SCALE_NODES
        assert len(agent.events("peer_added")) == SCALE_NODES and not agent.events("peer_removed")
        assert len(events_for(agent, "nodes_listed")) == 1  # no relist
        assert probes_total(samples) > 0  # probes went out...
        assert series(samples, "latency_between_nodes") == {}  # ...and nothing answered them
        assert lab.stats()["unknown_dst"] > 0  # the switch dropped them

        # Mass departure: all 1,000 Nodes deleted in one call (1,000 DELETED events).
        cpu_start = proc_cpu_seconds(pid)
        deleting = time.monotonic()
        core.delete_collection_node(label_selector=f"{SCALE_LABEL}=true")
        wait_until(lambda: gauge(agent.metrics(), "monlat_peers") == 0, 60, "every peer leaves")
        figures["deletecollection of 1,000 Nodes -> 0 peers"] = (
            f"{time.monotonic() - deleting:.2f} s, CPU {proc_cpu_seconds(pid) - cpu_start:.2f} s"
        )
        assert len(agent.events("peer_removed")) == SCALE_NODES
        peak = proc_memory_mib(pid)["VmHWM"]
        figures["RSS peak over the whole run"] = f"{peak:.1f} MiB"
        assert peak < 150, figures
        assert after_list["VmRSS"] < 150 and during["VmRSS"] < 150, figures
        code = agent.stop()
        assert code == 0, agent.stderr[-20:]
    finally:
        print(f"\nscale: one agent, {SCALE_NODES} Nodes")
        for key, value in figures.items():
            print(f"  {key}: {value}")
        if agent is not None and agent.proc.poll() is None:
            agent.stop()
        relay.close()
        with contextlib.suppress(Exception):
            core.delete_collection_node(label_selector=f"{SCALE_LABEL}=true")
