"""OTLP push from the agent into the real collector, over gRPC and HTTP, and the final flush."""

from __future__ import annotations

import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.support.agent_process import AgentProcess, series
from tests.support.collector import Collector
from tests.support.ports import free_ports


def agent_to(collector: Collector, protocol: str, *extra: str) -> AgentProcess:
    port = free_ports(1)[0]
    endpoint_port = collector.grpc_port if protocol == "grpc" else collector.http_port
    return AgentProcess(
        ["--node-name", "nodeA", "--peers", "nodeB=127.0.0.1,nodeC=::1", "--interval", "200ms",
         "--exporters", "otlp", "--listen", f"127.0.0.1:{port}", *extra],
        port=port,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{endpoint_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            **collector.agent_env,
        },
    )  # fmt: skip


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_serves_the_exact_name(collector: Collector, protocol: str) -> None:
    agent = agent_to(collector, protocol, "--export-interval", "500ms")
    try:
        agent.wait_ready()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if set(series(collector.scrape(), "latency_between_nodes")) == {"nodeB", "nodeC"}:
                break
            time.sleep(0.3)
        text = collector.scrape_text()
    finally:
        assert agent.stop() == 0
    lines = [line for line in text.splitlines() if line.startswith("latency_between_nodes")]
    assert len(lines) == 2, text
    for line, to in zip(sorted(lines), ["nodeB", "nodeC"], strict=True):
        assert re.fullmatch(
            rf'latency_between_nodes\{{from="nodeA",instance="nodeA",job="monlat",to="{to}"\}}'
            r" \d+(\.\d+)?(e-\d+)?",
            line,
        ), line
    assert "otel_scope" not in text
    # The same names as on the agent's own endpoint.
    assert 'monlat_probes_total{from="nodeA"' in text
    assert "monlat_rtt_seconds_bucket{" in text
    assert "latency_between_nodes_milliseconds" not in text


def test_sigterm_flushes_the_last_measurements(collector: Collector) -> None:
    # An export interval far beyond the test: only the final flush can deliver anything.
    agent = agent_to(collector, "grpc", "--export-interval", "10m")
    agent.wait_ready()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum('to="nodeB"' in line for line in agent.stdout) < 2:
        time.sleep(0.1)
    assert series(collector.scrape(), "latency_between_nodes") == {}
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 6
    assert agent.events("flushed"), agent.stderr
    # The collector's batch processor holds data for up to a second before serving it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if set(series(collector.scrape(), "latency_between_nodes")) == {"nodeB", "nodeC"}:
            return
        time.sleep(0.2)
    raise AssertionError(f"final flush never reached the collector: {collector.scrape_text()}")


def test_unreachable_collector_does_not_hold_up_shutdown() -> None:
    port, dead = free_ports(2)
    agent = AgentProcess(
        ["--node-name", "a", "--peers", "127.0.0.1", "--exporters", "otlp",
         "--otlp-endpoint", f"http://127.0.0.1:{dead}", "--listen", f"127.0.0.1:{port}",
         "--shutdown-timeout", "2s", "--export-interval", "300ms"],
        port=port,
    )  # fmt: skip
    agent.wait_ready()
    time.sleep(1.5)  # exports fail in the background; probing goes on
    assert agent.proc.poll() is None
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    assert agent.events("flushed") or agent.events("flush_timeout")


class _Sink(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Authorization", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_backend_overlay_forwards_to_an_otlp_backend(collector_bin: str, tmp_path: Path) -> None:
    """config.backend.yaml adds a second pipeline, configured from the Secret's variables."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    ports = free_ports(4)
    backend = Collector(
        collector_bin, "127.0.0.1", *ports,
        overlays=("config.backend.yaml",),
        extra_env={
            "OTLP_BACKEND_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}/otlp",
            "OTLP_BACKEND_AUTH_HEADER": "Basic aWQ6dG9rZW4=",
        },
    )  # fmt: skip
    backend.start(tmp_path / "collector.log")
    agent = agent_to(backend, "grpc", "--export-interval", "500ms")
    try:
        agent.wait_ready()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _Sink.received:
            time.sleep(0.2)
        # The Prometheus pipeline keeps working beside it.
        assert set(series(backend.scrape(), "latency_between_nodes")) <= {"nodeB", "nodeC"}
    finally:
        agent.stop()
        backend.stop()
        sink.shutdown()
    assert _Sink.received, backend.log()
    path, authorization, size = _Sink.received[0]
    assert path == "/otlp/v1/metrics"
    assert authorization == "Basic aWQ6dG9rZW4="
    assert size > 0
