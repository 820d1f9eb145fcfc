"""`monlat diagnose` on the command line: arguments, thresholds, exit status."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from monlat.common.arguments import ArgumentParser, add_choice
from monlat.common.errors import ConfigError
from monlat.tools.diagnose.model import Thresholds, diagnose
from monlat.tools.diagnose.render import render_json, render_text
from monlat.tools.matrix.command import (
    add_url_argument,
    add_view_arguments,
    load_matrix,
    parse_view,
    resolve_url,
)
from monlat.tools.matrix.model import View

FORMATS = ("text", "json")


# --- command line --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnoseOptions:
    setting: str
    url: str
    format: str
    thresholds: Thresholds
    view: View = field(default_factory=View)


def build_diagnose_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="monlat diagnose",
        description="Find slow or lossy nodes, links and zone boundaries, and MTU black holes, "
        "from a metrics endpoint. "
        "Exit status: 0 nothing found, 1 findings, 2 bad input or unreachable URL.",
    )
    add_url_argument(parser)
    add_view_arguments(parser)
    add_choice(parser, "--format", FORMATS, "text or json")
    parser.add_argument(
        "--latency-factor",
        metavar="F",
        default="2",
        help="slow = at least F times the baseline (and 0.2 ms above it); default 2",
    )
    parser.add_argument(
        "--loss-threshold",
        metavar="L",
        default="0.05",
        help="lossy = losing at least L (0.05 or 5%%) over the agents' window; default 0.05",
    )
    return parser


def parse_factor(setting: str, text: str) -> float:
    cleaned = text.strip().rstrip("xX")
    try:
        value = float(cleaned)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 1:
        raise ConfigError(setting, f"expected a number greater than 1, like 2 or 1.5, got {text!r}")
    return value


def parse_ratio(setting: str, text: str) -> float:
    cleaned = text.strip()
    scale = 100.0 if cleaned.endswith("%") else 1.0
    try:
        value = float(cleaned.rstrip("%")) / scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(
            setting,
            f"expected a ratio above 0 and at most 1 (0.05) or a percentage (5%), got {text!r}",
        )
    return value


def parse_diagnose_args(argv: Sequence[str], environ: Mapping[str, str]) -> DiagnoseOptions:
    args = build_diagnose_parser().parse_args(list(argv))
    setting, url = resolve_url(args.url, environ)
    return DiagnoseOptions(
        setting=setting,
        url=url,
        format=args.format,
        thresholds=Thresholds(
            latency_factor=parse_factor("--latency-factor", args.latency_factor),
            loss_threshold=parse_ratio("--loss-threshold", args.loss_threshold),
        ),
        view=parse_view(args),
    )


def run_diagnose(argv: Sequence[str], environ: Mapping[str, str], out: TextIO) -> int:
    """`monlat diagnose`: 0 nothing found, 1 findings; bad input raises ConfigError (exit 2)."""
    if "-h" in argv or "--help" in argv:
        build_diagnose_parser().print_help(out)
        return 0
    options = parse_diagnose_args(argv, environ)
    matrix = load_matrix(options.setting, options.url, view=options.view)
    diagnosis = diagnose(matrix, options.thresholds)
    out.write(render_json(diagnosis) if options.format == "json" else render_text(diagnosis))
    return 1 if diagnosis.findings else 0
