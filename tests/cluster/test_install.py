"""`kubectl apply -k` of the shipped manifests on a real three-node cluster (kubelets, containerd,
kube-proxy, CoreDNS in lab namespaces; see tests/support/cluster): what a user's install does."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

from tests.support.agent_process import http_post, parse_exposition
from tests.support.cluster.cluster import LabCluster
from tests.support.cluster.fixtures import NODES, installed
from tests.support.cluster.otlp_sink import OtlpSink
from tests.support.collector import forged_push_body
from tests.support.lab import netns as ns
from tests.support.ports import free_port
from tests.support.prometheus_server import PrometheusServer
from tests.support.waiting import wait_until

PAIRS = {(a, b) for a in NODES for b in NODES if a != b}
AGENT_PORT = 9464  # the agents' health listener (deploy/k8s/agents.yaml)
# The agents' own lines, as the original README shows them.
SEED_LINE = re.compile(r'^latency_between_nodes\{from="(n\d)",to="(n\d)"\} \d+\.\d{1,3}$', re.M)


def rollout(cluster: LabCluster, *objects: str, timeout: int = 180) -> None:
    for name in objects:
        cluster.kubectl(
            "-n", "monlat", "rollout", "status", name, f"--timeout={timeout}s",
            timeout=timeout + 20,
        )  # fmt: skip


def latency(cluster: LabCluster, node: str, address: str, port: int = 9090) -> dict[Any, float]:
    """``latency_between_nodes`` as the collector serves it, read through its Service."""
    status, body = cluster.http_get(node, address, port, "/metrics")
    assert status == 200, body[:500]
    return {
        (labels["from"], labels["to"], labels.get("network", "host")): value
        for name, labels, value in parse_exposition(body)
        if name == "latency_between_nodes"
    }


def tolerance_ms(cluster: LabCluster) -> float:
    """RTTs are the emulated ones plus the switch's own delivery delay (its lateness, counted)."""
    lateness_ms = cluster.lab.stats()["lateness_us"]["max"] / 1000
    return 1.0 + 2 * lateness_ms


def assert_pairs_match_links(cluster: LabCluster, pairs: dict[Any, float]) -> None:
    for (source, target, *_), value in pairs.items():
        expected = cluster.lab.expected_rtt_ms(source, target)
        assert expected - 0.1 <= value <= expected + tolerance_ms(cluster), (
            f"{source}->{target}: {value} ms, emulated {expected} ms"
        )


def every_pair(cluster: LabCluster, timeout: float = 90) -> dict[Any, float]:
    """Wait until the collector serves all 6 ordered pairs, through its Service, from n1."""
    service = cluster.service_ip("monlat", "monlat")
    pairs: dict[Any, float] = wait_until(
        lambda: (
            (found := latency(cluster, "n1", service)) and {k[:2] for k in found} == PAIRS and found
        ),
        timeout=timeout,
        what="all 6 ordered pairs on the collector's :9090",
        interval=1,
        ignore=(OSError,),
    )
    return pairs


def agent_pods(cluster: LabCluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", "monlat", "get", "pods", "-l", "app.kubernetes.io/name=monlat-agent"
    )["items"]
    return pods


def set_ping_group_range(cluster: LabCluster, value: str) -> None:
    for node in NODES:
        ns.write_sysctl(cluster.lab.netns(node), "net.ipv4.ping_group_range", value)


def test_default_install_measures_every_pair_through_the_collector(
    lab_cluster: LabCluster, tmp_path: Path
) -> None:
    with installed(lab_cluster, lab_cluster.kustomization("deploy/k8s")):
        assert_the_default_install_works(lab_cluster, tmp_path)


def assert_health_listener_on_the_node_address_only(lab_cluster: LabCluster) -> None:
    """Ready pods mean the kubelet's probes reach the agents at the node address; nothing else
    of the node's (here: its loopback) answers on the agents' port."""
    for node in NODES:
        with lab_cluster.connect(node)() as sock:
            sock.settimeout(5)
            sock.connect((lab_cluster.lab.address(node), AGENT_PORT))
        with lab_cluster.connect(node)() as sock:
            sock.settimeout(5)
            assert sock.connect_ex(("127.0.0.1", AGENT_PORT)) == errno.ECONNREFUSED, node


