"""An hour of the faults a cluster throws at agents, with what the agents hold sampled throughout.

Two agents, as deployed (probe every peer once a second, push OTLP every 15 s to the real
collector with the ingest token, serve their own /metrics for this benchmark to read):

* ``file``: 1,000 loopback peers from a peers file rewritten every 10 s (50 of the peers
  replaced each time, 950 always there);
* ``kubernetes``: 1,000 Nodes from the API server stand-in (tests/support/fake_apiserver.py),
  10 of them replaced every 10 s, the server cut twice for a minute (connections reset).

Meanwhile the collector is restarted every 5 minutes. Every 30 s: RSS, threads, open file
descriptors and sockets of each agent. At the end: growth from the first sample after warm-up
to the last (and per hour), probes to the peers that were always there that timed out (on
loopback every probe is answered, so any is a probe lost by the agent), and agent restarts.

    python -m benchmarks.soak                 # the hour; JSON to benchmarks/results/
    python -m benchmarks.soak --minutes 4     # a short rehearsal (events scaled down)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.agent_process import http_get, parse_exposition
from tests.support.collector import Collector, collector_binary
from tests.support.fake_apiserver import FakeApiServer
from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[1]
PEERS = 1_000
STABLE = 950  # of the file's peers, always present
SAMPLE_S = 30.0


def peer_address(pool: int, index: int) -> str:
    return f"127.{pool}.{index // 250}.{index % 250 + 1}"


@dataclass
class Agent:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    samples: list[dict[str, float]] = field(default_factory=list)

    def sample(self, elapsed_s: float) -> None:
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = 0
        for fd in fds:
            with contextlib.suppress(OSError):
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        self.samples.append({
            "t_s": round(elapsed_s, 1),
            "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 2),
            "threads": int(fields["Threads"]),
            "fds": len(fds),
            "sockets": sockets,
        })  # fmt: skip

    def probes(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = http_get(socket.socket, "127.0.0.1", self.port, "/metrics")
        assert status == 200, body[:300]
        return [s for s in parse_exposition(body) if s[0] == "monlat_probes_total"]


def start_agent(name: str, args: list[str], collector: Collector, log: Path) -> Agent:
    port = free_ports(1)[0]
    assert collector.token_file is not None
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.grpc_port}",
        "MONLAT_OTLP_TOKEN_FILE": str(collector.token_file),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "monlat", "agent", "--node-name", name, "--interval", "1s",
         "--max-peers", "all", "--log-measurements", "false", "--exporters", "otlp,prometheus",
         "--export-interval", "15s", "--prometheus", f"127.0.0.1:{port}", *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if http_get(socket.socket, "127.0.0.1", port, "/readyz")[0] == 200:
                return Agent(name, proc, port)
        if proc.poll() is not None:
            raise SystemExit(f"soak: agent {name} exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise SystemExit(f"soak: agent {name} not ready: {log.read_text()[-2000:]}")


def write_peers(path: Path, churn: list[int]) -> None:
    lines = [f"s{i}={peer_address(2, i)}" for i in range(STABLE)]
    lines += [f"c{i}={peer_address(3, i)}" for i in churn]
    temporary = path.with_suffix(".new")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(path)


def growth(samples: list[dict[str, float]], warmup_s: float) -> dict[str, Any]:
    settled = [s for s in samples if s["t_s"] >= warmup_s] or samples
    first, last = settled[0], settled[-1]
    hours = max((last["t_s"] - first["t_s"]) / 3600, 1e-9)
    out: dict[str, Any] = {}
    for key in ("rss_mib", "threads", "fds", "sockets"):
        values = [s[key] for s in settled]
        out[key] = {
            "first": first[key], "last": last[key], "min": min(values), "max": max(values),
            "growth": round(last[key] - first[key], 2),
            "growth_per_hour": round((last[key] - first[key]) / hours, 2),
        }  # fmt: skip
    return out


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="monlat-soak-") as directory:
        yield Path(directory)


def run(minutes: float) -> dict[str, Any]:
    scale = minutes / 60
    restart_every_s = 300 * scale
    cuts_at_s = (1200 * scale, 2400 * scale)
    cut_s = max(60 * scale, 10.0)
    total_s = minutes * 60
    rng = random.Random(1)  # the same Node churn in every run
    with scratch() as work:
        collector = Collector(collector_binary(), "127.0.0.1", *free_ports(4))
        collector.start(work / "collector.log")
        api = FakeApiServer()
        api.start()
        with api.batch():
            for i in range(PEERS):
                api.add_node(f"n{i}", peer_address(4, i))
        kubeconfig = api.write_kubeconfig(work / "kubeconfig")
        peers_file = work / "peers"
        churn = list(range(PEERS - STABLE))
        write_peers(peers_file, churn)
        agents = [
            start_agent("file", ["--peers-file", str(peers_file)], collector, work / "file.log"),
            start_agent(
                "kubernetes",
                ["--discovery", "kubernetes", "--kubeconfig", str(kubeconfig)],
                collector,
                work / "kubernetes.log",
            ),
        ]
        started = time.monotonic()
        next_rewrite = next_sample = 0.0
        next_restart = restart_every_s
        restarts = cuts = 0
        node_serial = PEERS
        cut_until: float | None = None
        events: list[str] = []
        try:
            while (elapsed := time.monotonic() - started) < total_s:
                if elapsed >= next_sample:
                    for agent in agents:
                        if agent.proc.poll() is not None:
                            raise SystemExit(f"soak: agent {agent.name} exited at {elapsed:.0f}s")
                        agent.sample(elapsed)
                    next_sample += SAMPLE_S
                if elapsed >= next_rewrite:
                    # All 50 changing peers replaced by 50 new ones.
                    churn = [(c + len(churn)) % 5000 for c in churn]
                    write_peers(peers_file, churn)
                    if api.running:
                        with api.batch():
                            for _ in range(10):
                                victim = rng.choice(api.node_names())
                                if int(victim[1:]) >= STABLE:
                                    api.delete_node(victim)
                                    address = peer_address(5, node_serial % 5000)
                                    api.add_node(f"n{node_serial}", address)
                                    node_serial += 1
                    next_rewrite += 10
                if elapsed >= next_restart:
                    collector.stop()
                    collector.start(work / "collector.log")
                    restarts += 1
                    events.append(f"{elapsed:.0f}s collector restarted")
                    next_restart += restart_every_s
                if cut_until is None and cuts < len(cuts_at_s) and elapsed >= cuts_at_s[cuts]:
                    api.stop()
                    cut_until = elapsed + cut_s
                    events.append(f"{elapsed:.0f}s API server cut")
                elif cut_until is not None and elapsed >= cut_until:
                    api.start()
                    cuts += 1
                    cut_until = None
                    events.append(f"{elapsed:.0f}s API server back")
                time.sleep(0.5)
            for agent in agents:
                agent.sample(time.monotonic() - started)
            lost = {}
            for agent in agents:
                stable = {f"s{i}" for i in range(STABLE)} | {f"n{i}" for i in range(STABLE)}
                lost[agent.name] = sum(
                    value for _, labels, value in agent.probes()
                    if labels.get("result") != "reply" and labels.get("to") in stable
                )  # fmt: skip
                replied = sum(
                    value for _, labels, value in agent.probes() if labels.get("result") == "reply"
                )
                lost[agent.name + "_replies"] = replied
            logs = {a.name: (work / f"{a.name}.log").read_text() for a in agents}
        finally:
            for agent in agents:
                agent.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.proc.wait(20)
            collector.stop()
            api.stop()
    warmup = min(300.0, total_s / 5)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpu",
        "minutes": minutes,
        "collector_restarts": restarts,
        "api_cuts": cuts,
        "events": events,
        "not_answered_to_stable_peers": {k: v for k, v in lost.items() if "_" not in k},
        "replies": {k.split("_")[0]: v for k, v in lost.items() if k.endswith("_replies")},
        "errors_logged": {n: log.count("level=error") for n, log in logs.items()},
        "tracebacks": {n: log.count("Traceback") for n, log in logs.items()},
        "growth_after_warmup": {a.name: growth(a.samples, warmup) for a in agents},
        "samples": {a.name: a.samples for a in agents},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    figures = run(args.minutes)
    output = args.output or (
        REPO / "benchmarks" / "results"
        / f"{datetime.now(UTC):%Y-%m-%d}-soak-{args.minutes:g}min.json"
    )  # fmt: skip
    output.write_text(json.dumps(figures, indent=1) + "\n")
    for name, table in figures["growth_after_warmup"].items():
        print(f"{name}:")
        for key, row in table.items():
            print(f"  {key:8} first {row['first']:>8} last {row['last']:>8} "
                  f"max {row['max']:>8} growth/h {row['growth_per_hour']:>8}")  # fmt: skip
    print("not answered (stable peers):", figures["not_answered_to_stable_peers"])
    print("replies:", figures["replies"], "errors:", figures["errors_logged"],
          "tracebacks:", figures["tracebacks"])  # fmt: skip
    print("collector restarts:", figures["collector_restarts"], "API cuts:", figures["api_cuts"])
    print(f"JSON: {output}")


if __name__ == "__main__":
    main()
