"""Steady state of a whole running agent (`monlat agent`): CPU share, resident memory and its own
send-lag histogram, with N loopback peers probed once a second; once as measured alone, and once
as deployed in Kubernetes, pushing OTLP every 15 s to the real collector."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.targets import loopback
from tests.agent_process import http_get, parse_exposition

_TICKS = os.sysconf("SC_CLK_TCK")
_PORT = 19464


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _lag_buckets() -> dict[float, float]:
    import socket

    status, body = http_get(socket.socket, "127.0.0.1", _PORT, "/metrics")
    assert status == 200
    return {
        float(labels["le"]): value
        for name, labels, value in parse_exposition(body)
        if name == "monlat_send_lag_seconds_bucket"
    }


def _p99_bound(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(smallest bucket bound holding 99% of the sends in the window, share above 10 ms)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts[float("inf")]
    bound = next(b for b, c in counts.items() if c >= 0.99 * total)
    return bound, 1 - counts.get(0.01, total) / total if total else 0.0


def measure(peers: int, seconds: float, otlp_endpoint: str | None = None) -> dict[str, Any]:
    """With `otlp_endpoint`, the agent also pushes OTLP there every 15 s (the DaemonSet's
    setting); its /metrics is read only outside the measured window either way."""
    peers_file = Path(tempfile.mkstemp(suffix=".peers")[1])
    peers_file.write_text("\n".join(loopback(peers)) + "\n")
    otlp = ["--otlp-endpoint", otlp_endpoint, "--export-interval", "15s"] if otlp_endpoint else []
    agent = subprocess.Popen(
        [sys.executable, "-m", "monlat", "agent", "--node-name", "bench", "--peers-file",
         str(peers_file), "--interval", "1s", "--log-measurements", "false",
         "--prometheus", f"127.0.0.1:{_PORT}", *otlp],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(10)  # start-up and the first rounds
        buckets_before = _lag_buckets()
        cpu_before, started = _cpu_seconds(agent.pid), time.monotonic()
        rss_peak = 0.0
        while time.monotonic() - started < seconds:
            time.sleep(1)
            rss_peak = max(rss_peak, _rss_mib(agent.pid))
        cpu = _cpu_seconds(agent.pid) - cpu_before
        elapsed = time.monotonic() - started
        p99_bound, above_10ms = _p99_bound(buckets_before, _lag_buckets())
    finally:
        agent.terminate()
        agent.wait(15)
        peers_file.unlink()
    return {
        "peers": peers,
        "otlp": otlp_endpoint is not None,
        "seconds": elapsed,
        "cpu_share_of_one_core": cpu / elapsed,
        "rss_peak_mib": rss_peak,
        "send_lag_p99_at_most_s": p99_bound,
        "send_lag_share_above_10ms": above_10ms,
    }


def run(peer_counts: list[int], seconds: float, otlp_peers: int | None = None) -> dict[str, Any]:
    figures = {str(n): measure(n, seconds) for n in peer_counts}
    if otlp_peers is not None:
        figures[f"{otlp_peers}+otlp"] = measure_with_collector(otlp_peers, seconds)
    return figures


def measure_with_collector(peers: int, seconds: float) -> dict[str, Any]:
    from tests.collector import Collector, collector_binary, free_ports

    grpc, http, metrics, health = free_ports(4)
    collector = Collector(collector_binary(), "127.0.0.1", grpc, http, metrics, health)
    log = Path(tempfile.mkstemp(suffix=".collector.log")[1])
    collector.start(log)
    try:
        collector.wait_healthy()
        return measure(peers, seconds, otlp_endpoint=f"http://127.0.0.1:{grpc}")
    finally:
        collector.stop()
        log.unlink()


def print_table(figures: dict[str, Any]) -> None:
    print("\n## Steady state: `monlat agent`, loopback peers at 1 probe/s each, logs off")
    print(f"{'peers':>6} {'export':>16} {'seconds':>8} {'CPU (1 core)':>13} {'RSS peak':>9} "
          f"{'lag p99 <=':>11}")  # fmt: skip
    for row in figures.values():
        export = "OTLP every 15 s" if row.get("otlp") else "none (pull)"
        print(
            f"{row['peers']:>6} {export:>16} {row['seconds']:>8.0f} "
            f"{row['cpu_share_of_one_core']:>12.1%} "
            f"{row['rss_peak_mib']:>6.1f} MiB {row['send_lag_p99_at_most_s'] * 1000:>8.1f} ms"
        )
