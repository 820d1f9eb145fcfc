"""Probes in flight: register on send, match replies, expire on timeout.

Pure bookkeeping with no sockets or clocks of its own, so every matching rule is unit-tested.
A reply becomes a measurement only if its source, sequence, identifier (when the socket lets us
choose it), cookie and per-probe token all agree with a probe still waiting; anything else is
classified and counted.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from monlat.agent.probe.icmp import Ignored, Packet


class Result(enum.Enum):
    REPLY = "reply"
    TIMEOUT = "timeout"
    ERROR = "error"  # an ICMP error (unreachable, time exceeded) came back instead
    SEND_ERROR = "send_error"  # the kernel refused to send; says nothing about the network

    # Members are singletons compared by identity; Enum's own hash is a Python-level call on
    # every per-result counter update, once per probe.
    __hash__ = object.__hash__


class Outcome(NamedTuple):
    """How one probe ended; a NamedTuple because one is made per probe."""

    peer: str
    address: str
    sequence: int
    result: Result
    rtt_s: float | None = None
    detail: str | None = None


# NamedTuple's generated __new__ is a Python function; building the tuple directly skips that
# frame once per probe (the same call `_make` uses). Every field must then be given.
_new_outcome = tuple.__new__
_REPLY = Result.REPLY


@dataclass(slots=True)
class _Probe:
    peer: str
    address: str
    sequence: int
    token: int
    sent_ns: int
    deadline: float


class PendingProbes:
    """Probes waiting for a reply, keyed by their unique per-agent token."""

    def __init__(
        self,
        cookie: bytes,
        ident: int | None,
        *,
        timeout_s: float | None = None,
        memory: int = 65536,
    ) -> None:
        self._cookie = cookie
        # Replies are read in ticks, so one can be read a little after its probe's deadline;
        # the kernel's timestamps decide whether it came in time.
        self._timeout_ns = None if timeout_s is None else int(timeout_s * 1e9)
        # None for datagram sockets: the kernel picks the identifier, and filters on it for us.
        self._ident = ident
        self._waiting: dict[int, _Probe] = {}
        # ICMP errors may quote too little of our request to carry the token.
        self._by_address: dict[tuple[str, int], int] = {}
        # Deadlines are in send order because the timeout is the same for every probe.
        self._deadlines: deque[_Probe] = deque()
        # Recently finished probes: a reply to one of these is a duplicate or late, not a stray.
        # Two generations of `memory` each rather than one ordered map trimmed per probe: the
        # last `memory` are always remembered, and forgetting costs nothing per probe.
        self._finished: dict[int, Result] = {}
        self._finished_before: dict[int, Result] = {}
        self._memory = memory

    def __len__(self) -> int:
        return len(self._waiting)

    def add(
        self, peer: str, address: str, sequence: int, token: int, sent_ns: int, deadline: float
    ) -> None:
        probe = _Probe(peer, address, sequence, token, sent_ns, deadline)
        self._waiting[token] = probe
        self._by_address[(address, sequence)] = token
        self._deadlines.append(probe)

    def set_sent_ns(self, token: int, sent_ns: int) -> bool:
        """Replace a waiting probe's send time (with the kernel's); false if it is gone."""
        probe = self._waiting.get(token)
        if probe is None:
            return False
        probe.sent_ns = sent_ns
        return True

    def set_sent_times(self, times: list[tuple[int, int]]) -> int:
        """set_sent_ns for each (token, sent_ns), in one call per batch; returns how many
        probes were still waiting to be re-timed."""
        waiting = self._waiting.get
        applied = 0
        for token, sent_ns in times:
            probe = waiting(token)
            if probe is not None:
                probe.sent_ns = sent_ns
                applied += 1
        return applied

    def match(self, packet: Packet, received_ns: int) -> Outcome | Ignored:
        # One unpack instead of an attribute lookup per field: this runs once per reply.
        is_error, peer, ident, sequence, cookie, token, icmp_type, icmp_code, reporter = packet
        if self._ident is not None and ident != self._ident:
            return Ignored.FOREIGN
        if cookie is not None and cookie != self._cookie:
            return Ignored.BAD_COOKIE
        if token is None:
            if not is_error:
                return Ignored.TRUNCATED
            token = self._by_address.get((peer, sequence))
            if token is None:
                return Ignored.UNEXPECTED
        probe = self._waiting.get(token)
        if probe is None:
            ended = self._finished.get(token)
            if ended is None:
                ended = self._finished_before.get(token)
                if ended is None:
                    return Ignored.UNEXPECTED
            return Ignored.LATE if ended is Result.TIMEOUT else Ignored.DUPLICATE
        if probe.address != peer:
            return Ignored.WRONG_SOURCE
        if probe.sequence != sequence:
            return Ignored.WRONG_SEQUENCE
        self._finish(probe)
        if is_error:
            self._remember(token, Result.ERROR)
            detail = f"icmp type {icmp_type} code {icmp_code} from {reporter}"
            return Outcome(probe.peer, peer, sequence, Result.ERROR, detail=detail)
        elapsed_ns = received_ns - probe.sent_ns
        if self._timeout_ns is not None and elapsed_ns > self._timeout_ns:
            self._remember(token, Result.TIMEOUT)
            return Outcome(probe.peer, peer, sequence, Result.TIMEOUT)
        # _remember inline: this is the path of nearly every probe.
        finished = self._finished
        finished[token] = _REPLY
        if len(finished) >= self._memory:
            self._finished_before, self._finished = finished, {}
        rtt = elapsed_ns / 1e9
        if rtt < 0:
            # The wall clock stepped backwards between send and receive; the sample is unusable.
            return Outcome(probe.peer, peer, sequence, Result.ERROR, detail="clock")
        return _new_outcome(Outcome, (probe.peer, peer, sequence, _REPLY, rtt, None))

    def expire(self, now: float) -> list[Outcome]:
        """Time out every waiting probe whose deadline has passed."""
        expired: list[Outcome] = []
        while self._deadlines and self._deadlines[0].deadline <= now:
            probe = self._deadlines.popleft()
            if self._waiting.get(probe.token) is probe:
                self._finish(probe)
                self._remember(probe.token, Result.TIMEOUT)
                expired.append(Outcome(probe.peer, probe.address, probe.sequence, Result.TIMEOUT))
        return expired

    def forget_peer(self, address: str) -> None:
        """Drop a departed peer's probes without counting them as lost."""
        for probe in [p for p in self._waiting.values() if p.address == address]:
            self._finish(probe)

    def next_deadline(self) -> float | None:
        while self._deadlines:
            probe = self._deadlines[0]
            if self._waiting.get(probe.token) is probe:
                return probe.deadline
            self._deadlines.popleft()
        return None

    def _finish(self, probe: _Probe) -> None:
        del self._waiting[probe.token]
        # Popped unconditionally, one lookup: the entry is almost always this probe's. A later
        # probe under the same address and (wrapped) sequence keeps its entry.
        key = (probe.address, probe.sequence)
        other = self._by_address.pop(key, probe.token)
        if other != probe.token:
            self._by_address[key] = other

    def _remember(self, token: int, result: Result) -> None:
        finished = self._finished
        finished[token] = result
        if len(finished) >= self._memory:
            self._finished_before, self._finished = finished, {}
