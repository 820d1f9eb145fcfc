"""A hostile network: a third lab host floods the agent's node with 10,000 ICMP packets a second
of every kind (forged replies "from" the peer with every identifier, errors quoting our path and
random bytes, garbage) while the agent probes a peer 4 ms away. It stays up and on schedule, the
4 ms peer still reads 4 ms, the flood shows in monlat_ignored_packets_total, and CPU is bounded.

Figures (printed, and kept as flood-figures.json in the test's directory): the flood's rate as
sent and as delivered, the agent's CPU with and without it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.agent_process import REPO, AgentProcess
from tests.support.lab import Lab, Link
from tests.support.lab.rtt import assert_rtt

PORT = 9090
INTERVAL_S = 0.1
FLOOD_S = 10.0
RATE = 10_000
CPU_BOUND = 0.6  # of one core, for the agent under the whole flood (measured ~0.2-0.3)
LINE = re.compile(r'^latency_between_nodes\{from="n1",to="n2"\} ([0-9.]+)$')


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        comm_end = stat.read().rsplit(")", 1)
    fields = comm_end[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(agent: AgentProcess) -> tuple[dict[str, float], dict[str, float]]:
    """(probes by result, ignored packets by reason) as the agent serves them."""
    probes: dict[str, float] = {}
    ignored: dict[str, float] = {}
    for name, labels, value in agent.metrics():
        if name == "monlat_probes_total":
            probes[labels["result"]] = probes.get(labels["result"], 0.0) + value
        elif name == "monlat_ignored_packets_total":
            ignored[labels["reason"]] = value
    return probes, ignored


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def test_a_flood_of_forged_icmp_changes_nothing_measured(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(
        ["n1", "n2", "n3"],
        links={("n1", "n2"): Link(delay_ms=2.0), ("n2", "n1"): Link(delay_ms=2.0)},
        default=Link(delay_ms=0.1),
        realtime=True,
    )
    expected = lab.expected_rtt_ms("n1", "n2")
    agent = AgentProcess(
        ["--node-name", "n1", "--peers", f"n2={lab.address('n2')}", "--socket", "raw",
         "--interval", f"{INTERVAL_S * 1000:.0f}ms", "--timeout", "500ms",
         "--prometheus", f"127.0.0.1:{PORT}"],
        port=PORT, prefix=lab.exec_argv("n1", []), connect=lambda: lab.socket("n1"),
    )  # fmt: skip
    try:
        agent.wait_ready()
        pid = agent.proc.pid
        with open(f"/proc/{pid}/comm", encoding="ascii") as comm:
            assert "python" in comm.read()  # `ip netns exec` execs: the pid is the agent's

        # The same window without the flood, for the CPU it costs.
        cpu0, quiet_start = cpu_seconds(pid), time.monotonic()
        time.sleep(FLOOD_S / 2)
        quiet_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - quiet_start)

        # The prober's identifier, as its peer sees it: the forged replies carry it.
        ident = int(lab.run(
            "n2", [sys.executable, "-m", "tests.support.icmp_flood",
                   "--capture-ident-from", lab.address("n1")],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=30,
        ).stdout)  # fmt: skip

        probes0, ignored0 = counters(agent)
        lines0 = len(agent.stdout)
        lab.reset_stats()
        cpu0, flood_start = cpu_seconds(pid), time.monotonic()
        flood = lab.popen(
            "n3",
            [sys.executable, "-m", "tests.support.icmp_flood", "--target", lab.address("n1"),
             "--peer", lab.address("n2"), "--ident", str(ident), "--rate", str(RATE),
             "--duration", str(FLOOD_S)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, _ = flood.communicate(timeout=FLOOD_S + 30)
        flood_elapsed = time.monotonic() - flood_start
        flood_cpu = (cpu_seconds(pid) - cpu0) / flood_elapsed
        time.sleep(1.0)  # the last probes of the window answered or timed out
        report = json.loads(out)
        stats = lab.stats()
        probes, ignored = map(delta, counters(agent), (probes0, ignored0))
        during = [float(m.group(1)) for line in agent.stdout[lines0:] if (m := LINE.match(line))]
        assert agent.proc.poll() is None, agent.stderr
    finally:
        assert agent.stop() == 0, agent.stderr
    assert not [line for line in agent.stderr if "Traceback" in line or "level=error" in line]

    delivered = stats["links"]["n3>n1"]["forwarded"]
    figures = {
        "flood_sent_pps": round(report["rate"]),
        "flood_delivered_pps": round(delivered / report["seconds"]),
        "flood_past_kernel_filter": report["passes_filter"],
        "agent_cpu_quiet": round(quiet_cpu, 4),
        "agent_cpu_flood": round(flood_cpu, 4),
        "ignored_by_reason": ignored,
        "probes_by_result": probes,
        "rtt_ms_min_median_max": [min(during), sorted(during)[len(during) // 2], max(during)],
        "emulator_late_us_max": stats["lateness_us"]["max"],
    }
    (tmp_path / "flood-figures.json").write_text(json.dumps(figures, indent=1))
    print("flood figures:", json.dumps(figures))

    assert report["rate"] >= 0.9 * RATE, report
    assert delivered >= 0.9 * RATE * report["seconds"], (delivered, report)
    # Every flood packet the kernel's type filter let through was read, judged and counted,
    # none measured (the rest the kernel dropped: no Python ever saw them).
    reaching = report["passes_filter"] * delivered / sum(report["sent"].values())
    assert sum(ignored.values()) >= 0.95 * reaching, (ignored, reaching)
    # The replies with our identifier fail on the cookie, the rest on the identifier.
    assert ignored.get("bad_cookie", 0) >= 0.9 * report["sent"]["reply_spoofed"], ignored
    assert ignored.get("foreign", 0) > 0, ignored
    # On schedule: a probe every interval, each answered, each answer one measurement.
    window = flood_elapsed + 1.0
    assert abs(sum(probes.values()) - window / INTERVAL_S) <= 0.1 * window / INTERVAL_S, probes
    assert {result for result, count in probes.items() if count} == {"reply"}, probes
    assert len(during) == probes["reply"], (len(during), probes)
    assert_rtt(during, expected, lab=lab)
    assert flood_cpu <= CPU_BOUND, figures
