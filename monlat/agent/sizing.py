"""What the defaults do for a cluster of a given size: which peers, and which per-pair series.

One pure decision, taken by every agent alike from the nodes it discovers (so they agree without
talking to each other) and by `monlat plan` before anything is installed.

- Up to FULL_MESH_MAX_NODES nodes every agent probes every other node (what people want at 10
  nodes). Above it each agent probes P peers on the hash ring, P = PAIR_BUDGET / nodes kept
  between AUTO_MIN_PEERS and AUTO_MAX_PEERS (10 up to 2,500 nodes, 5 from 5,000; dual-stack
  pairs count twice): the cluster's pairs, and so its series, stay near PAIR_BUDGET. A smaller P
  keeps the nearest successors of a larger one, so as the cluster grows pairs are only dropped,
  never reshuffled. When the nodes carry zone labels, AUTO_CROSS_ZONE_PEERS of the P go to every
  other zone (so every node measures every zone) and the rest stay in the own zone, where each
  node is then probed by exactly that many zone peers; probers from other zones come on top.
- The per-pair RTT histogram (21 buckets: 23 of the ~27 series of a pair) is kept while the
  cluster has at most HISTOGRAM_MAX_PAIRS pairs; above that the pair keeps its latency, loss,
  jitter and probe counters, and the latency-baseline alert falls back on the latency gauge.

The thresholds come from the fleet benchmark (`hatch run bench:fleet`): with them the shipped
collector stays under 75 % of its memory limit from 3 to 5,000 nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Auto = Literal["auto"]
AUTO: Auto = "auto"

FULL_MESH_MAX_NODES = 100
AUTO_MAX_PEERS = 10
AUTO_MIN_PEERS = 5
PAIR_BUDGET = 25_000
AUTO_CROSS_ZONE_PEERS = 1
HISTOGRAM_MAX_PAIRS = 1_000


@dataclass(frozen=True)
class SizingSettings:
    """The operator's choices: a number, None (all / off), or AUTO (decided by cluster size)."""

    max_peers: int | Auto | None = AUTO  # None: every peer
    cross_zone_peers: int | Auto | None = AUTO  # None: no zone rule
    pair_histograms: bool | Auto = AUTO


# No budget: every peer, every series (what a Config built without settings gets).
EVERY_PEER = SizingSettings(max_peers=None, cross_zone_peers=None, pair_histograms=True)


@dataclass(frozen=True)
class Sizing:
    max_peers: int | None  # None: every peer
    cross_zone_peers: int | None  # None: no zone rule
    pair_histograms: bool

    def describe(self) -> dict[str, str]:
        return {
            "max_peers": "all" if self.max_peers is None else str(self.max_peers),
            "cross_zone_peers": (
                "off" if self.cross_zone_peers is None else str(self.cross_zone_peers)
            ),
            "pair_histograms": str(self.pair_histograms).lower(),
        }


def peers_per_node(nodes: int, zones: int, max_peers: int | None, cross_zone: int | None) -> int:
    """Peers of a node in a cluster of `nodes` spread evenly over `zones` zones."""
    others = max(nodes - 1, 0)
    if cross_zone is None or zones <= 1:
        return others if max_peers is None else min(max_peers, others)
    zone_size = nodes / zones
    own = max(round(zone_size) - 1, 0)
    own = own if max_peers is None else min(max_peers, own)
    return min(others, own + min(cross_zone, round(zone_size)) * (zones - 1))


def auto_peer_count(nodes: int, families: int = 1) -> int | None:
    """Peer nodes per node the defaults choose (None: every other node); dual-stack pairs count
    twice against the budget."""
    if nodes <= FULL_MESH_MAX_NODES:
        return None
    return max(AUTO_MIN_PEERS, min(AUTO_MAX_PEERS, PAIR_BUDGET // (nodes * families)))


def size_for(nodes: int, zones: int, settings: SizingSettings, *, families: int = 1) -> Sizing:
    """The sizing for `nodes` nodes (this one included) in `zones` distinct zones (1 if none),
    each measured over `families` address families (2 when dual-stack)."""
    auto_peers = auto_peer_count(nodes, families)
    cross_zone: int | None
    if settings.cross_zone_peers == AUTO:
        # Only where the sizing limits the peers (a full mesh covers every zone pair already);
        # an explicit --max-peers K keeps its plain meaning, K on the ring.
        limited = settings.max_peers == AUTO and auto_peers is not None
        cross_zone = AUTO_CROSS_ZONE_PEERS if limited and zones > 1 else None
    else:
        cross_zone = settings.cross_zone_peers
    max_peers: int | None
    if settings.max_peers != AUTO:
        max_peers = settings.max_peers
    elif auto_peers is None or cross_zone is None:
        max_peers = auto_peers
    else:
        # The cross-zone peers are part of the P: the rest stay in the own zone.
        max_peers = max(1, auto_peers - cross_zone * (zones - 1))
    if settings.pair_histograms == AUTO:
        pairs = families * nodes * peers_per_node(nodes, zones, max_peers, cross_zone)
        histograms = pairs <= HISTOGRAM_MAX_PAIRS
    else:
        histograms = settings.pair_histograms
    return Sizing(max_peers, cross_zone, histograms)
