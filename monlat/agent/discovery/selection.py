"""Which peers to probe when not all of them: a deterministic ring that every agent computes alike.

Nodes sit on a ring ordered by a hash of their name; each node probes the K nodes that follow it.
Every node is then probed by exactly K others (the K before it), with no coordination, and a node
joining or leaving changes only the choices of the K nodes before it: about 3·K pairs, whatever
the cluster's size.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@functools.lru_cache(maxsize=1 << 16)
def ring_position(name: str) -> tuple[int, str]:
    # blake2b, not hash(): every agent, in every process, must place a node at the same spot.
    # Cached (a pure function of the name): every publish places every node again, and at
    # 5,000 nodes with zones the hashing was ~2/3 of a 60 ms plan on the event loop.
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


def _cyclic_count(sorted_positions: list[tuple[int, str]], low: int, high: int) -> int:
    """How many positions p satisfy low <= p < high on the ring (the arc may wrap)."""
    lo = bisect.bisect_left(sorted_positions, (low, ""))
    hi = bisect.bisect_left(sorted_positions, (high, ""))
    if low < high:
        return hi - lo
    return len(sorted_positions) - lo + hi


class ZonedChoice:
    """Every peer in the own zone (or --max-peers of them) plus `cross_zone` in each other zone.

    Within another zone the choice follows that zone's ring from this node's own position, so
    nodes of one zone spread their probes over the other zone's nodes, each of which is probed
    by about cross_zone · |own zone| / |its zone| of them; churn in one zone moves only the
    choices that pointed at the changed node.
    """

    def __init__(
        self,
        self_name: str,
        own_zone: str | None,
        zones: Mapping[str, str | None],
        max_peers: int | None,
        cross_zone: int,
    ) -> None:
        self._self = self_name
        self._own = own_zone or ""
        self._max_peers = max_peers
        self._cross_zone = cross_zone
        by_zone: dict[str, list[str]] = {}
        for name, zone in zones.items():
            if name != self_name:
                by_zone.setdefault(zone or "", []).append(name)
        self._by_zone = by_zone

    def peers(self) -> set[str]:
        chosen = PeerRing([*self._by_zone.get(self._own, ()), self._self]).peers_of(
            self._self, self._max_peers
        )
        for zone, names in self._by_zone.items():
            if zone != self._own:
                chosen |= PeerRing(names).peers_of(self._self, self._cross_zone)
        return chosen

    def probers(self) -> int:
        """How many nodes of every zone choose this one."""
        same = self._by_zone.get(self._own, [])
        count = PeerRing([*same, self._self]).probers_of(self._self, self._max_peers)
        own_ring = sorted(ring_position(name) for name in {*same, self._self})
        k = self._cross_zone
        # A node of another zone picks the k nodes of this zone's ring that follow its own
        # position: it picks this node when its position lies in the arc from this node's
        # k-th predecessor up to this node.
        index = own_ring.index(ring_position(self._self))
        low = own_ring[(index - k) % len(own_ring)][0]
        high = own_ring[index][0]
        for zone, names in self._by_zone.items():
            if zone == self._own:
                continue
            if k >= len(own_ring):
                count += len(names)
            else:
                positions = sorted(ring_position(name) for name in names)
                count += _cyclic_count(positions, low, high)
        return count


@dataclass(frozen=True)
class PeerPlan:
    peers: frozenset[str]  # the node names this agent probes
    expected_probers: int  # how many nodes are expected to probe this one


def plan_peers(
    self_name: str,
    zones: Mapping[str, str | None],
    *,
    own_zone: str | None = None,
    max_peers: int | None = None,
    cross_zone: int | None = None,
) -> PeerPlan:
    """Which of the discovered nodes (name -> zone) to probe, every agent deciding alike."""
    if cross_zone is None:
        ring = PeerRing([*zones, self_name])
        return PeerPlan(
            frozenset(ring.peers_of(self_name, max_peers)),
            ring.probers_of(self_name, max_peers),
        )
    choice = ZonedChoice(self_name, own_zone, zones, max_peers, cross_zone)
    return PeerPlan(frozenset(choice.peers()), choice.probers())
