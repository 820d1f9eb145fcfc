"""The OTLP push: the exporter (gRPC or HTTP, requests split under the receiver's limit) and
the encoding of the per-pair series it sends, added to the SDK's batch in monlat's scope."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import (
    Histogram as HistogramInstrument,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from monlat.agent.config import OtlpConfig
from monlat.agent.telemetry import (
    PAIR_GAUGES,
    PROBES_DESCRIPTION,
    RTT_DESCRIPTION,
    PairSeries,
)
from monlat.common import names as metric

# Data points per OTLP request. The collector's receiver refuses messages over 4 MiB by default;
# a pair's points take 60-300 bytes (more with zone and family labels), so 5,000 points stay
# near 1 MiB. An agent with 5,000 dual-stack peers pushes ~10 requests instead of one of ~8 MiB.
MAX_POINTS_PER_REQUEST = 5_000

CUMULATIVE: dict[type, AggregationTemporality] = dict.fromkeys(
    (
        Counter,
        UpDownCounter,
        HistogramInstrument,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    ),
    AggregationTemporality.CUMULATIVE,
)


def otlp_exporter(
    otlp: OtlpConfig,
    *,
    headers: Sequence[tuple[str, str]] | None = None,
    channel_options: tuple[tuple[str, Any], ...] | None = None,
) -> MetricExporter:
    """The OTLP exporter an agent pushes with: `headers` instead of the configured ones (the
    token exporter adds the bearer token); `channel_options` gRPC only, for the fleet
    benchmark, whose simulated agents each need a connection of their own."""
    sent = dict(otlp.headers if headers is None else headers)
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=otlp.endpoint,
            insecure=otlp.insecure,
            headers=sent or None,
            timeout=otlp.timeout_s,
            max_export_batch_size=MAX_POINTS_PER_REQUEST,
            channel_options=channel_options,  # type: ignore[arg-type]
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=otlp.endpoint,
        headers=sent or None,
        timeout=otlp.timeout_s,
        max_export_batch_size=MAX_POINTS_PER_REQUEST,
    )


def pair_metrics(series: PairSeries) -> list[Metric]:
    """The per-pair series as finished OpenTelemetry points (cumulative, like the SDK's)."""
    attributes = series.read()
    if not attributes:
        return []
    now = time.time_ns()
    metrics = []
    for gauge in PAIR_GAUGES:
        points = []
        for summary, pair in attributes:
            value = gauge.value(summary)
            if value is not None:
                points.append(NumberDataPoint(pair, summary.histogram.start_ns, now, value))
        if points:
            metrics.append(
                Metric(
                    name=gauge.name.instrument,
                    description=gauge.description,
                    unit=gauge.name.unit,
                    data=Gauge(data_points=points),
                )
            )
    probes = [
        NumberDataPoint({**pair, "result": result.value}, summary.histogram.start_ns, now, count)
        for summary, pair in attributes
        for result, count in summary.counts
    ]
    if probes:
        metrics.append(
            Metric(
                name=metric.PROBES.instrument,
                description=PROBES_DESCRIPTION,
                unit=metric.PROBES.unit,
                data=Sum(
                    data_points=probes,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=True,
                ),
            )
        )
    if not series.histograms:
        return metrics
    histograms = [
        HistogramDataPoint(
            attributes=pair,
            start_time_unix_nano=s.histogram.start_ns,
            time_unix_nano=now,
            count=s.histogram.count,
            sum=s.histogram.total,
            bucket_counts=s.histogram.counts,
            explicit_bounds=s.histogram.bounds,
            min=s.histogram.minimum if s.histogram.minimum is not None else 0.0,
            max=s.histogram.maximum if s.histogram.maximum is not None else 0.0,
        )
        for s, pair in attributes
    ]
    metrics.append(
        Metric(
            name=metric.RTT.instrument,
            description=RTT_DESCRIPTION,
            unit=metric.RTT.unit,
            data=Histogram(
                data_points=histograms,
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            ),
        )
    )
    return metrics


def with_pair_series(
    metrics_data: MetricsData, metrics: list[Metric], scope: InstrumentationScope
) -> MetricsData:
    """The batch with the per-pair series added to the first resource, in monlat's own scope."""
    if not metrics or not metrics_data.resource_metrics:
        return metrics_data
    first, *rest = metrics_data.resource_metrics
    # Into monlat's own scope: the OTLP encoder keys scopes by identity, so a second
    # ScopeMetrics for the same scope would replace the first instead of joining it.
    scopes = list(first.scope_metrics)
    index = next((i for i, sm in enumerate(scopes) if sm.scope == scope), None)
    if index is None:
        scopes.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=""))
    else:
        own = scopes[index]
        scopes[index] = ScopeMetrics(
            scope=own.scope, metrics=[*own.metrics, *metrics], schema_url=own.schema_url
        )
    first = ResourceMetrics(
        resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
    )
    return MetricsData(resource_metrics=[first, *rest])


class WithPairSeries(MetricExporter):
    """Adds the per-pair series, encoded here from telemetry's reading, to each OTLP batch."""

    def __init__(self, inner: MetricExporter, series: PairSeries) -> None:
        # The reader asks this exporter, not the inner one, how to aggregate: cumulative like
        # the per-pair series, whatever OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says
        # (delta instruments next to cumulative pairs would be two meanings in one push).
        super().__init__(preferred_temporality=CUMULATIVE)
        self._inner = inner
        self._series = series
        self._scope = InstrumentationScope("monlat")

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = with_pair_series(metrics_data, pair_metrics(self._series), self._scope)
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
