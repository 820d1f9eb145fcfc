import itertools
import random

import pytest

from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.results import ResultStore, RttWindow


def reply(peer: str, rtt: float, address: str = "10.0.0.2") -> Outcome:
    return Outcome(peer, address, 0, Result.REPLY, rtt_s=rtt)


def lost(peer: str, address: str = "10.0.0.2") -> Outcome:
    return Outcome(peer, address, 0, Result.TIMEOUT)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_window_latest_mean_of_last_interval() -> None:
    window = RttWindow(window_s=60, latest_count=2)
    window.add(0, reply("p", 0.010))
    window.add(1, reply("p", 0.001))
    window.add(2, reply("p", 0.003))
    assert window.latest_rtt_s(2, stale_after_s=3) == pytest.approx(0.002)
    window.add(3, lost("p"))
    assert window.latest_rtt_s(3, stale_after_s=3) == pytest.approx(0.003)
    window.add(4, lost("p"))
    assert window.latest_rtt_s(4, stale_after_s=3) is None  # a whole interval without reply
    assert window.latest_rtt_s(100, stale_after_s=3) is None


def test_window_loss_and_jitter_over_time() -> None:
    window = RttWindow(window_s=10, latest_count=1)
    for t, rtt in enumerate([0.001, 0.003, None, 0.002, None]):
        window.add(t, reply("p", rtt) if rtt is not None else lost("p"))
    assert window.loss_ratio(4) == pytest.approx(2 / 5)
    assert window.jitter_s(4) == pytest.approx((0.002 + 0.001) / 2)
    assert window.loss_ratio(13.5) == pytest.approx(1 / 1)  # only t=4 is inside the window
    assert window.jitter_s(13.5) is None
    assert window.counts == {Result.REPLY: 3, Result.TIMEOUT: 2}


def test_send_errors_count_but_are_not_loss() -> None:
    window = RttWindow(window_s=10, latest_count=1)
    window.add(0, Outcome("p", "a", 0, Result.SEND_ERROR))
    assert window.loss_ratio(0) is None
    assert window.counts[Result.SEND_ERROR] == 1


def test_store_drops_departed_and_readdressed_peers() -> None:
    clock = FakeClock()
    store = ResultStore(window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1, clock=clock)
    store.set_peers([("a", "10.0.0.2"), ("b", "10.0.0.3")])
    store.record(reply("a", 0.001, "10.0.0.2"))
    store.record(reply("b", 0.002, "10.0.0.3"))
    store.record(reply("zzz", 0.002, "10.0.0.9"))  # unknown peer: ignored
    assert {s.peer: s.latency_ms for s in store.snapshot()} == {"a": 1.0, "b": 2.0}

    store.set_peers([("a", "10.0.0.2"), ("b", "10.0.0.4")])
    store.record(reply("b", 0.005, "10.0.0.3"))  # in flight to the old address: dropped
    summaries = {s.peer: s for s in store.snapshot()}
    assert summaries["b"].latency_ms is None and summaries["b"].counts == ()
    store.set_peers([("b", "10.0.0.4")])
    assert [s.peer for s in store.snapshot()] == ["b"]


def test_store_reports_nothing_stale() -> None:
    clock = FakeClock()
    store = ResultStore(window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1, clock=clock)
    store.set_peers([("a", "10.0.0.2")])
    store.record(reply("a", 0.001))
    clock.now += 2.9
    assert store.snapshot()[0].latency_ms == 1.0
    clock.now += 0.2
    assert store.snapshot()[0].latency_ms is None


def recomputed(
    samples: list[tuple[float, float | None]], now: float, window_s: float
) -> tuple[float | None, float | None]:
    """Loss ratio and jitter over the window, walked sample by sample (the definition)."""
    kept = [rtt for t, rtt in samples if t >= now - window_s]
    if not kept:
        return None, None
    loss = sum(1 for rtt in kept if rtt is None) / len(kept)
    rtts = [rtt for rtt in kept if rtt is not None]
    if len(rtts) < 2:
        return loss, None
    return loss, sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)


