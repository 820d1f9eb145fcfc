import heapq
import itertools
import random
import statistics

import pytest

from monlat.agent.probe.schedule import Schedule, phase


def test_phases_are_stable_and_spread_evenly() -> None:
    peers = [f"node{i}" for i in range(1000)]
    phases = [phase("agent", p, 1.0) for p in peers]
    assert phases == [phase("agent", p, 1.0) for p in peers]
    assert all(0 <= x < 1.0 for x in phases)
    # Ten buckets of a uniform spread hold about 100 each.
    buckets = [0] * 10
    for x in phases:
        buckets[int(x * 10)] += 1
    assert max(buckets) < 150 and min(buckets) > 50
    # Different agents probe the same peer at different moments.
    assert phase("a", "node1", 1.0) != phase("b", "node1", 1.0)


def test_each_peer_once_per_period_at_its_phase() -> None:
    schedule = Schedule("agent", 1.0)
    for i in range(100):
        schedule.add(f"n{i}", now=10.0)
    sends: dict[str, list[float]] = {}
    now = 10.0
    while now < 13.0:
        for peer, due in schedule.pop_due(now):
            sends.setdefault(peer, []).append(due)
        now += 0.01
    for peer, times in sends.items():
        assert len(times) in (2, 3), peer
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(abs(g - 1.0) < 1e-9 for g in gaps)
        assert abs(times[0] % 1.0 - phase("agent", peer, 1.0)) < 1e-9


def test_no_catch_up_burst_after_a_stall() -> None:
    schedule = Schedule("agent", 1.0)
    schedule.add("p", now=0.0)
    first = schedule.pop_due(1.0)
    assert len(first) == 1
    stalled = schedule.pop_due(10.5)  # ten periods missed
    assert len(stalled) == 1
    next_due = schedule.next_due()
    assert next_due is not None and 10.5 < next_due <= 11.5


def test_removed_peer_is_never_sent_again() -> None:
    schedule = Schedule("agent", 0.5)
    schedule.add("a", now=0.0)
    schedule.add("b", now=0.0)
    schedule.remove("a")
    assert len(schedule) == 1
    assert {peer for peer, _ in schedule.pop_due(5.0)} == {"b"}
    schedule.add("a", now=5.0)  # re-added: scheduled afresh
    assert {peer for peer, _ in schedule.pop_due(6.0)} == {"a", "b"}


def test_sends_per_wakeup_stay_small_at_high_rates() -> None:
    schedule = Schedule("agent", 1.0)
    for i in range(5000):
        schedule.add(f"n{i}", now=0.0)
    per_ms = []
    for tick in range(1, 2001):
        per_ms.append(len(schedule.pop_due(tick / 1000)))
    per_ms = per_ms[1000:]  # the second period
    assert sum(per_ms) == 5000
    assert statistics.mean(per_ms) == 5.0
    assert max(per_ms) <= 20  # even pacing: no bursts


class HeapSchedule:
    """The schedule as first written (a heap of next send times): the reference the ring must
    agree with."""

    def __init__(self, agent: str, period: float) -> None:
        self.agent, self.period = agent, period
        self.heap: list[tuple[float, int, str]] = []
        self.generation: dict[str, int] = {}
        self.counter = 0

    def add(self, peer: str, now: float) -> None:
        if peer in self.generation:
            return
        self.counter += 1
        self.generation[peer] = self.counter
        due = now - now % self.period + phase(self.agent, peer, self.period)
        if due < now:
            due += self.period
        heapq.heappush(self.heap, (due, self.counter, peer))

    def remove(self, peer: str) -> None:
        self.generation.pop(peer, None)

    def pop_due(self, now: float) -> list[tuple[str, float]]:
        due = []
        while self.heap:
            when, number, peer = self.heap[0]
            if self.generation.get(peer) != number:
                heapq.heappop(self.heap)
                continue
            if when > now:
                break
            due.append((peer, when))
            next_when = when + self.period
            if next_when <= now:
                next_when += (now - next_when) // self.period * self.period + self.period
            heapq.heapreplace(self.heap, (next_when, number, peer))
        return due


@pytest.mark.parametrize("seed", range(20))
def test_ring_sends_what_the_heap_sent(seed: int) -> None:
    """Random joins, departures, rejoins, ticks and stalls: the same sends at the same times.

    Peers join right after a tick (as the prober adds them: then its next tick), so the ring's
    cursor stands where the heap's earliest entry would."""
    rng = random.Random(seed)
    period = rng.choice([0.05, 0.5, 1.0, 3.0])
    ring, heap = Schedule("agent", period), HeapSchedule("agent", period)
    names = [f"n{i}" for i in range(40)]
    now = rng.uniform(0, 100)
    for _ in range(400):
        step = rng.random()
        now += rng.uniform(0, 5 * period) if step < 0.05 else rng.uniform(0, period / 3)
        got, expected = ring.pop_due(now), heap.pop_due(now)
        assert [p for p, _ in got] == [p for p, _ in expected]
        assert [t for _, t in got] == pytest.approx([t for _, t in expected], abs=1e-9)
        for _ in range(rng.randrange(3)):
            peer = rng.choice(names)
            if rng.random() < 0.6:
                ring.add(peer, now)
                heap.add(peer, now)
            else:
                ring.remove(peer)
                heap.remove(peer)
        assert len(ring) == len(heap.generation)


def test_a_ring_emptied_and_refilled_starts_afresh() -> None:
    schedule = Schedule("agent", 1.0)
    schedule.add("a", now=0.0)
    schedule.pop_due(1.0)
    schedule.remove("a")
    assert schedule.pop_due(50.0) == [] and schedule.next_due() is None
    schedule.add("a", now=100.0)
    next_due = schedule.next_due()
    assert next_due is not None and 100.0 <= next_due < 101.0
    assert [peer for peer, _ in schedule.pop_due(101.0)] == ["a"]  # once, not a backlog
