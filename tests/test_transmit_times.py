"""Kernel transmit times are attributed to the right probe, or not at all."""

import socket

from monlat.probe.icmp import EchoBuilder
from monlat.probe.prober import _Channel

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
