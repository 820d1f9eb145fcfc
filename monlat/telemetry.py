"""OpenTelemetry instruments. Observable ones read `ResultStore` snapshots; nothing here probes.

Names are chosen so that the Prometheus name is the same on every export path:
`latency_between_nodes` has no unit (a unit would append `_milliseconds`), the others use base
units that the exporters turn into the usual `_seconds` / `_total` suffixes.

The per-pair RTT histogram is aggregated in `results` and handed to the exporters whole
(`RttHistograms`), instead of through a synchronous SDK Histogram on the probe path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)
from prometheus_client.core import HistogramMetricFamily

from monlat.discovery import PeerMap, split_key
from monlat.probe.icmp import Ignored
from monlat.results import PeerSummary, ResultStore

LATENCY_METRIC = "latency_between_nodes"
RTT_METRIC = "monlat_rtt"
RTT_DESCRIPTION = "Round-trip time of each answered probe"
SEND_LAG_METRIC = "monlat_send_lag"
SEND_LAG_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


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


class RttHistograms:
    """`monlat_rtt` per (from, to): finished histograms for the OTLP and Prometheus exporters.

    A departed peer's histogram goes with it, like every other per-pair series.
    """

    def __init__(self, snapshots: Snapshots, labels: PairLabels) -> None:
        self._snapshots = snapshots
        self._labels = labels

    def otel_metric(self) -> Metric | None:
        now = time.time_ns()
        points = [
            HistogramDataPoint(
                attributes=self._labels.of(s.peer),
                start_time_unix_nano=s.histogram.start_ns,
                time_unix_nano=now,
                count=s.histogram.count,
                sum=s.histogram.total,
                bucket_counts=s.histogram.counts,
                explicit_bounds=s.histogram.bounds,
                min=s.histogram.minimum if s.histogram.minimum is not None else 0.0,
                max=s.histogram.maximum if s.histogram.maximum is not None else 0.0,
            )
            for s in self._snapshots.get()
        ]
        if not points:
            return None
        return Metric(
            name=RTT_METRIC,
            description=RTT_DESCRIPTION,
            unit="s",
            data=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
            ),
        )

    def prometheus_family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            f"{RTT_METRIC}_seconds", RTT_DESCRIPTION, labels=self._labels.names, unit="seconds"
        )
        for summary in self._snapshots.get():
            histogram = summary.histogram
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*histogram.bounds, float("inf")), histogram.counts, strict=True
            ):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            values = list(self._labels.of(summary.peer).values())
            family.add_metric(values, buckets, histogram.total)
        return family


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
        self._labels = labels
        self._from = labels.node
        self._agent = labels.agent()
        self._ignored: dict[Ignored, int] = dict.fromkeys(Ignored, 0)
        self._info = {"version": version, "socket": socket_kind}
        # How many agents are expected to probe this node (with --max-peers, K): compare with
        # count by (to) (latency_between_nodes) to find blind spots.
        self.expected_probers = 0

        meter.create_observable_gauge(
            LATENCY_METRIC,
            callbacks=[self._observe_latency],
            description="Round-trip time to the peer node in milliseconds, latest interval",
        )
        meter.create_observable_gauge(
            "monlat_loss_ratio",
            callbacks=[self._observe_loss],
            description="Share of probes without reply over the loss window (0..1)",
        )
        meter.create_observable_gauge(
            "monlat_jitter",
            unit="s",
            callbacks=[self._observe_jitter],
            description="Mean absolute difference between consecutive RTTs over the window",
        )
        meter.create_observable_counter(
            "monlat_probes",
            callbacks=[self._observe_probes],
            description="Probes finished, by result (reply, timeout, error, send_error)",
        )
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

    def _summaries(self) -> list[PeerSummary]:
        return self._snapshots.get()

    def _pair(self, summary: PeerSummary) -> dict[str, str]:
        return self._labels.of(summary.peer)

    def _per_pair(self, value: Callable[[PeerSummary], float | None]) -> list[Observation]:
        """One observation per peer that has a value; a peer without one drops out."""
        observations = []
        for summary in self._summaries():
            measured = value(summary)
            if measured is not None:
                observations.append(Observation(measured, self._pair(summary)))
        return observations

    def _observe_latency(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_pair(lambda s: None if s.latency_ms is None else round(s.latency_ms, 3))

    def _observe_loss(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_pair(lambda s: s.loss_ratio)

    def _observe_jitter(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_pair(lambda s: s.jitter_s)

    def _observe_probes(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for summary in self._summaries():
            for result, count in summary.counts:
                attributes = {**self._pair(summary), "result": result.value}
                observations.append(Observation(count, attributes))
        return observations

    def _observe_ignored(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {**self._agent, "reason": reason.value})
            for reason, count in list(self._ignored.items())
        ]

    def _observe_peers(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(len(self._snapshots.store), self._agent)]

    def _observe_expected_probers(self, options: CallbackOptions) -> Sequence[Observation]:
        to = {"to": self._from, **{k: v for k, v in self._agent.items() if k != "from"}}
        return [Observation(self.expected_probers, to)]

    def _observe_info(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(1, {**self._agent, **self._info})]
