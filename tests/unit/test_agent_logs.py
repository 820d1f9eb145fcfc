"""Every line the agent writes to stderr is logfmt, whatever the libraries under it say: the
agent as a process (tests/support/agent_without_root.py: the real command line on the
in-memory ICMP network) against an unreachable collector, a TLS handshake with a plaintext
server, a dead API server; and `--log-level` deciding what shows."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcess
from tests.support.logfmt import not_logfmt
from tests.support.ports import free_port
from tests.support.waiting import wait_until

PEER = "10.0.0.2"
FAST = ["--node-name", "a", "--peers", f"b={PEER}", "--interval", "100ms", "--timeout", "300ms",
        "--log-measurements", "false"]  # fmt: skip


def start(args: list[str], env: dict[str, str] | None = None) -> AgentProcess:
    port = free_port()
    command = [sys.executable, "-m", "tests.support.agent_without_root", f"{PEER}=1", "--", "agent"]
    return AgentProcess(
        [*FAST, "--listen", f"127.0.0.1:{port}", *args], port=port, command=command, env=env
    )


def stderr_once(agent: AgentProcess, needle: str, timeout: float = 20) -> list[str]:
    """The agent's stderr once a line holds `needle`, after a clean stop."""
    try:
        wait_until(lambda: any(needle in line for line in agent.stderr), timeout, repr(needle))
    finally:
        code = agent.stop()
    assert code == 0, agent.stderr
    return agent.stderr


@pytest.fixture
def plaintext_server() -> Iterator[int]:
    """A TCP server that answers anything with an HTTP/1.0 error: not TLS, not gRPC."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_an_unreachable_collector_is_reported_in_logfmt() -> None:
    agent = start(["--exporters", "otlp", "--otlp-endpoint", f"http://127.0.0.1:{free_port()}",
                   "--export-interval", "300ms"])  # fmt: skip
    lines = stderr_once(agent, "Transient error StatusCode.UNAVAILABLE")
    assert not not_logfmt(lines), not_logfmt(lines)
    [first] = [line for line in lines if "Transient error" in line][:1]
    assert " level=warn event=library logger=opentelemetry.exporter.otlp" in first


def test_a_failed_tls_handshake_is_one_logfmt_record_not_grpc_core_lines(
    plaintext_server: int,
) -> None:
    endpoint = f"https://127.0.0.1:{plaintext_server}"
    agent = start(["--exporters", "otlp", "--otlp-endpoint", endpoint, "--export-interval", "1s"])
    lines = stderr_once(agent, "handshake failed")
    assert not not_logfmt(lines), not_logfmt(lines)  # gRPC's C core prints `I1204 …` otherwise


def test_a_dead_api_server_is_reported_in_logfmt(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    agent = start(["--discovery", "kubernetes", "--kubeconfig", str(kubeconfig),
                   "--exporters", "none"])  # fmt: skip
    lines = stderr_once(agent, "event=api_unreachable")
    assert not not_logfmt(lines), not_logfmt(lines)


def test_log_level_warn_keeps_only_warnings_and_errors() -> None:
    agent = start(["--log-level", "warn", "--exporters", "otlp", "--otlp-endpoint",
                   f"http://127.0.0.1:{free_port()}", "--export-interval", "300ms"])  # fmt: skip
    lines = stderr_once(agent, "Transient error")
    assert lines and all(" level=warn " in line or " level=error " in line for line in lines), lines


def test_log_level_debug_shows_the_libraries_records_too() -> None:
    agent = start(["--log-level", "debug", "--exporters", "otlp", "--otlp-endpoint",
                   f"http://127.0.0.1:{free_port()}", "--export-interval", "300ms"])  # fmt: skip
    lines = stderr_once(agent, "Transient error")
    assert not not_logfmt(lines), not_logfmt(lines)
    assert any(" level=debug event=library " in line for line in lines), lines
    assert any(" level=info event=started " in line for line in lines), lines
