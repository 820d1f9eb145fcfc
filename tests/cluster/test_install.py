"""`kubectl apply -k` of the shipped manifests on a real three-node cluster (kubelets, containerd,
kube-proxy, CoreDNS in lab namespaces; see tests/support/cluster): what a user's install does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.agent_process import parse_exposition
from tests.support.cluster.cluster import LabCluster
from tests.support.cluster.fixtures import NODES, installed
from tests.support.ports import free_port
from tests.support.prometheus_server import PrometheusServer
from tests.support.waiting import wait_until

PAIRS = {(a, b) for a in NODES for b in NODES if a != b}
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


def test_default_install_measures_every_pair_through_the_collector(
    lab_cluster: LabCluster, tmp_path: Path
) -> None:
    with installed(lab_cluster, lab_cluster.kustomization("deploy/k8s")):
        rollout(lab_cluster, "daemonset/monlat-agent", "deployment/monlat")
        daemonset = lab_cluster.kubectl_json("-n", "monlat", "get", "daemonset", "monlat-agent")
        assert daemonset["status"]["numberReady"] == len(NODES), daemonset["status"]

        service = lab_cluster.service_ip("monlat", "monlat")
        pairs = wait_until(
            lambda: (
                (found := latency(lab_cluster, "n1", service))
                and {k[:2] for k in found} == PAIRS
                and found
            ),
            timeout=90,
            what="all 6 ordered pairs on the collector's :9090",
            interval=1,
            ignore=(OSError,),
        )
        assert len(pairs) == 6, pairs
        assert_pairs_match_links(lab_cluster, pairs)

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
                lambda: (
                    (rows := prometheus.query("latency_between_nodes")) and len(rows) == 6 and rows
                ),
                timeout=60,
                what="Prometheus holding 6 latency_between_nodes series",
                interval=1,
            )
        finally:
            prometheus.stop()
        assert {(r["metric"]["from"], r["metric"]["to"]) for r in scraped} == PAIRS  # type: ignore[index]

        # Every agent prints the original's lines, for each of its peers.
        for pod in lab_cluster.kubectl_json(
            "-n", "monlat", "get", "pods", "-l", "app.kubernetes.io/name=monlat-agent"
        )["items"]:
            node = pod["spec"]["nodeName"]
            logs = lab_cluster.kubectl("-n", "monlat", "logs", pod["metadata"]["name"]).stdout
            lines = {(m.group(1), m.group(2)) for m in SEED_LINE.finditer(logs)}
            assert lines == {(node, peer) for peer in NODES if peer != node}, logs[-2000:]
            assert "event=icmp_socket family=ipv4 kind=dgram" in logs
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
