"""The matrix model: cells per (from, to) pair built from scraped samples, node order, medians."""

from __future__ import annotations

import math
import re
import statistics
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from monlat.common import names as metric
from monlat.tools.scrape import Sample

LATENCY = metric.LATENCY.sample
LOSS = metric.LOSS.sample
JITTER = metric.JITTER.sample
PROBES = metric.PROBES.sample
EXPECTED_PROBERS = metric.EXPECTED_PROBERS.sample
PATH_MTU = metric.PATH_MTU.sample
MTU_BLACK_HOLE = metric.MTU_BLACK_HOLE.sample
_PAIR_METRICS = (LATENCY, LOSS, JITTER, PROBES, PATH_MTU, MTU_BLACK_HOLE)
# Series that name a node without a pair: an agent with no peers still shows as a node.
_NODE_METRICS = {
    metric.AGENT_INFO.sample: "from",
    metric.PEERS.sample: "from",
    EXPECTED_PROBERS: "to",
}

_WANTED = frozenset((*_PAIR_METRICS, *_NODE_METRICS))


# --- the matrix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    latency_ms: float | None = None
    loss_ratio: float | None = None
    jitter_ms: float | None = None
    probes: float | None = None  # monlat_probes_total summed over results
    # Only where the path does not carry the MTU probe size: the largest size that crossed it,
    # and whether larger packets vanish without an ICMP report.
    path_mtu_bytes: float | None = None
    mtu_black_hole: bool = False

    @property
    def lost(self) -> bool:
        """Probed, no RTT, and every probe in the window lost."""
        return self.latency_ms is None and self.loss_ratio is not None and self.loss_ratio >= 1.0


@dataclass(frozen=True)
class Matrix:
    nodes: tuple[str, ...]  # every node seen, in natural name order
    cells: Mapping[tuple[str, str], Cell]  # (from, to) -> what is known about the pair
    zones: Mapping[str, str]  # node -> zone, only for nodes with a non-empty zone label
    expected_probers: Mapping[str, int]  # node -> agents expected to probe it, when exported

    def cell(self, src: str, dst: str) -> Cell | None:
        return self.cells.get((src, dst))

    @property
    def has_zones(self) -> bool:
        return bool(self.zones)


def natural_key(name: str) -> tuple[tuple[int, str, int], ...]:
    """`node2` before `node10`."""
    parts = re.split(r"(\d+)", name)
    pieces = (
        (0, "", int(part)) if index % 2 else (1, part.lower(), 0)
        for index, part in enumerate(parts)
        if part
    )
    return (*pieces, (-1, name, 0))  # "lo" before "lo2"; "N1" before "n1"


def wanted(name: str) -> bool:
    """The series the matrix is built from (the RTT histograms, by far the most, are not)."""
    return name in _WANTED


def is_monlat_exposition(samples: Iterable[Sample]) -> bool:
    return any(s.name == LATENCY or s.name.startswith("monlat_") for s in samples)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class View:
    """Which of several measured paths the matrix shows, when agents export more than one.

    `network` picks the host-network agents' series (no network label) or those labelled
    network=VALUE (the pod-network agents: pod); `family` picks ipv4 or ipv6 where the series
    carry a family label (dual-stack); series without one are always in.
    """

    network: str = "host"
    family: str = "ipv4"

    def __contains__(self, labels: Mapping[str, str]) -> bool:
        if (labels.get("network") or "host") != self.network:
            return False
        family = labels.get("family")
        return not family or family == self.family


