"""The ingest token: read from the mounted Secret file before every push, rotated without a
restart, never logged, and a file that goes bad keeps the last good token."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from monlat.agent.export.token import MAX_TOKEN_BYTES, TokenError, TokenExporter, read_token
from monlat.agent.logs import EventLog
from monlat.agent.settings import parse_agent_config
from tests.support.logfmt import parse_logfmt

EMPTY = MetricsData(resource_metrics=[])


class Inner(MetricExporter):
    """Stands for the OTLP exporter: remembers the headers it was built with and its calls."""

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.headers = dict(headers)
        self.exports = 0
        self.shut_down = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:  # fmt: skip
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down = True


class Pushes:
    """A TokenExporter over `Inner`s, with the events it logged."""

    def __init__(self, path: Path, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.built: list[Inner] = []
        self.stream = io.StringIO()
        self.exporter = TokenExporter(self._build, headers, path, EventLog(self.stream))

    def _build(self, headers: Sequence[tuple[str, str]]) -> Inner:
        self.built.append(Inner(headers))
        return self.built[-1]

    def push(self) -> dict[str, str]:
        assert self.exporter.export(EMPTY) is MetricExportResult.SUCCESS
        return self.built[-1].headers

    def events(self) -> list[dict[str, str]]:
        return [parse_logfmt(line) for line in self.stream.getvalue().splitlines()]


def test_the_token_is_the_first_word_as_the_collector_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  abc.def-123  comment\nsecond-token\n")
    assert read_token(path) == "abc.def-123"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b" \n\t\n", "empty"),
        ("tökén".encode(), "not ASCII"),
        (b"ab\x01cd", "control characters"),
        (b"a" * (MAX_TOKEN_BYTES + 1), "larger than"),
    ],
)
def test_a_file_that_holds_no_usable_token_says_why(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(TokenError, match=reason) as caught:
        read_token(path)
    assert "cd" not in str(caught.value)  # the message never carries the token itself


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="No such file"):
        read_token(tmp_path / "absent")


def test_every_push_carries_the_token_beside_the_configured_headers(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t0\n")
    pushes = Pushes(path, headers=(("x-scope-orgid", "tenant"),))
    assert pushes.push() == {"x-scope-orgid": "tenant", "authorization": "Bearer t0"}
    assert pushes.push() == {"x-scope-orgid": "tenant", "authorization": "Bearer t0"}
    assert len(pushes.built) == 1  # same token: the same connection is kept
    assert pushes.events() == []


def test_a_rotated_token_is_used_from_the_next_push_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old-token\n")
    pushes = Pushes(path)
    pushes.push()
    # As the kubelet updates a Secret volume: a new file swapped in under the same name.
    replacement = tmp_path / "token.new"
    replacement.write_text("new-token\n")
    replacement.replace(path)
    assert pushes.push() == {"authorization": "Bearer new-token"}
    assert pushes.built[0].shut_down and not pushes.built[1].shut_down
    assert [e["event"] for e in pushes.events()] == ["otlp_token_rotated"]
    assert "old-token" not in pushes.stream.getvalue()
    assert "new-token" not in pushes.stream.getvalue()


def test_a_file_gone_bad_keeps_the_last_token_and_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("good-token\n")
    pushes = Pushes(path)
    pushes.push()
    path.unlink()  # a rotation half done, a mount gone
    for _ in range(3):
        assert pushes.push() == {"authorization": "Bearer good-token"}
    path.write_text("good-token\n")
    pushes.push()
    events = pushes.events()
    assert [e["event"] for e in events] == ["otlp_token_unreadable", "otlp_token_readable"]
    assert events[0]["level"] == "warn" and events[0]["kept"] == "last token"
    assert events[0]["path"] == str(path)
    assert len(pushes.built) == 1
    assert "good-token" not in pushes.stream.getvalue()


def test_the_token_file_is_checked_at_start(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t\n")
    config = parse_agent_config(
        ["--exporters", "otlp", "--peers", "a=10.0.0.1"], {"MONLAT_OTLP_TOKEN_FILE": str(path)}
    )
    assert config.otlp is not None and config.otlp.token_file == path
    plain = parse_agent_config(["--exporters", "otlp", "--peers", "a=10.0.0.1"], {})
    assert plain.otlp is not None and plain.otlp.token_file is None
