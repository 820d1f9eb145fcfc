"""`monlat matrix`: the node-to-node matrix from a metrics endpoint, for a terminal or a script.

Rows are the probing node (`from`), columns the probed one (`to`). A cell shows the latest RTT in
milliseconds, coloured by its ratio to the matrix's median; loss and missing data are marked with
text, so the table reads the same without colour:

    12%    loss over the agent's window (--window, 60 s by default) of at least 1%
    LOST   the pair is probed but has no RTT and 100 % loss
    ?      the pair has series but no RTT and no loss figure yet
    ·      no series at all for the pair
    \\      the diagonal (a node and itself)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import shutil
import statistics
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from monlat.common import names as metric
from monlat.common.arguments import ArgumentParser
from monlat.common.durations import parse_duration
from monlat.common.errors import ConfigError
from monlat.tools.scrape import DEFAULT_TIMEOUT_S, Sample, parse_url, scrape

LATENCY = metric.LATENCY.sample
LOSS = metric.LOSS.sample
JITTER = metric.JITTER.sample
PROBES = metric.PROBES.sample
EXPECTED_PROBERS = metric.EXPECTED_PROBERS.sample
# Series that name a node without a pair: an agent with no peers still shows as a node.
_NODE_METRICS = {
    metric.AGENT_INFO.sample: "from",
    metric.PEERS.sample: "from",
    EXPECTED_PROBERS: "to",
}

_WANTED = frozenset((LATENCY, LOSS, JITTER, PROBES, *_NODE_METRICS))

URL_ENV = "MONLAT_URL"
FORMATS = ("table", "csv", "json")
SORTS = ("zone", "name")
MIN_WATCH_S = 0.5

LOSS_MARK = 0.01  # a cell shows its loss instead of its RTT from 1 %
CELL_WIDTH = 5  # "0.436" -> "0.44", "12.3", "60000", "LOST", "12%"
NAME_HEADER_MAX = 8  # longer names: columns are numbered like the rows
ROW_LABEL_MAX = 40
# Colour grade: RTT / median on a log scale, green up to GREEN_RATIO, red from RED_RATIO; an RTT
# within MIN_EXCESS_MS of the median is green whatever the ratio (sub-0.1 ms noise on a LAN).
GREEN_RATIO = 1.25
RED_RATIO = 4.0
MIN_EXCESS_MS = 0.1
GRADIENT_256 = (46, 82, 118, 154, 190, 226, 220, 214, 208, 202, 196)
GRADIENT_16 = (32, 33, 31)  # green, yellow, red
CLEAR_SCREEN = "\x1b[H\x1b[2J"


# --- the matrix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    latency_ms: float | None = None
    loss_ratio: float | None = None
    jitter_ms: float | None = None
    probes: float | None = None  # monlat_probes_total summed over results

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
        if sample.name not in (LATENCY, LOSS, JITTER, PROBES):
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


def format_ms(value: float) -> str:
    """At most five characters: 0.44, 12.3, 1234, 60000."""
    if round(value, 2) < 10:
        return f"{value:.2f}"
    if round(value, 1) < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def format_percent(ratio: float) -> str:
    """1.5%, 5%, 12%, 100%."""
    percent = ratio * 100
    if percent < 10 and round(percent, 1) != round(percent):
        return f"{percent:.1f}%"
    return f"{percent:.0f}%"


# --- table rendering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TableStyle:
    colors: int = 0  # 0 (none), 16 or 256
    missing: str = "·"
    width: int | None = None  # terminal width, for a hint when the table is wider


def color_depth(*, no_color: bool, isatty: bool, environ: Mapping[str, str]) -> int:
    if no_color or environ.get("NO_COLOR") or not isatty:
        return 0
    term = environ.get("TERM", "")
    if term == "dumb":
        return 0
    if "256color" in term or environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return 256
    return 16


def missing_marker(encoding: str | None) -> str:
    try:
        "·".encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "-"
    return "·"


@dataclass(frozen=True)
class CellText:
    text: str
    kind: str  # "latency", "loss", "lost", "unknown", "missing", "self"
    grade: float = 0.0  # 0 (green) .. 1 (red), for "latency"


def latency_grade(latency_ms: float, median_ms: float | None) -> float:
    if median_ms is None or median_ms <= 0 or latency_ms - median_ms < MIN_EXCESS_MS:
        return 0.0
    ratio = latency_ms / median_ms
    if ratio <= GREEN_RATIO:
        return 0.0
    return min(1.0, math.log(ratio / GREEN_RATIO) / math.log(RED_RATIO / GREEN_RATIO))


def cell_text(
    cell: Cell | None, *, diagonal: bool, median_ms: float | None, missing: str
) -> CellText:
    if diagonal:
        return CellText("\\", "self")
    if cell is None:
        return CellText(missing, "missing")
    if cell.lost:
        return CellText("LOST", "lost")
    if cell.loss_ratio is not None and cell.loss_ratio >= LOSS_MARK:
        return CellText(format_percent(cell.loss_ratio), "loss")
    if cell.latency_ms is None:
        return CellText("?", "unknown")
    return CellText(
        format_ms(cell.latency_ms), "latency", latency_grade(cell.latency_ms, median_ms)
    )


def sgr(text: CellText, colors: int) -> str:
    """The SGR parameters for a cell, or "" for none."""
    if colors == 0:
        return ""
    if text.kind == "latency":
        if colors == 256:
            return f"38;5;{GRADIENT_256[round(text.grade * (len(GRADIENT_256) - 1))]}"
        return str(GRADIENT_16[min(len(GRADIENT_16) - 1, int(text.grade * len(GRADIENT_16)))])
    if text.kind == "loss":
        return "1;38;5;196" if colors == 256 else "1;31"
    if text.kind == "lost":
        return "1;97;41"
    return "38;5;244" if colors == 256 else "90"


def paint(text: str, parameters: str) -> str:
    return f"\x1b[{parameters}m{text}\x1b[0m" if parameters else text


def abbreviate(names: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """Drop a domain suffix shared by every name (`.eu-west-1.compute.internal`)."""
    if len(names) < 2:
        return tuple(names), ""
    first = names[0]
    suffix = ""
    for index in range(len(first)):
        if first[index] == "." and all(
            name.endswith(first[index:]) and len(name) > len(first) - index for name in names
        ):
            suffix = first[index:]
            break
    if not any(char.isalpha() for char in suffix):  # not the tail of IP addresses
        return tuple(names), ""
    return tuple(name[: -len(suffix)] for name in names), suffix


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: (keep + 1) // 2] + "~" + text[len(text) - keep // 2 :]


def zone_boundaries(nodes: Sequence[str], zones: Mapping[str, str]) -> frozenset[int]:
    """Column indices that start a new zone, when each zone's nodes are contiguous."""
    if not zones:
        return frozenset()
    starts = [i for i in range(1, len(nodes)) if zones.get(nodes[i]) != zones.get(nodes[i - 1])]
    distinct = {zones.get(node) for node in nodes}
    return frozenset(starts) if len(starts) == len(distinct) - 1 else frozenset()


