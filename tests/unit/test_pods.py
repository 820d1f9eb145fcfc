"""Pod-network mode's pure part: which agent Pod stands for a node, and which of its IPs."""

from __future__ import annotations

import time
from typing import Any

from monlat.agent.config import IpFamily
from monlat.agent.discovery import Peer
from monlat.agent.discovery.nodes import AddressPolicy
from monlat.agent.discovery.pods import PodCache, pod_state

POLICY = AddressPolicy(("PodIP",), IpFamily.IPV4)
DUAL = AddressPolicy(("PodIP",), None, dual_stack=True)


def pod(
    name: str,
    node: str,
    *ips: str,
    phase: str = "Running",
    created: str = "2026-11-25T10:00:00Z",
    deleting: bool = False,
    host_network: bool = False,
    ready: bool | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "monlat",
        "creationTimestamp": created,
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-25T11:00:00Z"
    status: dict[str, Any] = {"phase": phase}
    if ready is None:
        ready = phase == "Running"
    status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    spec: dict[str, Any] = {"nodeName": node} if node else {}
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": metadata, "spec": spec, "status": status}


def test_peers_are_named_after_the_node_and_probed_at_the_pod_ip() -> None:
    cache = PodCache("n1", POLICY)
    cache.replace([pod("a1", "n1", "10.244.1.5"), pod("a2", "n2", "10.244.2.7")])
    assert cache.peers() == {"n2": Peer("n2", "10.244.2.7")}


def test_pods_that_cannot_be_probed_are_left_out() -> None:
    cache = PodCache("n1", POLICY)
    cache.replace(
        [
            pod("pending", "n2", phase="Pending"),
            pod("unscheduled", ""),
            pod("no-ip", "n3", phase="Running"),
            pod("terminating", "n4", "10.244.4.2", deleting=True),
            pod("host", "n5", "192.0.2.5", host_network=True),
            pod("ok", "n6", "10.244.6.2"),
        ]
    )
    assert list(cache.peers()) == ["n6"]
    summary = cache.summary()
    assert summary["host_network_ignored"] == "monlat/host"
    assert (
        summary["not_ready"] == "monlat/no-ip,monlat/pending,monlat/terminating,monlat/unscheduled"
    )


def test_a_rollout_swaps_the_pod_of_a_node_without_a_gap() -> None:
    cache = PodCache("n1", POLICY)
    cache.replace([pod("old", "n2", "10.244.2.7", created="2026-11-25T10:00:00Z")])
    # The new pod appears first (surge); until it runs with an IP the old one stays the peer.
    assert not cache.apply(
        "ADDED", pod("new", "n2", phase="Pending", created="2026-11-25T12:00:00Z")
    )
    assert cache.peers() == {"n2": Peer("n2", "10.244.2.7")}
    assert cache.apply("MODIFIED", pod("new", "n2", "10.244.2.9", created="2026-11-25T12:00:00Z"))
    assert cache.peers() == {"n2": Peer("n2", "10.244.2.9")}
    assert not cache.apply("MODIFIED", pod("old", "n2", "10.244.2.7", deleting=True))
    assert not cache.apply("DELETED", pod("old", "n2", "10.244.2.7"))
    assert cache.apply("DELETED", pod("new", "n2", "10.244.2.9"))
    assert cache.peers() == {}


def test_events_that_do_not_move_a_peer_report_no_change() -> None:
    cache = PodCache("n1", POLICY)
    cache.replace([pod("a2", "n2", "10.244.2.7")])
    assert not cache.apply("MODIFIED", pod("a2", "n2", "10.244.2.7"))
    assert not cache.apply("ADDED", pod("a1", "n1", "10.244.1.5"))  # this agent's own pod
    assert not cache.apply("BOOKMARK", pod("a2", "n2", "10.244.2.7"))


def test_dual_stack_pods_give_one_peer_per_family() -> None:
    cache = PodCache("n1", DUAL)
    cache.replace([pod("a2", "n2", "10.244.2.7", "fd00:10:244:2::7")])
    assert cache.peers() == {
        "n2/ipv4": Peer("n2", "10.244.2.7", family="ipv4"),
        "n2/ipv6": Peer("n2", "fd00:10:244:2::7", family="ipv6"),
    }


def test_family_preference_and_the_podip_fallback() -> None:
    v6_first = pod("a2", "n2", "fd00::7", "10.244.2.7")
    assert pod_state(v6_first, POLICY).peers == (Peer("n2", "10.244.2.7"),)
    assert pod_state(v6_first, AddressPolicy(("PodIP",), IpFamily.IPV6)).peers == (
        Peer("n2", "fd00::7"),
    )
    legacy = pod("a3", "n3")
    legacy["status"]["podIP"] = "10.244.3.3"
    assert pod_state(legacy, POLICY).peers == (Peer("n3", "10.244.3.3"),)


def test_thousands_of_events_stay_cheap() -> None:
    """Each event re-decides only its node: a rollout over 5,000 nodes is linear."""
    cache = PodCache("n0", POLICY)
    cache.replace([pod(f"a{i}", f"n{i}", f"10.{i // 256}.{i % 256}.1") for i in range(5000)])
    started = time.process_time()
    for i in range(5000):
        cache.apply("MODIFIED", pod(f"a{i}", f"n{i}", f"10.{i // 256}.{i % 256}.2"))
    elapsed = time.process_time() - started
    assert len(cache.peers()) == 4999
    assert all(peer.address.endswith(".2") for peer in cache.peers().values())
    print(f"\n5,000 pod events: {elapsed * 1000:.0f} ms CPU")


def test_not_ready_pods_are_skipped_unless_told_otherwise() -> None:
    """A pod on a NotReady node is marked not ready by the node lifecycle controller: like the
    host agents' Nodes, it leaves the peer set (and comes back when ready again)."""
    pods = [pod("a2", "n2", "10.244.2.7", ready=False), pod("a3", "n3", "10.244.3.7")]
    cache = PodCache("n1", POLICY)
    cache.replace(pods)
    assert list(cache.peers()) == ["n3"]
    assert cache.apply("MODIFIED", pod("a2", "n2", "10.244.2.7", ready=True))
    assert sorted(cache.peers()) == ["n2", "n3"]
    keep = PodCache("n1", POLICY, skip_not_ready=False)
    keep.replace(pods)
    assert sorted(keep.peers()) == ["n2", "n3"]
