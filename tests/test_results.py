import pytest

from monlat.probe.pending import Outcome, Result
from monlat.results import ResultStore, RttWindow


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