def render_table(matrix: Matrix, nodes: Sequence[str], style: TableStyle) -> str:
    """The coloured (or plain) table, with a title and a legend; ends with a newline."""
    median_ms = matrix_median(matrix)
    measured = sum(1 for (s, d), c in matrix.cells.items() if s != d and c.latency_ms is not None)
    title = f"{len(nodes)} nodes, {measured} pairs with an RTT"
    if median_ms is not None:
        title += f", median {format_ms(median_ms)} ms"
    lines = [title + " (rows: from, columns: to)"]
    if not nodes:
        return lines[0] + "\nno pair data yet\n"

    labels, suffix = abbreviate(nodes)
    numbered = max(len(label) for label in labels) > NAME_HEADER_MAX
    width = max(CELL_WIDTH, len(str(len(nodes))) if numbered else max(map(len, labels)))
    headers = [str(i) for i in range(1, len(nodes) + 1)] if numbered else list(labels)
    index_width = len(str(len(nodes)))
    row_labels = [
        f"{i:>{index_width}} {shorten(label, ROW_LABEL_MAX)}" if numbered else label
        for i, label in enumerate(labels, 1)
    ]
    zone_labels = [matrix.zones.get(node, "-") for node in nodes]
    label_width = max(len(label) for label in row_labels)
    zone_width = max(map(len, zone_labels)) if matrix.has_zones else 0
    boundaries = zone_boundaries(nodes, matrix.zones)

    def prefix(label: str, zone: str) -> str:
        text = f"{label:<{label_width}}"
        return text + (f"  {zone:<{zone_width}}" if matrix.has_zones else "")

    def row(texts: Sequence[str], visible: Sequence[int]) -> str:
        parts = []
        for index, (text, length) in enumerate(zip(texts, visible, strict=True)):
            separator = " |" if index in boundaries else ""
            parts.append(f"{separator} {' ' * (width - length)}{text}")
        return "".join(parts)

    head_zone = "zone" if matrix.has_zones else ""
    header = prefix("from \\ to" if label_width >= 9 else "", head_zone)
    lines.append(header + row(headers, [len(h) for h in headers]))
    for src, label, zone in zip(nodes, row_labels, zone_labels, strict=True):
        texts = [
            cell_text(
                matrix.cell(src, dst),
                diagonal=src == dst,
                median_ms=median_ms,
                missing=style.missing,
            )
            for dst in nodes
        ]
        painted = [paint(t.text, sgr(t, style.colors)) for t in texts]
        lines.append(prefix(label, zone) + row(painted, [len(t.text) for t in texts]))
    lines.extend(_legend(style, median_ms, numbered=numbered, suffix=suffix))
    table_width = len(prefix("", "")) + len(nodes) * (width + 1) + 2 * len(boundaries)
    if style.width and table_width > style.width:
        lines.append(
            f"(the table is {table_width} columns wide, the terminal {style.width}: "
            "widen it, or use --format csv)"
        )
    return "\n".join(lines) + "\n"


