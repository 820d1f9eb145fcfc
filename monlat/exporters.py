"""Metric export: a MeterProvider with a Prometheus reader, an OTLP push reader, or both."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from prometheus_client import CollectorRegistry

from monlat.config import Config, OtlpConfig

# Every attribute set ever seen counts towards the limit (2,000 by default): a 5,000-node cluster
# with churn needs far more on the per-pair instruments.
CARDINALITY_LIMIT = 100_000


@dataclass
class Export:
    provider: MeterProvider
    registry: CollectorRegistry | None  # serves /metrics when the Prometheus exporter is on


def build_resource(node_name: str, version: str) -> Resource:
    """monlat's identity; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME still win."""
    defaults = Resource.create(
        {
            "service.name": "monlat",
            "service.version": version,
            # A random per-process id would become a new `instance` label after every restart.
            "service.instance.id": node_name,
            "k8s.node.name": node_name,
        }
    )
    return defaults.merge(OTELResourceDetector().detect())


def _otlp_exporter(otlp: OtlpConfig) -> MetricExporter:
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
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(endpoint=otlp.endpoint, headers=headers or None, timeout=otlp.timeout_s)


def build_export(config: Config, version: str) -> Export:
    readers: list[MetricReader] = []
    registry: CollectorRegistry | None = None
    if config.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        # A private registry keeps python_gc_* and process_* out of the exposition.
        registry = CollectorRegistry(auto_describe=False)
        readers.append(
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=registry
            )
        )
    if config.otlp is not None:
        readers.append(
            PeriodicExportingMetricReader(
                _otlp_exporter(config.otlp),
                export_interval_millis=config.export_interval_s * 1000,
                export_timeout_millis=config.otlp.timeout_s * 1000,
            )
        )
    views = [View(instrument_name="*", aggregation_cardinality_limit=CARDINALITY_LIMIT)]
    provider = MeterProvider(
        metric_readers=readers,
        resource=build_resource(config.node_name, version),
        views=views,
    )
    return Export(provider, registry)
