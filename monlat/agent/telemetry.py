"""Telemetry: what the exporters publish, read from `ResultStore` snapshots; nothing here probes.

Per-pair series (`PairSeries`) are read whole from one snapshot and encoded by each exporter
(export.otlp into finished OpenTelemetry points, export.prometheus into Prometheus families);
the agent's own series (`Telemetry`) are SDK instruments.

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

from monlat.agent.discovery import PeerMap, split_key
from monlat.agent.probe.icmp import Ignored
from monlat.agent.probe.pmtu import PathMtu, Verdict
from monlat.agent.results import PeerSummary, ResultStore
from monlat.common import names as metric

RTT_DESCRIPTION = "Round-trip time of each answered probe"
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
class PairGauge:
    name: metric.MetricName
    description: str
    value: Callable[[PeerSummary], float | None]


def _latency_ms(summary: PeerSummary) -> float | None:
    return None if summary.latency_ms is None else round(summary.latency_ms, 3)


def _path_mtu_bytes(summary: PeerSummary) -> float | None:
    found = summary.path_mtu
    if found is None or found.verdict not in _MTU_FAULTS:
        return None
    return found.largest_bytes


def _mtu_black_hole(summary: PeerSummary) -> float | None:
    found = summary.path_mtu
    if found is None or found.verdict not in _MTU_FAULTS:
        return None
    return 1.0 if found.black_hole else 0.0


# Per-pair MTU series only where the path does not carry the probe size: a healthy pair costs
# no series (at 5,000 nodes every per-pair series is budgeted), and the checks by verdict per
# agent say that paths were checked and found fine.
_MTU_FAULTS = frozenset({Verdict.LIMITED, Verdict.BLACK_HOLE})
PAIR_GAUGES = (
    PairGauge(
        metric.LATENCY,
        "Round-trip time to the peer node in milliseconds, latest interval",
        _latency_ms,
    ),
    PairGauge(
        metric.LOSS,
        "Share of probes without reply over the loss window (0..1)",
        lambda s: s.loss_ratio,
    ),
    PairGauge(
        metric.JITTER,
        "Mean absolute difference between consecutive RTTs over the window",
        lambda s: s.jitter_s,
    ),
    PairGauge(
        metric.PATH_MTU,
        "Largest IP packet known to cross the path, where it is smaller than the size the path "
        "should carry (the probe size)",
        _path_mtu_bytes,
    ),
    PairGauge(
        metric.MTU_BLACK_HOLE,
        "1: packets above monlat_path_mtu_bytes vanish without an ICMP report (an MTU black "
        "hole); 0: the path reports its smaller MTU",
        _mtu_black_hole,
    ),
)

PROBES_DESCRIPTION = "Probes finished, by result (reply, timeout, error, send_error)"


class PairSeries:
    """Every per-pair series from one `ResultStore` snapshot: latency_between_nodes,
    monlat_loss_ratio, monlat_jitter, monlat_probes by result, and the monlat_rtt histogram.

    Not SDK instruments: an observable instrument aggregates every point again per attribute
    set, and the Prometheus reader converts every point once more per scrape; at 1,000 peers
    that was most of an export's cost. Each exporter encodes `read()` itself (export.otlp,
    export.prometheus). A pair leaves every series with its peer.
    """

    def __init__(self, snapshots: Snapshots, labels: PairLabels) -> None:
        self._snapshots = snapshots
        self._labels = labels
        # The RTT histogram is 23 of a pair's ~27 series: budgeted by cluster size (sizing).
        self.histograms = True

    @property
    def label_names(self) -> list[str]:
        return self._labels.names

    def read(self) -> list[tuple[PeerSummary, dict[str, str]]]:
        """Each peer's summary with its pair's labels (in `label_names` order)."""
        of = self._labels.of
        return [(summary, of(summary.peer)) for summary in self._snapshots.get()]


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
        self._mtu_checks: dict[Verdict, int] = dict.fromkeys(Verdict, 0)
        self._info = {"version": version, "socket": socket_kind}
        # How many agents are expected to probe this node (with --max-peers, K): compare with
        # count by (to) (latency_between_nodes) to find blind spots.
        self.expected_probers = 0
        # ((send, kernel), count) ...: how the ends of the RTTs were timed; the composition root
        # wires it to the prober. A growing user count means the kernel stopped timestamping.
        self.timestamps: Callable[[], Iterable[tuple[tuple[str, str], int]]] = tuple

        meter.create_observable_counter(
            metric.IGNORED_PACKETS.instrument,
            callbacks=[self._observe_ignored],
            description="Received ICMP packets that did not match a waiting probe, by reason",
        )
        meter.create_observable_gauge(
            metric.PEERS.instrument,
            callbacks=[self._observe_peers],
            description="Peers this agent currently probes",
        )
        meter.create_observable_gauge(
            metric.EXPECTED_PROBERS.instrument,
            callbacks=[self._observe_expected_probers],
            description="Agents expected to probe this node (all others, or K with --max-peers)",
        )
        meter.create_observable_counter(
            metric.TIMESTAMPS.instrument,
            callbacks=[self._observe_timestamps],
            description="Packet times by direction (send, receive) and source: kernel "
            "(SO_TIMESTAMPING) or user (user-space clock, late by up to a tick under load)",
        )
        self._send_lag = meter.create_histogram(
            metric.SEND_LAG.instrument,
            unit=metric.SEND_LAG.unit,
            description="How late each probe left relative to its schedule (agent overload)",
            explicit_bucket_boundaries_advisory=SEND_LAG_BUCKETS,
        )
        meter.create_observable_counter(
            metric.MTU_CHECKS.instrument,
            callbacks=[self._observe_mtu_checks],
            description="Path MTU checks finished, by result (ok, limited, black_hole, "
            "inconclusive)",
        )
        meter.create_observable_gauge(
            metric.AGENT_INFO.instrument,
            callbacks=[self._observe_info],
            description="Always 1; labels describe the agent",
        )

    # Events from the prober (event-loop thread).

    def on_ignored(self, reason: Ignored) -> None:
        self._ignored[reason] += 1

    def on_path_mtu(self, result: PathMtu) -> None:
        self._mtu_checks[result.verdict] += 1

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

    def _observe_mtu_checks(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {**self._agent, "result": verdict.value})
            for verdict, count in list(self._mtu_checks.items())
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
