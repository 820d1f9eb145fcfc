"""The agent's own Prometheus endpoint: the per-pair series encoded as Prometheus families,
next to what the SDK's Prometheus reader makes of the agent's instruments."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import Metric as PrometheusMetric
from prometheus_client.registry import Collector

from monlat.agent.telemetry import PAIR_GAUGES, PROBES_DESCRIPTION, RTT_DESCRIPTION, PairSeries
from monlat.common import names as metric


def pair_families(series: PairSeries) -> list[PrometheusMetric]:
    """The per-pair series as Prometheus families, as the SDK's reader would name them."""
    names = series.label_names
    values = [(summary, list(pair.values())) for summary, pair in series.read()]
    families: list[PrometheusMetric] = []
    for gauge in PAIR_GAUGES:
        family = GaugeMetricFamily(gauge.name.prometheus, gauge.description, labels=names)
        for summary, pair in values:
            value = gauge.value(summary)
            if value is not None:
                family.add_metric(pair, value)
        if family.samples:  # as the SDK did: no series, no family
            families.append(family)
    probes = CounterMetricFamily(
        metric.PROBES.prometheus, PROBES_DESCRIPTION, labels=[*names, "result"]
    )
    for summary, pair in values:
        for result, count in summary.counts:
            probes.add_metric([*pair, result.value], count)
    if probes.samples:
        families.append(probes)
    if not series.histograms:
        return families
    rtt = HistogramMetricFamily(
        metric.RTT.prometheus.removesuffix("_seconds"),
        RTT_DESCRIPTION,
        labels=names,
        unit="seconds",
    )
    for summary, pair in values:
        histogram = summary.histogram
        cumulative, buckets = 0, []
        for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        rtt.add_metric(pair, buckets, histogram.total)
    families.append(rtt)
    return families


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class PairCollector(Collector):
    """The same per-pair series on the agent's own /metrics."""

    def __init__(self, series: PairSeries) -> None:
        self._series = series

    def collect(self) -> Iterator[PrometheusMetric]:
        yield from pair_families(self._series)
