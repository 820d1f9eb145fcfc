"""The probe engine: paced sends, reply matching, kernel timestamps, timeouts.

One socket per address family serves every peer. Everything happens in ticks of one re-armed
timer: read what the kernel queued (transmit times, replies), expire what is overdue, send what is
due. Both ends of every RTT are kernel timestamps, so when a reply is read does not matter: the
prober can wake a few dozen times a second instead of once per packet, which is most of its cost
at ordinary rates.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from monlat.agent.config import ProbeConfig
from monlat.agent.probe.icmp import EchoBuilder, Ignored, parse
from monlat.agent.probe.pending import Outcome, PendingProbes, Result
from monlat.agent.probe.schedule import Schedule
from monlat.agent.probe.sockets import Datagram

# Longest tick: sends due within it go out together (early, never late), and replies wait at
# most this long in the socket. Shorter when the receive buffer could not hold a tick's worth.
# Each wake-up has a fixed cost (event loop, scheduler, and caches gone cold while idle) that
# outweighs many probes' own work, while a longer tick costs no accuracy: both ends of an RTT
# and every timeout verdict are kernel times.
_MAX_TICK_S = 0.04
_MIN_TICK_S = 0.001
# Kernel memory a probe occupies in the receive buffer until read: its reply and its transmit
# timestamp, at their (rounded-up) true size.
_BUFFER_BYTES_PER_PROBE = 2048
_MAX_SLEEP_S = 0.25
_MAX_UNSTAMPED_SENDS = 65536


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall_ns(self) -> int: ...


class SystemClock:
    # The C functions themselves rather than methods wrapping them: the prober reads the clock
    # several times per probe, and each wrapper would add a Python frame.
    monotonic = staticmethod(time.monotonic)
    # Kernel receive timestamps are CLOCK_REALTIME, so send times must be too.
    wall_ns = staticmethod(time.time_ns)


class Transport(Protocol):
    family: int
    ident: int | None
    tx_timestamps: bool  # the kernel reports transmit times through transmit_times()
    receive_buffer_bytes: int

    @property
    def kind(self) -> str: ...
    @property
    def parses_ip_header(self) -> bool: ...
    def fileno(self) -> int: ...
    def send(self, packet: bytes, address: str) -> int | None: ...
    def receive_all(self) -> list[Datagram]: ...
    def transmit_times(self) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...


class ProbeListener(Protocol):
    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        """How probes ended, a tick's worth at a time (one call per tick, not per probe)."""

    def on_ignored(self, reason: Ignored) -> None: ...
    def on_send_lag(self, lag_s: float) -> None: ...
    def flush(self) -> None:
        """Deliver anything held back; called when probing stops."""


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    family: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        object.__setattr__(self, "family", int(family))


class _Channel:
    """One transport with its own sequence numbers and in-flight table."""

    def __init__(
        self, transport: Transport, builder: EchoBuilder, cookie: bytes, timeout_s: float
    ) -> None:
        self.transport = transport
        self.builder = builder
        self.pending = PendingProbes(cookie, transport.ident, timeout_s=timeout_s)
        self.sequences = itertools.cycle(range(1, 0x10000))
        self.ident = transport.ident or 0
        # Transmit-time key -> (token, wall ns before sendto, wall ns after it returned).
        self.sends: dict[int, tuple[int, int, int]] = {}

    def remember_send(self, key: int, token: int, before: int, after: int) -> None:
        self.sends[key] = (token, before, after)
        # Keys count up by one per send: the one this far back was never reported (the packet
        # died before the wire), so forget it.
        self.sends.pop((key - _MAX_UNSTAMPED_SENDS) & 0xFFFFFFFF, None)

    def apply_transmit_time(self, key: int, stamp: int) -> bool:
        """Use the kernel's transmit time for the probe sent under `key`."""
        return self.apply_transmit_times([(key, stamp)]) == 1

    def apply_transmit_times(self, reported: list[tuple[int, int]]) -> int:
        """Use the kernel's transmit times; returns how many probes they re-timed.

        Each time must fall inside its send's own system call; if not, the key count has
        drifted (a send failed after the kernel numbered it) and the user-space time stays.
        One call per batch rather than per report: this runs once per probe sent.
        """
        pop = self.sends.pop
        checked = []
        for key, stamp in reported:
            sent = pop(key, None)
            if sent is None:
                continue
            token, before, after = sent
            if before <= stamp <= after:
                checked.append((token, stamp))
        return self.pending.set_sent_times(checked)


