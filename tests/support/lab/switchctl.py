"""Start the switch process and talk to it (JSON lines over its stdin/stdout)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

from .netns import LabError

SWITCH_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "switch.py")


class SwitchProcess:
    """A running ``switch.py``; its stdin pipe doubles as the parent lifeline."""

    def __init__(
        self, config: dict[str, Any], *, pass_fds: tuple[int, ...] = (), timeout: float = 10.0
    ) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self.proc = subprocess.Popen(
            [sys.executable, SWITCH_PY, "--config-json", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # no terminal SIGINT; we stop it ourselves
            close_fds=True,
            pass_fds=pass_fds,  # nodes given as {"fd": N} (tests use socketpairs)
        )
        hello = self._read_reply(timeout)
        if not hello.get("ok"):
            self.stop()
            raise LabError(f"switch failed to start: {hello.get('error')}")
        self.ifnames: dict[str, str] = dict(hello["ifnames"])
        self.realtime: bool = bool(hello.get("realtime"))

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError("switch did not answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LabError(f"switch exited (rc={self.proc.poll()}): {self._stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace").strip()[-2000:]

    def request(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send one command and wait for its acknowledgement."""
        with self._lock:
            if self.proc.poll() is not None:
                raise LabError(
                    f"switch is not running (rc={self.proc.returncode}): {self._stderr()}"
                )
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
                self.proc.stdin.flush()
            except BrokenPipeError:
                raise LabError(f"switch died: {self._stderr()}") from None
            reply = self._read_reply(timeout)
        if not reply.get("ok"):
            raise LabError(f"switch rejected {op}: {reply.get('error')}")
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Close the lifeline, then SIGTERM / SIGKILL if it lingers."""
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=timeout / 2)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
