"""The defaults at every cluster size: full mesh when small, bounded peers and series when large,
every node still probed by at least K others and every pair of zones covered."""

from __future__ import annotations

from pathlib import Path

import pytest

from monlat.agent.discovery.selection import plan_peers
from monlat.agent.settings import parse_agent_config
from monlat.agent.sizing import (
    AUTO_MAX_PEERS,
    AUTO_MIN_PEERS,
    FULL_MESH_MAX_NODES,
    HISTOGRAM_MAX_PAIRS,
    PAIR_BUDGET,
    Sizing,
    SizingSettings,
    auto_peer_count,
    size_for,
)
from monlat.tools.synthetic import ClusterShape, cluster

DEFAULTS = SizingSettings()


def whole_cluster(nodes: dict[str, str | None]) -> dict[str, tuple[frozenset[str], int]]:
    """Every node's peers and expected probers, each decided alone from the same node list."""
    zone_count = len({zone for zone in nodes.values() if zone}) or 1
    decided = {}
    for name, zone in nodes.items():
        sizing = size_for(len(nodes), zone_count, DEFAULTS)
        others = {n: z for n, z in nodes.items() if n != name}
        plan = plan_peers(
            name,
            others,
            own_zone=zone,
            max_peers=sizing.max_peers,
            cross_zone=sizing.cross_zone_peers,
        )
        decided[name] = (plan.peers, plan.expected_probers)
    return decided


def test_a_ten_node_cluster_keeps_the_full_mesh_with_histograms() -> None:
    assert size_for(10, 1, DEFAULTS) == Sizing(None, None, True)
    assert size_for(3, 1, DEFAULTS) == Sizing(None, None, True)


def test_histograms_go_first_then_the_mesh_is_bounded() -> None:
    # The biggest full mesh that keeps histograms has at most HISTOGRAM_MAX_PAIRS pairs.
    assert size_for(32, 1, DEFAULTS).pair_histograms  # 992 pairs
    assert not size_for(33, 1, DEFAULTS).pair_histograms  # 1,056 pairs
    assert size_for(FULL_MESH_MAX_NODES, 1, DEFAULTS) == Sizing(None, None, False)
    large = size_for(FULL_MESH_MAX_NODES + 1, 1, DEFAULTS)
    assert large == Sizing(AUTO_MAX_PEERS, None, False)
    # Zones known: one node of every other zone, the rest of the P peers in the own zone.
    assert size_for(1_000, 3, DEFAULTS) == Sizing(AUTO_MAX_PEERS - 2, 1, False)


def test_the_peers_shrink_with_the_cluster_to_keep_its_pairs_bounded() -> None:
    assert auto_peer_count(FULL_MESH_MAX_NODES) is None
    assert auto_peer_count(2_500) == AUTO_MAX_PEERS
    assert auto_peer_count(3_000) == 8
    assert auto_peer_count(5_000) == AUTO_MIN_PEERS
    assert auto_peer_count(20_000) == AUTO_MIN_PEERS
    # From 2,500 to 5,000 nodes the cluster's pairs stay at PAIR_BUDGET or under it.
    assert all(n * (auto_peer_count(n) or 0) <= PAIR_BUDGET for n in range(2_500, 5_001, 7))
    assert size_for(5_000, 3, DEFAULTS) == Sizing(AUTO_MIN_PEERS - 2, 1, False)
    # Dual-stack: a node is two pairs, so the budget buys half the peers.
    assert auto_peer_count(2_500, families=2) == AUTO_MIN_PEERS
    assert auto_peer_count(1_000, families=2) == AUTO_MAX_PEERS


def test_dual_stack_counts_both_families_against_the_histogram_budget() -> None:
    assert size_for(30, 1, DEFAULTS).pair_histograms  # 870 pairs
    assert not size_for(30, 1, DEFAULTS, families=2).pair_histograms  # 1,740


