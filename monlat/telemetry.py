"""Telemetry: what the exporters publish, read from `ResultStore` snapshots; nothing here probes.

Per-pair series (`PairSeries`) are built whole from one snapshot into finished OpenTelemetry
points and Prometheus families; the agent's own series (`Telemetry`) are SDK instruments.

Names are chosen so that the Prometheus name is the same on every export path:
`latency_between_nodes` has no unit (a unit would append `_milliseconds`), the others use base
units that the exporters turn into the usual `_seconds` / `_total` suffixes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as PrometheusMetric

from monlat.discovery import PeerMap, split_key
from monlat.probe.icmp import Ignored
from monlat.results import PeerSummary, ResultStore

LATENCY_METRIC = "latency_between_nodes"
RTT_METRIC = "monlat_rtt"
RTT_DESCRIPTION = "Round-trip time of each answered probe"
SEND_LAG_METRIC = "monlat_send_lag"
# What the send lag must tell: fine (<= 2 ms), late (10 ms), overloaded (the 100 ms alert), stuck.
# Four bounds are 7 series per agent: at 5,000 nodes the 11 bounds before were 70,000 series,
# a third of the whole install.
SEND_LAG_BUCKETS: tuple[float, ...] = (0.002, 0.01, 0.1, 1.0)


class Snapshots:
    """One `ResultStore` snapshot serves every callback of a collection (and both exporters)."""

    def __init__(
        self,
        store: ResultStore,
        *,
        max_age_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._max_age = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._taken: tuple[float, list[PeerSummary]] | None = None

    def get(self) -> list[PeerSummary]:
        now = self._clock()
        with self._lock:
            if self._taken is None or now - self._taken[0] > self._max_age:
                self._taken = (now, self.store.snapshot())
            return self._taken[1]


class PairLabels:
    """The attributes of a (from, to) series, by peer key.

    Optional, in this order after from/to: family (dual-stack), network (which path a
    second DaemonSet measures, e.g. pod), from_zone and to_zone. Updated on the event loop when
    peers change, read from exporter threads: the peer map is replaced whole, never mutated.
    """

    def __init__(
        self,
        node_name: str,
        *,
        zones: bool = False,
        families: bool = False,
        network: str | None = None,
    ) -> None:
        self.node = node_name
        self.zones = zones
        self.families = families
        self.network = network
        self._peers: Mapping[str, tuple[str, str]] = {}  # key -> (zone, family)
        self._own_zone = ""

    def update(self, peers: PeerMap, own_zone: str | None) -> None:
        self._peers = {key: (peer.zone or "", peer.family or "") for key, peer in peers.items()}
        self._own_zone = own_zone or ""

    @property
    def names(self) -> list[str]:
        names = ["from", "to"]
        if self.families:
            names.append("family")
        if self.network:
            names.append("network")
        if self.zones:
            names += ["from_zone", "to_zone"]
        return names

    def agent(self) -> dict[str, str]:
        """Attributes of this agent's own series (peers, info, send lag, ignored packets)."""
        return {"from": self.node, "network": self.network} if self.network else {"from": self.node}

    def of(self, key: str) -> dict[str, str]:
        name, family = split_key(key)
        zone, _ = self._peers.get(key, ("", ""))
        labels = {"from": self.node, "to": name}
        if self.families:
            labels["family"] = family or ""
        if self.network:
            labels["network"] = self.network
        if self.zones:
            labels["from_zone"] = self._own_zone
            labels["to_zone"] = zone
        return labels


@dataclass(frozen=True)
class _PairGauge:
    otel_name: str
    unit: str
    prometheus_name: str
    description: str
    value: Callable[[PeerSummary], float | None]


def _latency_ms(summary: PeerSummary) -> float | None:
    return None if summary.latency_ms is None else round(summary.latency_ms, 3)


_PAIR_GAUGES = (
    _PairGauge(
        LATENCY_METRIC,
        "",
        LATENCY_METRIC,
        "Round-trip time to the peer node in milliseconds, latest interval",
        _latency_ms,
    ),
    _PairGauge(
        "monlat_loss_ratio",
        "",
        "monlat_loss_ratio",
        "Share of probes without reply over the loss window (0..1)",
        lambda s: s.loss_ratio,
    ),
    _PairGauge(
        "monlat_jitter",
        "s",
        "monlat_jitter_seconds",
        "Mean absolute difference between consecutive RTTs over the window",
        lambda s: s.jitter_s,
    ),
)
PROBES_METRIC = "monlat_probes"
PROBES_DESCRIPTION = "Probes finished, by result (reply, timeout, error, send_error)"


