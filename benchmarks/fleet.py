"""The fleet: N agents pushing into the shipped collector, scraped by the Debian Prometheus.

    hatch run bench:fleet                    # every row (about 15 minutes, as root)
    hatch run bench:fleet --rows 100,1000z   # some rows: N nodes, z zones (3), d dual-stack,
                                             # b the settings before sizing (full mesh, histograms)
    hatch run bench:fleet --quick            # fewer push rounds

Each simulated agent is the agent's own export code (monlat.tools.synthetic: the sizing, the peer
ring, ResultStore windows, PairSeries, the SDK instruments, the OTLP gRPC exporter with its
request split) on made-up results, with a connection of its own, pushing every 15 s like the
DaemonSet, the agents' pushes spread over the interval. Each agent's requests are encoded once
by its exporter and the same bytes sent every round: on two cores, encoding 5,000 agents a round
in one process would take the CPU the collector is measured on. The collector is the binary
built from deploy/otel-collector/ with the shipped config.yaml and the Deployment's environment
(GOMEMLIMIT, memory limiter); its limits are read from deploy/k8s/monlat.yaml. Prints a table,
writes every figure to JSON, and writes the fitted cost per series that `monlat plan` uses
(monlat/tools/plan_figures.json) with --write-plan-figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc as grpc_lib
from opentelemetry.sdk.metrics.export import MetricsData

from monlat.agent.config import OtlpConfig
from monlat.agent.export.otlp import otlp_exporter
from monlat.agent.sizing import EVERY_PEER, SizingSettings
from monlat.tools.synthetic import (
    ClusterShape,
    SyntheticAgent,
    cluster,
    data_points,
    prometheus_series,
)
from tests.support.agent_process import parse_exposition
from tests.support.collector import Collector, collector_binary, shipped_deployment
from tests.support.ports import free_ports
from tests.support.prometheus_server import PrometheusServer

REPO = Path(__file__).resolve().parents[1]
PLAN_FIGURES = REPO / "monlat" / "tools" / "plan_figures.json"
PUSH_INTERVAL_S = 15.0
DEFAULT_ROWS = "10,100,1000,1000z,5000,5000z,2500zd,5000zd,10b,100b"


@dataclass(frozen=True)
class Row:
    label: str
    shape: ClusterShape
    settings: SizingSettings


def parse_row(text: str) -> Row:
    match = re.fullmatch(r"(\d+)([zdb]*)", text.strip())
    if not match:
        raise SystemExit(f"bench:fleet: error: --rows: bad row {text!r} (e.g. 1000zd)")
    nodes, flags = int(match.group(1)), match.group(2)
    zones = 3 if "z" in flags else 1
    shape = ClusterShape(nodes, zones, dual_stack="d" in flags, zone_labels="z" in flags)
    return Row(text.strip(), shape, EVERY_PEER if "b" in flags else SizingSettings())


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(port: int, path: str) -> tuple[int, str, float]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as reply:
        status, body = reply.status, reply.read().decode()
    return status, body, time.monotonic() - started


def _sum_metric(text: str, name: str) -> float:
    return sum(value for metric, _, value in parse_exposition(text) if metric == name)


class MemorySampler:
    """Samples the collector's RSS and Go heap twice a second: the lowest heap seen in the last
    round is about the live heap (just after a collection), what the series really hold."""

    def __init__(self, pid: int, telemetry_port: int) -> None:
        self._pid = pid
        self._port = telemetry_port
        self._stop = threading.Event()
        self.heap_mib: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                text = _get(self._port, "/metrics")[1]
            except OSError:
                continue
            heap = _sum_metric(text, "otelcol_process_runtime_heap_alloc_bytes")
            self.heap_mib.append(heap / 2**20)

    def live_heap_mib(self, last: int) -> float:
        recent = self.heap_mib[-last:]
        return min(recent) if recent else 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class _Recorder:
    """Stands in for the exporter's gRPC stub: keeps each request it would have sent."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def Export(self, request: Any, metadata: Any = None, timeout: Any = None) -> None:  # noqa: N802
        self.requests.append(request.SerializeToString())


def encoded_push(batch: MetricsData, endpoint: str) -> list[bytes]:
    """One push of an agent as the agent's own OTLP exporter encodes and splits it; the
    simulator sends these bytes each round (encoding 5,000 agents a round in one Python
    process would otherwise take the collector's CPU on this machine)."""
    exporter = otlp_exporter(OtlpConfig(endpoint, "grpc", (), 10.0, True))
    recorder = _Recorder()
    exporter._client = recorder  # type: ignore[attr-defined]
    assert exporter.export(batch).name == "SUCCESS"
    exporter.shutdown(timeout_millis=100)
    return recorder.requests


