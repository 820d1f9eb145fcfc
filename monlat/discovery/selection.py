"""Which peers to probe when not all of them: a deterministic ring that every agent computes alike.

Nodes sit on a ring ordered by a hash of their name; each node probes the K nodes that follow it.
Every node is then probed by exactly K others (the K before it), with no coordination, and a node
joining or leaving changes only the choices of the K nodes before it: about 3·K pairs, whatever
the cluster's size.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable


def ring_position(name: str) -> tuple[int, str]:
    # blake2b, not hash(): every agent, in every process, must place a node at the same spot.
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big"), name


class PeerRing:
    """The ring of a set of node names; built once, then asked for any node's choices."""

    def __init__(self, names: Iterable[str]) -> None:
        self._ring = sorted(ring_position(name) for name in set(names))
        self._index = {name: i for i, (_, name) in enumerate(self._ring)}

    def __len__(self) -> int:
        return len(self._ring)

    def peers_of(self, name: str, max_peers: int | None) -> set[str]:
        """The nodes `name` probes (it need not be on the ring itself)."""
        others = len(self._ring) - (1 if name in self._index else 0)
        if max_peers is None or max_peers >= others:
            return {n for _, n in self._ring if n != name}
        start = bisect.bisect_right(self._ring, ring_position(name))
        chosen: list[str] = []
        step = 0
        while len(chosen) < max_peers:
            _, candidate = self._ring[(start + step) % len(self._ring)]
            if candidate != name:
                chosen.append(candidate)
            step += 1
        return set(chosen)

    def probers_of(self, name: str, max_peers: int | None) -> int:
        """How many nodes on the ring choose to probe `name`."""
        others = len(self._ring) - (1 if name in self._index else 0)
        if max_peers is None or max_peers >= others:
            return others
        # Exactly the `max_peers` nodes before it on the ring choose it.
        return max_peers


def select_peers(self_name: str, names: Iterable[str], max_peers: int | None) -> set[str]:
    """The peers `self_name` probes among `names` (which may or may not include it)."""
    return PeerRing([*names, self_name]).peers_of(self_name, max_peers)


def probed_by(self_name: str, names: Iterable[str], max_peers: int | None) -> int:
    """How many of `names` are expected to probe `self_name` (a blind spot shows as 0)."""
    return PeerRing([*names, self_name]).probers_of(self_name, max_peers)