@pytest.mark.parametrize("seed", range(30))
def test_running_loss_and_jitter_equal_the_recomputed_ones(seed: int) -> None:
    """Random RTTs (LAN to a second), losses in bursts, send errors, gaps longer than the window
    and reads at any moment: the sums kept while samples come and go agree with a walk over the
    window."""
    rng = random.Random(seed)
    window_s = rng.choice([1.0, 10.0, 60.0])
    window = RttWindow(window_s=window_s, latest_count=1)
    samples: list[tuple[float, float | None]] = []
    now, loss_rate = 0.0, rng.choice([0.0, 0.01, 0.3, 0.9])
    for _ in range(2000):
        now += rng.expovariate(1.0) * (window_s / 5 if rng.random() < 0.99 else window_s * 3)
        kind = rng.random()
        if kind < 0.02:
            window.add(now, Outcome("p", "a", 0, Result.SEND_ERROR))
        elif kind < 0.02 + loss_rate:
            window.add(now, lost("p"))
            samples.append((now, None))
        else:
            # Whole nanoseconds, as the prober measures them (kernel timestamps).
            rtt = rng.choice([rng.randrange(1_000, 1_000_000), rng.randrange(10**6, 10**9)]) / 1e9
            window.add(now, reply("p", rtt))
            samples.append((now, rtt))
        if rng.random() < 0.2:
            read_at = now + rng.uniform(0, window_s * 1.5) if rng.random() < 0.1 else now
            loss, jitter = recomputed(samples, read_at, window_s)
            assert window.loss_ratio(read_at) == loss
            if jitter is None:
                assert window.jitter_s(read_at) is None
            else:
                assert window.jitter_s(read_at) == pytest.approx(jitter, rel=1e-9, abs=1e-12)
            if read_at > now:  # the window moved on: so does the record
                samples = [(t, rtt) for t, rtt in samples if t >= read_at - window_s]


def test_store_records_a_batch_at_one_time() -> None:
    clock = FakeClock()
    store = ResultStore(window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1, clock=clock)
    store.set_peers([("a", "10.0.0.2"), ("b", "10.0.0.3")])
    store.record_all([reply("a", 0.001, "10.0.0.2"), lost("b", "10.0.0.3"),
                      reply("b", 0.004, "10.0.0.9")])  # fmt: skip
    summaries = {s.peer: s for s in store.snapshot()}
    assert summaries["a"].latency_ms == 1.0 and summaries["a"].loss_ratio == 0.0
    assert summaries["b"].latency_ms is None and summaries["b"].loss_ratio == 1.0
    assert summaries["b"].counts == ((Result.TIMEOUT, 1),)  # the re-addressed reply is dropped


def test_histograms_off_count_nothing_and_start_afresh_when_on_again() -> None:
    """A cluster grown past the histogram budget stops counting them; shrunk back, each pair's
    histogram starts from zero at that moment (its start time moves), not from stale counts."""
    clock = FakeClock()
    store = ResultStore(window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1, clock=clock)
    store.set_peers([("a", "10.0.0.2")])
    store.record(reply("a", 0.001))
    before = store.snapshot()[0].histogram
    assert before.count == 1
    store.count_histograms(False)
    store.set_peers([("a", "10.0.0.2"), ("b", "10.0.0.3")])
    store.record_all([reply("a", 0.002), reply("b", 0.002, "10.0.0.3")])
    assert [s.histogram.count for s in store.snapshot()] == [1, 0]
    assert [s.latency_ms for s in store.snapshot()] == [2.0, 2.0]  # measuring goes on
    store.count_histograms(True)
    store.record(reply("a", 0.003))
    after = {s.peer: s.histogram for s in store.snapshot()}
    assert after["a"].count == 1 and after["a"].total == pytest.approx(0.003)
    assert after["a"].start_ns >= before.start_ns and after["b"].count == 0
