"""`monlat matrix` on the command line: arguments, loading from a URL, watching."""

from __future__ import annotations

import argparse
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from monlat.common.arguments import ArgumentParser, add_choice
from monlat.common.durations import parse_duration
from monlat.common.errors import ConfigError
from monlat.tools.matrix.model import (
    Matrix,
    View,
    build_matrix,
    is_monlat_exposition,
    order_nodes,
    wanted,
)
from monlat.tools.matrix.render import (
    TableStyle,
    color_depth,
    missing_marker,
    render_csv,
    render_json,
    render_table,
)
from monlat.tools.scrape import DEFAULT_TIMEOUT_S, parse_url, scrape

URL_ENV = "MONLAT_URL"
FORMATS = ("table", "csv", "json")
SORTS = ("zone", "name")
MIN_WATCH_S = 0.5


CLEAR_SCREEN = "\x1b[H\x1b[2J"


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
    add_choice(parser, "--family", ("ipv4", "ipv6"), "ipv4 or ipv6, for dual-stack series")


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
    add_choice(parser, "--format", FORMATS, "table, csv or json")
    add_choice(parser, "--sort", SORTS, "zone (by zone label, then name) or name")
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
