"""What the tests accept as one of the agent's logfmt lines: `time=… level=… event=…` and
`key=value` pairs, a value bare or double-quoted with backslash escapes."""

from __future__ import annotations

import re
from collections.abc import Iterable

LOGFMT_LINE = re.compile(
    r'^time=\S+ level=(debug|info|warn|error) event=\w+( \w+=("([^"\\]|\\.)*"|[^\s"]+))*$'
)


def not_logfmt(lines: Iterable[str]) -> list[str]:
    """The lines that are not logfmt (empty when all are)."""
    return [line for line in lines if not LOGFMT_LINE.match(line)]


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)')


def parse_logfmt(line: str) -> dict[str, str]:
    """One logfmt line as its fields, quoted values unescaped."""
    assert LOGFMT_LINE.match(line), line
    return {
        key: re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
        for key, value in _PAIR.findall(line)
    }
