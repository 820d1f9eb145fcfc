"""When to probe whom: every peer on a fixed period, each at its own stable phase.

Phases come from a hash of (agent, peer), so sends spread evenly over the period instead of
bursting, stay put when other peers come and go, and differ between agents, so that a node is not
probed by every other node at the same instant.
"""

from __future__ import annotations

import heapq
import zlib


def phase(agent: str, peer: str, period: float) -> float:
    """Offset of `peer`'s sends within each period, in [0, period)."""
    return zlib.crc32(f"{agent}\x00{peer}".encode()) / 2**32 * period


class Schedule:
    """A heap of next send times; removal is lazy (a stale slot is skipped when popped).

    Heap entries are plain tuples (due, generation, peer): compared in C, which matters at
    tens of thousands of sends a second.
    """

    def __init__(self, agent: str, period: float) -> None:
        self._agent = agent
        self._period = period
        self._heap: list[tuple[float, int, str]] = []
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
        heapq.heappush(self._heap, (due, self._counter, peer))

    def remove(self, peer: str) -> None:
        self._generation.pop(peer, None)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, float]]:
        """Return (peer, due time) for every send due by `now` and schedule each one's next.

        A peer whose slots were missed entirely (the agent stalled for longer than a period)
        gets one send now, not a burst of catch-up sends.
        """
        due: list[tuple[str, float]] = []
        heap, generation, period = self._heap, self._generation, self._period
        while heap:
            when, number, peer = heap[0]
            if generation.get(peer) != number:
                heapq.heappop(heap)
                continue
            if when > now:
                break
            due.append((peer, when))
            next_when = when + period
            if next_when <= now:
                next_when += (now - next_when) // period * period + period
            heapq.heapreplace(heap, (next_when, number, peer))
        return due

    def _drop_stale(self) -> None:
        heap, generation = self._heap, self._generation
        while heap and generation.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
