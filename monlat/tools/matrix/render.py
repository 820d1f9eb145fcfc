"""The matrix for people and scripts: a coloured terminal table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monlat.tools.matrix.model import Cell, Matrix, matrix_median

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
