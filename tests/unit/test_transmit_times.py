"""Kernel transmit times are attributed to the right probe, or not at all."""

import contextlib
import socket
from typing import Any

from monlat.agent.probe.icmp import EchoBuilder
from monlat.agent.probe.prober import _Channel

COOKIE = b"monlat01"


class FakeTransport:
    family = socket.AF_INET
    ident = 7
    tx_timestamps = True
    receive_buffer_bytes = 1 << 20


def channel() -> _Channel:
    return _Channel(FakeTransport(), EchoBuilder(socket.AF_INET, COOKIE, 56), COOKIE, 1.0)  # type: ignore[arg-type]


def test_time_inside_the_send_call_is_used() -> None:
    chan = channel()
    chan.pending.add("p", "10.0.0.2", 1, 42, sent_ns=1_000, deadline=1.0)
    chan.remember_send(0, 42, before=1_000, after=1_900)
    assert chan.apply_transmit_time(0, 1_500)
    assert not chan.apply_transmit_time(0, 1_500)  # each key once


def test_time_outside_the_send_call_is_rejected() -> None:
    """A drifted key count would pin another probe's time on this one: keep the user time."""
    chan = channel()
    chan.pending.add("p", "10.0.0.2", 1, 42, sent_ns=1_000, deadline=1.0)
    chan.remember_send(5, 42, before=1_000, after=1_900)
    assert not chan.apply_transmit_time(5, 5_000)
    assert not chan.apply_transmit_time(6, 1_500)  # unknown key


def test_unreported_sends_are_forgotten_eventually() -> None:
    chan = channel()
    for key in range(70_000):
        chan.remember_send(key, key, 0, 1)
    assert len(chan.sends) == 65_536
    assert 0 not in chan.sends and 69_999 in chan.sends


def test_sends_without_kernel_timestamps_are_counted_as_user_timed() -> None:
    """A socket that reports no transmit times: every probe is timed by the user-space clock,
    and the count says so (monlat_timestamps_total{direction="send",source="user"})."""
    import asyncio

    from monlat.agent.config import ProbeConfig
    from monlat.agent.probe.icmp import Ignored
    from monlat.agent.probe.pending import Outcome
    from monlat.agent.probe.prober import Prober, Target

    class Untimed:
        family = socket.AF_INET
        ident = 7
        tx_timestamps = False
        receive_buffer_bytes = 1 << 20
        kind = "dgram"
        parses_ip_header = False

        def __init__(self) -> None:
            self.sent: list[str] = []

        def fileno(self) -> int:
            return -1

        def send(self, packet: bytes, address: str) -> int | None:
            self.sent.append(address)
            return None

        def receive_all(self) -> list[Any]:
            return []

        def transmit_times(self) -> list[tuple[int, int]]:
            raise AssertionError("not asked: the socket has no transmit timestamps")

    class Listener:
        def on_outcomes(self, outcomes: list[Outcome]) -> None: ...
        def on_ignored(self, reason: Ignored) -> None: ...
        def on_send_lag(self, lag_s: float) -> None: ...
        def flush(self) -> None: ...

    transport = Untimed()
    prober = Prober("a", {socket.AF_INET: transport}, ProbeConfig(interval_s=0.05), Listener())
    prober.set_targets({"b": Target("b", "192.0.2.2"), "c": Target("c", "192.0.2.3")})

    async def probe_briefly() -> None:
        task = asyncio.create_task(prober.run())
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(probe_briefly())
    assert prober.sent == len(transport.sent) >= 4
    assert (prober.kernel_send_times, prober.user_send_times) == (0, prober.sent)
