"""Hypothesis profiles for the hostile-input tests: a fast slice in the unit tier, the long runs
in a command of their own (`hatch run fuzz:long`, MONLAT_FUZZ=long), with the figures printed
by --hypothesis-show-statistics."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("suite", max_examples=200, deadline=None)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("MONLAT_FUZZ_EXAMPLES", "50000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("MONLAT_FUZZ", "suite"))
