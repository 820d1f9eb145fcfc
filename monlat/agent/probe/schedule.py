"""When to probe whom: every peer on a fixed period, each at its own stable phase.

Phases come from a hash of (agent, peer), so sends spread evenly over the period instead of
bursting, stay put when other peers come and go, and differ between agents, so that a node is not
probed by every other node at the same instant.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, bisect_right


def phase(agent: str, peer: str, period: float) -> float:
    """Offset of `peer`'s sends within each period, in [0, period)."""
    return zlib.crc32(f"{agent}\x00{peer}".encode()) / 2**32 * period


class Schedule:
    """Peers in phase order on a ring, walked by a cursor once per period.

    Every peer is due at the start of each period plus its phase, so the order of sends is the
    same in every period: the ring is sorted when the peer set changes, and each tick takes the
    next slice of it. A heap cost a dozen tuple comparisons per send (at 5,000 peers, more than
    building the packet); a slice and its due times are made in C.
    """

    def __init__(self, agent: str, period: float) -> None:
        self._agent = agent
        self._period = period
        self._phases: dict[str, float] = {}
        # The ring, sorted by (phase, peer); rebuilt lazily after changes, so that adding a
        # thousand peers sorts once.
        self._names: list[str] = []
        self._offsets: list[float] = []
        self._dirty = False
        self._cycle = 0.0  # start of the period the cursor is in
        self._cursor = 0  # index in the ring of the next peer due in that period
        self._sent_until = 0.0  # every slot up to this time has been handed out
        self._restart: float | None = None  # first peers added then: start the walk there

    def __len__(self) -> int:
        return len(self._phases)

    @property
    def period(self) -> float:
        return self._period

    def add(self, peer: str, now: float) -> None:
        """Schedule `peer` at its phase. The first peers start the walk at `now`; a peer joining
        later gets its first slot after the latest time sends were taken for (the prober takes
        them a tick ahead, so that slot is at most a period and a tick away)."""
        if peer in self._phases:
            return
        if not self._phases:
            self._restart = now
        self._phases[peer] = phase(self._agent, peer, self._period)
        self._dirty = True

    def remove(self, peer: str) -> None:
        if self._phases.pop(peer, None) is not None:
            self._dirty = True

    def next_due(self) -> float | None:
        self._rebuild()
        if not self._names:
            return None
        return self._cycle + self._offsets[self._cursor]

    def pop_due(self, now: float) -> list[tuple[str, float]]:
        """Return (peer, due time) for every send due by `now`, in due order, and move past them.

        A peer whose slots were missed entirely (the agent stalled for longer than a period)
        gets one send now, not a burst of catch-up sends.
        """
        self._rebuild()
        names, offsets = self._names, self._offsets
        count = len(names)
        due: list[tuple[str, float]] = []
        left = count  # at most one turn of the ring per call
        while left:
            cycle, start = self._cycle, self._cursor
            end = bisect_right(offsets, now - cycle, start, min(count, start + left))
            if end > start:
                due += zip(names[start:end], map(cycle.__add__, offsets[start:end]), strict=True)
                left -= end - start
            if end < count:
                self._cursor = end
                break
            self._cursor, self._cycle = 0, cycle + self._period
        if count and not left:
            self._resume_after(now)
        self._sent_until = max(self._sent_until, now)
        return due

    def _resume_after(self, now: float) -> None:
        """After a whole turn in one call: if still behind, continue at the first slot after
        `now` instead of sending everything again."""
        if self._cycle + self._offsets[self._cursor] > now:
            return
        self._position_after(now)
        self._wrap()

    def _position_after(self, now: float) -> None:
        self._cycle = now - now % self._period
        self._cursor = bisect_right(self._offsets, now - self._cycle)

    def _rebuild(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        ring = sorted((offset, name) for name, offset in self._phases.items())
        self._offsets = [offset for offset, _ in ring]
        self._names = [name for _, name in ring]
        if self._restart is not None:
            # The first slot at or after the first peers' arrival.
            now, self._restart = self._restart, None
            self._cycle = now - now % self._period
            self._cursor = bisect_left(self._offsets, now - self._cycle)
        else:
            # The first slot after those already handed out.
            self._position_after(self._sent_until)
        self._wrap()

    def _wrap(self) -> None:
        if self._names and self._cursor == len(self._names):
            self._cursor, self._cycle = 0, self._cycle + self._period
