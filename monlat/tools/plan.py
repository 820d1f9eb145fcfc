"""`monlat plan`: what the defaults will do for a cluster of a given size, before installing.

Series are counted exactly: a few representative agents are built by the agent's own code
(monlat.tools.synthetic) and their pushes counted as the collector's Prometheus exporter
serves them.
Memory and scrape figures come from the fleet benchmark's measurements (plan_figures.json,
written by `hatch run bench:fleet --write-plan-figures`), never from guesses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, TextIO

from monlat.agent.export.otlp import MAX_POINTS_PER_REQUEST
from monlat.agent.settings import parse_sizing
from monlat.agent.sizing import SizingSettings
from monlat.common.arguments import ArgumentParser, add_choice
from monlat.common.durations import parse_duration
from monlat.common.errors import ConfigError
from monlat.tools.synthetic import (
    ClusterShape,
    SyntheticAgent,
    cluster,
    data_points,
    prometheus_series,
)

# Representative agents per zone: their series counts differ by zone size only.
_SAMPLES_PER_ZONE = 2
COLLECTOR_HEADROOM = 0.75  # peak RSS at most this share of the pod's memory limit


def load_figures() -> dict[str, Any]:
    text = resources.files("monlat.tools").joinpath("plan_figures.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


@dataclass(frozen=True)
class Plan:
    nodes: int
    zones: int
    dual_stack: bool
    zone_labels: bool
    max_peers: str
    cross_zone_peers: str
    pair_histograms: str
    peers_per_node: float
    probes_per_s_per_node: float
    probes_per_s: float
    series_per_node: float
    series: int
    otlp_requests_per_push: int
    otlp_bytes_per_push: int
    collector_limit: str
    collector_peak_mib: float
    collector_share_of_limit: float
    metrics_mb: float
    scrape_s: float
    prometheus_series: int
    prometheus_mib: float
    measured: str
    points: int  # data points the collector holds (one per series, one per histogram)
    points_held: int  # the most the fleet benchmark saw the shipped collector hold
    beyond_measured: bool
    refused_at: int | None  # the fewest with which it refused data, if any row did


def make_plan(
    shape: ClusterShape,
    settings: SizingSettings,
    interval_s: float,
    figures: Mapping[str, Any],
) -> Plan:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    nodes = cluster(shape)
    names = list(nodes)
    samples = [
        names[zone + shape.zones * step]
        for zone in range(shape.zones)
        for step in range(_SAMPLES_PER_ZONE)
        if zone + shape.zones * step < len(names)
    ]
    agents = [SyntheticAgent(name, nodes, shape, settings) for name in samples]
    try:
        batches = [agent.metrics_data() for agent in agents]
        per_node = sum(prometheus_series(b) for b in batches) / len(batches)
        peers = sum(agent.peers for agent in agents) / len(agents)
        points = max(data_points(b) for b in batches)
        points_per_node = sum(data_points(b) for b in batches) / len(batches)
        size = max(len(encode_metrics(b).SerializeToString()) for b in batches)
        sizing = agents[0].sizing.describe()
    finally:
        for agent in agents:
            agent.close()
    series = round(per_node * shape.nodes)
    cluster_points = round(points_per_node * shape.nodes)
    collector = (
        figures["collector_base_mib"] + cluster_points * figures["collector_kib_per_point"] / 1024
    )
    refused_at = figures.get("collector_points_refused")
    metrics_bytes = series * figures["metrics_bytes_per_series"]
    return Plan(
        nodes=shape.nodes,
        zones=shape.zones,
        dual_stack=shape.dual_stack,
        zone_labels=shape.zone_labels,
        max_peers=sizing["max_peers"],
        cross_zone_peers=sizing["cross_zone_peers"],
        pair_histograms=sizing["pair_histograms"],
        peers_per_node=peers,
        probes_per_s_per_node=peers / interval_s,
        probes_per_s=peers * shape.nodes / interval_s,
        series_per_node=per_node,
        series=series,
        otlp_requests_per_push=max(1, math.ceil(points / MAX_POINTS_PER_REQUEST)),
        otlp_bytes_per_push=size,
        collector_limit=figures["collector_limit"],
        collector_peak_mib=collector,
        collector_share_of_limit=collector / figures["collector_limit_mib"],
        metrics_mb=metrics_bytes / 1e6,
        scrape_s=series * figures["scrape_s_per_million_series"] / 1e6,
        prometheus_series=series,
        prometheus_mib=figures["prometheus_base_mib"]
        + series * figures["prometheus_kib_per_series"] / 1024,
        measured=figures["measured"],
        points=cluster_points,
        points_held=figures["collector_points_held"],
        beyond_measured=cluster_points > figures["collector_points_held"],
        refused_at=refused_at,
    )


def render_plan(plan: Plan) -> str:
    zones = f" in {plan.zones} zones" if plan.zones > 1 else ""
    family = ", dual-stack" if plan.dual_stack else ""
    lines = [
        f"monlat plan: {plan.nodes:,} nodes{zones}{family}",
        f"  sizing        --max-peers {plan.max_peers}, --cross-zone-peers "
        f"{plan.cross_zone_peers}, --pair-histograms {plan.pair_histograms}",
        f"  per node      {plan.peers_per_node:,.1f} peers, {plan.probes_per_s_per_node:,.1f} "
        f"probes/s, {plan.series_per_node:,.0f} series, {plan.otlp_requests_per_push} OTLP "
        f"request(s) of up to {plan.otlp_bytes_per_push / 1024:,.0f} KiB per push",
        f"  cluster       {plan.probes_per_s:,.0f} probes/s, {plan.series:,} series",
        f"  collector     ~{plan.collector_peak_mib:,.0f} MiB peak of its {plan.collector_limit} "
        f"limit ({plan.collector_share_of_limit:.0%}); /metrics ~{plan.metrics_mb:,.1f} MB, "
        f"one scrape ~{plan.scrape_s:,.1f} s",
        f"  Prometheus    {plan.prometheus_series:,} head series, ~{plan.prometheus_mib:,.0f} "
        "MiB for them",
        f"  (memory and scrape from the fleet benchmark of {plan.measured})",
    ]
    if plan.beyond_measured:
        refused = (
            f"; with {plan.refused_at:,} it refused data" if plan.refused_at is not None else ""
        )
        lines.append(
            f"  warning: {plan.points:,} data points at the collector, more than the "
            f"{plan.points_held:,} the fleet benchmark saw it hold{refused}: scale the "
            "collector out (deploy/overlays/scale-out) or lower --max-peers"
        )
    elif plan.collector_share_of_limit > COLLECTOR_HEADROOM:
        lines.append(
            f"  warning: over {COLLECTOR_HEADROOM:.0%} of the collector's limit: lower "
            "--max-peers, keep --pair-histograms auto, or scale the collector out "
            "(deploy/overlays/scale-out)"
        )
    lines += [
        "  to change it: --max-peers K (pairs = nodes x K), --cross-zone-peers C (C per other "
        "zone), --pair-histograms true (+23 series per pair), --ip-family dual (x2 pairs)",
    ]
    return "\n".join(lines) + "\n"


def build_plan_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="monlat plan",
        description="What monlat's defaults will do for a cluster of N nodes.",
    )
    parser.add_argument("--nodes", required=True, metavar="N", help="nodes in the cluster")
    parser.add_argument("--zones", default="1", metavar="Z", help="zones (nodes spread evenly)")
    parser.add_argument("--dual-stack", action="store_true", help="--ip-family dual")
    parser.add_argument("--zone-labels", action="store_true", help="--zone-labels true")
    parser.add_argument("--max-peers", help="as for the agent: auto, all or K; default auto")
    parser.add_argument("--cross-zone-peers", help="as for the agent: auto, off or C; default auto")
    parser.add_argument(
        "--pair-histograms", help="as for the agent: auto, true or false; default auto"
    )
    parser.add_argument("--interval", default="1s", help="as for the agent; default 1s")
    add_choice(parser, "--format", ("text", "json"), "text or json")
    return parser


def _count(setting: str, text: str, low: int, high: int) -> int:
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise ConfigError(setting, f"expected a whole number from {low} to {high}, got {text!r}")
    return int(text)


def run_plan(argv: Sequence[str], environ: Mapping[str, str], out: TextIO) -> int:
    """`monlat plan`; bad input raises ConfigError (exit 2 in the CLI)."""
    parser = build_plan_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help(out)
        return 0
    args = parser.parse_args(list(argv))
    nodes = _count("--nodes", args.nodes, 2, 20_000)
    zones = _count("--zones", args.zones, 1, min(nodes, 500))

    def text_of(flag: str, default: str) -> tuple[str, str]:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        return flag, default if value is None else str(value)

    settings = parse_sizing(text_of)
    interval = parse_duration("--interval", args.interval)
    shape = ClusterShape(nodes, zones, dual_stack=args.dual_stack, zone_labels=args.zone_labels)
    plan = make_plan(shape, settings, interval, load_figures())
    if args.format == "json":
        out.write(json.dumps(asdict(plan), indent=2) + "\n")
    else:
        out.write(render_plan(plan))
    return 0
