"""The RTT histogram joins monlat's scope in every OTLP batch, and the agent's own /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from prometheus_client import CollectorRegistry, generate_latest

from monlat.exporters import _RttCollector, _WithRttHistograms, build_resource
from monlat.probe.pending import Outcome, Result
from monlat.results import ResultStore
from monlat.telemetry import PairLabels, RttHistograms, Snapshots


class Capture(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
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


def histograms_with(rtts: Sequence[float]) -> RttHistograms:
    store = ResultStore(window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1,
                        clock=lambda: 0.0)  # fmt: skip
    store.set_peers([("b", "10.0.0.2")])
    for rtt in rtts:
        store.record(Outcome("b", "10.0.0.2", 0, Result.REPLY, rtt_s=rtt))
    return RttHistograms(Snapshots(store), PairLabels("a"))


def scopes(batch: MetricsData) -> list[tuple[str, list[str]]]:
    return [
        (sm.scope.name, [m.name for m in sm.metrics])
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
    ]


def test_histogram_joins_the_existing_monlat_scope() -> None:
    capture = Capture()
    reader = PeriodicExportingMetricReader(
        _WithRttHistograms(capture, histograms_with([0.0004, 0.0011, 0.0011])),
        export_interval_millis=3_600_000,
    )
    provider = MeterProvider(metric_readers=[reader])

    def gauge(options: CallbackOptions) -> list[Observation]:
        return [Observation(1.0)]

    provider.get_meter("monlat").create_observable_gauge("g", callbacks=[gauge])
    provider.force_flush()
    provider.shutdown()
    assert scopes(capture.batches[0]) == [("monlat", ["g", "monlat_rtt"])]
    (metric,) = [m for sm in capture.batches[0].resource_metrics[0].scope_metrics
                 for m in sm.metrics if m.name == "monlat_rtt"]  # fmt: skip
    (point,) = metric.data.data_points
    assert point.attributes == {"from": "a", "to": "b"}
    assert point.count == 3 and sum(point.bucket_counts) == 3
    assert metric.unit == "s" and point.min == 0.0004 and point.max == 0.0011


def test_prometheus_family_is_cumulative_and_upper_inclusive() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RttCollector(histograms_with([0.0004, 0.0011, 0.0011, 30.0])))
    text = generate_latest(registry).decode()
    assert 'monlat_rtt_seconds_bucket{from="a",le="0.0004",to="b"} 1.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="0.0008",to="b"} 1.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="0.0016",to="b"} 3.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="26.2144",to="b"} 3.0' in text
    assert 'monlat_rtt_seconds_bucket{from="a",le="+Inf",to="b"} 4.0' in text
    assert 'monlat_rtt_seconds_count{from="a",to="b"} 4.0' in text


def test_a_pod_network_agent_is_its_own_instance() -> None:
    host = build_resource("node1", "0.1.0").attributes
    pod = build_resource("node1", "0.1.0", "pod").attributes
    assert host["service.instance.id"] == "node1"
    assert pod["service.instance.id"] == "node1/pod"
    assert pod["k8s.node.name"] == host["k8s.node.name"] == "node1"
