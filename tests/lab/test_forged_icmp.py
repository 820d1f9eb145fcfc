"""Forged and stray ICMP injected on the wire: none of it becomes a measurement, all is counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from tests.support.agent_process import REPO, AgentProcess
from tests.support.lab import Lab, Link

PORT = 9090


def test_forged_replies_are_counted_never_measured(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(["n1", "n2", "n3"], default=Link(delay_ms=0.5))
    lab.run("n2", ["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"], check=True)
    injector = lab.popen(
        "n2",
        [sys.executable, "-m", "tests.support.icmp_injector", "--spoof-source", lab.address("n3"),
         "--late-after", "0.6", "--duration", "5"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)  # let the injector open its socket before the first probe
    agent = AgentProcess(
        ["--node-name", "n1", "--peers", f"n2={lab.address('n2')}", "--interval", "100ms",
         "--timeout", "300ms", "--prometheus", f"127.0.0.1:{PORT}",
         # The injector answers every echo request it sees: the path MTU checks' too, which
         # would count as genuine replies to latency probes.
         "--mtu-check-interval", "0"],
        port=PORT, prefix=lab.exec_argv("n1", []), connect=lambda: lab.socket("n1"),
    )  # fmt: skip
    try:
        agent.wait_ready()
        out, _ = injector.communicate(timeout=30)
        report = json.loads(out)
        time.sleep(0.5)  # the last probes time out
        samples = agent.metrics()
    finally:
        assert agent.stop() == 0

    ignored = {
        labels["reason"]: value
        for name, labels, value in samples
        if name == "monlat_ignored_packets_total"
    }
    replies = sum(
        value
        for name, labels, value in samples
        if name == "monlat_probes_total" and labels["result"] == "reply"
    )
    sent = report["sent"]
    assert all(count >= 2 for count in sent.values()), sent
    # Exactly the genuine replies became measurements, in metrics and in the log alike.
    assert replies == report["genuine"]
    assert len([line for line in agent.stdout if 'to="n2"' in line]) == report["genuine"]
    assert ignored["bad_cookie"] == sent["bad_cookie"]
    assert ignored["wrong_sequence"] == sent["wrong_sequence"]
    assert ignored["wrong_source"] == sent["wrong_source"]
    assert ignored["truncated"] == sent["truncated"]
    assert ignored["duplicate"] == sent["duplicate"]
    assert ignored["late"] == sent["late"]
