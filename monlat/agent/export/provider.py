"""Metric export assembled: a MeterProvider with a Prometheus reader, an OTLP push reader, or
both, each reader with the encoder of its exporter (export.prometheus, export.otlp)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from prometheus_client import CollectorRegistry

from monlat.agent.config import Config
from monlat.agent.export.otlp import WithPairSeries, otlp_exporter
from monlat.agent.export.prometheus import PairCollector
from monlat.agent.export.token import TokenExporter
from monlat.agent.logs import EventLog
from monlat.agent.telemetry import PairSeries

# Every attribute set ever seen counts towards the limit (2,000 by default): a 5,000-node cluster
# with churn needs far more on the per-pair instruments.
CARDINALITY_LIMIT = 100_000


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


def build_export(config: Config, version: str, series: PairSeries, events: EventLog) -> Export:
    readers: list[MetricReader] = []
    registry: CollectorRegistry | None = None
    if config.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        # A private registry keeps python_gc_* and process_* out of the exposition.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PairCollector(series))
        readers.append(
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=registry
            )
        )
    if config.otlp is not None:
        otlp = config.otlp
        exporter: MetricExporter
        if otlp.token_file is None:
            exporter = otlp_exporter(otlp)
        else:
            exporter = TokenExporter(
                lambda headers: otlp_exporter(otlp, headers=headers),
                otlp.headers,
                otlp.token_file,
                events,
            )
        readers.append(
            PeriodicExportingMetricReader(
                WithPairSeries(exporter, series),
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
        # The agent shuts it down itself, bounded; a second shutdown from an exit hook would
        # only log that the exporter is already shut down.
        shutdown_on_exit=False,
    )
