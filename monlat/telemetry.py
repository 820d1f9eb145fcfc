"""OpenTelemetry instruments. Observable ones read `ResultStore` snapshots; nothing here probes.

Names are chosen so that the Prometheus name is the same on every export path:
`latency_between_nodes` has no unit (a unit would append `_milliseconds`), the others use base
units that the exporters turn into the usual `_seconds` / `_total` suffixes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from monlat.probe.icmp import Ignored
from monlat.probe.pending import Outcome, Result
from monlat.results import PeerSummary, ResultStore

LATENCY_METRIC = "latency_between_nodes"
RTT_METRIC = "monlat_rtt"
SEND_LAG_METRIC = "monlat_send_lag"

# 50 µs doubling up to ~26 s: LAN to WAN in 20 buckets.
RTT_BUCKETS: tuple[float, ...] = tuple(50e-6 * 2**i for i in range(20))
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


class Telemetry:
    """Registers monlat's instruments on a Meter and receives the prober's events."""

    def __init__(
        self,
        meter: Meter,
        store: ResultStore,
        node_name: str,
        *,
        socket_kind: str,
        version: str,
        max_snapshot_age_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._from = node_name
        self._clock = clock
        self._max_age = max_snapshot_age_s
        self._snapshot_lock = threading.Lock()
        self._snapshot: tuple[float, list[PeerSummary]] | None = None
        self._ignored: dict[Ignored, int] = dict.fromkeys(Ignored, 0)
        self._info = {"version": version, "socket": socket_kind}

        meter.create_observable_gauge(
            LATENCY_METRIC,
            callbacks=[self._observe_latency],
            description="Round-trip time to the peer node in milliseconds, latest interval",
        )
        self._rtt = meter.create_histogram(
            RTT_METRIC,
            unit="s",
            description="Round-trip time of each answered probe",
            explicit_bucket_boundaries_advisory=RTT_BUCKETS,
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

    def on_outcome(self, outcome: Outcome) -> None:
        if outcome.result is Result.REPLY and outcome.rtt_s is not None:
            self._rtt.record(outcome.rtt_s, {"from": self._from, "to": outcome.peer})

    def on_ignored(self, reason: Ignored) -> None:
        self._ignored[reason] += 1

    def on_send_lag(self, lag_s: float) -> None:
        self._send_lag.record(lag_s)

    # Callbacks (exporter threads).

    def _summaries(self) -> list[PeerSummary]:
        """One snapshot serves all callbacks of a collection."""
        now = self._clock()
        with self._snapshot_lock:
            if self._snapshot is None or now - self._snapshot[0] > self._max_age:
                self._snapshot = (now, self._store.snapshot())
            return self._snapshot[1]

    def _pair(self, summary: PeerSummary) -> dict[str, str]:
        return {"from": self._from, "to": summary.peer}

    def _observe_latency(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(round(s.latency_ms, 3), self._pair(s))
            for s in self._summaries()
            if s.latency_ms is not None
        ]

    def _observe_loss(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(s.loss_ratio, self._pair(s))
            for s in self._summaries()
            if s.loss_ratio is not None
        ]

    def _observe_jitter(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(s.jitter_s, self._pair(s))
            for s in self._summaries()
            if s.jitter_s is not None
        ]

    def _observe_probes(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for summary in self._summaries():
            for result, count in summary.counts:
                attributes = {**self._pair(summary), "result": result.value}
                observations.append(Observation(count, attributes))
        return observations

    def _observe_ignored(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"from": self._from, "reason": reason.value})
            for reason, count in list(self._ignored.items())
        ]

    def _observe_peers(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(len(self._store), {"from": self._from})]

    def _observe_info(self, options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(1, {"from": self._from, **self._info})]
