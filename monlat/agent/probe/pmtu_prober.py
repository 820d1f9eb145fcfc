"""The path MTU prober: each peer's path checked once per period with a large DF probe.

Beside the latency prober, never inside it: its own sockets (`PathMtuSocket`), its own low
rate (one request per peer per period while paths are healthy, a bisection of at most twenty
when one is not) and its own waiting, one check per peer at a time. What a check concludes
(`PathMtu`) goes to a listener; the decisions are `pmtu.PathMtuCheck`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import random
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from monlat.agent.config import PathMtuConfig
from monlat.agent.probe.icmp import COOKIE_SIZE, EchoBuilder, Packet, parse
from monlat.agent.probe.pmtu import Answer, PathMtu, PathMtuCheck, payload_bytes
from monlat.agent.probe.prober import Target
from monlat.agent.probe.sockets import QueuedError

# When the interface a peer is routed through is unknown (loopback, policy routing): the
# Ethernet MTU, what most node-to-node paths are meant to carry.
DEFAULT_PROBE_BYTES = 1500
_QUOTED = struct.Struct(f"!BBHHH{COOKIE_SIZE}sI")


class PathMtuTransport(Protocol):
    family: int
    ident: int | None

    @property
    def parses_ip_header(self) -> bool: ...
    def fileno(self) -> int: ...
    def send(self, packet: bytes, address: str) -> bool: ...
    def receive_all(self) -> list[tuple[bytes, str]]: ...
    def errors(self) -> list[QueuedError]: ...
    def close(self) -> None: ...


PathMtuListener = Callable[[Target, PathMtu], None]


class _Waiting(NamedTuple):
    future: asyncio.Future[tuple[Answer, int | None]]
    token: int
    address: str


@dataclass
class _Family:
    transport: PathMtuTransport
    sequences: itertools.cycle[int]


class PathMtuProber:
    def __init__(
        self,
        transports: Mapping[int, PathMtuTransport],
        config: PathMtuConfig,
        *,
        small_payload: int,
        probe_size: Callable[[str], int | None],
        listener: PathMtuListener,
    ) -> None:
        self._families = {
            family: _Family(transport, itertools.cycle(range(1, 0x10000)))
            for family, transport in transports.items()
        }
        self._config = config
        self._small_payload = small_payload
        self._probe_size = probe_size
        self._listener = listener
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._cookie = os.urandom(COOKIE_SIZE)
        self._targets: dict[str, Target] = {}
        self._changed = asyncio.Event()
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[tuple[int, int], _Waiting] = {}
        self.requests_sent = 0

    @property
    def families(self) -> frozenset[int]:
        return frozenset(self._families)

    def set_targets(self, targets: Mapping[str, Target]) -> None:
        self._targets = {
            name: target for name, target in targets.items() if target.family in self._families
        }
        for name in [name for name in self._checks if name not in self._targets]:
            self._checks.pop(name).cancel()
        self._changed.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for family in self._families.values():
            loop.add_reader(family.transport.fileno(), self._readable, family.transport)
        try:
            await self._schedule()
        finally:
            for family in self._families.values():
                loop.remove_reader(family.transport.fileno())
            for task in self._checks.values():
                task.cancel()
            await asyncio.gather(*self._checks.values(), return_exceptions=True)

    async def _schedule(self) -> None:
        """Every peer once per period, spread evenly over it (a peer's next check waits while
        its previous one is still bisecting)."""
        position = 0
        while True:
            if self._failure is not None:
                raise self._failure
            names = list(self._targets)
            if not names:
                self._changed.clear()
                await self._changed.wait()
                continue
            target = self._targets[names[position % len(names)]]
            position = (position + 1) % len(names)
            if target.name not in self._checks:
                task = asyncio.create_task(self._check(target), name=f"mtu:{target.name}")
                self._checks[target.name] = task
                task.add_done_callback(functools.partial(self._finished, target.name))
            with contextlib.suppress(TimeoutError):
                # Woken early by a check's failure; a change of peers waits for the next slot.
                await asyncio.wait_for(self._failed.wait(), self._config.interval_s / len(names))

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._checks.get(name) is task:
            del self._checks[name]
        if not task.cancelled() and task.exception() is not None:
            # A check's bug stops the prober (and so the agent, which says so), as the
            # latency prober's would; not a warning in a callback nobody reads.
            self._failure = task.exception()
            self._failed.set()

    async def _check(self, target: Target) -> None:
        ipv6 = target.family == socket.AF_INET6
        probe = self._config.probe_bytes or self._probe_size(target.address) or DEFAULT_PROBE_BYTES
        floor = self._small_payload + (48 if ipv6 else 28)
        if probe <= floor:
            return
        check = PathMtuCheck(probe, floor, resolution=self._config.resolution_bytes)
        while (size := check.next_size()) is not None:
            answer, mtu = await self._ask(target, size, ipv6)
            check.record(size, answer, mtu)
        assert check.result is not None
        if self._targets.get(target.name) == target:
            self._listener(target, check.result)

    async def _ask(self, target: Target, size: int, ipv6: bool) -> tuple[Answer, int | None]:
        family = self._families[target.family]
        transport = family.transport
        sequence = next(family.sequences)
        token = random.getrandbits(32)
        builder = EchoBuilder(target.family, self._cookie, payload_bytes(size, ipv6))
        packet = builder.build(transport.ident or 0, sequence, token)
        future: asyncio.Future[tuple[Answer, int | None]] = (
            asyncio.get_running_loop().create_future()
        )
        key = (target.family, sequence)
        self._waiting[key] = _Waiting(future, token, target.address)
        try:
            self.requests_sent += 1
            if not transport.send(packet, target.address):
                return Answer.NOTHING, None
            try:
                return await asyncio.wait_for(future, self._config.timeout_s)
            except TimeoutError:
                return Answer.NOTHING, None
        finally:
            if self._waiting.get(key) is not None and self._waiting[key].future is future:
                del self._waiting[key]

    def _readable(self, transport: PathMtuTransport) -> None:
        family = transport.family
        for data, source in transport.receive_all():
            packet = parse(data, family, source, ip_header=transport.parses_ip_header)
            if isinstance(packet, Packet) and not packet.is_error:
                self._answer(transport, packet.ident, packet.sequence, packet.cookie,
                             packet.token, source, (Answer.REPLY, None))  # fmt: skip
        for error in transport.errors():
            if len(error.quoted) < 8:
                continue
            if len(error.quoted) >= _QUOTED.size:
                _, _, _, ident, sequence, cookie, token = _QUOTED.unpack_from(error.quoted)
                quoted_cookie: bytes | None = cookie
                quoted_token: int | None = token
            else:
                # RFC 792 asks routers to quote only 8 bytes: identifier and sequence.
                ident, sequence = struct.unpack_from("!HH", error.quoted, 4)
                quoted_cookie = quoted_token = None
            answer = (Answer.TOO_BIG, error.info) if error.too_big else (Answer.NOTHING, None)
            self._answer(transport, ident, sequence, quoted_cookie, quoted_token, None, answer)

    def _answer(
        self,
        transport: PathMtuTransport,
        ident: int,
        sequence: int,
        cookie: bytes | None,
        token: int | None,
        source: str | None,
        answer: tuple[Answer, int | None],
    ) -> None:
        waiting = self._waiting.get((transport.family, sequence))
        if waiting is None or waiting.future.done():
            return
        if transport.ident is not None and ident != transport.ident:
            return  # another program's request (raw sockets see every packet)
        if cookie is not None and (cookie != self._cookie or token != waiting.token):
            return
        if source is not None and source != waiting.address:
            return
        waiting.future.set_result(answer)
