"""Metric export: a MeterProvider with a Prometheus reader, an OTLP push reader, or both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric as PrometheusMetric
from prometheus_client.registry import Collector

from monlat.config import Config, OtlpConfig
from monlat.telemetry import PairSeries

# Every attribute set ever seen counts towards the limit (2,000 by default): a 5,000-node cluster
# with churn needs far more on the per-pair instruments.
CARDINALITY_LIMIT = 100_000
# Data points per OTLP request. The collector's receiver refuses messages over 4 MiB by default;
# a pair's points take 60-300 bytes (more with zone and family labels), so 5,000 points stay
# near 1 MiB. An agent with 5,000 dual-stack peers pushes ~10 requests instead of one of ~8 MiB.
MAX_POINTS_PER_REQUEST = 5_000


@dataclass
class Export:
    provider: MeterProvider
    registry: CollectorRegistry | None  # serves /metrics when the Prometheus exporter is on


def build_resource(node_name: str, version: str, network: str | None = None) -> Resource:
    """monlat's identity; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME still win."""
    defaults = Resource.create(
        {
            "service.name": "monlat",
            "service.version": version,
            # A random per-process id would become a new `instance` label after every restart;
            # a node with a host and a pod-network agent has two instances.
            "service.instance.id": f"{node_name}/{network}" if network else node_name,
            "k8s.node.name": node_name,
        }
    )
    return defaults.merge(OTELResourceDetector().detect())


def otlp_exporter(
    otlp: OtlpConfig, *, channel_options: tuple[tuple[str, Any], ...] | None = None
) -> MetricExporter:
    """The OTLP exporter an agent pushes with (`channel_options`: gRPC only, for the fleet
    benchmark, whose simulated agents each need a connection of their own)."""
    headers = dict(otlp.headers)
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=otlp.endpoint,
            insecure=otlp.insecure,
            headers=headers or None,
            timeout=otlp.timeout_s,
            max_export_batch_size=MAX_POINTS_PER_REQUEST,
            channel_options=channel_options,  # type: ignore[arg-type]
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=otlp.endpoint,
        headers=headers or None,
        timeout=otlp.timeout_s,
        max_export_batch_size=MAX_POINTS_PER_REQUEST,
    )


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


class _WithPairSeries(MetricExporter):
    """Adds the per-pair series, built in telemetry from results, to each batch sent by OTLP."""

    def __init__(self, inner: MetricExporter, series: PairSeries) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._series = series
        self._scope = InstrumentationScope("monlat")

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = with_pair_series(metrics_data, self._series.otel_metrics(), self._scope)
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _PairCollector(Collector):
    """The same per-pair series on the agent's own /metrics."""

    def __init__(self, series: PairSeries) -> None:
        self._series = series

    def collect(self) -> Iterator[PrometheusMetric]:
        yield from self._series.prometheus_families()


def build_export(config: Config, version: str, series: PairSeries) -> Export:
    readers: list[MetricReader] = []
    registry: CollectorRegistry | None = None
    if config.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        # A private registry keeps python_gc_* and process_* out of the exposition.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_PairCollector(series))
        readers.append(
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=registry
            )
        )
    if config.otlp is not None:
        readers.append(
            PeriodicExportingMetricReader(
                _WithPairSeries(otlp_exporter(config.otlp), series),
                export_interval_millis=config.export_interval_s * 1000,
                export_timeout_millis=config.otlp.timeout_s * 1000,
            )
        )
    provider = build_provider(
        readers, build_resource(config.node_name, version, config.network_label)
    )
    return Export(provider, registry)


def build_provider(readers: list[MetricReader], resource: Resource) -> MeterProvider:
    views = [View(instrument_name="*", aggregation_cardinality_limit=CARDINALITY_LIMIT)]
    return MeterProvider(
        metric_readers=readers,
        resource=resource,
        views=views,
        # monlat records no traces, so an exemplar could never carry anything; the reservoirs
        # would still be filled and collected for every point of every export.
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
