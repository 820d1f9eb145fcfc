"""The diagnosis: zones, nodes, links and coverage, each a pure function of a Matrix."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from monlat.tools.matrix.model import Cell, Matrix, median, median_excluding, natural_key
from monlat.tools.matrix.render import abbreviate, format_ms, format_percent

Pair = tuple[str, str]
GroupKey = tuple[str, ...]  # () for same-zone pairs (or no zones), (zone_a, zone_b) sorted
INTRA: GroupKey = ()


class Kind(enum.Enum):
    ZONE = "zone"
    NODE = "node"
    LINK = "link"
    MTU = "mtu"  # an MTU black hole: large packets vanish while small ones pass
    COVERAGE = "coverage"


@dataclass(frozen=True)
class Thresholds:
    latency_factor: float = 2.0
    loss_threshold: float = 0.05
    min_excess_ms: float = 0.2


@dataclass(frozen=True)
class PairEvidence:
    src: str
    dst: str
    latency_ms: float | None
    baseline_ms: float | None
    loss_ratio: float | None
    path_mtu_bytes: float | None = None
    mtu_black_hole: bool = False

    @property
    def factor(self) -> float | None:
        if self.latency_ms is None or not self.baseline_ms:
            return None
        return self.latency_ms / self.baseline_ms

    @property
    def excess_ms(self) -> float | None:
        if self.latency_ms is None or self.baseline_ms is None:
            return None
        return self.latency_ms - self.baseline_ms


@dataclass(frozen=True)
class Observation:
    text: str
    pairs: tuple[PairEvidence, ...] = ()


@dataclass(frozen=True)
class Finding:
    kind: Kind
    subject: str
    summary: str
    evidence: tuple[Observation, ...]


@dataclass(frozen=True)
class Diagnosis:
    findings: tuple[Finding, ...]
    nodes: int
    pairs: int
    baseline_ms: float | None
    thresholds: Thresholds
    notes: tuple[str, ...] = ()
    common_suffix: str = ""  # shared by every node name; text output leaves it out


# --- shared pieces -------------------------------------------------------------------------------


def is_slow(latency_ms: float | None, baseline_ms: float | None, thresholds: Thresholds) -> bool:
    if latency_ms is None or baseline_ms is None:
        return False
    return (
        latency_ms >= thresholds.latency_factor * baseline_ms
        and latency_ms - baseline_ms >= thresholds.min_excess_ms
    )


def is_lossy(cell: Cell, thresholds: Thresholds) -> bool:
    return cell.lost or (
        cell.loss_ratio is not None and cell.loss_ratio >= thresholds.loss_threshold
    )


def enough(bad: int, total: int) -> bool:
    """At least half, and at least two: one bad pair of a node's two is a link, not the node."""
    return bad >= 2 and 2 * bad >= total


@dataclass(frozen=True)
class _Context:
    matrix: Matrix
    thresholds: Thresholds
    cells: Mapping[Pair, Cell]  # off-diagonal pairs with data
    groups: Mapping[Pair, GroupKey]
    latencies: Mapping[GroupKey, tuple[float, ...]]  # sorted, per group


def _zone_sizes(matrix: Matrix) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for zone in matrix.zones.values():
        sizes[zone] = sizes.get(zone, 0) + 1
    return sizes


def group_of(matrix: Matrix, sizes: Mapping[str, int], src: str, dst: str) -> GroupKey:
    """Cross-zone pairs form a group per pair of zones when both zones have two nodes or more."""
    zone_a, zone_b = matrix.zones.get(src, ""), matrix.zones.get(dst, "")
    if zone_a == zone_b or sizes.get(zone_a, 0) < 2 or sizes.get(zone_b, 0) < 2:
        return INTRA
    return tuple(sorted((zone_a, zone_b), key=natural_key))


def _sorted_latencies(
    cells: Mapping[Pair, Cell], groups: Mapping[Pair, GroupKey], skip: Iterable[str] = ()
) -> dict[GroupKey, tuple[float, ...]]:
    left_out = set(skip)
    values: dict[GroupKey, list[float]] = {}
    for pair, cell in cells.items():
        if cell.latency_ms is not None and not left_out.intersection(pair):
            values.setdefault(groups[pair], []).append(cell.latency_ms)
    return {key: tuple(sorted(found)) for key, found in values.items()}


