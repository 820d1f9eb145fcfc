"""The Debian `prometheus` server for end-to-end tests: scrapes one target, answers PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

from tests.support.agent_process import SocketFactory, http_get
from tests.support.lab.fixtures import skip_or_fail


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        skip_or_fail(f"{binary} is not installed (Debian package prometheus)")
    return str(path)


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        target: str | None,
        *,
        port: int,
        prefix: tuple[str, ...] = (),
        connect: SocketFactory,
        scrape_interval: str = "1s",
        flags: tuple[str, ...] = (),
    ) -> None:
        """Scrapes `target` (None: nothing, e.g. a remote-write receiver with the flag
        --web.enable-remote-write-receiver in `flags`)."""
        binary = require("prometheus")
        self.port = port
        self._connect = connect
        config = workdir / "prometheus.yml"
        scrape = (
            "scrape_configs:\n"
            "  - job_name: monlat\n"
            "    honor_labels: true\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
            if target is not None
            else ""
        )
        config.write_text(f"global:\n  scrape_interval: {scrape_interval}\n{scrape}")
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [*prefix, binary, f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}",
                 "--query.lookback-delta=5s", *flags],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                if http_get(self._connect, "127.0.0.1", self.port, "/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def query(self, promql: str) -> list[dict[str, object]]:
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(self._connect, "127.0.0.1", self.port, path)
        assert status == 200, body
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
