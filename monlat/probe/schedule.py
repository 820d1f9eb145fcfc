"""When to probe whom: every peer on a fixed period, each at its own stable phase.

Phases come from a hash of (agent, peer), so sends spread evenly over the period instead of
bursting, stay put when other peers come and go, and differ between agents, so that a node is not
probed by every other node at the same instant.
"""

from __future__ import annotations

import heapq
import zlib
from dataclasses import dataclass, field


def phase(agent: str, peer: str, period: float) -> float:
    """Offset of `peer`'s sends within each period, in [0, period)."""
    return zlib.crc32(f"{agent}\x00{peer}".encode()) / 2**32 * period


@dataclass(order=True, slots=True)
class _Slot:
    due: float
    peer: str = field(compare=False)
    generation: int = field(compare=False)


class Schedule:
    """A heap of next send times; removal is lazy (a stale slot is skipped when popped)."""

    def __init__(self, agent: str, period: float) -> None:
        self._agent = agent
        self._period = period
        self._heap: list[_Slot] = []
        self._generation: dict[str, int] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._generation)

    @property
    def period(self) -> float:
        return self._period

    def add(self, peer: str, now: float) -> None:
        """Schedule `peer` at its phase in the current period (the first send comes within one)."""
        if peer in self._generation:
            return
        self._counter += 1
        self._generation[peer] = self._counter
        offset = phase(self._agent, peer, self._period)
        due = now - now % self._period + offset
        if due < now:
            due += self._period
        heapq.heappush(self._heap, _Slot(due, peer, self._counter))

    def remove(self, peer: str) -> None:
        self._generation.pop(peer, None)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, float]]:
        """Return (peer, due time) for every send due by `now` and schedule each one's next.

        A peer whose slots were missed entirely (the agent stalled for longer than a period)
        gets one send now, not a burst of catch-up sends.
        """
        due: list[tuple[str, float]] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0].due > now:
                return due
            slot = self._heap[0]
            due.append((slot.peer, slot.due))
            missed = (now - slot.due) // self._period
            slot.due += (missed + 1) * self._period
            heapq.heapreplace(self._heap, slot)

    def _drop_stale(self) -> None:
        while self._heap and self._generation.get(self._heap[0].peer) != self._heap[0].generation:
            heapq.heappop(self._heap)
