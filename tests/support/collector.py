"""The real collector for tests: monlat's slim distribution, built by deploy/otel-collector/build.sh
(cached by manifest hash) and run with the real config.yaml."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricsData

from tests.support.agent_process import SocketFactory, http_get, parse_exposition
from tests.support.lab.fixtures import skip_or_fail
from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO / "deploy" / "otel-collector"


def shipped_deployment() -> dict[str, Any]:
    """The collector container's environment and memory limit as deploy/k8s/monlat.yaml ships
    them: {"env": {...}, "limit": "1536Mi", "limit_mib": 1536.0}."""
    import yaml

    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for document in yaml.safe_load_all((REPO / "deploy" / "k8s" / "monlat.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            container = document["spec"]["template"]["spec"]["containers"][0]
            env = {item["name"]: item["value"] for item in container.get("env", [])}
            limit = container["resources"]["limits"]["memory"]
            number, unit = limit[:-2], limit[-2:]
            return {"env": env, "limit": limit, "limit_mib": int(number) * units[unit]}
    raise AssertionError("no Deployment in deploy/k8s/monlat.yaml")


def collector_binary() -> str:
    """Path of the built collector (building it on first use), or skip-or-fail."""
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        skip_or_fail("Go is needed to build the collector")
    result = subprocess.run(
        ["bash", str(COLLECTOR_DIR / "build.sh")],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        skip_or_fail(f"collector build failed: {result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Collector:
    binary: str
    host: str
    grpc_port: int
    http_port: int
    metrics_port: int
    health_port: int
    expiration: str = "60s"
    extra_env: dict[str, str] | None = None
    # To run inside a lab node: its `ip netns exec` prefix and a socket factory for that node.
    prefix: tuple[str, ...] = ()
    connect: SocketFactory = field(default=socket.socket)
    overlays: tuple[str, ...] = ()  # further --config files, e.g. config.backend.yaml
    # --set overrides, last; the tests do not read the collector's own metrics.
    settings: tuple[str, ...] = ("service.telemetry.metrics.level=none",)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    # The ingest token file the shipped config requires (written at start if missing), and the
    # port of the collector's own telemetry (refused pushes are counted there).
    token_file: Path | None = None
    telemetry_port: int | None = None

    @property
    def token(self) -> str:
        assert self.token_file is not None, "collector not started"
        return self.token_file.read_text().split()[0]

    @property
    def agent_env(self) -> dict[str, str]:
        """What an agent pushing here is given: the same file, as the DaemonSet mounts it."""
        assert self.token_file is not None, "collector not started"
        return {"MONLAT_OTLP_TOKEN_FILE": str(self.token_file)}

    def start(self, log_path: Path) -> None:
        if self.token_file is None:
            self.token_file = log_path.with_name(log_path.stem + "-ingest-token")
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_urlsafe(32) + "\n")
        if self.telemetry_port is None:
            (self.telemetry_port,) = free_ports(1)
        env = {
            **os.environ,
            "MONLAT_OTLP_GRPC_ENDPOINT": f"{self.host}:{self.grpc_port}",
            "MONLAT_OTLP_HTTP_ENDPOINT": f"{self.host}:{self.http_port}",
            "MONLAT_PROMETHEUS_ENDPOINT": f"{self.host}:{self.metrics_port}",
            "MONLAT_OTELCOL_HEALTH_ENDPOINT": f"{self.host}:{self.health_port}",
            "MONLAT_METRIC_EXPIRATION": self.expiration,
            "MONLAT_INGEST_TOKEN_FILE": str(self.token_file),
            "MONLAT_OTELCOL_TELEMETRY_HOST": self.host,
            "MONLAT_OTELCOL_TELEMETRY_PORT": str(self.telemetry_port),
            **(self.extra_env or {}),
        }
        self.log_path = log_path
        with log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, self.binary, "--config", str(COLLECTOR_DIR / "config.yaml"),
                 *(f"--config={COLLECTOR_DIR / name}" for name in self.overlays),
                 *(f"--set={setting}" for setting in self.settings)],
                stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()  # a collector that never became healthy must not outlive the test
            raise

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited: {self.log()}")
            try:
                if self.get(self.health_port, "/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"collector not healthy: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, port: int, path: str) -> tuple[int, str]:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return http_get(self.connect, host, port, path)

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path else ""

    def scrape_text(self) -> str:
        status, body = self.get(self.metrics_port, "/metrics")
        assert status == 200, body
        return body

    def scrape(self) -> list[tuple[str, dict[str, str], float]]:
        return parse_exposition(self.scrape_text())


def forged_latency() -> MetricsData:
    """What anyone who reaches the collector could push: a latency for a pair no agent measured
    (from="forger", to="victim")."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gauge = provider.get_meter("monlat").create_gauge("latency_between_nodes")
    gauge.set(999.0, {"from": "forger", "to": "victim"})
    data = reader.get_metrics_data()
    assert data is not None
    provider.shutdown()
    return data


def forged_push_body() -> bytes:
    """`forged_latency` as an OTLP/HTTP request body."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return encode_metrics(forged_latency()).SerializeToString()


@pytest.fixture(scope="session")
def collector_bin() -> str:
    return collector_binary()


@pytest.fixture
def collector(collector_bin: str, tmp_path: Path) -> Iterator[Collector]:
    ports = free_ports(4)
    instance = Collector(collector_bin, "127.0.0.1", *ports)
    instance.start(tmp_path / "collector.log")
    try:
        yield instance
    finally:
        instance.stop()
