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

from monlat.probe.pending import Outcome, Result

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
    """One peer's recent outcomes, kept for `window_s` seconds."""

    def __init__(self, window_s: float, latest_count: int) -> None:
        self._window_s = window_s
        # The gauge reports the mean RTT of the most recent interval's probes.
        self._latest_count = latest_count
        self._samples: deque[tuple[float, float | None]] = deque()
        self.counts: Counter[Result] = Counter()
        self.histogram = RttHistogram()

    def add(self, now: float, outcome: Outcome) -> None:
        result, rtt = outcome.result, outcome.rtt_s
        self.counts[result] += 1
        if result is _SEND_ERROR:
            return  # the agent failed, not the network: no sample either way
        samples = self._samples
        samples.append((now, rtt))
        if rtt is not None:
            self.histogram.observe(rtt)
        # Trimmed here rather than through _trim: this runs once per probe, and the newest
        # sample just appended keeps the deque non-empty.
        horizon = now - self._window_s
        while samples[0][0] < horizon:
            samples.popleft()

    def _trim(self, now: float) -> None:
        horizon = now - self._window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def latest_rtt_s(self, now: float, stale_after_s: float) -> float | None:
        if not self._samples or now - self._samples[-1][0] > stale_after_s:
            return None
        latest = itertools.islice(reversed(self._samples), self._latest_count)
        recent = [rtt for _, rtt in latest if rtt is not None]
        return sum(recent) / len(recent) if recent else None

    def loss_ratio(self, now: float) -> float | None:
        self._trim(now)
        if not self._samples:
            return None
        lost = sum(1 for _, rtt in self._samples if rtt is None)
        return lost / len(self._samples)

    def jitter_s(self, now: float) -> float | None:
        self._trim(now)
        rtts = [rtt for _, rtt in self._samples if rtt is not None]
        if len(rtts) < 2:
            return None
        return sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)


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

    def set_peers(self, peers: Iterable[tuple[str, str]]) -> None:
        """Keep windows only for these (name, address) pairs; a changed address starts afresh."""
        wanted = dict(peers)
        with self._lock:
            for name in list(self._windows):
                if wanted.get(name) != self._addresses.get(name):
                    del self._windows[name]
                    del self._addresses[name]
            for name, address in wanted.items():
                if name not in self._windows:
                    self._windows[name] = RttWindow(self._window_s, self._latest_count)
                    self._addresses[name] = address

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            window = self._windows.get(outcome.peer)
            # An outcome for a departed (or re-addressed) peer is dropped with it.
            if window is not None and self._addresses[outcome.peer] == outcome.address:
                window.add(self._clock(), outcome)

    def __len__(self) -> int:
        return len(self._windows)

    def snapshot(self) -> list[PeerSummary]:
        now = self._clock()
        with self._lock:
            summaries = []
            for name, window in self._windows.items():
                rtt = window.latest_rtt_s(now, self._stale_after_s)
                summaries.append(
                    PeerSummary(
                        peer=name,
                        address=self._addresses[name],
                        latency_ms=None if rtt is None else rtt * 1000.0,
                        loss_ratio=window.loss_ratio(now),
                        jitter_s=window.jitter_s(now),
                        counts=tuple(window.counts.items()),
                        histogram=window.histogram.snapshot(),
                    )
                )
        return summaries
