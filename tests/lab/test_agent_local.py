"""The agent as a process on this machine's loopback: exposition, peers file churn, SIGTERM."""

import re
import signal
import subprocess
from pathlib import Path

from tests.support.agent_process import AgentProcess, series
from tests.support.ports import free_port

EXACT = re.compile(
    r'^latency_between_nodes\{from="(?P<f>[^"]+)",to="(?P<t>[^"]+)"\} (?P<v>\d+\.\d+)$'
)


def test_exposition_exact_lines_and_removed_peer_vanishes(tmp_path: Path) -> None:
    peers = tmp_path / "peers"
    peers.write_text("# loopback peers\nlo4=127.0.0.1\nlo6=::1\nself=127.0.0.2\n")
    port = free_port()
    agent = AgentProcess(
        ["--node-name", "self", "--peers-file", str(peers), "--interval", "200ms",
         "--prometheus", f"127.0.0.1:{port}"],
        port=port,
    )  # fmt: skip
    try:
        agent.wait_ready()
        agent.wait_for(lambda s: set(series(s, "latency_between_nodes")) == {"lo4", "lo6"}, 10)
        status, body = agent.get("/metrics")
        assert status == 200
        lines = [line for line in body.splitlines() if line.startswith("latency_between_nodes")]
        matches = [EXACT.match(line) for line in lines]
        assert all(matches), lines
        assert sorted((m["f"], m["t"]) for m in matches if m) == [("self", "lo4"), ("self", "lo6")]
        assert all(0 < float(m["v"]) < 50 for m in matches if m)
        assert "target_info" not in body and "otel_scope" not in body
        assert "python_gc" not in body and "process_" not in body

        samples = agent.metrics()
        replies = {
            labels["to"]: value
            for name, labels, value in samples
            if name == "monlat_probes_total" and labels["result"] == "reply"
        }
        # The histogram counts the same replies (one snapshot serves both).
        assert series(samples, "monlat_rtt_seconds_count") == replies
        inf = {lab["to"]: v for n, lab, v in samples
               if n == "monlat_rtt_seconds_bucket" and lab["le"] == "+Inf"}  # fmt: skip
        assert inf == replies
        # Loopback sockets give kernel timestamps: (nearly) every send and reply is kernel-timed.
        sources = {
            (labels["direction"], labels["source"]): value
            for name, labels, value in samples
            if name == "monlat_timestamps_total"
        }
        answered = sum(replies.values())
        assert sources[("send", "kernel")] >= answered - 2, (sources, replies)
        assert sources[("receive", "kernel")] >= answered, (sources, replies)
        # A kind appears once it has happened: no user-timed reply, so no series for it.
        assert sources.get(("send", "user"), 0) <= 2, sources
        assert ("receive", "user") not in sources, sources
        check = subprocess.run(["promtool", "check", "metrics"], input=body, text=True,
                               capture_output=True, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr

        peers.write_text("lo4=127.0.0.1\n")
        agent.wait_for(lambda s: set(series(s, "latency_between_nodes")) == {"lo4"}, 10)
        samples = agent.metrics()
        assert "lo6" not in series(samples, "monlat_loss_ratio")
        assert "lo6" not in series(samples, "monlat_rtt_seconds_count")
        assert any(line for line in agent.events("peer_removed") if "peer=lo6" in line)
    finally:
        code = agent.stop(signal.SIGTERM)
    assert code == 0, agent.stderr
    assert agent.events("flushed") and agent.events("stopped")
    logged = [line for line in agent.stdout if line]
    assert logged and all(EXACT.match(line) for line in logged), logged[:5]


def test_sigint_also_exits_cleanly() -> None:
    port = free_port()
    agent = AgentProcess(["--peers", "127.0.0.1", "--prometheus", f"127.0.0.1:{port}",
                          "--log-measurements", "false"], port=port)  # fmt: skip
    try:
        agent.wait_ready()
        status, text = agent.get("/healthz")
        assert text == "ok\n"
        assert status == 200
        assert agent.get("/nope")[0] == 404
    finally:
        code = agent.stop(signal.SIGINT)
    assert code == 0
    assert agent.stdout == []
