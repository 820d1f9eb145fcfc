"""Run iputils ``ping`` and parse its per-reply RTTs and loss summary."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

_REPLY_RE = re.compile(r"icmp_seq=(\d+).*?time=([\d.]+) ms")
_SUMMARY_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    rtts_ms: tuple[float, ...]
    output: str

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.transmitted if self.transmitted else 1.0

    @property
    def min_ms(self) -> float:
        return min(self.rtts_ms)

    @property
    def max_ms(self) -> float:
        return max(self.rtts_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rtts_ms)

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile, ``q`` in [0, 100]."""
        data = sorted(self.rtts_ms)
        rank = max(1, min(len(data), int(-(-q * len(data) // 100))))
        return data[rank - 1]


def ping_argv(dst: str, *, count: int, interval: float, timeout_s: float, ipv6: bool) -> list[str]:
    # No -w: with a deadline ping keeps sending until `count` replies arrive,
    # which would distort loss figures.  -W bounds the wait for the last reply.
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", f"{timeout_s:g}"]
    argv += ["-6" if ipv6 else "-4", dst]
    return argv


def parse_ping(output: str) -> PingResult:
    rtts = tuple(float(m.group(2)) for m in _REPLY_RE.finditer(output))
    summary = _SUMMARY_RE.search(output)
    if summary:
        transmitted, received = int(summary.group(1)), int(summary.group(2))
    else:
        transmitted, received = 0, len(rtts)
    return PingResult(transmitted, received, rtts, output)