class PairSeries:
    """Every per-pair series, built from one `ResultStore` snapshot into finished points for
    both exporters: latency_between_nodes, monlat_loss_ratio, monlat_jitter, monlat_probes by
    result, and the monlat_rtt histogram.

    Not SDK instruments: an observable instrument aggregates every point again per attribute
    set, and the Prometheus reader converts every point once more per scrape; at 1,000 peers
    that was most of an export's cost. A pair leaves every series with its peer.
    """

    def __init__(self, snapshots: Snapshots, labels: PairLabels) -> None:
        self._snapshots = snapshots
        self._labels = labels
        # The RTT histogram is 23 of a pair's ~27 series: budgeted by cluster size (sizing).
        self.histograms = True

    def otel_metrics(self) -> list[Metric]:
        summaries = self._snapshots.get()
        if not summaries:
            return []
        now = time.time_ns()
        of = self._labels.of
        attributes = [(summary, of(summary.peer)) for summary in summaries]
        metrics = []
        for gauge in _PAIR_GAUGES:
            points = []
            for summary, pair in attributes:
                value = gauge.value(summary)
                if value is not None:
                    points.append(NumberDataPoint(pair, summary.histogram.start_ns, now, value))
            if points:
                metrics.append(
                    Metric(
                        name=gauge.otel_name,
                        description=gauge.description,
                        unit=gauge.unit,
                        data=Gauge(data_points=points),
                    )
                )
        probes = [
            NumberDataPoint(
                {**pair, "result": result.value}, summary.histogram.start_ns, now, count
            )
            for summary, pair in attributes
            for result, count in summary.counts
        ]
        if probes:
            metrics.append(
                Metric(
                    name=PROBES_METRIC,
                    description=PROBES_DESCRIPTION,
                    unit="",
                    data=Sum(
                        data_points=probes,
                        aggregation_temporality=AggregationTemporality.CUMULATIVE,
                        is_monotonic=True,
                    ),
                )
            )
        if not self.histograms:
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
                name=RTT_METRIC,
                description=RTT_DESCRIPTION,
                unit="s",
                data=Histogram(
                    data_points=histograms,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                ),
            )
        )
        return metrics

    def prometheus_families(self) -> list[PrometheusMetric]:
        names = self._labels.names
        summaries = self._snapshots.get()
        values = [(summary, list(self._labels.of(summary.peer).values())) for summary in summaries]
        families: list[PrometheusMetric] = []
        for gauge in _PAIR_GAUGES:
            family = GaugeMetricFamily(gauge.prometheus_name, gauge.description, labels=names)
            for summary, pair in values:
                value = gauge.value(summary)
                if value is not None:
                    family.add_metric(pair, value)
            if family.samples:  # as the SDK did: no series, no family
                families.append(family)
        probes = CounterMetricFamily(PROBES_METRIC, PROBES_DESCRIPTION, labels=[*names, "result"])
        for summary, pair in values:
            for result, count in summary.counts:
                probes.add_metric([*pair, result.value], count)
        if probes.samples:
            families.append(probes)
        if not self.histograms:
            return families
        rtt = HistogramMetricFamily(
            f"{RTT_METRIC}_seconds", RTT_DESCRIPTION, labels=names, unit="seconds"
        )
        for summary, pair in values:
            histogram = summary.histogram
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*histogram.bounds, float("inf")), histogram.counts, strict=True
            ):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            rtt.add_metric(pair, buckets, histogram.total)
        families.append(rtt)
        return families


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class Telemetry:
    """Registers monlat's instruments on a Meter and receives the prober's events."""

    def __init__(
        self,
        meter: Meter,
        snapshots: Snapshots,
        labels: PairLabels,
        *,
        socket_kind: str,
        version: str,
    ) -> None:
        self._snapshots = snapshots
        self._from = labels.node
        self._agent = labels.agent()
        self._ignored: dict[Ignored, int] = dict.fromkeys(Ignored, 0)
        self._info = {"version": version, "socket": socket_kind}
        # How many agents are expected to probe this node (with --max-peers, K): compare with
        # count by (to) (latency_between_nodes) to find blind spots.
        self.expected_probers = 0
        # ((send, kernel), count) ...: how the ends of the RTTs were timed; the composition root
        # wires it to the prober. A growing user count means the kernel stopped timestamping.
        self.timestamps: Callable[[], Iterable[tuple[tuple[str, str], int]]] = tuple

        meter.create_observable_counter(
            "monlat_ignored_packets",
            callbacks=[self._observe_ignored],
            description="Received ICMP packets that did not match a waiting probe, by reason",
        )
        meter.create_observable_gauge(
            "monlat_peers",
            callbacks=[self._observe_peers],
            description="Peers this agent currently probes",
        )
        meter.create_observable_gauge(
            "monlat_expected_probers",
            callbacks=[self._observe_expected_probers],
            description="Agents expected to probe this node (all others, or K with --max-peers)",
        )
        meter.create_observable_counter(
            "monlat_timestamps",
            callbacks=[self._observe_timestamps],
            description="Packet times by direction (send, receive) and source: kernel "
            "(SO_TIMESTAMPING) or user (user-space clock, late by up to a tick under load)",
        )
        self._send_lag = meter.create_histogram(
            SEND_LAG_METRIC,
            unit="s",
            description="How late each probe left relative to its schedule (agent overload)",
            explicit_bucket_boundaries_advisory=SEND_LAG_BUCKETS,
        )
        meter.create_observable_gauge(
            "monlat_agent_info",
            callbacks=[self._observe_info],
            description="Always 1; labels describe the agent",
        )

    # Events from the prober (event-loop thread).

    def on_ignored(self, reason: Ignored) -> None:
        self._ignored[reason] += 1

    def on_send_lag(self, lag_s: float) -> None:
        self._send_lag.record(lag_s, self._agent)

    # Callbacks (exporter threads).

    # Counters whose labels enumerate kinds (reasons, timestamp sources) report a kind once it
    # has happened: most stay at zero for ever, and at 5,000 nodes those zeros were ~11 of a
    # node's ~30 agent series, each costing the collector as much memory as a pair's latency.

    def _observe_ignored(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {**self._agent, "reason": reason.value})
            for reason, count in list(self._ignored.items())
            if count
        ]

    def _observe_peers(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(len(self._snapshots.store), self._agent)]

    def _observe_expected_probers(self, options: CallbackOptions) -> Sequence[Observation]:
        to = {"to": self._from, **{k: v for k, v in self._agent.items() if k != "from"}}
        return [Observation(self.expected_probers, to)]

    def _observe_timestamps(self, options: CallbackOptions) -> Sequence[Observation]:
        return [
            Observation(count, {**self._agent, "direction": direction, "source": source})
            for (direction, source), count in self.timestamps()
            if count
        ]

    def _observe_info(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(1, {**self._agent, **self._info})]
