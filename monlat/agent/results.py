"""Per-peer results: the latest RTT, loss and jitter over a window, cumulative counts, and the
cumulative RTT histogram.

Outcomes arrive on the event loop; metric callbacks read snapshots from the exporters' threads,
hence the lock. Readers get immutable `PeerSummary` values and never touch live windows.
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.probe.pmtu import PathMtu

_SEND_ERROR = Result.SEND_ERROR


@dataclass(frozen=True, slots=True)
class PeerSummary:
    peer: str
    address: str
    latency_ms: float | None  # None: no reply in the latest interval, or no recent result
    loss_ratio: float | None  # over the window; None before the first result
    jitter_s: float | None  # mean |RTT difference| of consecutive replies in the window
    counts: tuple[tuple[Result, int], ...]  # cumulative probes by result
    histogram: HistogramSnapshot
    path_mtu: PathMtu | None = None  # the latest path MTU check's conclusion


# 50 µs doubling up to ~26 s: LAN to WAN in 20 buckets.
RTT_BUCKETS: tuple[float, ...] = tuple(50e-6 * 2**i for i in range(20))


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket (not cumulative); one more than bounds, for +Inf
    total: float
    count: int
    minimum: float | None
    maximum: float | None
    start_ns: int  # wall clock: when this histogram started counting


class RttHistogram:
    """Cumulative explicit-bucket histogram of RTTs in seconds.

    Aggregated here rather than with the OpenTelemetry SDK's synchronous Histogram, which costs
    about 10 µs per recorded value and reader on the probe path (as much as the probe itself),
    and keeps a departed peer's series forever. The exporters receive finished histograms.
    """

    __slots__ = ("bounds", "count", "counts", "maximum", "minimum", "start_ns", "total")

    def __init__(self, bounds: tuple[float, ...] = RTT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.start_ns = time.time_ns()

    def observe(self, value: float) -> None:
        # Prometheus buckets are upper-inclusive (le): a value equal to a bound belongs to it.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1
        minimum, maximum = self.minimum, self.maximum
        if minimum is None or value < minimum:
            self.minimum = value
        if maximum is None or value > maximum:
            self.maximum = value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(
            self.bounds,
            tuple(self.counts),
            self.total,
            self.count,
            self.minimum,
            self.maximum,
            self.start_ns,
        )


class RttWindow:
    """One peer's recent outcomes, kept for `window_s` seconds.

    The window's loss count and jitter sum are kept up to date as samples enter and leave it, so
    that a snapshot reads them instead of walking every sample of every peer (at 5,000 peers,
    300,000 samples per export or scrape). The jitter sum is in integer nanoseconds: adding and
    removing the same terms for ever cannot drift.
    """

    __slots__ = ("_gap_sum_ns", "_last_ns", "_latest_count", "_lost", "_samples", "_window_s",
                 "counts", "histogram", "histogram_on")  # fmt: skip

    def __init__(self, window_s: float, latest_count: int) -> None:
        self._window_s = window_s
        # The gauge reports the mean RTT of the most recent interval's probes.
        self._latest_count = latest_count
        # (time, RTT or None when lost, |RTT - the previous reply's RTT| in ns). The oldest
        # reply in the window carries its gap to one already gone, which jitter leaves out.
        self._samples: deque[tuple[float, float | None, int]] = deque()
        self._lost = 0  # samples in the window without an RTT
        self._gap_sum_ns = 0  # the gaps of every reply in the window, the oldest one's included
        self._last_ns: int | None = None  # the newest reply's RTT (it may have left the window)
        self.counts: Counter[Result] = Counter()
        self.histogram = RttHistogram()
        # Off where the cluster is too large for per-pair histograms (sizing): nothing reads it.
        self.histogram_on = True

    def count_histogram(self, on: bool) -> None:
        if on and not self.histogram_on:
            # Counting starts now: the cumulative histogram's start time says so.
            self.histogram = RttHistogram()
        self.histogram_on = on

    def add(self, now: float, outcome: Outcome) -> None:
        result, rtt = outcome.result, outcome.rtt_s
        self.counts[result] += 1
        if result is _SEND_ERROR:
            return  # the agent failed, not the network: no sample either way
        samples = self._samples
        if rtt is None:
            samples.append((now, None, 0))
            self._lost += 1
        else:
            rtt_ns = round(rtt * 1e9)
            last = self._last_ns
            gap = 0 if last is None else abs(rtt_ns - last)
            self._last_ns = rtt_ns
            self._gap_sum_ns += gap
            samples.append((now, rtt, gap))
            if self.histogram_on:
                self.histogram.observe(rtt)
        # Trimmed here rather than through _trim: this runs once per probe (and at a steady
        # rate drops one sample each time), and the sample just appended keeps the deque
        # non-empty.
        horizon = now - self._window_s
        while samples[0][0] < horizon:
            _, old_rtt, old_gap = samples.popleft()
            if old_rtt is None:
                self._lost -= 1
            else:
                self._gap_sum_ns -= old_gap

    def _trim(self, now: float) -> None:
        samples = self._samples
        horizon = now - self._window_s
        while samples and samples[0][0] < horizon:
            _, rtt, gap = samples.popleft()
            if rtt is None:
                self._lost -= 1
            else:
                self._gap_sum_ns -= gap

    def latest_rtt_s(self, now: float, stale_after_s: float) -> float | None:
        samples = self._samples
        if not samples or now - samples[-1][0] > stale_after_s:
            return None
        if self._latest_count == 1:
            return samples[-1][1]
        latest = itertools.islice(reversed(samples), self._latest_count)
        recent = [rtt for _, rtt, _ in latest if rtt is not None]
        return sum(recent) / len(recent) if recent else None

    def loss_ratio(self, now: float) -> float | None:
        self._trim(now)
        if not self._samples:
            return None
        return self._lost / len(self._samples)

    def jitter_s(self, now: float) -> float | None:
        self._trim(now)
        replies = len(self._samples) - self._lost
        if replies < 2:
            return None
        return (self._gap_sum_ns - self._oldest_gap_ns()) / 1e9 / (replies - 1)

    def _oldest_gap_ns(self) -> int:
        """The gap of the oldest reply in the window, which pairs it with a reply outside."""
        # Losses are rare, so that reply is nearly always the first sample.
        for _, rtt, gap in self._samples:
            if rtt is not None:
                return gap
        return 0


class ResultStore:
    def __init__(
        self,
        *,
        window_s: float,
        interval_s: float,
        timeout_s: float,
        probes_per_interval: int,
        clock: Callable[[], float],
    ) -> None:
        self._window_s = window_s
        self._latest_count = probes_per_interval
        # A result older than this means the peer is no longer being measured (or the agent is
        # stalled): report nothing rather than a stale value.
        self._stale_after_s = 2 * interval_s + timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, RttWindow] = {}
        self._addresses: dict[str, str] = {}
        self._path_mtu: dict[str, PathMtu] = {}
        self._histograms = True

    def count_histograms(self, on: bool) -> None:
        """Whether windows count RTT histograms (turned on again, each starts afresh)."""
        with self._lock:
            self._histograms = on
            for window in self._windows.values():
                window.count_histogram(on)

    def set_peers(self, peers: Iterable[tuple[str, str]]) -> None:
        """Keep windows only for these (name, address) pairs; a changed address starts afresh."""
        wanted = dict(peers)
        with self._lock:
            for name in list(self._windows):
                if wanted.get(name) != self._addresses.get(name):
                    del self._windows[name]
                    del self._addresses[name]
                    self._path_mtu.pop(name, None)
            for name, address in wanted.items():
                if name not in self._windows:
                    window = RttWindow(self._window_s, self._latest_count)
                    window.count_histogram(self._histograms)
                    self._windows[name] = window
                    self._addresses[name] = address

    def record_path_mtu(self, peer: str, address: str, result: PathMtu) -> None:
        """A path MTU check's conclusion; one for a departed or re-addressed peer is dropped."""
        with self._lock:
            if self._addresses.get(peer) == address:
                self._path_mtu[peer] = result

    def record(self, outcome: Outcome) -> None:
        self.record_all((outcome,))

    def record_all(self, outcomes: Iterable[Outcome]) -> None:
        """Record a batch (a tick's outcomes) under one lock, at one time: the times only place
        samples in the window, and a tick is far shorter than any window."""
        windows, addresses = self._windows, self._addresses
        with self._lock:
            now = self._clock()
            for outcome in outcomes:
                window = windows.get(outcome.peer)
                # An outcome for a departed (or re-addressed) peer is dropped with it.
                if window is not None and addresses[outcome.peer] == outcome.address:
                    window.add(now, outcome)

    def __len__(self) -> int:
        return len(self._windows)

    def snapshot(self) -> list[PeerSummary]:
        now = self._clock()
        stale_after_s = self._stale_after_s
        path_mtu = self._path_mtu
        with self._lock:
            summaries = []
            for name, window in self._windows.items():
                rtt = window.latest_rtt_s(now, stale_after_s)
                summaries.append(
                    PeerSummary(
                        peer=name,
                        address=self._addresses[name],
                        latency_ms=None if rtt is None else rtt * 1000.0,
                        loss_ratio=window.loss_ratio(now),
                        jitter_s=window.jitter_s(now),
                        counts=tuple(window.counts.items()),
                        histogram=window.histogram.snapshot(),
                        path_mtu=path_mtu.get(name),
                    )
                )
        return summaries
