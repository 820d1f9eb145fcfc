"""The bearer token an agent shows the collector: read from a file that is replaced under the
running agent (a Kubernetes Secret volume), so a rotated token is used without a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from monlat.agent.logs import EventLog

AUTHORIZATION = "authorization"
MAX_TOKEN_BYTES = 64 * 1024  # a Kubernetes service-account token is ~1 KiB


class TokenError(Exception):
    """The token file cannot give a token (message says why, never the token)."""


def read_token(path: Path) -> str:
    """The token in `path`: its first line, surrounding blanks removed.

    The collector's bearertokenauth extension takes a file's first word per line as a token,
    so a file written for both sides means the same on both."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TOKEN_BYTES + 1)
    except OSError as error:
        raise TokenError(error.strerror or type(error).__name__) from None
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenError(f"larger than {MAX_TOKEN_BYTES} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise TokenError("not ASCII") from None
    lines = text.split()
    if not lines:
        raise TokenError("empty")
    token = lines[0]
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise TokenError("control characters in the token")
    return token


class TokenExporter(MetricExporter):
    """An OTLP exporter whose requests carry `authorization: Bearer <token from file>`.

    The file is read before each export (a few hundred bytes every push interval); when the
    token changed, a new inner exporter is built with the new header and the old one shut
    down: the SDK's exporters take their headers at construction only. A file that cannot be
    read keeps the last good token (logged once per change of reason), so a rotation in
    progress or a missing mount never stops the pushes that would still be accepted."""

    def __init__(
        self,
        build: Callable[[Sequence[tuple[str, str]]], MetricExporter],
        headers: Sequence[tuple[str, str]],
        path: Path,
        events: EventLog,
        *,
        read: Callable[[Path], str] = read_token,
    ) -> None:
        super().__init__()
        self._build = build
        self._headers = tuple(headers)
        self._path = path
        self._events = events
        self._read = read
        self._lock = threading.Lock()
        self._token: str | None = None
        self._problem: str | None = None
        self._inner: MetricExporter | None = None
        self._refresh()

    def _refresh(self) -> MetricExporter:
        """The inner exporter for the file's current token (called under the lock or in init)."""
        try:
            token: str | None = self._read(self._path)
        except TokenError as error:
            token = self._token
            if str(error) != self._problem:
                self._problem = str(error)
                self._events.warning(
                    "otlp_token_unreadable",
                    path=str(self._path),
                    error=self._problem,
                    kept="last token" if token is not None else "none",
                )
        else:
            if self._problem is not None:
                self._events.info("otlp_token_readable", path=str(self._path))
                self._problem = None
        if self._inner is None or token != self._token:
            previous, rotated = self._inner, self._token is not None and token != self._token
            auth = () if token is None else ((AUTHORIZATION, f"Bearer {token}"),)
            self._inner = self._build((*self._headers, *auth))
            self._token = token
            if rotated:
                self._events.info("otlp_token_rotated", path=str(self._path))
            if previous is not None:
                previous.shutdown(timeout_millis=1_000)
        return self._inner

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with self._lock:
            inner = self._refresh()
            return inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        inner = self._inner
        return True if inner is None else inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        inner = self._inner
        if inner is not None:
            inner.shutdown(timeout_millis=timeout_millis, **kwargs)
