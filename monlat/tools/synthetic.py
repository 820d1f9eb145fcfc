"""A whole agent's export built by the agent's own code from made-up results.

`monlat plan` counts what it contains and the fleet benchmark pushes it into the real collector,
so both speak of exactly what an agent would send: the same peer choice (sizing, ring, zones),
the same `ResultStore` windows, `PairSeries` encoders, SDK instruments and resource. Only the
probes are invented: replies around a base RTT, and a lossy share of pairs with timeouts.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import (
    Histogram,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from monlat import __version__
from monlat.agent.discovery import Peer, PeerMap
from monlat.agent.discovery.selection import plan_peers
from monlat.agent.export.otlp import pair_metrics, with_pair_series
from monlat.agent.export.provider import build_provider, build_resource
from monlat.agent.probe.icmp import Ignored
from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.results import ResultStore
from monlat.agent.sizing import Sizing, SizingSettings, size_for
from monlat.agent.telemetry import PairLabels, PairSeries, Snapshots, Telemetry


@dataclass(frozen=True)
class ClusterShape:
    nodes: int
    zones: int = 1  # nodes spread round-robin over this many zones; 1: no zone labels
    dual_stack: bool = False
    zone_labels: bool = False  # from_zone/to_zone on every pair series


def zone_name(index: int) -> str:
    return f"zone-{string.ascii_lowercase[index % 26]}{index // 26 or ''}"


def cluster(shape: ClusterShape) -> dict[str, str | None]:
    """Node name -> zone, for a cluster of that shape."""
    return {
        f"node-{i:05d}": zone_name(i % shape.zones) if shape.zones > 1 else None
        for i in range(shape.nodes)
    }


def _address(index: int, family: str) -> str:
    if family == "ipv6":
        return f"fd00::{index:x}"
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


def node_peers(index: int, name: str, zone: str | None, dual_stack: bool) -> list[Peer]:
    """The peers one node is: one per family when dual-stack, else one without family."""
    families: tuple[str | None, ...] = ("ipv4", "ipv6") if dual_stack else (None,)
    return [Peer(name, _address(index, family or "ipv4"), zone, family) for family in families]


class SyntheticAgent:
    """One node's agent after a minute of probing, at the default settings unless told."""

    # A minute at 1 Hz, as the default --window; 2 % of pairs lose 5 % of their probes.
    PROBES = 60
    LOSSY_SHARE = 0.02

    def __init__(
        self,
        node: str,
        nodes: Mapping[str, str | None],
        shape: ClusterShape,
        settings: SizingSettings | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.node = node
        own_zone = nodes.get(node)
        zone_count = len({zone for zone in nodes.values() if zone is not None}) or 1
        self.sizing: Sizing = size_for(
            len(nodes),
            zone_count,
            settings or SizingSettings(),
            families=2 if shape.dual_stack else 1,
        )
        others = {name: zone for name, zone in nodes.items() if name != node}
        plan = plan_peers(
            node,
            others,
            own_zone=own_zone,
            max_peers=self.sizing.max_peers,
            cross_zone=self.sizing.cross_zone_peers,
        )
        self.expected_probers = plan.expected_probers
        index = {name: i for i, name in enumerate(nodes)}
        chosen: PeerMap = {
            peer.key: peer
            for name in sorted(plan.peers)
            for peer in node_peers(index[name], name, nodes[name], shape.dual_stack)
        }
        self.peers = len(chosen)
        now = [0.0]
        store = ResultStore(
            window_s=60.0,
            interval_s=1.0,
            timeout_s=1.0,
            probes_per_interval=1,
            clock=lambda: now[0],
        )
        store.set_peers((key, peer.address) for key, peer in chosen.items())
        rng = random.Random(f"{seed}/{node}")
        for key, peer in chosen.items():
            base = rng.uniform(0.0002, 0.002)
            lossy = rng.random() < self.LOSSY_SHARE
            for sequence in range(self.PROBES):
                now[0] = float(sequence)
                if lossy and sequence % 20 == 0:
                    store.record(Outcome(key, peer.address, sequence, Result.TIMEOUT))
                else:
                    rtt = base * rng.uniform(0.9, 1.2)
                    store.record(Outcome(key, peer.address, sequence, Result.REPLY, rtt))
        snapshots = Snapshots(store, clock=lambda: now[0])
        labels = PairLabels(node, zones=shape.zone_labels, families=shape.dual_stack, network=None)
        labels.update(chosen, own_zone)
        self.series = PairSeries(snapshots, labels)
        self.series.histograms = self.sizing.pair_histograms
        self._reader = InMemoryMetricReader()
        provider = build_provider([self._reader], build_resource(node, __version__))
        self._provider = provider
        telemetry = Telemetry(
            provider.get_meter("monlat"),
            snapshots,
            labels,
            socket_kind="raw",
            version=__version__,
        )
        telemetry.expected_probers = plan.expected_probers
        sends = self.PROBES * len(chosen)
        telemetry.timestamps = lambda: (
            (("send", "kernel"), sends),
            (("send", "user"), 0),
            (("receive", "kernel"), sends),
            (("receive", "user"), 0),
        )
        telemetry.on_ignored(Ignored.FOREIGN)
        for _ in range(self.PROBES):
            telemetry.on_send_lag(rng.uniform(0.0, 0.002))

    def metrics_data(self) -> MetricsData:
        """What one OTLP push of this agent carries (before the exporter splits it)."""
        collected = self._reader.get_metrics_data()
        assert collected is not None
        return with_pair_series(
            collected, pair_metrics(self.series), InstrumentationScope("monlat")
        )

    def close(self) -> None:
        self._provider.shutdown(timeout_millis=1_000)


def prometheus_series(data: MetricsData) -> int:
    """Series the collector's Prometheus exporter makes of one push: a series per point, a
    histogram point's buckets, sum and count, and target_info for each resource."""
    count = 0
    for resource_metrics in data.resource_metrics:
        count += 1  # target_info
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if isinstance(metric.data, Histogram):
                    count += sum(
                        len(point.explicit_bounds) + 3 for point in metric.data.data_points
                    )
                else:
                    count += len(metric.data.data_points)
    return count


def data_points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )
