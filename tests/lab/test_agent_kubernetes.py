"""The agent process with Kubernetes discovery against the list/watch stand-in server:
readiness waits for the first list, watch events reach the probes within seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcess, series
from tests.support.fake_apiserver import FakeApiServer
from tests.support.ports import free_ports
from tests.support.waiting import wait_until


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, Path]]:
    server = FakeApiServer()
    server.start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield server, kubeconfig
    finally:
        server.stop()


def test_ready_after_first_list_and_follows_node_churn(
    api: tuple[FakeApiServer, Path],
) -> None:
    server, kubeconfig = api
    server.add_node("me", "127.0.0.9")
    server.add_node("a", "127.0.0.2")
    server.stop()  # the API server is down when the agent starts
    port = free_ports(1)[0]
    agent = AgentProcess(
        ["--discovery", "kubernetes", "--node-name", "me", "--kubeconfig", str(kubeconfig),
         "--interval", "200ms", "--prometheus", f"127.0.0.1:{port}"],
        port=port,
    )  # fmt: skip
    try:
        wait_until(lambda: agent.get("/healthz")[0] == 200, 15, ignore=(OSError,))
        assert agent.get("/readyz")[0] == 503  # no peer set yet
        server.start()
        agent.wait_ready()
        agent.wait_for(lambda s: set(series(s, "latency_between_nodes")) == {"a"}, 10)

        server.add_node("b", "::1")
        added = time.monotonic()
        agent.wait_for(lambda s: "b" in series(s, "latency_between_nodes"), 5)
        assert time.monotonic() - added < 2.5

        server.delete_node("a")
        agent.wait_for(lambda s: set(series(s, "latency_between_nodes")) == {"b"}, 5)
        assert "a" not in series(agent.metrics(), "monlat_probes_total")

        server.stop()  # an outage: the last peers are kept and probed
        time.sleep(2)
        before = sum(v for n, _, v in agent.metrics() if n == "monlat_probes_total")
        time.sleep(1)
        assert sum(v for n, _, v in agent.metrics() if n == "monlat_probes_total") > before
        assert set(series(agent.metrics(), "latency_between_nodes")) == {"b"}
        assert agent.get("/readyz")[0] == 200
        server.start()
        server.add_node("c", "127.0.0.3")
        agent.wait_for(lambda s: set(series(s, "latency_between_nodes")) == {"b", "c"}, 15)
    finally:
        assert agent.stop() == 0
    assert len(agent.events("api_unreachable")) >= 1
    assert agent.events("api_recovered")
    assert [line for line in agent.events("peer_removed") if "peer=a" in line]


def test_scale_controls_zones_and_cordoned_readiness(api: tuple[FakeApiServer, Path]) -> None:
    server, kubeconfig = api
    zone = "topology.kubernetes.io/zone"
    server.add_node("me", "127.0.0.9", labels={zone: "z1"})
    for name, address, node_zone in [
        ("a", "127.0.0.2", "z1"),
        ("b", "127.0.0.3", "z2"),
        ("c", "127.0.0.4", "z2"),
        ("d", "127.0.0.5", "z1"),
    ]:
        server.add_node(name, address, labels={zone: node_zone})  # fmt: skip
    server.modify_node("d", ready=False)  # NotReady: left out
    port = free_ports(1)[0]
    agent = AgentProcess(
        ["--discovery", "kubernetes", "--node-name", "me", "--kubeconfig", str(kubeconfig),
         "--interval", "200ms", "--prometheus", f"127.0.0.1:{port}", "--max-peers", "2",
         "--zone-labels", "true"],
        port=port,
    )  # fmt: skip
    try:
        agent.wait_ready()
        samples = agent.wait_for(lambda s: len(series(s, "latency_between_nodes")) == 2, 10)
        chosen = set(series(samples, "latency_between_nodes"))
        assert chosen < {"a", "b", "c"}  # two of the three ready peers, never d
        zones = {
            labels["to"]: (labels["from_zone"], labels["to_zone"])
            for name, labels, _ in samples
            if name == "latency_between_nodes"
        }
        expected = {"a": ("z1", "z1"), "b": ("z1", "z2"), "c": ("z1", "z2")}
        assert zones == {peer: expected[peer] for peer in chosen}
        assert [v for n, lab, v in samples if n == "monlat_expected_probers"] == [2.0]

        server.modify_node("me", unschedulable=True)  # cordoned: not ready, still probing
        wait_until(
            lambda: agent.get("/readyz") == (503, "this node is cordoned\n"), 5, ignore=(OSError,)
        )
        server.modify_node("me", unschedulable=False)
        wait_until(lambda: agent.get("/readyz")[0] == 200, 5, ignore=(OSError,))
    finally:
        assert agent.stop() == 0
    assert any("excluded=d" in line for line in agent.events("nodes_listed"))


def test_cross_zone_sample_follows_the_agents_own_zone(api: tuple[FakeApiServer, Path]) -> None:
    """--cross-zone-peers 1: every peer of the own zone, one of each other zone; when the agent's
    own node moves to another zone, the choice (and the zone labels) follow."""
    from monlat.agent.discovery.selection import plan_peers

    server, kubeconfig = api
    zone = "topology.kubernetes.io/zone"
    layout = {"a": "z1", "b": "z1", "c": "z2", "d": "z2", "e": "z2", "f": "z3", "g": "z3"}
    server.add_node("me", "127.0.0.9", labels={zone: "z1"})
    for i, (name, node_zone) in enumerate(layout.items()):
        server.add_node(name, f"127.0.0.{10 + i}", labels={zone: node_zone})
    port = free_ports(1)[0]
    agent = AgentProcess(
        ["--discovery", "kubernetes", "--node-name", "me", "--kubeconfig", str(kubeconfig),
         "--interval", "200ms", "--prometheus", f"127.0.0.1:{port}", "--cross-zone-peers", "1",
         "--zone-labels", "true"],
        port=port,
    )  # fmt: skip

    def chosen_zones(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, str]:
        return {
            labels["to"]: labels["to_zone"]
            for name, labels, _ in samples
            if name == "latency_between_nodes"
        }

    try:
        agent.wait_ready()
        plan = plan_peers("me", layout, own_zone="z1", cross_zone=1)
        samples = agent.wait_for(lambda s: set(chosen_zones(s)) == plan.peers, 10)
        picked = chosen_zones(samples)
        assert sorted(picked.values()) == ["z1", "z1", "z2", "z3"]
        gauge = [v for n, _, v in samples if n == "monlat_expected_probers"]
        assert gauge == [float(plan.expected_probers)]

        server.modify_node("me", labels={zone: "z2"})
        moved = plan_peers("me", layout, own_zone="z2", cross_zone=1)
        samples = agent.wait_for(lambda s: set(chosen_zones(s)) == moved.peers, 10)
        assert sorted(chosen_zones(samples).values()) == ["z1", "z2", "z2", "z2", "z3"]
        assert {
            labels["from_zone"] for n, labels, _ in samples if n == "latency_between_nodes"
        } == {"z2"}
    finally:
        assert agent.stop() == 0


def test_dual_stack_nodes_are_probed_over_both_families(api: tuple[FakeApiServer, Path]) -> None:
    server, kubeconfig = api

    def dual(v4: str, v6: str) -> list[dict[str, str]]:
        return [{"type": "InternalIP", "address": v4}, {"type": "InternalIP", "address": v6}]

    server.add_node("me", addresses=dual("127.0.0.9", "::1"))
    server.add_node("a", addresses=dual("127.0.0.2", "::1"))
    server.add_node("b", "127.0.0.3")  # IPv4 only: one peer
    port = free_ports(1)[0]
    agent = AgentProcess(
        ["--discovery", "kubernetes", "--node-name", "me", "--kubeconfig", str(kubeconfig),
         "--interval", "200ms", "--prometheus", f"127.0.0.1:{port}", "--ip-family", "dual"],
        port=port,
    )  # fmt: skip

    def measured(samples: list[tuple[str, dict[str, str], float]]) -> set[tuple[str, str]]:
        return {
            (labels["to"], labels["family"])
            for name, labels, _ in samples
            if name == "latency_between_nodes"
        }

    try:
        agent.wait_ready()
        agent.wait_for(lambda s: measured(s) == {("a", "ipv4"), ("a", "ipv6"), ("b", "ipv4")}, 10)
        server.modify_node("b", addresses=dual("127.0.0.3", "::1"))  # b gains IPv6
        agent.wait_for(lambda s: ("b", "ipv6") in measured(s), 5)
        server.modify_node("a", addresses=dual("127.0.0.2", "::1")[:1])  # a loses it
        samples = agent.wait_for(lambda s: ("a", "ipv6") not in measured(s), 5)
        assert measured(samples) == {("a", "ipv4"), ("b", "ipv4"), ("b", "ipv6")}
    finally:
        assert agent.stop() == 0
    assert any("peer=a/ipv6" in line for line in agent.events("peer_removed"))
    assert any("peer=b/ipv6 address=::1" in line for line in agent.events("peer_added"))
