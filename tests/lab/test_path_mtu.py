"""Path MTU checks across a middle hop with a smaller MTU: a filtered "fragmentation needed"
(IPv6 "packet too big") is an MTU black hole with the right largest size; an ICMP report let
through is a smaller path MTU and no black hole; the latency probes measure normally
throughout. Both families, both socket kinds."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import pytest

from monlat.agent.probe.pmtu import Answer, PathMtuCheck
from tests.support.agent_process import REPO, AgentProcess, Samples, series
from tests.support.lab import Lab, Link, ipv6_supported

PORT = 9090
INTERFACE_MTU = 1500  # the lab interfaces' (TUN) MTU: what the checks ask the paths to carry
# The latency probes: 56 payload bytes behind the IP and ICMP headers.
SMALL_PACKET = {"ipv4": 56 + 20 + 8, "ipv6": 56 + 40 + 8}


def bisected(hop_mtu: int, family: str) -> int:
    """The largest size a check can name for a black hole at `hop_mtu` (its resolution)."""
    check = PathMtuCheck(INTERFACE_MTU, SMALL_PACKET[family])
    while (size := check.next_size()) is not None:
        check.record(size, Answer.REPLY if size <= hop_mtu else Answer.NOTHING)
    assert check.result is not None and check.result.largest_bytes is not None
    return check.result.largest_bytes


def mtu_series(samples: Samples) -> dict[str, tuple[float | None, float | None]]:
    holes, sizes = (
        series(samples, "monlat_mtu_black_hole"),
        series(samples, "monlat_path_mtu_bytes"),
    )
    return {to: (holes.get(to), sizes.get(to)) for to in holes.keys() | sizes.keys()}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("socket_kind", ["raw", "dgram"])
def test_a_filtered_fragmentation_needed_is_a_black_hole_and_a_reported_one_is_not(
    lab_factory: Callable[..., Lab], socket_kind: str, family: str
) -> None:
    if family == "ipv6" and not ipv6_supported():
        pytest.skip("this kernel has no IPv6")
    # n1 -> n2 crosses a 1,400-byte hop whose reports are filtered; n1 -> n3 a 1,280-byte hop
    # that reports, as a router should.
    lab = lab_factory(["n1", "n2", "n3"], default=Link(delay_ms=1.0))
    lab.set_link("n1", "n2", mtu=1400, too_big_reports=False, both=True)
    lab.set_link("n1", "n3", mtu=1280, both=True)
    hole = bisected(1400, family)
    address = lab.address if family == "ipv4" else lab.address6
    agent = AgentProcess(
        ["--node-name", "n1", "--peers", f"n2={address('n2')},n3={address('n3')}",
         "--interval", "200ms", "--timeout", "300ms", "--mtu-check-interval", "2s",
         "--socket", socket_kind, "--prometheus", f"127.0.0.1:{PORT}"],
        port=PORT, prefix=lab.exec_argv("n1", []), connect=lambda: lab.socket("n1"),
    )  # fmt: skip
    try:
        agent.wait_ready()
        samples = agent.wait_for(
            lambda s: mtu_series(s) == {"n2": (1.0, hole), "n3": (0.0, 1280.0)}, timeout=40
        )
        # The small probes cross both hops untouched.
        latency = series(samples, "latency_between_nodes")
        assert set(latency) == {"n2", "n3"} and all(1.5 < ms < 10 for ms in latency.values())
        assert series(samples, "monlat_loss_ratio") == {"n2": 0.0, "n3": 0.0}
        assert any("peer=n2" in line and f"largest_bytes={hole}" in line
                   for line in agent.events("mtu_black_hole"))  # fmt: skip
        assert any("peer=n3" in line and "largest_bytes=1280" in line
                   for line in agent.events("path_mtu_limited"))  # fmt: skip
        # `monlat diagnose` on the same data names the black hole, and only it.
        url = f"http://127.0.0.1:{PORT}"
        diagnose = [sys.executable, "-m", "monlat", "diagnose", "--url", url, "--format", "json"]
        diagnosis = lab.run("n1", diagnose, cwd=REPO)
        assert diagnosis.returncode == 1, diagnosis.stderr
        findings = json.loads(diagnosis.stdout)["findings"]
        assert [(f["kind"], f["subject"]) for f in findings] == [("mtu", "n1<->n2")], findings
        assert f"packets over {hole} bytes vanish" in findings[0]["summary"]

        # The filter on n2's hop lifted: its MTU is reported, no black hole claimed; n3's hop
        # widened: its path carries the full size, and its MTU series go.
        lab.set_link("n1", "n2", too_big_reports=True, both=True)
        lab.set_link("n1", "n3", mtu=0, both=True)
        samples = agent.wait_for(lambda s: mtu_series(s) == {"n2": (0.0, 1400.0)}, timeout=20)
        assert any("peer=n3" in line for line in agent.events("path_mtu_ok"))
        checks = {
            labels["result"]: value
            for name, labels, value in samples
            if name == "monlat_mtu_checks_total"
        }
        assert checks.get("black_hole", 0) >= 1 and checks.get("limited", 0) >= 2
        assert checks.get("ok", 0) >= 1 and "inconclusive" not in checks
        # The checks' own replies are no stray packets to the latency probes' socket.
        ignored = {
            labels["reason"]: value
            for name, labels, value in samples
            if name == "monlat_ignored_packets_total"
        }
        assert set(ignored) <= {"foreign"}, ignored
    finally:
        assert agent.stop() == 0
