"""Log output: measurement lines on stdout in the original format, events as logfmt on stderr.

Measurement lines are written to the stream directly: at thousands a second, a logging record
each would cost more than the probe they report. Events go through stdlib logging.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from monlat.agent.discovery import split_key
from monlat.common import names as metric

_LATENCY = metric.LATENCY.sample
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")


def measurement_line(source: str, target: str, rtt_ms: float, extra: str = "") -> str:
    """`latency_between_nodes{from="node2",to="node3"} 0.387`, as the original agents printed;
    `extra` holds further labels (`,family="ipv6"`) when the series carry them."""
    return f'{_LATENCY}{{from="{source}",to="{target}"{extra}}} {rtt_ms:.3f}'


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
    if _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
           logging.ERROR: "error", logging.CRITICAL: "error"}  # fmt: skip


class LogfmtFormatter(logging.Formatter):
    """`time=… level=info event=peer_added peer=node2 …`, one line per record.

    monlat's own records carry `event` and `fields`; a library's record (the OpenTelemetry
    exporter retrying, the Kubernetes client) becomes `event=library logger=… message=…`, and
    an exception attached to it one `error=` field rather than a traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        now = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        level = _LEVELS.get(record.levelno, record.levelname.lower())
        parts = [f"time={now.isoformat(timespec='milliseconds')}", f"level={level}"]
        event = getattr(record, "event", None)
        if event is None:
            parts += ["event=library", f"logger={_format_value(record.name)}",
                      f"message={_format_value(record.getMessage())}"]  # fmt: skip
            if record.exc_info and record.exc_info[1] is not None:
                parts.append(f"error={_format_value(repr(record.exc_info[1]))}")
        else:
            parts.append(f"event={event}")
            fields: dict[str, object] = getattr(record, "fields", {})
            parts.extend(f"{key}={_format_value(value)}" for key, value in fields.items())
        return " ".join(parts)


def route_libraries(stream: TextIO, level: int) -> Callable[[], None]:
    """Send what other packages log (and Python's warnings) to `stream` as logfmt, from
    warnings up, or everything when `level` is DEBUG; returns the undo."""
    # The libraries' INFO is chatter (the Kubernetes client's every request at DEBUG); what an
    # operator needs from them is their warnings and errors.
    threshold = logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING)
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    handler.setLevel(threshold)
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous, threshold))
    logging.captureWarnings(True)

    def undo() -> None:
        logging.captureWarnings(False)
        root.setLevel(previous)
        root.removeHandler(handler)

    return undo


class EventLog:
    """The agent's events through stdlib logging, as logfmt on `stream`, from `level` up.

    Each EventLog has a logger of its own (not registered by name), so two agents in one
    process (the tests) never write to each other's stream; `libraries()` routes what other
    packages log (and Python's warnings) to the same stream in the same format while it is
    active: from warnings up, or everything at DEBUG.
    """

    def __init__(self, stream: TextIO, level: int = logging.INFO) -> None:
        self._level = level
        self._handler = logging.StreamHandler(stream)
        self._handler.setFormatter(LogfmtFormatter())
        self._logger = logging.Logger("monlat", level)
        self._logger.addHandler(self._handler)

    @contextlib.contextmanager
    def libraries(self) -> Iterator[None]:
        undo = route_libraries(self._handler.stream, self._level)
        try:
            yield
        finally:
            undo()

    def _emit(self, level: int, event: str, fields: dict[str, object]) -> None:
        self._logger.log(level, "%s", event, extra={"event": event, "fields": fields})

    def debug(self, event: str, **fields: object) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._emit(logging.ERROR, event, fields)
