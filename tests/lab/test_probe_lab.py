"""Probing real addresses across real kernel networking, with both ICMP socket kinds.

Agent in lab node n1; peers: n2 across an emulated link with distinct delays each way, the
namespace's own loopback over IPv4 and IPv6, and an address nobody answers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.support.agent_process import AgentProcess, series
from tests.support.lab import Lab, Link
from tests.support.lab.rtt import assert_rtt, rtt_ok

DROP_NET_RAW = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"]
PORT = 9090


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Iterator[Lab]:
    yield lab_factory(
        ["n1", "n2"],
        links={("n1", "n2"): Link(delay_ms=1.0), ("n2", "n1"): Link(delay_ms=2.5)},
    )


def dead_address(lab: Lab) -> str:
    prefix, _, _ = lab.address("n1").rpartition(".")
    return f"{prefix}.250"


def start_agent(lab: Lab, *, drop_net_raw: bool, extra: list[str] | None = None) -> AgentProcess:
    peers = f"n2={lab.address('n2')},lo4=127.0.0.1,lo6=::1,dead={dead_address(lab)}"
    args = ["--node-name", "n1", "--peers", peers, "--interval", "200ms", "--timeout", "500ms",
            "--prometheus", f"127.0.0.1:{PORT}", *(extra or [])]  # fmt: skip
    prefix = lab.exec_argv("n1", DROP_NET_RAW if drop_net_raw else [])
    return AgentProcess(args, port=PORT, prefix=prefix, connect=lambda: lab.socket("n1"))


def check_measurements(agent: AgentProcess, lab: Lab) -> None:
    expected = lab.expected_rtt_ms("n1", "n2")
    samples = agent.wait_for(
        lambda s: (
            series(s, "monlat_loss_ratio").get("dead") == 1.0
            and {"n2", "lo4", "lo6"} <= set(series(s, "latency_between_nodes"))
            and rtt_ok(series(s, "latency_between_nodes")["n2"], expected)
        ),
        timeout=15,
    )
    latency = series(samples, "latency_between_nodes")
    assert "dead" not in latency  # a peer that never answers has no latency series
    assert latency["lo4"] < 1.0 and latency["lo6"] < 1.0
    probes = {
        (labels["to"], labels["result"]): value
        for name, labels, value in samples
        if name == "monlat_probes_total"
    }
    assert probes[("dead", "timeout")] >= 1
    assert ("dead", "reply") not in probes
    assert probes[("n2", "reply")] >= 1 and ("n2", "timeout") not in probes
    logged = [line for line in agent.stdout if 'to="n2"' in line]
    assert logged and all(line.startswith('latency_between_nodes{from="n1",to="n2"} ')
                          for line in logged)  # fmt: skip
    values = [float(line.rsplit(" ", 1)[1]) for line in logged]
    # The RTT on the wire includes the user-space emulator's own lateness, which it measures:
    # a probe crosses it twice. What is left is the agent's error.
    assert_rtt(values, expected, lab=lab)


def test_raw_socket_with_cap_net_raw(lab: Lab) -> None:
    agent = start_agent(lab, drop_net_raw=False)
    try:
        agent.wait_ready()
        check_measurements(agent, lab)
    finally:
        assert agent.stop() == 0
    sockets = agent.events("icmp_socket")
    assert any("family=ipv4 kind=raw" in line for line in sockets), sockets


def test_datagram_socket_without_cap_net_raw(lab: Lab) -> None:
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    lab.run("n1", ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True)
    agent = start_agent(lab, drop_net_raw=True)
    try:
        agent.wait_ready()
        check_measurements(agent, lab)
    finally:
        assert agent.stop() == 0
    sockets = agent.events("icmp_socket")
    assert any("family=ipv4 kind=dgram" in line and "ping_group_range" in line
               for line in sockets), sockets  # fmt: skip


def test_forcing_raw_without_the_capability_fails_clearly(lab: Lab) -> None:
    lab.run("n1", ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True)
    agent = start_agent(lab, drop_net_raw=True, extra=["--socket", "raw"])
    assert agent.proc.wait(30) == 1
    agent.stop()
    assert (
        'event=icmp_socket_unavailable error="cannot open an ICMPv4 socket: raw'
        in (agent.stderr[-1])
    )
    assert "Traceback" not in "\n".join(agent.stderr)


def test_no_socket_kind_available_names_both_remedies(lab: Lab) -> None:
    lab.run("n1", ["sysctl", "-qw", "net.ipv4.ping_group_range=1 0"], check=True)
    agent = start_agent(lab, drop_net_raw=True)
    assert agent.proc.wait(30) == 1
    agent.stop()
    message = agent.stderr[-1]
    assert (
        'level=error event=icmp_socket_unavailable error="cannot open an ICMPv4 socket' in message
    )
    assert "CAP_NET_RAW" in message and "ping_group_range" in message
    assert len([line for line in agent.stderr if "error" in line]) == 1
