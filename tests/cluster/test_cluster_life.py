"""The life of a cluster with monlat installed, on real kubelets: a node leaves and joins, the
collector pod is replaced, the DaemonSet rolls to a new image. Figures are printed (``-s``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.test_install import PAIRS, agent_pods, every_pair, latency, rollout
from tests.support import image as images
from tests.support.cluster.cluster import LabCluster
from tests.support.cluster.fixtures import NODES, installed
from tests.support.waiting import wait_until

EXPORT_INTERVAL_S = 15.0  # OTEL_METRIC_EXPORT_INTERVAL in deploy/k8s/agents.yaml
PROBE_INTERVAL_S = 1.0
METRIC_EXPIRATION_S = 60.0  # the collector's prometheus exporter (deploy/otel-collector)
SLACK_S = 8.0  # pod start, kube-proxy's rule sync and one poll on a shared 2-core machine


@pytest.fixture(name="monlat")
def monlat_fixture(lab_cluster: LabCluster) -> Iterator[LabCluster]:
    with installed(lab_cluster, lab_cluster.kustomization("deploy/k8s")):
        rollout(lab_cluster, "daemonset/monlat-agent", "deployment/monlat")
        every_pair(lab_cluster)
        yield lab_cluster


def pairs_now(cluster: LabCluster) -> dict[Any, float]:
    try:
        return {k[:2]: v for k, v in latency(cluster, "n1", collector_ip(cluster)).items()}
    except OSError:
        return {}


def collector_ip(cluster: LabCluster) -> str:
    return cluster.service_ip("monlat", "monlat")


# A DaemonSet's new pod has no spec.nodeName until the scheduler binds it, hence .get below.
def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def test_a_node_leaves_and_another_joins(monlat: LabCluster) -> None:
    cluster = monlat
    cluster.kubectl("cordon", "n3")
    cluster.kubectl(
        "drain", "n3", "--ignore-daemonsets", "--delete-emptydir-data", "--force",
        "--timeout=120s", timeout=180,
    )  # fmt: skip
    rollout(cluster, "deployment/monlat")  # the collector, if it was on n3, runs elsewhere now
    cluster.power_off("n3")
    cluster.kubectl("delete", "node", "n3", timeout=60)
    gone = time.monotonic()

    remaining = {(a, b) for a, b in PAIRS if "n3" not in (a, b)}
    wait_until(
        lambda: set(pairs_now(cluster)) == remaining,
        timeout=METRIC_EXPIRATION_S + EXPORT_INTERVAL_S + 2 * SLACK_S,
        what="only n1<->n2 left once n3's series expired",
        interval=1,
    )
    print(
        f"\nn3 deleted: its 4 pairs gone from the collector after {time.monotonic() - gone:.1f} s"
    )

    cluster.add_node("n3")
    agent_on_n3 = wait_until(
        lambda: next(
            (p for p in agent_pods(cluster) if p["spec"].get("nodeName") == "n3" and pod_ready(p)),
            None,
        ),
        timeout=120,
        what="an agent Ready on the new n3",
        interval=1,
    )
    ready = time.monotonic()
    every_pair(cluster, timeout=EXPORT_INTERVAL_S + PROBE_INTERVAL_S + SLACK_S)
    took = time.monotonic() - ready
    print(f"n3 joined: all 6 pairs {took:.1f} s after its agent was Ready")
    assert agent_on_n3["status"]["containerStatuses"][0]["restartCount"] == 0


def test_the_collector_pod_is_replaced(monlat: LabCluster) -> None:
    cluster = monlat
    [old] = cluster.kubectl_json(
        "-n", "monlat", "get", "pods", "-l", "app.kubernetes.io/name=monlat"
    )["items"]
    cluster.kubectl("-n", "monlat", "delete", "pod", old["metadata"]["name"], "--wait=false")

    def new_collector() -> dict[str, Any] | None:
        pods = cluster.kubectl_json(
            "-n", "monlat", "get", "pods", "-l", "app.kubernetes.io/name=monlat"
        )["items"]
        return next(
            (p for p in pods if p["metadata"]["uid"] != old["metadata"]["uid"] and pod_ready(p)),
            None,
        )

    wait_until(new_collector, timeout=120, what="a new collector pod Ready", interval=1)
    ready = time.monotonic()
    every_pair(cluster, timeout=2 * EXPORT_INTERVAL_S + SLACK_S)
    print(f"\ncollector replaced: all 6 pairs {time.monotonic() - ready:.1f} s after it was Ready")
    for pod in agent_pods(cluster):
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_a_rolling_update_of_the_agents_leaves_no_pair_without_data_for_long(
    monlat: LabCluster,
) -> None:
    cluster = monlat
    name, _, tag = cluster.images.agent.rpartition(":")
    new_ref = f"{name}:{tag}-next"
    images.podman("tag", cluster.images.agent, new_ref)
    cluster.import_image(new_ref)
    old_uids = {p["metadata"]["uid"] for p in agent_pods(cluster)}

    cluster.kubectl(
        "apply", "-k", str(cluster.kustomization("deploy/k8s", agent_tag=f"{tag}-next"))
    )
    started = time.monotonic()
    last_change: dict[Any, float] = {pair: started for pair in PAIRS}
    last_value: dict[Any, float] = pairs_now(cluster)
    worst_gap: dict[Any, float] = {pair: 0.0 for pair in PAIRS}
    replaced: dict[str, float] = {}  # node -> when its new agent became Ready
    step_started: dict[str, float] = {}
    while len(replaced) < len(NODES):
        assert time.monotonic() - started < 300, f"rolling update not done: {replaced}"
        now = time.monotonic()
        for pair, value in pairs_now(cluster).items():
            if value != last_value.get(pair):
                worst_gap[pair] = max(worst_gap[pair], now - last_change[pair])
                last_change[pair], last_value[pair] = now, value
        pods = agent_pods(cluster)
        for node in NODES:
            old = [p for p in pods if p["spec"].get("nodeName") == node
                   and p["metadata"]["uid"] in old_uids]  # fmt: skip
            if not old or old[0]["metadata"].get("deletionTimestamp"):
                step_started.setdefault(node, now)  # this node's step began
            if any(p["spec"].get("nodeName") == node and p["metadata"]["uid"] not in old_uids
                   and pod_ready(p) for p in pods):  # fmt: skip
                replaced.setdefault(node, now)
        time.sleep(1)
    # Every pair's value changes again after the last step.
    deadline = time.monotonic() + EXPORT_INTERVAL_S + SLACK_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        for pair, value in pairs_now(cluster).items():
            if value != last_value.get(pair):
                worst_gap[pair] = max(worst_gap[pair], now - last_change[pair])
                last_change[pair], last_value[pair] = now, value
        time.sleep(1)
    for pair in PAIRS:
        worst_gap[pair] = max(worst_gap[pair], time.monotonic() - last_change[pair])

    step = max(replaced[n] - step_started[n] for n in NODES)
    bound = step + EXPORT_INTERVAL_S + SLACK_S
    print(
        f"\nrolling update: slowest step {step:.1f} s, longest pair without new data "
        f"{max(worst_gap.values()):.1f} s (bound {bound:.1f} s)"
    )
    assert max(worst_gap.values()) <= bound, worst_gap
    for pod in agent_pods(cluster):
        assert pod["spec"]["containers"][0]["image"] == new_ref
