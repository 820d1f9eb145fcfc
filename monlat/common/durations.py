"""Durations as settings spell them: `1s`, `250ms`, `2m`."""

from __future__ import annotations

import re

from monlat.common.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(setting: str, text: str, *, default_unit: str = "s") -> float:
    """Parse `1s`, `250ms`, `1.5` (in default_unit) into seconds; must be positive."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(setting, f"invalid duration {text!r} (use e.g. 1s, 250ms, 2m)")
    value = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or default_unit]
    if value <= 0:
        raise ConfigError(setting, f"duration must be greater than zero, got {text!r}")
    return value