def assert_only_the_agents_write(lab_cluster: LabCluster, service: str) -> None:
    """The agents push with the install's generated token; a push from elsewhere in the cluster
    (here node n3's own network, outside any pod) without it or with another is refused."""
    secret = lab_cluster.kubectl_json("-n", "monlat", "get", "secret", "monlat-ingest-token")
    assert secret["data"].get("token"), "the token controller filled the ingest Secret"
    body = forged_push_body()
    for headers in ({}, {"Authorization": "Bearer forged"}):
        status = http_post(
            lab_cluster.connect("n3"), service, 4318, "/v1/metrics", body,
            {"Content-Type": "application/x-protobuf", **headers},
        )  # fmt: skip
        assert status == 401, (headers, status)
    assert set(latency(lab_cluster, "n1", service)) == set(every_pair(lab_cluster))


def assert_the_default_install_works(lab_cluster: LabCluster, tmp_path: Path) -> None:
    """The first scenario, for any way of installing the defaults (kustomize, Helm)."""
    rollout(lab_cluster, "daemonset/monlat-agent", "deployment/monlat")
    daemonset = lab_cluster.kubectl_json("-n", "monlat", "get", "daemonset", "monlat-agent")
    assert daemonset["status"]["numberReady"] == len(NODES), daemonset["status"]
    assert_health_listener_on_the_node_address_only(lab_cluster)

    service = lab_cluster.service_ip("monlat", "monlat")
    pairs = every_pair(lab_cluster)
    assert len(pairs) == 6, pairs
    assert_pairs_match_links(lab_cluster, pairs)
    assert_only_the_agents_write(lab_cluster, service)

    # The Debian Prometheus, in node n1, scrapes the collector through its Service.
    prometheus = PrometheusServer(
        tmp_path,
        f"{service}:9090",
        port=free_port(),
        prefix=("nsenter", f"--net=/var/run/netns/{lab_cluster.lab.netns('n1')}", "--"),
        connect=lab_cluster.connect("n1"),
    )
    try:
        scraped = wait_until(
            lambda: (rows := prometheus.query("latency_between_nodes")) and len(rows) == 6 and rows,
            timeout=60,
            what="Prometheus holding 6 latency_between_nodes series",
            interval=1,
        )
    finally:
        prometheus.stop()
    assert {(r["metric"]["from"], r["metric"]["to"]) for r in scraped} == PAIRS  # type: ignore[index]

    # Every agent prints the original's lines, for each of its peers.
    for pod in agent_pods(lab_cluster):
        node = pod["spec"]["nodeName"]
        logs = lab_cluster.kubectl("-n", "monlat", "logs", pod["metadata"]["name"]).stdout
        lines = {(m.group(1), m.group(2)) for m in SEED_LINE.finditer(logs)}
        assert lines == {(node, peer) for peer in NODES if peer != node}, logs[-2000:]
        assert "event=icmp_socket family=ipv4 kind=dgram" in logs
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_the_socket_choice_on_nodes_with_the_kernel_default_ping_group_range(
    lab_cluster: LabCluster,
) -> None:
    """Default DaemonSet on "1 0" nodes: up, unready, saying why, no restarts; it starts by
    itself once the range is widened; the NET_RAW overlay measures on "1 0" nodes."""
    set_ping_group_range(lab_cluster, "1 0")
    try:
        with installed(lab_cluster, lab_cluster.kustomization("deploy/k8s")):
            rollout(lab_cluster, "deployment/monlat")

            def waiting_pods() -> list[dict[str, Any]]:
                pods = agent_pods(lab_cluster)
                logs = [
                    lab_cluster.kubectl("-n", "monlat", "logs", p["metadata"]["name"],
                                        check=False).stdout
                    for p in pods
                ]  # fmt: skip
                return (
                    pods
                    if len(pods) == 3
                    and all("event=icmp_socket_unavailable" in log for log in logs)
                    else []
                )

            pods = wait_until(waiting_pods, timeout=120, what="3 agents saying why", interval=2)
            log = lab_cluster.kubectl("-n", "monlat", "logs", pods[0]["metadata"]["name"]).stdout
            assert "level=error event=icmp_socket_unavailable" in log
            assert "net.ipv4.ping_group_range is 1 0" in log and "CAP_NET_RAW" in log
            assert "deploy/overlays/net-raw" in log
            # Running, alive, not ready, never restarted: no crash loop hides the reason.
            for pod in agent_pods(lab_cluster):
                status = pod["status"]["containerStatuses"][0]
                assert "running" in status["state"], status
                assert status["ready"] is False and status["restartCount"] == 0, status
            status = lab_cluster.kubectl_json("-n", "monlat", "get", "daemonset", "monlat-agent")
            assert status["status"].get("numberReady", 0) == 0

            # The node allows the datagram socket: the same pods start probing, no restart.
            set_ping_group_range(lab_cluster, "0 2147483647")
            every_pair(lab_cluster, timeout=150)
            rollout(lab_cluster, "daemonset/monlat-agent")
            assert all(
                p["status"]["containerStatuses"][0]["restartCount"] == 0
                for p in agent_pods(lab_cluster)
            )

        set_ping_group_range(lab_cluster, "1 0")
        with installed(lab_cluster, lab_cluster.kustomization("deploy/overlays/net-raw")):
            rollout(lab_cluster, "daemonset/monlat-agent", "deployment/monlat")
            assert_pairs_match_links(lab_cluster, every_pair(lab_cluster))
            for pod in agent_pods(lab_cluster):
                log = lab_cluster.kubectl("-n", "monlat", "logs", pod["metadata"]["name"]).stdout
                assert "event=icmp_socket family=ipv4 kind=raw" in log, log[-1500:]
    finally:
        set_ping_group_range(lab_cluster, "0 2147483647")


