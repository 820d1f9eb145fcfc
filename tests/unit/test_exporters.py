"""The RTT histogram joins monlat's scope in every OTLP batch, and the agent's own /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from prometheus_client import CollectorRegistry, generate_latest

from monlat.agent.export.otlp import WithPairSeries
from monlat.agent.export.prometheus import PairCollector
from monlat.agent.export.provider import build_resource
from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.results import PeerSummary, ResultStore
from monlat.agent.telemetry import PairLabels, PairSeries, Snapshots


class Capture(MetricExporter):
    def __init__(
        self, preferred_temporality: dict[type, AggregationTemporality] | None = None
    ) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self.batches: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kw: Any
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
        pass


def series_with(rtts: Sequence[float], timeouts: int = 0) -> PairSeries:
    store = ResultStore(window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1,
                        clock=lambda: 0.0)  # fmt: skip
    store.set_peers([("b", "10.0.0.2")])
    for rtt in rtts:
        store.record(Outcome("b", "10.0.0.2", 0, Result.REPLY, rtt_s=rtt))
    for _ in range(timeouts):
        store.record(Outcome("b", "10.0.0.2", 0, Result.TIMEOUT))
    return PairSeries(Snapshots(store), PairLabels("a"))


def summary_of(series: PairSeries) -> PeerSummary:
    (summary,) = series._snapshots.get()
    return summary


def scopes(batch: MetricsData) -> list[tuple[str, list[str]]]:
    return [
        (sm.scope.name, [m.name for m in sm.metrics])
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
    ]


def test_pair_series_join_the_existing_monlat_scope() -> None:
    capture = Capture()
    series = series_with([0.0004, 0.0011, 0.0011])
    reader = PeriodicExportingMetricReader(
        WithPairSeries(capture, series),
        export_interval_millis=3_600_000,
    )
    provider = MeterProvider(metric_readers=[reader])

    def gauge(options: CallbackOptions) -> list[Observation]:
        return [Observation(1.0)]

    provider.get_meter("monlat").create_observable_gauge("g", callbacks=[gauge])
    provider.force_flush()
    provider.shutdown()
    assert scopes(capture.batches[0]) == [
        (
            "monlat",
            ["g", "latency_between_nodes", "monlat_loss_ratio", "monlat_jitter", "monlat_probes",
             "monlat_rtt"],
        )
    ]  # fmt: skip
    metrics = {m.name: m for m in capture.batches[0].resource_metrics[0].scope_metrics[0].metrics}
    (latency,) = metrics["latency_between_nodes"].data.data_points
    assert latency.attributes == {"from": "a", "to": "b"}
    assert latency.value == round(summary_of(series).latency_ms or 0.0, 3) > 0
    assert metrics["latency_between_nodes"].unit == "" and metrics["monlat_jitter"].unit == "s"
    probes = metrics["monlat_probes"].data
    assert probes.is_monotonic and [p.attributes["result"] for p in probes.data_points] == ["reply"]
    (metric,) = [m for sm in capture.batches[0].resource_metrics[0].scope_metrics
                 for m in sm.metrics if m.name == "monlat_rtt"]  # fmt: skip
    (point,) = metric.data.data_points
    assert point.attributes == {"from": "a", "to": "b"}
    assert point.count == 3 and sum(point.bucket_counts) == 3
    assert metric.unit == "s" and point.min == 0.0004 and point.max == 0.0011


def test_prometheus_family_is_cumulative_and_upper_inclusive() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PairCollector(series_with([0.0004, 0.0011, 0.0011, 30.0])))
    text = generate_latest(registry).decode()
    assert 'monlat_rtt_seconds_bucket{from="a",le="0.0004",to="b"} 1.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="0.0008",to="b"} 1.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="0.0016",to="b"} 3.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="26.2144",to="b"} 3.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="+Inf",to="b"} 4.0' in text
    assert 'monlat_rtt_seconds_count{from="a",to="b"} 4.0' in text


def test_prometheus_pair_series_names_and_lines() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PairCollector(series_with([0.0004, 0.0006], timeouts=2)))
    lines = generate_latest(registry).decode().splitlines()
    # The latest interval ended in timeouts: no latency line (nor an empty family), loss half.
    assert not any(line.startswith("latency_between_nodes") for line in lines)
    assert not any("latency_between_nodes" in line for line in lines)
    assert 'monlat_loss_ratio{from="a",to="b"} 0.5' in lines
    assert 'monlat_probes_total{from="a",result="reply",to="b"} 2.0' in lines
    assert 'monlat_probes_total{from="a",result="timeout",to="b"} 2.0' in lines
    assert any(line.startswith('monlat_jitter_seconds{from="a",to="b"} ') for line in lines)
    assert "# TYPE monlat_probes_total counter" in lines
    assert not any("_created" in line for line in lines)


def test_a_pod_network_agent_is_its_own_instance() -> None:
    host = build_resource("node1", "0.1.0").attributes
    pod = build_resource("node1", "0.1.0", "pod").attributes
    assert host["service.instance.id"] == "node1"
    assert pod["service.instance.id"] == "node1/pod"
    assert pod["k8s.node.name"] == host["k8s.node.name"] == "node1"


def test_the_push_is_cumulative_even_where_the_environment_prefers_delta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-pair series are cumulative by construction; the SDK's own instruments in the same
    push follow them, not the OTLP exporter's preference (which reads
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    capture = Capture({Counter: AggregationTemporality.DELTA})
    reader = PeriodicExportingMetricReader(
        WithPairSeries(capture, series_with([0.001])), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("monlat").create_counter("c")
    counter.add(2)
    provider.force_flush()
    counter.add(3)
    provider.force_flush()
    provider.shutdown()
    values = [
        (m.data.aggregation_temporality, m.data.data_points[0].value)
        for batch in capture.batches
        for sm in batch.resource_metrics[0].scope_metrics
        for m in sm.metrics
        if m.name == "c"
    ]
    assert values[:2] == [
        (AggregationTemporality.CUMULATIVE, 2),
        (AggregationTemporality.CUMULATIVE, 5),
    ]
