"""Run `monlat agent` as a real process (optionally inside a lab node) and look at it from outside:
scrape its HTTP endpoint, read its log lines, stop it with a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from monlat.tools import scrape
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]

SocketFactory = Callable[[], socket.socket]
Samples = list[tuple[str, dict[str, str], float]]


def parse_exposition(text: str) -> Samples:
    """(name, labels, value) per sample, by monlat's own parser: the tests read expositions
    the way `monlat matrix` does, and a malformed line fails the test."""
    return [(s.name, dict(s.labels), s.value) for s in scrape.parse_exposition(text)]


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


def http_post(
    connect: SocketFactory, host: str, port: int, path: str, body: bytes, headers: dict[str, str]
) -> int:
    """The status of one POST (an OTLP/HTTP push, say)."""
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    with connect() as sock:
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return int(b"".join(chunks).split(b" ", 2)[1])


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
    """A `monlat agent` process (or another command running the agent, such as its container)
    with its stdout/stderr collected in the background, looked at from outside."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        connect: SocketFactory = socket.socket,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        name: str = "agent",
    ) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        full_env.update(env or {})
        self.name, self.host, self.port, self._connect = name, host, port, connect
        runs = [sys.executable, "-m", "monlat", "agent"] if command is None else list(command)
        self.argv = [*prefix, *runs, *args]
        self.proc = subprocess.Popen(
            self.argv,
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

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        return http_get(self._connect, self.host, port or self.port, path)

    def metrics(self, port: int | None = None) -> Samples:
        status, body = self.get("/metrics", port)
        assert status == 200, body
        return parse_exposition(body)

    def wait_ready(
        self, timeout: float = 20.0, *, path: str = "/readyz", port: int | None = None
    ) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.stderr}")
            return self.get(path, port)[0] == 200

        try:
            wait_until(ready, timeout, f"{self.name} ready", ignore=(OSError,))
        except AssertionError as err:
            raise AssertionError(f"{err}: {self.stderr}") from None

    def wait_for(
        self, predicate: Callable[[Samples], bool], timeout: float, port: int | None = None
    ) -> Samples:
        last: list[Samples] = [[]]

        def holds() -> bool:
            last[0] = self.metrics(port)
            return predicate(last[0])

        try:
            wait_until(holds, timeout, "condition", interval=0.2)
        except AssertionError:
            raise AssertionError(
                f"condition not met in {timeout}s; last scrape: {last[0]}\n{self.stderr}"
            ) from None
        return last[0]

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
