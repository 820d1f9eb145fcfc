"""--max-peers: every node probed by exactly K others, and little churn when one joins or leaves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monlat.discovery.selection import PeerRing, probed_by, select_peers


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
        "from monlat.discovery.selection import select_peers;"
        "print(sorted(select_peers('n7', [f'n{i}' for i in range(100)], 3)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={
                **os.environ,
                "PYTHONHASHSEED": seed,
                "PYTHONPATH": str(Path(__file__).parents[1]),
            },
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(sorted(select_peers("n7", names, 3)))
