"""Log output: measurement lines on stdout in the original format, events as logfmt on stderr."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from typing import TextIO

from monlat.discovery import split_key

_BARE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")


def measurement_line(source: str, target: str, rtt_ms: float, extra: str = "") -> str:
    """`latency_between_nodes{from="node2",to="node3"} 0.387`, as the original agents printed;
    `extra` holds further labels (`,family="ipv6"`) when the series carry them."""
    return f'latency_between_nodes{{from="{source}",to="{target}"{extra}}} {rtt_ms:.3f}'


class MeasurementLog:
    """Buffered, flushed at most every `flush_every_s`: a pipe gets the lines promptly without
    one write system call per line at thousands of lines a second."""

    def __init__(
        self,
        stream: TextIO,
        source: str,
        *,
        flush_every_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        network: str | None = None,
    ) -> None:
        self._stream = stream
        self._source = source
        self._network = f',network="{network}"' if network else ""
        self._flush_every_s = flush_every_s
        self._clock = clock
        self._flushed_at = clock()

    def write(self, target: str, rtt_s: float) -> None:
        """`target` is a peer key: a node name, or `name/family` in dual-stack mode."""
        name, family = split_key(target)
        extra = (f',family="{family}"' if family else "") + self._network
        self._stream.write(measurement_line(self._source, name, rtt_s * 1000.0, extra) + "\n")
        now = self._clock()
        if now - self._flushed_at >= self._flush_every_s:
            self._stream.flush()
            self._flushed_at = now

    def flush(self) -> None:
        self._stream.flush()


def _format_value(value: object) -> str:
    text = str(value)
    if _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class EventLog:
    """One logfmt line per event: `time=… level=info event=peer_added peer=node2 …`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _emit(self, level: str, event: str, fields: dict[str, object]) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        parts = [f"time={now}", f"level={level}", f"event={event}"]
        parts.extend(f"{key}={_format_value(value)}" for key, value in fields.items())
        self._stream.write(" ".join(parts) + "\n")
        self._stream.flush()

    def info(self, event: str, **fields: object) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._emit("warn", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._emit("error", event, fields)