def run_row(row: Row, rounds: int, workdir: Path, env_overrides: dict[str, str]) -> dict[str, Any]:
    shipped = shipped_deployment()
    env = {**shipped["env"], **env_overrides}
    nodes = cluster(row.shape)
    started = time.monotonic()
    agents = [SyntheticAgent(name, nodes, row.shape, row.settings, seed=1) for name in nodes]
    batches = [agent.metrics_data() for agent in agents]
    build_s = time.monotonic() - started
    expected_series = sum(prometheus_series(batch) for batch in batches)
    points = sum(data_points(batch) for batch in batches)

    grpc, http, metrics, health, telemetry, prom = free_ports(6)
    collector = Collector(
        collector_binary(), "127.0.0.1", grpc, http, metrics, health,
        extra_env=env,
        # The shipped telemetry (level detailed) on a port of its own.
        telemetry_port=telemetry,
        settings=(),
    )  # fmt: skip
    collector.start(workdir / "collector.log")
    assert collector.proc is not None
    pid = collector.proc.pid
    (workdir / "prometheus").mkdir()
    prometheus = PrometheusServer(
        workdir / "prometheus", f"127.0.0.1:{metrics}", port=prom,
        connect=socket.socket, scrape_interval=f"{PUSH_INTERVAL_S:.0f}s",
    )  # fmt: skip
    requests = [encoded_push(batch, f"http://127.0.0.1:{grpc}") for batch in batches]
    # A connection per agent, as in a cluster: gRPC would otherwise share one subchannel.
    channels = [
        grpc_lib.insecure_channel(
            f"127.0.0.1:{grpc}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in agents
    ]
    calls = [channel.unary_unary(EXPORT_METHOD) for channel in channels]
    auth = (("authorization", f"Bearer {collector.token}"),)
    sampler = MemorySampler(pid, telemetry)
    failed = 0
    round_s: list[float] = []
    cpu_before = _cpu_s(pid)
    try:
        for _ in range(rounds):
            began = time.monotonic()
            # Agents push at their own moments: spread evenly over the interval, not a burst.
            for index, (call, pushes) in enumerate(zip(calls, requests, strict=True)):
                due = began + PUSH_INTERVAL_S * index / len(calls)
                time.sleep(max(0.0, due - time.monotonic()))
                for body in pushes:
                    try:
                        call(body, timeout=10, metadata=auth)
                    except grpc_lib.RpcError:
                        failed += 1
            round_s.append(time.monotonic() - began)
            time.sleep(max(0.0, began + PUSH_INTERVAL_S - time.monotonic()))
        cpu = _cpu_s(pid) - cpu_before
        time.sleep(2)  # the batch processor's timeout, then the exporter holds it all
        try:
            _, body, scrape_s = _get(metrics, "/metrics")
        except OSError as err:  # an overloaded collector: the row says so instead of ending
            body, scrape_s = "", float("nan")
            print(f"bench:fleet: {row.label}: scrape failed: {err!r}", file=sys.stderr)
        served = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        own = _get(telemetry, "/metrics")[1]
        # Let Prometheus scrape the full set at least once more.
        time.sleep(PUSH_INTERVAL_S + 2)
        prom_self = _get(prom, "/metrics")[1]
        scrape_duration = prometheus.query(
            'max_over_time(scrape_duration_seconds{job="monlat"}[1m])'
        )
        log = collector.log_path.read_text() if collector.log_path else ""
        figures = {
            "nodes": row.shape.nodes,
            "zones": row.shape.zones,
            "dual_stack": row.shape.dual_stack,
            "settings": "before sizing" if row.settings == EVERY_PEER else "defaults",
            "sizing": agents[0].sizing.describe(),
            "peers_per_node": sum(a.peers for a in agents) / len(agents),
            "series_expected": expected_series,
            "series_served": served,
            "series_per_node": served / len(agents),
            "points_per_push_round": points,
            "collector_limit": shipped["limit"],
            "collector_peak_rss_mib": _status_mib(pid, "VmHWM"),
            "collector_rss_mib": _status_mib(pid, "VmRSS"),
            "collector_live_heap_mib": sampler.live_heap_mib(int(PUSH_INTERVAL_S * 2)),
            "collector_env": env,
            "requests_per_push_max": max(len(r) for r in requests),
            "request_bytes_max": max(len(b) for r in requests for b in r),
            "collector_cpu_s_per_round": cpu / rounds,
            "metrics_bytes": len(body.encode()),
            "scrape_s": scrape_s,
            "prometheus_scrape_duration_s": (
                float(scrape_duration[0]["value"][1]) if scrape_duration else None  # type: ignore[index]
            ),
            "prometheus_head_series": _sum_metric(prom_self, "prometheus_tsdb_head_series"),
            "prometheus_peak_rss_mib": _status_mib(prometheus.proc.pid, "VmHWM"),
            "refused_points": _sum_metric(own, "otelcol_receiver_refused_metric_points_total"),
            "failed_points": _sum_metric(own, "otelcol_exporter_send_failed_metric_points_total"),
            "failed_exports": failed,
            "refusing_in_log": "Refusing data" in log or "memory usage is above" in log,
            "push_round_s": max(round_s),  # the pushes of one interval, spread over it
            "build_s": build_s,
        }
        figures["collector_peak_share_of_limit"] = (
            figures["collector_peak_rss_mib"] / shipped["limit_mib"]
        )
        return figures
    finally:
        sampler.stop()
        for channel in channels:
            channel.close()
        for agent in agents:
            agent.close()
        prometheus.stop()
        collector.stop()


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'row':<8} {'nodes':>5} {'z':>2} {'dual':>4} {'peers':>6} {'series':>9} "
        f"{'/node':>6} {'coll. peak':>11} {'of limit':>8} {'live heap':>9} {'CPU/round':>9} "
        f"{'/metrics':>9} "
        f"{'scrape':>7} {'prom head':>9} {'prom RSS':>9} {'refused':>7}"
    )
    for label, r in rows.items():
        refused = int(r["refused_points"] + r["failed_points"] + r["failed_exports"])
        print(
            f"{label:<8} {r['nodes']:>5} {r['zones']:>2} {'yes' if r['dual_stack'] else 'no':>4} "
            f"{r['peers_per_node']:>6.1f} {r['series_served']:>9,} {r['series_per_node']:>6.0f} "
            f"{r['collector_peak_rss_mib']:>7.0f} MiB {r['collector_peak_share_of_limit']:>7.0%} "
            f"{r['collector_live_heap_mib']:>5.0f} MiB "
            f"{r['collector_cpu_s_per_round']:>7.2f} s {r['metrics_bytes'] / 1e6:>6.1f} MB "
            f"{r['scrape_s']:>5.2f} s {r['prometheus_head_series']:>9,.0f} "
            f"{r['prometheus_peak_rss_mib']:>5.0f} MiB {refused:>7}"
            + ("  REFUSING" if r["refusing_in_log"] else "")
        )


