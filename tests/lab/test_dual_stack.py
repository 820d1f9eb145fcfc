"""Dual-stack: IPv4 and IPv6 peers side by side across the lab's emulated links.

Agent in lab node n1 with `--ip-family dual`; peers n2 and n3 listed once per family. Each link
has its own delay, the same for both families (the switch delays every packet of a link), so
both families of a pair must measure the same emulated RTT, each in its own series.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.support.agent_process import AgentProcess
from tests.support.lab import Lab, Link, ipv6_supported
from tests.support.lab.rtt import rtt_ok

DROP_NET_RAW = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"]
PORT = 9090


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Iterator[Lab]:
    if not ipv6_supported():
        pytest.skip("this kernel has no IPv6")
    yield lab_factory(
        ["n1", "n2", "n3"],
        links={
            ("n1", "n2"): Link(delay_ms=1.0),
            ("n2", "n1"): Link(delay_ms=2.0),
            ("n1", "n3"): Link(delay_ms=3.0),
            ("n3", "n1"): Link(delay_ms=1.5),
        },
    )


def by_pair(
    samples: list[tuple[str, dict[str, str], float]], name: str
) -> dict[tuple[str, str], float]:
    return {
        (labels["to"], labels.get("family", "")): value
        for metric, labels, value in samples
        if metric == name
    }


@pytest.mark.parametrize("socket_kind", ["raw", "dgram"])
def test_both_families_measured_and_labelled(lab: Lab, socket_kind: str) -> None:
    peers = ",".join(
        f"{node}={address}"
        for node in ("n2", "n3")
        for address in (lab.address(node), lab.address6(node))
    )
    prefix: list[str] = []
    if socket_kind == "dgram":
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
        # One sysctl opens unprivileged ICMP sockets for both families.
        lab.run("n1", ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True)
        prefix = DROP_NET_RAW
    args = ["--node-name", "n1", "--ip-family", "dual", "--peers", peers, "--interval", "200ms",
            "--timeout", "500ms", "--prometheus", f"127.0.0.1:{PORT}"]  # fmt: skip
    agent = AgentProcess(
        args, port=PORT, prefix=lab.exec_argv("n1", prefix), connect=lambda: lab.socket("n1")
    )
    wanted = {(node, family) for node in ("n2", "n3") for family in ("ipv4", "ipv6")}
    try:
        agent.wait_ready()
        samples = agent.wait_for(
            lambda s: (
                set(by_pair(s, "latency_between_nodes")) == wanted
                and all(v > 0 for v in by_pair(s, "monlat_probes_total").values())
                and all(
                    rtt_ok(v, lab.expected_rtt_ms("n1", node))
                    for (node, _), v in by_pair(s, "latency_between_nodes").items()
                )
            ),
            timeout=15,
        )
    finally:
        assert agent.stop() == 0
    # Every per-pair series carries the family; loss is counted per family.
    for name, labels, _ in samples:
        if name in ("latency_between_nodes", "monlat_loss_ratio", "monlat_rtt_seconds_bucket"):
            assert labels["family"] in ("ipv4", "ipv6"), (name, labels)
    assert set(by_pair(samples, "monlat_loss_ratio").values()) == {0.0}
    sockets = agent.events("icmp_socket")
    assert any(f"family=ipv6 kind={socket_kind}" in line for line in sockets), sockets
    # The measurement lines say which family too; both families crossed the emulated links.
    for family in ("ipv4", "ipv6"):
        assert any(
            line.startswith(f'latency_between_nodes{{from="n1",to="n2",family="{family}"}} ')
            for line in agent.stdout
        )
    added = sorted(line.split("peer=")[1].split()[0] for line in agent.events("peer_added"))
    assert added == ["n2/ipv4", "n2/ipv6", "n3/ipv4", "n3/ipv6"]
    links = lab.stats()["links"]
    assert links["n1>n2"]["echo_requests"] > 0 and links["n1>n3"]["echo_requests"] > 0
