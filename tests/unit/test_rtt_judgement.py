"""How the lab tests judge measured RTTs (tests/support/lab/rtt.py): noise is tolerated, an
offset or an early reply is not."""

from __future__ import annotations

import pytest

from tests.support.lab.rtt import EarlyRttError, rtt_ok, rtt_problems


def test_one_late_outlier_among_accurate_samples_passes() -> None:
    assert rtt_problems([6.1, 6.2, 19.0, 6.15, 6.1], 6.0) == []


def test_a_systematic_offset_fails_on_the_minimum() -> None:
    problems = rtt_problems([6.7, 6.8, 6.75, 6.9, 6.7], 6.0)
    assert any(p.startswith("min 6.7") for p in problems), problems


def test_mostly_late_samples_fail_on_the_median() -> None:
    problems = rtt_problems([6.1, 7.2, 7.3, 7.1, 6.2], 6.0)
    assert problems and problems[0].startswith("median 7.1"), problems


def test_an_early_reply_always_fails() -> None:
    assert rtt_problems([5.9, 6.1, 6.1], 6.0)[0].startswith("early: [5.9]")
    with pytest.raises(EarlyRttError):
        rtt_ok(5.9, 6.0)


def test_the_emulators_measured_lateness_widens_the_room_above_twice() -> None:
    samples = [8.0, 8.1, 8.2]
    assert rtt_problems(samples, 6.0, high_tol=1.5, noise_tol=1.5)
    assert rtt_problems(samples, 6.0, high_tol=1.5, noise_tol=1.5, late_ms=0.4) == []
    assert not rtt_ok(8.0, 6.0) and rtt_ok(8.0, 6.0, late_ms=0.3)


def test_no_samples_is_a_problem() -> None:
    assert rtt_problems([], 1.0) == ["no samples"]
