"""deploy/overlays/network-policy on a cluster that enforces NetworkPolicy (kube-router's firewall
on every lab node, as Calico or Cilium would): the agents still write and are read, nothing else
in the cluster reaches the collector's OTLP ports, only the monitoring namespace its metrics."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

from tests.cluster.test_install import PAIRS, rollout
from tests.support.agent_process import parse_exposition
from tests.support.cluster.cluster import LabCluster
from tests.support.cluster.fixtures import NODES, installed
from tests.support.waiting import wait_until

# What the overlay asks a user to edit: the range the nodes' addresses (the host-network agents'
# sources) are in. The namespace Prometheus runs in stays the shipped `monitoring`.
NODE_RANGE = "198.18.0.0/24"
USER_EDIT = f"""patches:
  - target:
      kind: NetworkPolicy
      name: monlat-collector
    patch: |-
      - op: replace
        path: /spec/ingress/0/from/0/ipBlock/cidr
        value: {NODE_RANGE}
"""
PYTHON = "/opt/monlat/bin/python"  # the agent image's interpreter
# Run in a pod: "open" for a TCP connection that opens within 3 s, else what stopped it.
REACH = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(3)
        try:
            sock.connect((host, int(port)))
            out[target] = "open"
        except TimeoutError:
            out[target] = "timeout"
        except OSError as error:
            out[target] = error.strerror or type(error).__name__
print(json.dumps(out))
"""
OTLP_PORTS = (4317, 4318)
METRICS_PORTS = (9090, 8888)  # the matrix; the collector's own metrics


def reach(cluster: LabCluster, namespace: str, pod: str, targets: Sequence[str]) -> dict[str, str]:
    """What ``pod`` in ``namespace`` can open of ``targets`` (host:port)."""
    out = cluster.exec_in(namespace, pod, [PYTHON, "-c", REACH, *targets])
    found: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return found


def opened(cluster: LabCluster, namespace: str, pod: str, targets: Sequence[str]) -> set[str]:
    return {t for t, state in reach(cluster, namespace, pod, targets).items() if state == "open"}


def probes_by_source(cluster: LabCluster, node: str, address: str) -> dict[tuple[str, str], float]:
    """``monlat_probes_total`` summed by (from, network), read from the collector's :9090."""
    status, body = cluster.http_get(node, address, 9090, "/metrics")
    assert status == 200, body[:500]
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for name, labels, value in parse_exposition(body):
        if name == "monlat_probes_total":
            totals[(labels["from"], labels.get("network", "host"))] += value
    return dict(totals)


def test_the_network_policy_overlay_lets_in_the_agents_and_prometheus_only(
    lab_cluster: LabCluster,
) -> None:
    kustomization = lab_cluster.kustomization(
        "deploy/overlays/network-policy", "deploy/k8s/pod-network", extra=USER_EDIT
    )
    lab_cluster.kubectl("create", "namespace", "monitoring")
    try:
        with installed(lab_cluster, kustomization):
            rollout(
                lab_cluster,
                "daemonset/monlat-agent",
                "daemonset/monlat-agent-pod-network",
                "deployment/monlat",
            )
            (collector,) = lab_cluster.kubectl_json(
                "-n", "monlat", "get", "pods", "-l", "app.kubernetes.io/name=monlat"
            )["items"]
            home = collector["spec"]["nodeName"]
            pod_ip = collector["status"]["podIP"]
            service = lab_cluster.service_ip("monlat", "monlat")
            elsewhere = next(node for node in NODES if node != home)

            # Every agent, host and pod network, on every node, still writes: read from the
            # collector's own node (a node reaches its local pods, as the kubelet's probes do).
            sources = {(node, network) for node in NODES for network in ("host", "pod")}
            before = wait_until(
                lambda: (
                    (found := probes_by_source(lab_cluster, home, service))
                    and set(found) == sources and found
                ),
                timeout=120, what="probes from all 3 nodes, host and pod network", interval=1,
                ignore=(OSError,),
            )  # fmt: skip
            wait_until(
                lambda: all(
                    probes_by_source(lab_cluster, home, service)[source] > before[source]
                    for source in sources
                ),
                timeout=60, what="every agent's next push through the policy", interval=2,
                ignore=(OSError,),
            )  # fmt: skip
            status, body = lab_cluster.http_get(home, service, 9090, "/metrics")
            assert status == 200, body[:500]
            pairs = {
                (labels["from"], labels["to"], labels.get("network", "host"))
                for name, labels, _ in parse_exposition(body)
                if name == "latency_between_nodes"
            }
            assert pairs == {(a, b, n) for a, b in PAIRS for n in ("host", "pod")}, pairs

            # The rest of the cluster: a pod in `default` reaches none of the collector's ports,
            # by pod IP or Service; one in Prometheus' namespace the metrics ports only. Both
            # live on another node, as workloads do: an engine puts a pod in its sets once it
            # has seen it, so a pod that lives only for one connection would race its own rule.
            ports = (*OTLP_PORTS, *METRICS_PORTS)
            targets = [f"{pod_ip}:{p}" for p in ports] + [f"{service}:{p}" for p in ports]
            # The Service carries OTLP and 9090; the collector's own metrics are read at the pod.
            readable = {f"{pod_ip}:{p}" for p in METRICS_PORTS} | {f"{service}:9090"}
            with (
                lab_cluster.pod("default", "outsider", elsewhere),
                lab_cluster.pod("monitoring", "prometheus", elsewhere),
            ):
                wait_until(
                    lambda: opened(lab_cluster, "monitoring", "prometheus", targets) == readable,
                    timeout=60, what=f"a pod in monitoring reaching {sorted(readable)} and no more",
                    interval=1,
                )  # fmt: skip
                outsider = reach(lab_cluster, "default", "outsider", targets)
                assert set(outsider.values()) <= {"timeout", "Connection refused"}, outsider

                # The pod-network agents answer each other (the pairs above) and no other pod.
                agent_ips = [
                    pod["status"]["podIP"]
                    for pod in lab_cluster.kubectl_json(
                        "-n", "monlat", "get", "pods",
                        "-l", "app.kubernetes.io/name=monlat-agent-pod-network",
                    )["items"]
                ]  # fmt: skip
                health = [f"{ip}:9464" for ip in agent_ips]
                assert not opened(lab_cluster, "default", "outsider", health), health

                # And it is the policy that closes the door: without it the same pod gets in.
                lab_cluster.kubectl("-n", "monlat", "delete", "networkpolicy", "monlat-collector")
                wait_until(
                    lambda: f"{pod_ip}:4318" in opened(lab_cluster, "default", "outsider", targets),
                    timeout=60, what="the OTLP port open to default once the policy is gone",
                    interval=1,
                )  # fmt: skip
                everything = {f"{pod_ip}:{p}" for p in ports} | {
                    f"{service}:{p}" for p in (*OTLP_PORTS, 9090)
                }
                assert opened(lab_cluster, "default", "outsider", targets) == everything
    finally:
        lab_cluster.kubectl("delete", "namespace", "monitoring", "--wait=false", check=False)
