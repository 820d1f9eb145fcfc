"""Every metric monlat exports, named once.

Each has its OpenTelemetry instrument name and unit (what the agent records and pushes) and
the name Prometheus shows it under (what the collector's exporter and the agent's own endpoint
serve, what the alert rules, the dashboard and `monlat matrix` read). The two differ by the
unit suffix and, for counters, `_total`; histograms appear as `_bucket`, `_sum` and `_count`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricName:
    instrument: str  # the OpenTelemetry instrument
    unit: str
    kind: Kind
    prometheus: str  # the family as Prometheus names it (no _total, _bucket ...)

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names of this family in the Prometheus exposition."""
        if self.kind is Kind.COUNTER:
            return (f"{self.prometheus}_total",)
        if self.kind is Kind.HISTOGRAM:
            return tuple(f"{self.prometheus}_{part}" for part in ("bucket", "sum", "count"))
        return (self.prometheus,)

    @property
    def sample(self) -> str:
        """The one sample name of a gauge or counter (a histogram has three)."""
        if self.kind is Kind.HISTOGRAM:
            raise ValueError(f"{self.prometheus} is a histogram: use series")
        return self.series[0]


def _metric(instrument: str, unit: str, kind: Kind, prometheus: str | None = None) -> MetricName:
    return MetricName(instrument, unit, kind, prometheus or instrument)


# Per pair (from, to; family, network and zones where they apply).
# The seed's gauge keeps its exact name: milliseconds, no unit in the name.
LATENCY = _metric("latency_between_nodes", "", Kind.GAUGE)
LOSS = _metric("monlat_loss_ratio", "", Kind.GAUGE)
JITTER = _metric("monlat_jitter", "s", Kind.GAUGE, "monlat_jitter_seconds")
PROBES = _metric("monlat_probes", "", Kind.COUNTER)
RTT = _metric("monlat_rtt", "s", Kind.HISTOGRAM, "monlat_rtt_seconds")
# Only for pairs whose path does not carry the probe size (see telemetry).
PATH_MTU = _metric("monlat_path_mtu", "By", Kind.GAUGE, "monlat_path_mtu_bytes")
MTU_BLACK_HOLE = _metric("monlat_mtu_black_hole", "", Kind.GAUGE)

# Per agent.
AGENT_INFO = _metric("monlat_agent_info", "", Kind.GAUGE)
PEERS = _metric("monlat_peers", "", Kind.GAUGE)
EXPECTED_PROBERS = _metric("monlat_expected_probers", "", Kind.GAUGE)
IGNORED_PACKETS = _metric("monlat_ignored_packets", "", Kind.COUNTER)
TIMESTAMPS = _metric("monlat_timestamps", "", Kind.COUNTER)
SEND_LAG = _metric("monlat_send_lag", "s", Kind.HISTOGRAM, "monlat_send_lag_seconds")
MTU_CHECKS = _metric("monlat_mtu_checks", "", Kind.COUNTER)

PER_PAIR: tuple[MetricName, ...] = (LATENCY, LOSS, JITTER, PROBES, RTT, PATH_MTU, MTU_BLACK_HOLE)
PER_AGENT: tuple[MetricName, ...] = (
    AGENT_INFO,
    PEERS,
    EXPECTED_PROBERS,
    IGNORED_PACKETS,
    TIMESTAMPS,
    SEND_LAG,
    MTU_CHECKS,
)


def series_names(metrics: tuple[MetricName, ...]) -> frozenset[str]:
    return frozenset(name for metric in metrics for name in metric.series)