def build_matrix(samples: Iterable[Sample], view: View | None = None) -> Matrix:
    """The matrix from parsed samples of one view; other labels (job, instance, ...) ignored.

    A pair exported twice (two series differing only in other labels) keeps the last value.
    """
    view = view or View()
    values: dict[tuple[str, str], dict[str, float | None]] = {}
    probes: dict[tuple[str, str, str], float] = {}
    zones: dict[str, str] = {}
    nodes: set[str] = set()
    expected: dict[str, int] = {}
    for sample in samples:
        if sample.labels not in view:
            continue
        node_label = _NODE_METRICS.get(sample.name)
        if node_label is not None:
            node = sample.labels.get(node_label, "")
            if node:
                nodes.add(node)
                if sample.name == EXPECTED_PROBERS and math.isfinite(sample.value):
                    expected[node] = int(sample.value)
            continue
        if sample.name not in _PAIR_METRICS:
            continue
        src, dst = sample.labels.get("from", ""), sample.labels.get("to", "")
        if not src or not dst:
            continue
        nodes.update((src, dst))
        for node, label in ((src, "from_zone"), (dst, "to_zone")):
            if sample.labels.get(label):
                zones[node] = sample.labels[label]
        entry = values.setdefault((src, dst), {})
        if sample.name == LATENCY:
            value = _finite(sample.value)
            entry["latency"] = value if value is None or value >= 0 else None
        elif sample.name == LOSS:
            value = _finite(sample.value)
            entry["loss"] = None if value is None else min(1.0, max(0.0, value))
        elif sample.name == JITTER:
            value = _finite(sample.value)
            entry["jitter"] = None if value is None else float(f"{value * 1000:.6g}")
        elif sample.name == PATH_MTU:
            value = _finite(sample.value)
            entry["path_mtu"] = value if value is None or value > 0 else None
        elif sample.name == MTU_BLACK_HOLE:
            entry["black_hole"] = 1.0 if sample.value == 1 else 0.0
        else:
            probes[(src, dst, sample.labels.get("result", ""))] = sample.value
    totals: dict[tuple[str, str], float] = {}
    for (src, dst, _), count in probes.items():
        if math.isfinite(count):
            totals[(src, dst)] = totals.get((src, dst), 0.0) + count
    cells = {
        pair: Cell(
            latency_ms=entry.get("latency"),
            loss_ratio=entry.get("loss"),
            jitter_ms=entry.get("jitter"),
            probes=totals.get(pair),
            path_mtu_bytes=entry.get("path_mtu"),
            mtu_black_hole=entry.get("black_hole") == 1.0,
        )
        for pair, entry in values.items()
    }
    return Matrix(
        nodes=tuple(sorted(nodes, key=natural_key)),
        cells=cells,
        zones=zones,
        expected_probers=expected,
    )


def order_nodes(matrix: Matrix, sort: str) -> tuple[str, ...]:
    """Nodes in display order: by name, or by zone then name (nodes without a zone last)."""
    if sort == "zone" and matrix.has_zones:
        return tuple(
            sorted(
                matrix.nodes,
                key=lambda n: (n not in matrix.zones, natural_key(matrix.zones.get(n, ""))),
            )
        )
    return matrix.nodes


def median(values: Iterable[float]) -> float | None:
    """statistics.median, with None for no values (a pair group may have none)."""
    ordered = list(values)
    return statistics.median(ordered) if ordered else None


def median_excluding(ordered: Sequence[float], removed: Sequence[float]) -> float | None:
    """Median of the sorted multiset `ordered` without the sorted sub-multiset `removed`.

    O(log² n) per call, so that a median leaving out one node's pairs costs nothing per node.
    """
    remaining = len(ordered) - len(removed)
    if remaining <= 0:
        return None

    def kth(k: int) -> float:
        low, high = 0, len(ordered) - 1
        while low < high:
            middle = (low + high) // 2
            value = ordered[middle]
            if bisect_right(ordered, value) - bisect_right(removed, value) >= k + 1:
                high = middle
            else:
                low = middle + 1
        return ordered[low]

    half = remaining // 2
    if remaining % 2:
        return kth(half)
    return (kth(half - 1) + kth(half)) / 2


def matrix_median(matrix: Matrix) -> float | None:
    return median(
        cell.latency_ms
        for (src, dst), cell in matrix.cells.items()
        if src != dst and cell.latency_ms is not None
    )