def _context(matrix: Matrix, thresholds: Thresholds) -> _Context:
    cells = {pair: cell for pair, cell in matrix.cells.items() if pair[0] != pair[1]}
    sizes = _zone_sizes(matrix)
    groups = {pair: group_of(matrix, sizes, *pair) for pair in cells}
    return _Context(matrix, thresholds, cells, groups, _sorted_latencies(cells, groups))


def _evidence(ctx: _Context, pair: Pair, baseline_ms: float | None) -> PairEvidence:
    cell = ctx.cells.get(pair, Cell())
    return PairEvidence(pair[0], pair[1], cell.latency_ms, baseline_ms, cell.loss_ratio,
                        cell.path_mtu_bytes, cell.mtu_black_hole)  # fmt: skip


def ratio_text(value_ms: float, baseline_ms: float) -> str:
    factor = f"x{value_ms / baseline_ms:.1f}, " if baseline_ms > 0 else ""
    excess = value_ms - baseline_ms
    return f"{factor}{'+' if excess >= 0 else '-'}{format_ms(abs(excess))} ms"


def _worst_first(pairs: Iterable[PairEvidence]) -> tuple[PairEvidence, ...]:
    def badness(evidence: PairEvidence) -> tuple[float, float, str, str]:
        loss = evidence.loss_ratio or 0.0
        lost = 1.0 if evidence.latency_ms is None and loss >= 1.0 else 0.0
        return (-lost, -(evidence.factor or loss), evidence.src, evidence.dst)

    return tuple(sorted(pairs, key=badness))


# --- zones ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ZoneResult:
    findings: tuple[Finding, ...]
    lossy_groups: frozenset[GroupKey]


def zone_findings(ctx: _Context) -> _ZoneResult:
    baseline = median(ctx.latencies.get(INTRA, ()))
    intra = [pair for pair, key in ctx.groups.items() if key == INTRA]
    intra_lossy = sum(1 for pair in intra if is_lossy(ctx.cells[pair], ctx.thresholds))
    findings: list[Finding] = []
    lossy_groups: set[GroupKey] = set()
    by_group: dict[GroupKey, list[Pair]] = {}
    for pair, group in sorted(ctx.groups.items()):
        if group != INTRA:
            by_group.setdefault(group, []).append(pair)
    for key, members in sorted(by_group.items()):
        group_median = median(ctx.latencies.get(key, ()))
        slow = is_slow(group_median, baseline, ctx.thresholds)
        lossy_pairs = [pair for pair in members if is_lossy(ctx.cells[pair], ctx.thresholds)]
        lossy = enough(len(lossy_pairs), len(members)) and not enough(intra_lossy, len(intra))
        if not (slow or lossy):
            continue
        zone_a, zone_b = key
        evidence: list[Observation] = []
        if slow and group_median is not None and baseline is not None:
            evidence.append(
                Observation(
                    f"{len(ctx.latencies.get(key, ()))} pairs with an RTT between {zone_a} and "
                    f"{zone_b}: "
                    f"median {format_ms(group_median)} ms vs the intra-zone baseline "
                    f"{format_ms(baseline)} ms ({ratio_text(group_median, baseline)})"
                )
            )
            evidence.extend(
                _zone_direction(ctx, members, src, dst, baseline) for src, dst in (key, key[::-1])
            )
        if lossy:
            lossy_groups.add(key)
            evidence.append(
                Observation(
                    f"{len(lossy_pairs)} of {len(members)} pairs between {zone_a} and {zone_b} "
                    f"lose {format_percent(ctx.thresholds.loss_threshold)} or more "
                    f"(intra-zone: {intra_lossy} of {len(intra)})",
                    _worst_first(_evidence(ctx, pair, baseline) for pair in lossy_pairs),
                )
            )
        what = " and ".join(w for w, on in (("slow", slow), ("lossy", lossy)) if on)
        findings.append(
            Finding(Kind.ZONE, f"{zone_a}<->{zone_b}", f"cross-zone pairs {what}", tuple(evidence))
        )
    return _ZoneResult(tuple(findings), frozenset(lossy_groups))