def test_pod_network_agents_probe_pod_addresses_under_restricted_pod_security(
    lab_cluster: LabCluster,
) -> None:
    """deploy/overlays/pod-network: agents in pods (CNI addresses), their own sysctl accepted by
    the kubelet, series network="pod", and pods that Pod Security "restricted" admits."""
    with installed(lab_cluster, lab_cluster.kustomization("deploy/overlays/pod-network")):
        rollout(
            lab_cluster,
            "daemonset/monlat-agent",
            "daemonset/monlat-agent-pod-network",
            "deployment/monlat",
        )
        pods = lab_cluster.kubectl_json(
            "-n", "monlat", "get", "pods", "-l", "app.kubernetes.io/name=monlat-agent-pod-network"
        )["items"]
        assert len(pods) == 3
        for pod in pods:
            index = NODES.index(pod["spec"]["nodeName"])
            assert pod["status"]["podIP"].startswith(f"10.244.{index + 1}."), pod["status"]
            log = lab_cluster.kubectl("-n", "monlat", "logs", pod["metadata"]["name"]).stdout
            # The pod's own range, set by the kubelet from the manifest's sysctl.
            assert "ping_group_range 65532 65532 includes group 65532" in log, log[-1500:]

        service = lab_cluster.service_ip("monlat", "monlat")
        pairs = wait_until(
            lambda: (
                found := {
                    k[:2]: v for k, v in latency(lab_cluster, "n2", service).items()
                    if k[2] == "pod"
                }
            ) and set(found) == PAIRS and found,
            timeout=120,
            what='6 pairs with network="pod"',
            interval=1,
            ignore=(OSError,),
        )  # fmt: skip
        assert_pairs_match_links(lab_cluster, pairs)

        # What "restricted" would refuse among the running pods: the API server's own check.
        proc = lab_cluster.kubectl(
            "label", "--dry-run=server", "--overwrite", "namespace", "monlat",
            "pod-security.kubernetes.io/enforce=restricted",
        )  # fmt: skip
        violations = proc.stderr
        assert "monlat-agent-pod-network" not in violations, violations
        assert "monlat-agent-" in violations  # the host-network agents are, as documented


def test_the_collector_forwards_to_an_otlp_backend(lab_cluster: LabCluster) -> None:
    """deploy/overlays/otlp-backend with the Secret the README describes, to a sink on n3."""
    sink = OtlpSink(lab_cluster, "n3", port=4318)
    try:
        lab_cluster.kubectl("create", "namespace", "monlat")
        lab_cluster.kubectl(
            "-n", "monlat", "create", "secret", "generic", "monlat-backend",
            f"--from-literal=OTLP_BACKEND_ENDPOINT=http://{lab_cluster.lab.address('n3')}:4318",
            "--from-literal=OTLP_BACKEND_AUTH_HEADER=Bearer lab-token",
        )  # fmt: skip
        with installed(lab_cluster, lab_cluster.kustomization("deploy/overlays/otlp-backend")):
            rollout(lab_cluster, "daemonset/monlat-agent", "deployment/monlat")
            every_pair(lab_cluster)
            forwarded = wait_until(
                lambda: {k for k in sink.latency_pairs()} == PAIRS and sink.latency_pairs(),
                timeout=90,
                what="6 pairs forwarded to the OTLP sink",
                interval=1,
            )
            assert len(forwarded) == 6
            assert sink.authorizations == {"Bearer lab-token"}
    finally:
        sink.close()
        lab_cluster.kubectl("delete", "namespace", "monlat", "--ignore-not-found", check=False)
