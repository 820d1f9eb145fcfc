"""How the lab tests judge a measured RTT against the emulated one.

Noise on a shared two-core VM (CPU steal, a halted vCPU waking late) only ever makes a packet
late, never early. So the judgement is asymmetric:

* below ``expected - LOW_TOL_MS`` is always a defect (ping and the agent print 3 significant
  digits, so 0.05 ms is rounding), and is never retried or waited out;
* above is judged on robust statistics (the minimum and the median of several samples), with
  room for the lateness the emulator itself measured (a probe crosses it twice), and a ping
  that is too slow is measured again a bounded number of times, every attempt reported should
  all of them fail; a gauge (the latest RTT) is awaited until one interval's figure fits.
  A systematic offset fails every attempt and every interval; a noisy second passes the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from .lab import Lab
from .ping import PingResult

LOW_TOL_MS = 0.05  # printed RTTs have 3 significant digits
HIGH_TOL_MS = 0.5  # on the minimum RTT: the emulator's own overhead is ~0.1-0.25 ms
NOISE_TOL_MS = 1.0  # on the median: room for scheduler noise
AGENT_TOL_MS = 1.5  # on the agent's figures: Python between the kernel timestamps and the log
PING_ATTEMPTS = 3


class EarlyRttError(Exception):
    """An RTT below the emulated one: never noise, so never waited out (not an AssertionError,
    which the harness's waits would turn into "not yet")."""


def rtt_ok(
    value: float, expected: float, *, tol: float = AGENT_TOL_MS, late_ms: float = 0.0
) -> bool:
    """One figure (a gauge holds the latest RTT): within the room above ``expected``?

    For waits: a late figure is "not yet", the next interval brings another; an early one raises.
    """
    if value < expected - LOW_TOL_MS:
        raise EarlyRttError(f"{value} ms < emulated {expected} - {LOW_TOL_MS}")
    return value <= expected + tol + 2 * late_ms


def emulator_late_ms(lab: Lab) -> float:
    """The worst lateness of any delivery the switch made since its start or last reset."""
    late_us: float = lab.stats().get("lateness_us", {}).get("max", 0.0)
    return late_us / 1000


def rtt_problems(
    samples: Sequence[float],
    expected: float,
    *,
    high_tol: float = HIGH_TOL_MS,
    noise_tol: float = NOISE_TOL_MS,
    late_ms: float = 0.0,
) -> list[str]:
    """What is wrong with ``samples`` (ms) against an emulated RTT of ``expected`` ms."""
    if not samples:
        return ["no samples"]
    problems = []
    early = [s for s in samples if s < expected - LOW_TOL_MS]
    if early:
        problems.append(f"early: {early} < {expected} - {LOW_TOL_MS}")
    allowance = 2 * late_ms  # a probe crosses the emulator twice
    if min(samples) > expected + high_tol + allowance:
        problems.append(f"min {min(samples)} > {expected} + {high_tol} + {allowance:.3f}")
    if median(samples) > expected + noise_tol + allowance:
        problems.append(f"median {median(samples)} > {expected} + {noise_tol} + {allowance:.3f}")
    return problems


def assert_rtt(
    samples: Sequence[float], expected: float, *, lab: Lab | None = None, tol: float = AGENT_TOL_MS
) -> None:
    """The agent's figures: none early; the minimum and the median within ``tol``.

    With ``lab``, the room above also holds twice the lateness the emulator measured.
    """
    late = emulator_late_ms(lab) if lab is not None else 0.0
    problems = rtt_problems(samples, expected, high_tol=tol, noise_tol=tol, late_ms=late)
    assert not problems, (problems, list(samples), f"emulator late {late:.3f} ms")


def ping_within(
    lab: Lab,
    src: str,
    dst: str,
    expected: float | None = None,
    *,
    count: int = 10,
    interval: float = 0.1,
    ipv6: bool = False,
    attempts: int = PING_ATTEMPTS,
) -> PingResult:
    """Ping ``src -> dst`` until the RTTs match the emulated one (see the module docstring)."""
    want = lab.expected_rtt_ms(src, dst) if expected is None else expected
    tried: list[tuple[list[str], tuple[float, ...], dict[str, float]]] = []
    for _ in range(attempts):
        result = lab.ping(src, dst, count=count, interval=interval, ipv6=ipv6)
        assert result.loss == 0.0, result.output
        problems = rtt_problems(result.rtts_ms, want)
        if not problems:
            return result
        lateness: dict[str, float] = lab.stats().get("lateness_us", {})
        tried.append((problems, result.rtts_ms, lateness))
        if any(p.startswith("early") for p in problems):
            break  # never noise
    raise AssertionError(
        f"{src}->{dst} expected {want} ms; attempts (with the emulator's lateness in µs "
        f"since its last reset): {tried}"
    )