def _zone_direction(
    ctx: _Context, members: Sequence[Pair], src_zone: str, dst_zone: str, baseline: float
) -> Observation:
    zones = ctx.matrix.zones
    pairs = [p for p in members if zones.get(p[0]) == src_zone and zones.get(p[1]) == dst_zone]
    found = median(c.latency_ms for p in pairs if (c := ctx.cells[p]).latency_ms is not None)
    summary = f"median {format_ms(found)} ms" if found is not None else "no RTT"
    return Observation(
        f"{src_zone} -> {dst_zone}: {len(pairs)} pairs, {summary}",
        tuple(_evidence(ctx, pair, baseline) for pair in pairs),
    )


# --- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Direction:
    label: str  # "towards" (its row) or "from" (its column)
    judged: int
    slow: tuple[PairEvidence, ...]
    lossy: tuple[PairEvidence, ...]

    @property
    def bad(self) -> int:
        return len({(e.src, e.dst) for e in (*self.slow, *self.lossy)})

    @property
    def flagged(self) -> bool:
        return enough(self.bad, self.judged)


def _removed_by_node(ctx: _Context) -> dict[str, dict[GroupKey, list[float]]]:
    removed: dict[str, dict[GroupKey, list[float]]] = {}
    for pair, cell in ctx.cells.items():
        if cell.latency_ms is None:
            continue
        for node in set(pair):
            removed.setdefault(node, {}).setdefault(ctx.groups[pair], []).append(cell.latency_ms)
    for per_group in removed.values():
        for values in per_group.values():
            values.sort()
    return removed


def _direction(
    ctx: _Context,
    label: str,
    pairs: Sequence[Pair],
    baselines: Mapping[GroupKey, float | None],
    lossy_groups: frozenset[GroupKey],
) -> _Direction:
    slow: list[PairEvidence] = []
    lossy: list[PairEvidence] = []
    judged = 0
    for pair in pairs:
        cell = ctx.cells[pair]
        baseline = baselines.get(ctx.groups[pair])
        loss_counts = ctx.groups[pair] not in lossy_groups and (
            cell.loss_ratio is not None or cell.lost
        )
        if (cell.latency_ms is not None and baseline is not None) or loss_counts:
            judged += 1
        if is_slow(cell.latency_ms, baseline, ctx.thresholds):
            slow.append(_evidence(ctx, pair, baseline))
        if loss_counts and is_lossy(cell, ctx.thresholds):
            lossy.append(_evidence(ctx, pair, baseline))
    return _Direction(label, judged, _worst_first(slow), _worst_first(lossy))


def _direction_observations(
    node: str, direction: _Direction, thresholds: Thresholds
) -> list[Observation]:
    observations: list[Observation] = []
    if direction.slow:
        where = f"slow {direction.label} {len(direction.slow)} of {direction.judged} peers"
        latency = median(e.latency_ms for e in direction.slow if e.latency_ms is not None)
        baselines = {e.baseline_ms for e in direction.slow if e.baseline_ms is not None}
        if len(baselines) == 1 and latency is not None:
            (baseline,) = baselines
            text = (
                f"{where}: median {format_ms(latency)} ms vs {format_ms(baseline)} ms among the "
                f"pairs without {node} ({ratio_text(latency, baseline)})"
            )
        else:  # zones: each pair has its own expected RTT
            factor = median(e.factor for e in direction.slow if e.factor is not None)
            excess = median(e.excess_ms for e in direction.slow if e.excess_ms is not None)
            text = f"{where}: median {format_ms(latency or 0)} ms"
            if factor is not None and excess is not None:
                text += (
                    f", typically x{factor:.1f} and +{format_ms(excess)} ms over the same "
                    f"zones' pairs without {node}"
                )
        observations.append(Observation(text, direction.slow))
    if direction.lossy:
        loss = median(e.loss_ratio for e in direction.lossy if e.loss_ratio is not None)
        loss_text = f", median loss {format_percent(loss)}" if loss is not None else ""
        observations.append(
            Observation(
                f"loss of {format_percent(thresholds.loss_threshold)} or more {direction.label} "
                f"{len(direction.lossy)} of {direction.judged} peers{loss_text}",
                direction.lossy,
            )
        )
    return observations


