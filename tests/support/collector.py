"""The real collector for tests: monlat's slim distribution, built by deploy/otel-collector/build.sh
(cached by manifest hash) and run with the real config.yaml."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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

    def start(self, log_path: Path) -> None:
        env = {
            **os.environ,
            "MONLAT_OTLP_GRPC_ENDPOINT": f"{self.host}:{self.grpc_port}",
            "MONLAT_OTLP_HTTP_ENDPOINT": f"{self.host}:{self.http_port}",
            "MONLAT_PROMETHEUS_ENDPOINT": f"{self.host}:{self.metrics_port}",
            "MONLAT_OTELCOL_HEALTH_ENDPOINT": f"{self.host}:{self.health_port}",
            "MONLAT_METRIC_EXPIRATION": self.expiration,
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