def fit_plan_figures(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Least-squares lines through the measured rows: memory and bytes against series."""

    def line(xs: list[float], ys: list[float]) -> tuple[float, float]:
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs) or 1.0
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        return my - slope * mx, slope

    usable = [
        r
        for r in rows.values()
        if not r["refusing_in_log"] and r["series_served"] and not r["failed_exports"]
    ]
    series = [float(r["series_served"]) for r in usable]
    # The collector keeps one entry per data point (a histogram's 23 series are one), so its
    # memory follows points; the exposition and Prometheus follow series.
    points = [float(r["points_per_push_round"]) for r in usable]
    base, per = line(points, [r["collector_peak_rss_mib"] for r in usable])
    refused = [r["points_per_push_round"] for r in rows.values() if r not in usable]
    prom_base, prom_per = line(series, [r["prometheus_peak_rss_mib"] for r in usable])
    shipped = shipped_deployment()
    return {
        "measured": time.strftime("%Y-%m-%d"),
        "collector_limit": shipped["limit"],
        "collector_limit_mib": shipped["limit_mib"],
        "command": "hatch run bench:fleet --write-plan-figures",
        "rows": sorted(rows),
        "collector_base_mib": round(base, 1),
        "collector_kib_per_point": round(per * 1024, 3),
        "collector_points_held": int(max(points)),
        "collector_points_refused": min(refused) if refused else None,
        "prometheus_base_mib": round(prom_base, 1),
        "prometheus_kib_per_series": round(prom_per * 1024, 3),
        "metrics_bytes_per_series": round(sum(r["metrics_bytes"] for r in usable) / sum(series), 1),
        "scrape_s_per_million_series": round(
            sum(r["scrape_s"] for r in usable) / sum(series) * 1e6, 2
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", default=DEFAULT_ROWS)
    parser.add_argument("--quick", action="store_true", help="2 push rounds instead of 4")
    parser.add_argument("--json", default="fleet-results.json")
    parser.add_argument("--write-plan-figures", action="store_true")
    parser.add_argument(
        "--collector-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override the shipped collector environment (to try other limits)",
    )
    args = parser.parse_args(argv)
    rows = [parse_row(text) for text in args.rows.split(",")]
    # A connection per simulated agent, and the collector inherits the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, min(hard, 65536))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    shipped = shipped_deployment()
    print(
        f"# monlat fleet benchmark: collector limit {shipped['limit']}, env {shipped['env']}, "
        f"push every {PUSH_INTERVAL_S:.0f} s, Prometheus scrape every {PUSH_INTERVAL_S:.0f} s"
    )
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        with tempfile.TemporaryDirectory(prefix="monlat-fleet-") as workdir:
            overrides = dict(item.split("=", 1) for item in args.collector_env)
            results[row.label] = run_row(row, 2 if args.quick else 4, Path(workdir), overrides)
        print_table({row.label: results[row.label]})
        sys.stdout.flush()
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print("\n## All rows")
    print_table(results)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures written to {args.json}")
    if args.write_plan_figures:
        PLAN_FIGURES.write_text(json.dumps(fit_plan_figures(results), indent=2) + "\n")
        print(f"plan figures written to {PLAN_FIGURES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