class Prober:
    def __init__(
        self,
        agent: str,
        transports: Mapping[int, Transport],
        config: ProbeConfig,
        listener: ProbeListener,
        clock: Clock | None = None,
        cookie: bytes | None = None,
    ) -> None:
        self._config = config
        self._listener = listener
        self._clock = clock or SystemClock()
        cookie = cookie or os.urandom(8)
        self._channels = {
            family: _Channel(
                transport,
                EchoBuilder(family, cookie, config.payload_size),
                cookie,
                config.timeout_s,
            )
            for family, transport in transports.items()
        }
        self._schedule = Schedule(agent, config.interval_s / config.probes_per_interval)
        self._targets: dict[str, Target] = {}
        # Peer -> (address, channel): the send loop's one lookup per probe.
        self._routes: dict[str, tuple[str, _Channel]] = {}
        self._tokens = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._tick_s = _MAX_TICK_S
        self._read_at: float | None = None  # a tick is owed then, to read replies to a batch
        self.last_wake = self._clock.monotonic()
        self.sent = 0
        # Probes timed by the kernel's transmit timestamp, and by the user-space fallback (no
        # kernel timestamps on the socket, or one that failed its check against the send).
        self.kernel_send_times = 0
        self.user_send_times = 0
        # Received echo replies timed by the kernel, and by the read-time fallback.
        self.kernel_receive_times = 0
        self.user_receive_times = 0

    @property
    def families(self) -> frozenset[int]:
        return frozenset(self._channels)

    def set_targets(self, targets: Mapping[str, Target]) -> None:
        """Replace the peer set. Probes to departed peers are dropped, not counted as lost."""
        now = self._clock.monotonic()
        for name, old in list(self._targets.items()):
            new = targets.get(name)
            if new is None or new.address != old.address:
                self._schedule.remove(name)
                channel = self._channels.get(old.family)
                if channel:
                    channel.pending.forget_peer(old.address)
                del self._targets[name]
                del self._routes[name]
        for name, target in targets.items():
            if name not in self._targets and target.family in self._channels:
                self._targets[name] = target
                self._routes[name] = (target.address, self._channels[target.family])
                self._schedule.add(name, now)
        self._tick_s = self._tick_length()
        self._wake()

    def _tick_length(self) -> float:
        """A tick short enough that what arrives during it fits the receive buffer twice."""
        period = self._schedule.period
        # At most half a period, so that no peer is due twice within one tick.
        longest = min(_MAX_TICK_S, period / 2)
        rate = len(self._targets) / period
        if rate <= 0:
            return longest
        buffer = min(c.transport.receive_buffer_bytes for c in self._channels.values())
        fits = buffer / _BUFFER_BYTES_PER_PROBE / 2
        return max(min(_MIN_TICK_S, longest), min(longest, fits / rate))

    async def run(self) -> None:
        """Probe until cancelled, from one re-armed timer callback (cheaper per wake-up than a
        coroutine sleeping on a future, and no wake-up per received packet)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._tick()
        try:
            await loop.create_future()  # never set: runs until cancelled
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._loop = None
            self._listener.flush()

    def _tick(self) -> None:
        self._timer = None
        try:
            self.last_wake = now = self._clock.monotonic()
            if self._read_at is not None and now >= self._read_at:
                self._read_at = None
            # Read before expiring: a reply already queued is never counted lost. A channel with
            # nothing in flight is skipped (strays wait there until it carries probes again).
            for channel in self._channels.values():
                if channel.pending or channel.sends:
                    self._drain(channel)
            self._expire(now)
            if self._send_due(now) and self._read_at is None:
                self._read_at = now + self._tick_s
        finally:
            # Re-armed even if this tick failed, so one bad send cannot stop all probing.
            self._arm()

    def _arm(self) -> None:
        if self._loop is None:
            return
        now = self._clock.monotonic()
        wake = now + _MAX_SLEEP_S
        next_send = self._schedule.next_due()
        if next_send is not None:
            wake = min(wake, next_send)
        if self._read_at is not None:
            wake = min(wake, self._read_at)
        for channel in self._channels.values():
            deadline = channel.pending.next_deadline()
            if deadline is not None:
                # A timeout reported one tick late costs nothing; a wake-up of its own does.
                wake = min(wake, deadline + self._tick_s)
        self._timer = self._loop.call_later(max(0.0, wake - now), self._tick)

    def _wake(self) -> None:
        """Run a tick now (new peers are due within their first period)."""
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_soon(self._tick)

    def _send_due(self, now: float) -> bool:
        due = self._schedule.pop_due(now + self._tick_s)
        if not due:
            return False
        wall_ns = self._clock.wall_ns
        # Bound once per batch; a batch holds every send due within the tick.
        routes, next_token = self._routes, self._tokens.__next__
        # One deadline and one lag figure per batch: the batch leaves within a millisecond,
        # far below the timeout's precision, and lag is a property of the wake-up.
        deadline = self._clock.monotonic() + self._config.timeout_s
        sent = untimed = 0
        failed: list[Outcome] = []
        for name, _ in due:
            address, channel = routes[name]
            sequence = next(channel.sequences)
            token = next_token() & 0xFFFFFFFF
            packet = channel.builder.build(channel.ident, sequence, token)
            sent_ns = wall_ns()
            try:
                key = channel.transport.send(packet, address)
            except OSError as err:
                failed.append(
                    Outcome(name, address, sequence, Result.SEND_ERROR, detail=err.strerror)
                )
                continue
            if key is not None:
                channel.remember_send(key, token, sent_ns, wall_ns())
            else:
                untimed += 1  # no kernel transmit time will come for it
            channel.pending.add(name, address, sequence, token, sent_ns, deadline)
            sent += 1
        self.sent += sent
        self.user_send_times += untimed
        if failed:
            self._listener.on_outcomes(failed)
        # How late the tick began against the earliest send it owed: the agent's own delay.
        self._listener.on_send_lag(max(0.0, now - due[0][1]))
        return sent > 0

    def _expire(self, now: float) -> None:
        for channel in self._channels.values():
            expired = channel.pending.expire(now)
            if expired:
                self._listener.on_outcomes(expired)

    def _drain(self, channel: _Channel) -> None:
        transport = channel.transport
        if transport.tx_timestamps:
            # Transmit times first: a reply read in the same pass must find its probe re-timed.
            reported = transport.transmit_times()
            if reported:
                applied = channel.apply_transmit_times(reported)
                self.kernel_send_times += applied
                self.user_send_times += len(reported) - applied
        family = transport.family
        ip_header = transport.parses_ip_header
        # Bound once per tick: the loop runs once per reply.
        match, wall_ns = channel.pending.match, self._clock.wall_ns
        on_ignored = self._listener.on_ignored
        outcomes: list[Outcome] = []
        finished = outcomes.append
        stamped = unstamped = 0
        for data, source, kernel_ns in transport.receive_all():
            packet = parse(data, family, source, ip_header=ip_header)
            if isinstance(packet, Ignored):
                on_ignored(packet)
                continue
            if kernel_ns:
                stamped += 1
                received_ns = kernel_ns
            else:
                # No kernel receive time: the reply is timed when read, up to a tick late.
                unstamped += 1
                received_ns = wall_ns()
            result = match(packet, received_ns)
            if isinstance(result, Ignored):
                on_ignored(result)
            else:
                finished(result)
        self.kernel_receive_times += stamped
        self.user_receive_times += unstamped
        if outcomes:
            self._listener.on_outcomes(outcomes)
