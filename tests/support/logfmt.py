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