def _legend(
    style: TableStyle, median_ms: float | None, *, numbered: bool, suffix: str
) -> list[str]:
    lines = [
        f"RTT ms, latest interval; 12% loss over the window (>=1%); LOST no reply, 100% loss; "
        f"? no RTT yet; {style.missing} no data; \\ self"
    ]
    if style.colors and median_ms is not None:
        lines.append(
            f"colour: RTT / median {format_ms(median_ms)} ms, green up to {GREEN_RATIO:g}x "
            f"(or within +{MIN_EXCESS_MS:g} ms), yellow about 2x, red from {RED_RATIO:g}x"
        )
    if numbered:
        lines.append("columns are numbered as the rows")
    if suffix:
        lines.append(f"names shown without their common suffix {suffix}")
    return lines


# --- csv and json --------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)


def render_csv(matrix: Matrix, nodes: Sequence[str]) -> str:
    """One row per ordered pair (the diagonal only when measured); empty fields: no data."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["from", "to", "from_zone", "to_zone", "latency_ms", "loss_ratio", "jitter_ms", "probes"]
    )
    for src in nodes:
        for dst in nodes:
            cell = matrix.cell(src, dst)
            if src == dst and cell is None:
                continue
            cell = cell or Cell()
            writer.writerow(
                [
                    src,
                    dst,
                    matrix.zones.get(src, ""),
                    matrix.zones.get(dst, ""),
                    _number(cell.latency_ms),
                    _number(cell.loss_ratio),
                    _number(cell.jitter_ms),
                    _number(cell.probes),
                ]
            )
    return buffer.getvalue()


def render_json(matrix: Matrix, nodes: Sequence[str]) -> str:
    """{"nodes": [...], "zones": {...}, "cells": {from: {to: {...}}}}; pairs without data absent."""
    cells: dict[str, dict[str, dict[str, float | None]]] = {}
    for src in nodes:
        row = {
            dst: {
                "latency_ms": cell.latency_ms,
                "loss_ratio": cell.loss_ratio,
                "jitter_ms": cell.jitter_ms,
                "probes": cell.probes,
            }
            for dst in nodes
            if (cell := matrix.cell(src, dst)) is not None
        }
        if row:
            cells[src] = row
    document = {"nodes": list(nodes), "zones": dict(matrix.zones), "cells": cells}
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


# --- watching ------------------------------------------------------------------------------------


def watch(
    frames: Iterable[str],
    interval_s: float,
    out: TextIO,
    *,
    clear: bool,
    sleep: Callable[[float], None] = time.sleep,
    iterations: int | None = None,
) -> None:
    """Show frames every `interval_s` (clearing the screen on a terminal) until they run out."""
    iterator = iter(frames)
    shown = 0
    while iterations is None or shown < iterations:
        if shown:
            sleep(interval_s)
        frame = next(iterator, None)
        if frame is None:
            return
        out.write((CLEAR_SCREEN if clear else "\n" if shown else "") + frame)
        out.flush()
        shown += 1


def watch_frames(
    first: Matrix,
    load: Callable[[], Matrix],
    render: Callable[[Matrix], str],
    heading: Callable[[], str],
) -> Iterator[str]:
    """The first matrix, then one fresh load per frame; a failed load shows and is retried."""
    yield heading() + render(first)
    while True:
        try:
            matrix = load()
        except ConfigError as err:
            yield heading() + f"cannot refresh: {err.problem} (retrying)\n"
            continue
        yield heading() + render(matrix)


# --- command line --------------------------------------------------------------------------------


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        metavar="URL",
        help=f"an agent's or the collector's metrics URL (no path: /metrics) [env {URL_ENV}]",
    )


def resolve_url(flag_value: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """(setting name for messages, validated URL) from --url, else MONLAT_URL."""
    if flag_value is not None:
        return "--url", parse_url("--url", flag_value)
    if environ.get(URL_ENV, "").strip():
        return URL_ENV, parse_url(URL_ENV, environ[URL_ENV])
    raise ConfigError("--url", "required, e.g. --url http://monlat.monlat.svc:9090/metrics")


def load_matrix(
    setting: str, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, view: View | None = None
) -> Matrix:
    samples = scrape(setting, url, timeout_s, keep=wanted)
    if not is_monlat_exposition(samples):
        raise ConfigError(
            setting, f"{url}: no monlat metrics there (no latency_between_nodes or monlat_*)"
        )
    return build_matrix(samples, view)


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--network",
        default="host",
        help="host (the host-network agents) or the network label of other agents, e.g. pod; "
        "default host",
    )
    parser.add_argument(
        "--family",
        default="ipv4",
        type=str.lower,
        choices=("ipv4", "ipv6"),
        help="ipv4 or ipv6, for dual-stack series; default ipv4",
    )


def parse_view(args: argparse.Namespace) -> View:
    network = args.network.strip()
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", network):
        raise ConfigError("--network", f"invalid network label value {args.network!r}")
    return View(network=network, family=args.family)


@dataclass(frozen=True)
class MatrixOptions:
    setting: str  # where the URL came from, for messages
    url: str
    format: str
    sort: str
    watch_s: float | None
    no_color: bool
    view: View = field(default_factory=View)


def build_matrix_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="monlat matrix",
        description="Show the node-to-node latency matrix from a metrics endpoint.",
    )
    add_url_argument(parser)
    parser.add_argument(
        "--format",
        default="table",
        type=str.lower,
        choices=FORMATS,
        help="table, csv or json; default table",
    )
    parser.add_argument(
        "--sort",
        default="zone",
        type=str.lower,
        choices=SORTS,
        help="zone (by zone label, then name) or name; default zone",
    )
    parser.add_argument(
        "--watch", metavar="SECONDS", help="refresh every SECONDS until Ctrl-C (table only)"
    )
    parser.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR)")
    add_view_arguments(parser)
    return parser


def parse_matrix_args(argv: Sequence[str], environ: Mapping[str, str]) -> MatrixOptions:
    args = build_matrix_parser().parse_args(list(argv))
    setting, url = resolve_url(args.url, environ)
    output = args.format
    watch_s: float | None = None
    if args.watch is not None:
        watch_s = parse_duration("--watch", args.watch)
        if watch_s < MIN_WATCH_S:
            raise ConfigError("--watch", f"must be at least {MIN_WATCH_S:g}s")
        if output != "table":
            raise ConfigError("--watch", "only with --format table")
    return MatrixOptions(
        setting=setting,
        url=url,
        format=output,
        sort=args.sort,
        watch_s=watch_s,
        no_color=args.no_color,
        view=parse_view(args),
    )


def render(matrix: Matrix, options: MatrixOptions, style: TableStyle) -> str:
    nodes = order_nodes(matrix, options.sort)
    if options.format == "csv":
        return render_csv(matrix, nodes)
    if options.format == "json":
        return render_json(matrix, nodes)
    return render_table(matrix, nodes, style)


def run_matrix(argv: Sequence[str], environ: Mapping[str, str], out: TextIO) -> int:
    """`monlat matrix`; bad input raises ConfigError (exit 2 in the CLI); Ctrl-C ends a watch."""
    parser = build_matrix_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help(out)
        return 0
    options = parse_matrix_args(argv, environ)
    isatty = out.isatty()
    style = TableStyle(
        colors=color_depth(no_color=options.no_color, isatty=isatty, environ=environ),
        missing=missing_marker(getattr(out, "encoding", None)),
        width=shutil.get_terminal_size().columns if isatty else None,
    )
    matrix = load_matrix(options.setting, options.url, view=options.view)
    if options.watch_s is None:
        out.write(render(matrix, options, style))
        return 0
    interval = options.watch_s

    def heading() -> str:
        return f"every {interval:g}s: {options.url}  {time.strftime('%H:%M:%S')}\n"

    frames = watch_frames(
        matrix,
        lambda: load_matrix(options.setting, options.url, view=options.view),
        lambda m: render(m, options, style),
        heading,
    )
    try:
        watch(frames, interval, out, clear=isatty)
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
    return 0
