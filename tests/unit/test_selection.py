"""--max-peers: every node probed by exactly K others, and little churn when one joins or leaves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monlat.agent.discovery.selection import PeerRing, plan_peers, probed_by, select_peers


def choices(names: list[str], k: int) -> dict[str, set[str]]:
    ring = PeerRing(names)
    return {name: ring.peers_of(name, k) for name in names}


def incoming(chosen: dict[str, set[str]]) -> dict[str, int]:
    counts = dict.fromkeys(chosen, 0)
    for peers in chosen.values():
        for peer in peers:
            counts[peer] += 1
    return counts


def pairs(chosen: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, peers in chosen.items() for b in peers}


@pytest.mark.parametrize(("nodes", "k"), [(1_000, 10), (10_000, 5)])
def test_every_node_is_probed_by_exactly_k(nodes: int, k: int) -> None:
    names = [f"node-{i:05d}" for i in range(nodes)]
    chosen = choices(names, k)
    assert all(len(peers) == k and name not in peers for name, peers in chosen.items())
    assert set(incoming(chosen).values()) == {k}
    assert all(probed_by(name, names, k) == k for name in names[:50])


@pytest.mark.parametrize(("nodes", "k"), [(1_000, 10), (10_000, 5)])
def test_one_node_joining_or_leaving_changes_about_two_k_pairs(nodes: int, k: int) -> None:
    names = [f"node-{i:05d}" for i in range(nodes)]
    before = pairs(choices(names, k))
    joined = pairs(choices([*names, "newcomer"], k))
    left = pairs(choices(names[1:], k))
    changed_on_join = len(before ^ joined)
    changed_on_leave = len(before ^ left)
    print(f"\n{nodes} nodes, K={k}: a join changes {changed_on_join} pairs, a leave "
          f"{changed_on_leave} (of {len(before)})")  # fmt: skip
    # The newcomer's own K, plus K predecessors each swapping one peer (2 pair changes each).
    assert changed_on_join == 3 * k
    assert changed_on_leave == 3 * k


def test_small_clusters_and_no_limit_probe_everyone() -> None:
    names = ["a", "b", "c"]
    assert select_peers("a", names, None) == {"b", "c"}
    assert select_peers("a", names, 5) == {"b", "c"}
    assert select_peers("a", ["a"], 3) == set()
    assert probed_by("a", names, None) == 2
    assert probed_by("a", names, 5) == 2


def test_choice_is_the_same_in_every_agent_and_run() -> None:
    names = [f"n{i}" for i in range(100)]
    assert select_peers("n7", names, 3) == select_peers("n7", list(reversed(names)), 3)
    # Fixed by the name hash, not by Python's per-process hash seed.
    code = (
        "from monlat.agent.discovery.selection import select_peers;"
        "print(sorted(select_peers('n7', [f'n{i}' for i in range(100)], 3)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={
                **os.environ,
                "PYTHONHASHSEED": seed,
                "PYTHONPATH": str(Path(__file__).parents[2]),
            },
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(sorted(select_peers("n7", names, 3)))


# --- own zone in full, a sample across zones (--cross-zone-peers) --------------------------------


def zoned_choices(
    zones: dict[str, str], k: int, max_peers: int | None = None
) -> dict[str, set[str]]:
    return {
        name: set(plan_peers(name, zones, own_zone=zone, max_peers=max_peers, cross_zone=k).peers)
        for name, zone in zones.items()
    }


def three_zones(nodes: int) -> dict[str, str]:
    # Unequal zones, as in real clusters.
    return {f"node-{i:05d}": ("a", "a", "a", "b", "b", "c")[i % 6] for i in range(nodes)}


@pytest.mark.parametrize(("nodes", "k"), [(300, 3), (1_000, 5)])
def test_every_same_zone_peer_and_k_in_each_other_zone(nodes: int, k: int) -> None:
    zones = three_zones(nodes)
    sizes = {zone: list(zones.values()).count(zone) for zone in "abc"}
    chosen = zoned_choices(zones, k)
    for name, peers in chosen.items():
        own = zones[name]
        per_zone = {zone: sum(1 for p in peers if zones[p] == zone) for zone in "abc"}
        assert per_zone[own] == sizes[own] - 1 and name not in peers
        assert all(per_zone[zone] == k for zone in "abc" if zone != own)
    # Each node is probed by every node of its zone and, from every other zone, by about
    # k · |that zone| / |its zone|; the agents' own count (the expected-probers gauge) is exact.
    counts = incoming(chosen)
    for name in list(zones)[:60]:
        assert (
            counts[name]
            == plan_peers(name, zones, own_zone=zones[name], cross_zone=k).expected_probers
        )
    for target_zone in "abc":
        for source_zone in set("abc") - {target_zone}:
            per_node = [
                sum(1 for src in chosen if zones[src] == source_zone and dst in chosen[src])
                for dst in zones
                if zones[dst] == target_zone
            ]
            expected = k * sizes[source_zone] / sizes[target_zone]
            mean = sum(per_node) / len(per_node)
            assert abs(mean - expected) < 1e-9  # every choice lands somewhere
            assert min(per_node) >= 0 and max(per_node) <= 8 * expected + 5
    blind = [name for name, count in counts.items() if count == 0]
    assert not blind


def test_cross_zone_churn_moves_only_the_choices_pointing_at_the_changed_node() -> None:
    zones = three_zones(600)
    before = pairs(zoned_choices(zones, 3))
    joined = pairs(zoned_choices({**zones, "newcomer": "b"}, 3))
    changed = before ^ joined
    # The newcomer's own pairs, its zone-b peers' new pair to it, and the cross-zone choices
    # that now land on it instead of on its ring successor.
    print(f"\n600 nodes in 3 zones, 3 per other zone: a join changes {len(changed)} pairs")
    own_pairs = {p for p in changed if "newcomer" in p}
    moved = changed - own_pairs
    assert all(zones[dst] == "b" for _, dst in moved)  # only choices into its zone moved
    # Each such choice drops one pair (its old target) and adds one to the newcomer.
    assert moved <= before and len(moved) == sum(
        1 for src, dst in joined if dst == "newcomer" and zones[src] != "b"
    )


def test_max_peers_still_caps_the_own_zone() -> None:
    zones = three_zones(120)
    plan = plan_peers("node-00000", zones, own_zone="a", max_peers=4, cross_zone=2)
    assert sum(1 for p in plan.peers if zones[p] == "a") == 4
    assert sum(1 for p in plan.peers if zones[p] != "a") == 4


def test_nodes_without_a_zone_form_their_own_group() -> None:
    zones: dict[str, str | None] = {"a": "z1", "b": "z1", "c": None, "d": None}
    plan = plan_peers("a", zones, own_zone="z1", cross_zone=1)
    assert "b" in plan.peers and len(plan.peers & {"c", "d"}) == 1
    assert plan_peers("c", zones, own_zone=None, cross_zone=5).peers == {"a", "b", "d"}
