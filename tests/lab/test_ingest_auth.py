"""Only agents write the matrix: the real collector with the shipped config refuses an OTLP push
without the ingest token or with a wrong one (gRPC and HTTP), counts each refusal on its own
telemetry, serves what the agents holding the token push, and both sides follow a rotated token
file without a restart."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import MetricExportResult

from monlat.agent.config import OtlpConfig
from monlat.agent.export.otlp import otlp_exporter
from tests.support.agent_process import AgentProcess, parse_exposition, series
from tests.support.collector import Collector, forged_latency
from tests.support.lab.fixtures import require_command
from tests.support.ports import free_ports
from tests.support.waiting import wait_until

INTERVAL = "500ms"
REFUSED_GRPC = ("rpc_server_call_duration_count", "rpc_response_status_code", "UNAUTHENTICATED")
REFUSED_HTTP = ("http_server_request_duration_count", "http_response_status_code", "401")


@pytest.fixture
def guarded(collector_bin: str, tmp_path: Path) -> Iterator[Collector]:
    """The collector as shipped, its own telemetry included (level detailed)."""
    instance = Collector(collector_bin, "127.0.0.1", *free_ports(4), settings=())
    instance.start(tmp_path / "collector.log")
    try:
        yield instance
    finally:
        instance.stop()


def push(collector: Collector, protocol: str, token: str | None) -> MetricExportResult:
    port = collector.grpc_port if protocol == "grpc" else collector.http_port
    endpoint = f"http://127.0.0.1:{port}" + ("/v1/metrics" if protocol != "grpc" else "")
    config = OtlpConfig(endpoint, protocol, (), 5.0, True)
    headers = () if token is None else (("authorization", f"Bearer {token}"),)
    exporter = otlp_exporter(config, headers=headers)
    try:
        return exporter.export(forged_latency())
    finally:
        exporter.shutdown(timeout_millis=1_000)


def refusals(collector: Collector) -> dict[str, float]:
    assert collector.telemetry_port is not None
    status, body = collector.get(collector.telemetry_port, "/metrics")
    assert status == 200, body
    counted = {"grpc": 0.0, "http": 0.0}
    for name, labels, value in parse_exposition(body):
        for transport, (wanted, label, code) in (("grpc", REFUSED_GRPC), ("http", REFUSED_HTTP)):
            if name == wanted and labels.get(label) == code:
                counted[transport] += value
    return counted


def agent_pushing_to(collector: Collector, env: dict[str, str]) -> AgentProcess:
    port = free_ports(1)[0]
    agent = AgentProcess(
        ["--node-name", "nodeA", "--peers", "nodeB=127.0.0.1", "--interval", "200ms",
         "--exporters", "otlp", "--export-interval", INTERVAL, "--listen", f"127.0.0.1:{port}",
         "--log-measurements", "false"],
        port=port,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.grpc_port}", **env},
    )  # fmt: skip
    agent.wait_ready()
    return agent


def probes_served(collector: Collector) -> float:
    return sum(
        value
        for name, labels, value in collector.scrape()
        if name == "monlat_probes_total" and labels.get("from") == "nodeA"
    )


def test_pushes_without_the_token_are_refused_and_counted(guarded: Collector) -> None:
    attempts = [(protocol, token) for protocol in ("grpc", "http/protobuf")
                for token in (None, "not-the-" + secrets.token_hex(8))]  # fmt: skip
    for protocol, token in attempts:
        assert push(guarded, protocol, token) is MetricExportResult.FAILURE, (protocol, token)
    assert refusals(guarded) == {"grpc": 2.0, "http": 2.0}

    # The agents hold the token: their pairs are served, the forged pair is not.
    agent = agent_pushing_to(guarded, guarded.agent_env)
    try:
        wait_until(
            lambda: "nodeB" in series(guarded.scrape(), "latency_between_nodes"),
            timeout=20, what="the agent's pair served",
        )  # fmt: skip
    finally:
        assert agent.stop() == 0, agent.stderr
    text = guarded.scrape_text()
    assert "forger" not in text and "victim" not in text
    assert not agent.events("otlp_token_unreadable")


def test_an_agent_with_a_wrong_token_writes_nothing(guarded: Collector, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text(secrets.token_urlsafe(32) + "\n")
    agent = agent_pushing_to(guarded, {"MONLAT_OTLP_TOKEN_FILE": str(wrong)})
    try:
        wait_until(lambda: refusals(guarded)["grpc"] >= 3, timeout=20, what="3 refused pushes")
        assert agent.proc.poll() is None  # refused pushes never stop the agent
    finally:
        assert agent.stop() == 0, agent.stderr
    assert series(guarded.scrape(), "latency_between_nodes") == {}
    assert wrong.read_text().split()[0] not in "\n".join(agent.stderr)


def test_a_rotated_token_applies_on_both_sides_without_restarts(guarded: Collector) -> None:
    assert guarded.token_file is not None and guarded.proc is not None
    collector_pid, old = guarded.proc.pid, guarded.token
    agent = agent_pushing_to(guarded, guarded.agent_env)
    try:
        wait_until(lambda: probes_served(guarded) > 0, timeout=20, what="first push served")
        # As the kubelet updates a Secret volume: the new file swapped in under the same name.
        new = guarded.token_file.with_name("token.new")
        new.write_text(secrets.token_urlsafe(32) + "\n")
        new.replace(guarded.token_file)
        wait_until(lambda: agent.events("otlp_token_rotated"), timeout=10, what="agent rotated")
        wait_until(
            lambda: push(guarded, "grpc", old) is MetricExportResult.FAILURE,
            timeout=10, what="the old token refused",
        )  # fmt: skip
        after = probes_served(guarded)
        wait_until(
            lambda: probes_served(guarded) > after, timeout=10,
            what="the agent's pushes accepted with the new token",
        )  # fmt: skip
        assert push(guarded, "grpc", guarded.token) is MetricExportResult.SUCCESS
        assert agent.proc.poll() is None and guarded.proc.pid == collector_pid
        assert guarded.proc.poll() is None
    finally:
        assert agent.stop() == 0, agent.stderr
    assert old not in "\n".join(agent.stderr) and guarded.token not in "\n".join(agent.stderr)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1, its own CA (what cert-manager would issue)."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=monlat-otelcol", "-keyout", str(key),
         "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_agents_push_over_tls_with_the_token(collector_bin: str, tmp_path: Path) -> None:
    require_command("openssl", "openssl")
    cert, key = self_signed(tmp_path)
    collector = Collector(
        collector_bin, "127.0.0.1", *free_ports(4), settings=(),
        overlays=("config.tls.yaml",),
        extra_env={"MONLAT_OTLP_TLS_CERT_FILE": str(cert), "MONLAT_OTLP_TLS_KEY_FILE": str(key)},
    )  # fmt: skip
    collector.start(tmp_path / "collector.log")
    try:
        # Plain text to the TLS port: no push gets in, however good its token.
        assert push(collector, "grpc", collector.token) is MetricExportResult.FAILURE
        port = free_ports(1)[0]
        agent = AgentProcess(
            ["--node-name", "nodeA", "--peers", "nodeB=127.0.0.1", "--interval", "200ms",
             "--exporters", "otlp", "--export-interval", INTERVAL,
             "--listen", f"127.0.0.1:{port}", "--log-measurements", "false"],
            port=port,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{collector.grpc_port}",
                 "OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert), **collector.agent_env},
        )  # fmt: skip
        try:
            agent.wait_ready()
            wait_until(
                lambda: "nodeB" in series(collector.scrape(), "latency_between_nodes"),
                timeout=20, what="the agent's pair served over TLS",
            )  # fmt: skip
        finally:
            assert agent.stop() == 0, agent.stderr
        assert refusals(collector) == {"grpc": 0.0, "http": 0.0}
    finally:
        collector.stop()