def _by_node(pairs: Iterable[Pair], end: int) -> dict[str, list[Pair]]:
    found: dict[str, list[Pair]] = {}
    for pair in sorted(pairs):
        found.setdefault(pair[end], []).append(pair)
    return found


def node_findings(ctx: _Context, lossy_groups: frozenset[GroupKey]) -> tuple[Finding, ...]:
    removed = _removed_by_node(ctx)
    rows, columns = _by_node(ctx.cells, 0), _by_node(ctx.cells, 1)
    findings: list[Finding] = []
    for node in ctx.matrix.nodes:
        mine = removed.get(node, {})
        baselines = {
            key: median_excluding(values, mine.get(key, ()))
            for key, values in ctx.latencies.items()
        }
        row, column = rows.get(node, []), columns.get(node, [])
        directions = [
            d
            for d in (
                _direction(ctx, "towards", row, baselines, lossy_groups),
                _direction(ctx, "from", column, baselines, lossy_groups),
            )
            if d.flagged
        ]
        if not directions:
            continue
        slow = any(d.slow for d in directions)
        lossy = any(d.lossy for d in directions)
        what = " and ".join(w for w, on in (("slow", slow), ("lossy", lossy)) if on)
        where = " and ".join(f"{d.label} {d.bad} of {d.judged} peers" for d in directions)
        evidence = [o for d in directions for o in _direction_observations(node, d, ctx.thresholds)]
        findings.append(Finding(Kind.NODE, node, f"{what} {where}", tuple(evidence)))
    return tuple(findings)


# --- links ---------------------------------------------------------------------------------------


def link_findings(
    ctx: _Context, bad_nodes: frozenset[str], lossy_groups: frozenset[GroupKey]
) -> tuple[Finding, ...]:
    healthy = _sorted_latencies(ctx.cells, ctx.groups, skip=bad_nodes)
    baselines = {key: median(values) for key, values in healthy.items()}
    bad: set[Pair] = set()
    for pair, cell in ctx.cells.items():
        if bad_nodes.intersection(pair):
            continue
        group = ctx.groups[pair]
        lossy = group not in lossy_groups and is_lossy(cell, ctx.thresholds)
        if lossy or is_slow(cell.latency_ms, baselines.get(group), ctx.thresholds):
            bad.add(pair)
    links = sorted(
        {tuple(sorted(pair, key=natural_key)) for pair in bad},
        key=lambda link: (natural_key(link[0]), natural_key(link[1])),
    )
    bad_count = _count_by_node(bad)
    all_count = _count_by_node(pair for pair in ctx.cells if not bad_nodes.intersection(pair))
    left_out = f" (pairs with {', '.join(sorted(bad_nodes, key=natural_key))} left out)"
    findings: list[Finding] = []
    for a, b in links:
        directions = [(a, b), (b, a)]
        group = ctx.groups.get((a, b), ctx.groups.get((b, a), INTRA))
        evidence = tuple(_evidence(ctx, pair, baselines.get(group)) for pair in directions)
        bad_directions = [pair for pair in directions if pair in bad]
        measured = [pair for pair in directions if pair in ctx.cells]
        elsewhere = "; ".join(
            f"{node} {bad_count.get(node, 0) - len(bad_directions)} of "
            f"{all_count.get(node, 0) - len(measured)}"
            for node in (a, b)
        ) + (left_out if bad_nodes else "")
        observations = (
            Observation(
                "both directions bad" if len(bad_directions) == 2 else "the reverse is fine",
                evidence,
            ),
            Observation(f"bad among their other pairs: {elsewhere}"),
        )
        findings.append(
            Finding(Kind.LINK, f"{a}<->{b}", _link_summary(ctx, bad_directions), observations)
        )
    return tuple(findings)


