"""The metric names module is the one place names are spelled: what the agent's own code
serves and pushes is exactly what it lists (the alert rules, the dashboard and `monlat matrix`
are checked against the module)."""

from __future__ import annotations

import io

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest

from monlat import __version__
from monlat.agent.discovery import Peer
from monlat.agent.export.otlp import pair_metrics
from monlat.agent.export.provider import build_export, build_provider, build_resource
from monlat.agent.logs import EventLog
from monlat.agent.probe.icmp import Ignored
from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.probe.pmtu import PathMtu, Verdict
from monlat.agent.results import ResultStore
from monlat.agent.settings import parse_agent_config
from monlat.agent.telemetry import PairLabels, PairSeries, Snapshots, Telemetry
from monlat.common import names as metric
from monlat.tools.matrix.model import EXPECTED_PROBERS, JITTER, LATENCY, LOSS, PROBES
from monlat.tools.scrape import parse_exposition


def an_agent_that_measured() -> tuple[Snapshots, PairLabels, PairSeries]:
    store = ResultStore(
        window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1, clock=lambda: 1.0
    )
    store.set_peers([("b", "10.0.0.2")])
    store.record_all([Outcome("b", "10.0.0.2", n, Result.REPLY, 0.001 * n) for n in (1, 2)])
    # A path that carries less than the probe size: the pair's MTU series appear.
    store.record_path_mtu("b", "10.0.0.2", PathMtu(Verdict.BLACK_HOLE, 1500, 1400, 12))
    snapshots = Snapshots(store, clock=lambda: 1.0)
    labels = PairLabels("a")
    labels.update({"b": Peer("b", "10.0.0.2")}, "")
    return snapshots, labels, PairSeries(snapshots, labels)


def every_agent_series_active(telemetry: Telemetry) -> None:
    """Counters by kind only appear once something of that kind happened."""
    telemetry.expected_probers = 1
    telemetry.timestamps = lambda: ((("send", "kernel"), 1),)
    telemetry.on_ignored(Ignored.FOREIGN)
    telemetry.on_send_lag(0.001)
    telemetry.on_path_mtu(PathMtu(Verdict.OK, 1500, 1500, 1))


def test_the_prometheus_endpoint_serves_exactly_the_named_series() -> None:
    config = parse_agent_config(
        ["--node-name", "a", "--peers", "b=10.0.0.2", "--prometheus", "127.0.0.1:9090"], {}
    )
    snapshots, labels, series = an_agent_that_measured()
    export = build_export(config, __version__, series, EventLog(io.StringIO()))
    assert export.registry is not None
    every_agent_series_active(
        Telemetry(export.provider.get_meter("monlat"), snapshots, labels, socket_kind="raw",
                  version=__version__)
    )  # fmt: skip
    text = generate_latest(export.registry).decode()
    served = {sample.name for sample in parse_exposition(text)}
    assert served == metric.series_names(metric.PER_PAIR + metric.PER_AGENT)
    export.provider.shutdown()


def test_the_otlp_push_carries_exactly_the_named_instruments() -> None:
    snapshots, labels, series = an_agent_that_measured()
    reader = InMemoryMetricReader()
    provider = build_provider([reader], build_resource("a", __version__))
    every_agent_series_active(
        Telemetry(provider.get_meter("monlat"), snapshots, labels, socket_kind="raw",
                  version=__version__)
    )  # fmt: skip
    collected = reader.get_metrics_data()
    assert collected is not None
    pushed = {
        (m.name, m.unit)
        for resource in collected.resource_metrics
        for scope in resource.scope_metrics
        for m in scope.metrics
    } | {(m.name, m.unit) for m in pair_metrics(series)}
    expected = {(m.instrument, m.unit) for m in metric.PER_PAIR + metric.PER_AGENT}
    assert pushed == expected
    provider.shutdown()


def test_the_matrix_reads_the_names_the_agents_serve() -> None:
    assert {LATENCY, LOSS, JITTER, PROBES, EXPECTED_PROBERS} <= metric.series_names(
        metric.PER_PAIR + metric.PER_AGENT
    )
    assert LATENCY == "latency_between_nodes"  # the seed's name, for ever