def test_explicit_settings_win_over_the_size() -> None:
    pinned = SizingSettings(max_peers=None, cross_zone_peers=None, pair_histograms=True)
    assert size_for(5_000, 3, pinned) == Sizing(None, None, True)
    assert size_for(10, 1, SizingSettings(max_peers=3)) == Sizing(3, None, True)
    # An explicit K is K on the ring, zones or not, unless a zone rule is asked for.
    assert size_for(10, 2, SizingSettings(max_peers=3)) == Sizing(3, None, True)
    assert size_for(10, 2, SizingSettings(max_peers=3, cross_zone_peers=1)) == Sizing(3, 1, True)
    assert HISTOGRAM_MAX_PAIRS >= 10 * 3


@pytest.mark.parametrize(
    ("nodes", "zones"),
    [(3, 1), (40, 1), (100, 1), (101, 1), (600, 1), (600, 3), (1_000, 5), (1_200, 3)],
)
def test_every_node_is_probed_by_at_least_k_and_every_zone_pair_is_covered(
    nodes: int, zones: int
) -> None:
    names = cluster(ClusterShape(nodes, zones))
    decided = whole_cluster(names)
    incoming = dict.fromkeys(names, 0)
    zone_pairs = set()
    for name, (peers, _) in decided.items():
        for peer in peers:
            incoming[peer] += 1
            zone_pairs.add((names[name], names[peer]))
    # K: every other node in a full mesh, else the own-zone share of the P peers.
    sizing = size_for(nodes, zones, DEFAULTS)
    k = nodes - 1 if sizing.max_peers is None else sizing.max_peers
    assert min(incoming.values()) >= k
    # monlat_expected_probers is exact, node by node.
    assert all(decided[name][1] == incoming[name] for name in names)
    zone_names = {zone for zone in names.values()}
    assert zone_pairs >= {(a, b) for a in zone_names for b in zone_names}


@pytest.mark.parametrize("nodes", [3_000, 5_000])
def test_at_thousands_of_nodes_a_sample_of_nodes_still_has_k_probers(nodes: int) -> None:
    # expected_probers is exact (checked node by node above); here it is read for a sample.
    names = cluster(ClusterShape(nodes, 3))
    sizing = size_for(nodes, 3, DEFAULTS)
    assert sizing.max_peers is not None
    for name in list(names)[:: nodes // 20]:
        others = {n: z for n, z in names.items() if n != name}
        plan = plan_peers(
            name, others, own_zone=names[name], max_peers=sizing.max_peers, cross_zone=1
        )
        assert len(plan.peers) == sizing.max_peers + 2
        assert {names[peer] for peer in plan.peers} == {"zone-a", "zone-b", "zone-c"}
        assert plan.expected_probers >= sizing.max_peers


def test_small_clusters_are_a_full_mesh() -> None:
    names = cluster(ClusterShape(FULL_MESH_MAX_NODES))
    decided = whole_cluster(names)
    assert all(len(peers) == FULL_MESH_MAX_NODES - 1 for peers, _ in decided.values())


def test_crossing_the_threshold_moves_few_pairs_on_a_join() -> None:
    names = cluster(ClusterShape(600, 3))
    before = whole_cluster(names)
    grown = whole_cluster({**names, "newcomer": "zone-b"})
    moved = sum(len(before[name][0] ^ grown[name][0]) for name in names)
    # The newcomer's predecessors on its zone's ring each swap one peer, and one node per
    # other-zone arc moves its cross-zone pick: a few dozen pairs of 7,200.
    assert moved <= 4 * AUTO_MAX_PEERS


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], SizingSettings()),
        (["--max-peers", "all"], SizingSettings(max_peers=None)),
        (["--max-peers", "7"], SizingSettings(max_peers=7)),
        (["--pair-histograms", "true"], SizingSettings(pair_histograms=True)),
        (["--pair-histograms", "false"], SizingSettings(pair_histograms=False)),
        (
            ["--discovery", "kubernetes", "--cross-zone-peers", "off"],
            SizingSettings(cross_zone_peers=None),
        ),
        (
            ["--discovery", "kubernetes", "--cross-zone-peers", "2"],
            SizingSettings(cross_zone_peers=2),
        ),
    ],
)
def test_sizing_settings_parse(argv: list[str], expected: SizingSettings, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    environ = {"NODE_NAME": "n1", "KUBECONFIG": str(kubeconfig)}
    assert parse_agent_config(argv, environ).sizing == expected