def _count_by_node(pairs: Iterable[Pair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in pairs:
        for node in set(pair):
            counts[node] = counts.get(node, 0) + 1
    return counts


def _link_summary(ctx: _Context, bad_directions: Sequence[Pair]) -> str:
    parts = []
    for src, dst in bad_directions:
        cell = ctx.cells[(src, dst)]
        if cell.lost:
            what = "no reply"
        elif is_lossy(cell, ctx.thresholds) and cell.loss_ratio is not None:
            what = f"loss {format_percent(cell.loss_ratio)}"
        else:
            what = "slow" if cell.latency_ms is None else f"slow, {format_ms(cell.latency_ms)} ms"
        parts.append(f"{src} -> {dst} {what}")
    return "; ".join(parts)


# --- MTU black holes ----------------------------------------------------------------------------


def mtu_findings(ctx: _Context) -> tuple[Finding, ...]:
    """Pairs whose large packets vanish without an ICMP report while small ones are answered:
    a pair of zones when enough of its cross-zone pairs do, a node when enough of its own
    paths do (it has the small MTU: its interface, its overlay), else each pair. Distinct from
    loss: the latency probes of these pairs are answered."""
    holes = {pair for pair, cell in ctx.cells.items() if cell.mtu_black_hole}
    if not holes:
        return ()
    findings: list[Finding] = []
    explained: set[Pair] = set()
    by_group: dict[GroupKey, list[Pair]] = {}
    for pair in ctx.cells:
        by_group.setdefault(ctx.groups[pair], []).append(pair)
    for group, pairs in sorted(by_group.items()):
        if group == INTRA:
            continue
        bad = [pair for pair in pairs if pair in holes]
        if enough(len(bad), len(pairs)):
            explained.update(bad)
            findings.append(
                _mtu_finding(
                    ctx, f"{group[0]}<->{group[1]}", lambda n: f"the {n} cross-zone", bad, pairs
                )
            )
    remaining = holes - explained
    touching = _by_node(ctx.cells, 0)
    for node, column in _by_node(ctx.cells, 1).items():
        touching.setdefault(node, []).extend(column)
    for node in sorted(touching, key=natural_key):
        pairs = [pair for pair in touching[node] if not explained.intersection({pair})]
        bad = [pair for pair in pairs if pair in remaining]
        if enough(len(bad), len(pairs)):
            remaining.difference_update(bad)
            explained.update(bad)
            findings.append(
                _mtu_finding(ctx, node, functools.partial("{}'s {}".format, node), bad, pairs)
            )
    for a, b in sorted(
        {tuple(sorted(pair, key=natural_key)) for pair in remaining},
        key=lambda link: (natural_key(link[0]), natural_key(link[1])),
    ):
        bad = [pair for pair in ((a, b), (b, a)) if pair in remaining]
        measured = [pair for pair in ((a, b), (b, a)) if pair in ctx.cells]
        findings.append(_mtu_finding(ctx, f"{a}<->{b}", lambda n: f"the {n}", bad, measured))
    return tuple(findings)


def _mtu_finding(
    ctx: _Context,
    subject: str,
    whose: Callable[[int], str],
    bad: Sequence[Pair],
    pairs: Sequence[Pair],
) -> Finding:
    sizes = sorted(size for pair in bad if (size := ctx.cells[pair].path_mtu_bytes) is not None)
    largest = (
        f"{int(sizes[0])}"
        if sizes and sizes[0] == sizes[-1]
        else (f"{int(sizes[0])}-{int(sizes[-1])}" if sizes else "?")
    )
    evidence = tuple(
        sorted((_evidence(ctx, pair, None) for pair in bad),
               key=lambda e: (natural_key(e.src), natural_key(e.dst)))
    )  # fmt: skip
    return Finding(
        Kind.MTU,
        subject,
        f"MTU black hole: packets over {largest} bytes vanish without an ICMP report on "
        f"{len(bad)} of {whose(len(pairs))} paths; small packets pass",
        (Observation("largest packets that got through", evidence),),
    )


# --- coverage ------------------------------------------------------------------------------------


def coverage_findings(ctx: _Context) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    nodes = ctx.matrix.nodes
    reporters = {src for src, _ in ctx.cells}
    if not ctx.cells:
        finding = Finding(
            Kind.COVERAGE,
            "cluster",
            "no pair is measured",
            (Observation(f"{len(nodes)} nodes known, no latency, loss or probe series"),),
        )
        return (finding,), ()
    if len(reporters) == 1 and len(nodes) > 1:
        (only,) = reporters
        note = (
            f"only {only} reports (an agent's own endpoint?): a node's problem cannot be told "
            "from a link's, and coverage is not checked; point --url at the collector"
        )
        return (), (note,)
    columns = _by_node(ctx.cells, 1)
    findings = []
    for node in nodes:
        probers = {src for src, _ in columns.get(node, [])}
        problems = [
            *_silent_agent(node, reporters),
            *_missing_probers(ctx.matrix, node, probers, reporters),
        ]
        if problems:
            summary = " and ".join(summary for summary, _ in problems)
            evidence = tuple(Observation(text) for _, text in problems)
            findings.append(Finding(Kind.COVERAGE, node, summary, evidence))
    return tuple(findings), ()


def _silent_agent(node: str, reporters: set[str]) -> list[tuple[str, str]]:
    if node in reporters:
        return []
    return [
        (
            "probes nobody",
            f"no series from {node}, while {len(reporters)} other nodes report theirs: "
            "is its agent running, and do its metrics reach this endpoint?",
        )
    ]


def _missing_probers(
    matrix: Matrix, node: str, probers: set[str], reporters: set[str]
) -> list[tuple[str, str]]:
    """Probed by nobody; or by fewer agents than expected.

    Agents that export `monlat_expected_probers` may probe only some peers (--max-peers), and say
    how many should probe them; without it every reporting agent should probe every node.
    """
    others = reporters - {node}
    if not others:
        return []
    if not probers:
        return [
            ("nobody probes it", f"none of the {len(others)} reporting agents has a pair to it")
        ]
    if not matrix.expected_probers:
        missing = sorted(others - probers, key=natural_key)
        if not missing:
            return []
        return [
            (
                f"probed by {len(probers)} of {len(others)} agents",
                f"no pair to {node} from {_names(missing)}",
            )
        ]
    expected = matrix.expected_probers.get(node)
    silent = sum(1 for name in matrix.nodes if name not in reporters and name != node)
    if expected is None or len(probers) + silent >= expected:
        return []
    return [
        (
            f"probed by {len(probers)} agents, {expected} expected",
            f"probed by {_names(sorted(probers, key=natural_key))}; its agent expects {expected} "
            "(monlat_expected_probers)",
        )
    ]


def _names(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- all of it -----------------------------------------------------------------------------------


def diagnose(matrix: Matrix, thresholds: Thresholds = Thresholds()) -> Diagnosis:
    ctx = _context(matrix, thresholds)
    zones = zone_findings(ctx)
    nodes = node_findings(ctx, zones.lossy_groups)
    bad_nodes = frozenset(f.subject for f in nodes)
    links = link_findings(ctx, bad_nodes, zones.lossy_groups)
    mtu = mtu_findings(ctx)
    coverage, notes = coverage_findings(ctx)
    healthy = _sorted_latencies(ctx.cells, ctx.groups, skip=bad_nodes)
    single = [
        f"zone {zone} has one node: its trouble shows as the node's"
        for zone, size in sorted(_zone_sizes(matrix).items())
        if size == 1
    ]
    return Diagnosis(
        findings=(*zones.findings, *nodes, *links, *mtu, *coverage),
        nodes=len(matrix.nodes),
        pairs=len(ctx.cells),
        baseline_ms=median(healthy.get(INTRA, ())),
        thresholds=thresholds,
        notes=(*notes, *single),
        common_suffix=abbreviate(matrix.nodes)[1],
    )
