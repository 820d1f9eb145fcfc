"""Path MTU checks: does a packet as large as the path should carry get through, and if not,
what is the largest that does?

An MTU black hole is a path that silently drops packets above some size because the ICMP
"fragmentation needed" (IPv6 "packet too big") that should report it is filtered: small pings
look perfect while TLS handshakes and bulk transfers hang. A check sends one echo request of
the size the path should carry, with Don't Fragment set; a reply means the path carries it, an
ICMP report names the path's MTU (path MTU discovery works, no black hole), and silence starts
a short bisection between the size small probes already prove and the size that vanished.

Everything here is pure: `PathMtuCheck` says which size to send next and, from what came back,
what the path is. The prober (`pmtu_prober`) does the sending and the waiting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# IP and ICMP header bytes in front of an echo payload: sizes here are whole IP packets, as
# interface MTUs are.
IPV4_OVERHEAD = 20 + 8
IPV6_OVERHEAD = 40 + 8
# The smallest MTU each family promises (RFC 791, RFC 8200): the bisection's floor when
# nothing better is known.
IPV4_MINIMUM_MTU = 576
IPV6_MINIMUM_MTU = 1280


class Verdict(enum.Enum):
    """What a finished check says of the path (a label value of monlat_mtu_checks_total)."""

    OK = "ok"  # the probe size got through
    LIMITED = "limited"  # smaller MTU, reported by ICMP: path MTU discovery works
    BLACK_HOLE = "black_hole"  # large packets vanish without an ICMP report
    INCONCLUSIVE = "inconclusive"  # even the floor size went unanswered: loss, not MTU


class Answer(enum.Enum):
    REPLY = "reply"
    TOO_BIG = "too_big"  # ICMP fragmentation needed / packet too big, with the next-hop MTU
    NOTHING = "nothing"  # timed out (or another ICMP error)


@dataclass(frozen=True, slots=True)
class PathMtu:
    """A finished check of one pair's path."""

    verdict: Verdict
    probe_bytes: int  # the size the path should carry (what was tried first)
    largest_bytes: int | None  # the largest size known to get through; None if inconclusive
    probes: int  # echo requests the check sent

    @property
    def black_hole(self) -> bool:
        return self.verdict is Verdict.BLACK_HOLE


class PathMtuCheck:
    """One check of one path, step by step: `next_size()`, send, then `record()` the answer.

    The probe size is tried first (twice, so that one lost packet is not a black hole); if it
    vanishes, the floor is tried (if that vanishes too, the peer is lossy or gone, which the
    small probes report, and the check is inconclusive); then sizes between the two are bisected
    down to `resolution` bytes, each given the same two chances. At most
    2 * (2 + log2((probe - floor) / resolution)) requests: 20 for 1,500 bytes, none of them
    sent at once.
    """

    def __init__(
        self, probe_bytes: int, floor_bytes: int, *, resolution: int = 8, tries: int = 2
    ) -> None:
        if floor_bytes >= probe_bytes:
            raise ValueError("the floor must be smaller than the probe size")
        self.probe_bytes = probe_bytes
        self._low = floor_bytes  # known (or assumed) to get through
        self._high = probe_bytes  # known to vanish, once bisecting
        self._resolution = max(1, resolution)
        self._tries = tries
        self._size = probe_bytes
        self._failures = 0
        self._floor_checked = False
        self._probes = 0
        self.result: PathMtu | None = None

    def next_size(self) -> int | None:
        """The size to send next, or None when the check is finished (see `result`)."""
        return None if self.result is not None else self._size

    def record(self, size: int, answer: Answer, reported_mtu: int | None = None) -> None:
        """What came back for a request of `size` bytes."""
        if self.result is not None or size != self._size:
            return
        self._probes += 1
        if answer is Answer.TOO_BIG and reported_mtu is not None and 0 < reported_mtu < size:
            # The path says what it carries: discovery works, whatever the size that asked.
            self._finish(Verdict.LIMITED, reported_mtu)
            return
        if answer is Answer.REPLY:
            self._failures = 0
            if size == self.probe_bytes:
                self._finish(Verdict.OK, size)
                return
            self._low = size
            self._floor_checked = True
        else:
            self._failures += 1
            if self._failures < self._tries:
                return  # the same size once more
            self._failures = 0
            if size == self._low and not self._floor_checked:
                self._finish(Verdict.INCONCLUSIVE, None)
                return
            self._high = size
        self._size = self._next_bisection_size()

    def _next_bisection_size(self) -> int:
        if not self._floor_checked:
            return self._low
        if self._high - self._low <= self._resolution:
            self._finish(Verdict.BLACK_HOLE, self._low)
            return self._low
        return (self._low + self._high) // 2

    def _finish(self, verdict: Verdict, largest: int | None) -> None:
        self.result = PathMtu(verdict, self.probe_bytes, largest, self._probes)


def payload_bytes(packet_bytes: int, family_is_ipv6: bool) -> int:
    """The echo payload that makes an IP packet of `packet_bytes`."""
    return packet_bytes - (IPV6_OVERHEAD if family_is_ipv6 else IPV4_OVERHEAD)
