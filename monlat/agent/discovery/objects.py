"""Reading the API server's JSON as untrusted input: a field of the wrong type (`metadata:
null`, a string where a list belongs) reads as absent, so one malformed object cannot fail a
whole list of thousands, nor stop the watch that brings the next event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_EMPTY: Mapping[str, Any] = {}


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def mappings(value: object) -> list[Mapping[str, Any]]:
    """The mappings of a list; anything else is no list at all."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def text(value: object) -> str:
    return value if isinstance(value, str) else ""
