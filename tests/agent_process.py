"""Run `monlat agent` as a real process (optionally inside a lab node) and look at it from outside:
scrape its HTTP endpoint, read its log lines, stop it with a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SERIES = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

SocketFactory = Callable[[], socket.socket]


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SERIES.match(line)
        assert match, f"unparsable exposition line: {line!r}"
        labels = dict(LABEL.findall(match.group("labels") or ""))
        samples.append((match.group("name"), labels, float(match.group("value"))))
    return samples


def http_get(connect: SocketFactory, host: str, port: int, path: str) -> tuple[int, str]:
    with connect() as sock:
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body.decode()


def _dechunk(data: bytes) -> bytes:
    # By offset, not by slicing the rest: a collector's 30 MB exposition comes in ~4,000 chunks.
    out = bytearray()
    at = 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        size = int(data[at:end].split(b";")[0], 16)
        if size == 0:
            break
        out += data[end + 2 : end + 2 + size]
        at = end + 2 + size + 2
    return bytes(out)


class AgentProcess:
    """A `monlat agent` subprocess with its stdout/stderr collected in the background."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        connect: SocketFactory = socket.socket,
        env: dict[str, str] | None = None,
    ) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        full_env.update(env or {})
        self.host, self.port, self._connect = host, port, connect
        argv = [*prefix, sys.executable, "-m", "monlat", "agent", *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line.rstrip("\n"))

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self._connect, self.host, self.port, path)

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_exposition(body)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.stderr}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout}s: {self.stderr}")

    def wait_for(
        self, predicate: Callable[[list[tuple[str, dict[str, str], float]]], bool], timeout: float
    ) -> list[tuple[str, dict[str, str], float]]:
        deadline = time.monotonic() + timeout
        samples: list[tuple[str, dict[str, str], float]] = []
        while time.monotonic() < deadline:
            samples = self.metrics()
            if predicate(samples):
                return samples
            time.sleep(0.2)
        raise AssertionError(f"condition not met in {timeout}s; last scrape: {samples}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.1)  # let the pump threads drain
        return code

    def events(self, name: str) -> list[str]:
        return [line for line in self.stderr if f" event={name}" in line]


def series(samples: list[tuple[str, dict[str, str], float]], name: str) -> dict[str, float]:
    """{to: value} for one metric name (samples without `to` are skipped)."""
    return {labels["to"]: value for n, labels, value in samples if n == name and "to" in labels}
