"""Path MTU checks without sockets: the bisection's decisions, the route table reading that
sizes them, the prober against an in-memory path, and what is exported of the result."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from monlat.agent.config import PathMtuConfig
from monlat.agent.probe.icmp import COOKIE_SIZE
from monlat.agent.probe.pmtu import Answer, PathMtu, PathMtuCheck, Verdict
from monlat.agent.probe.pmtu_prober import PathMtuProber, PathMtuTransport
from monlat.agent.probe.prober import Target
from monlat.agent.probe.routes import InterfaceMtu, parse_ipv4_routes, route_interface
from monlat.agent.probe.sockets import QueuedError
from monlat.agent.results import ResultStore
from monlat.agent.settings import parse_agent_config
from monlat.agent.telemetry import PAIR_GAUGES
from monlat.common.errors import ConfigError

SMALL = 84


def run_check(
    path_mtu: int, *, reports: bool, lost: set[int] | None = None, probe: int = 1500
) -> PathMtu:
    """A check against a path of `path_mtu` (reporting it or not); `lost`: the request numbers
    (1-based) that vanish whatever their size."""
    check = PathMtuCheck(probe, SMALL)
    sent = 0
    while (size := check.next_size()) is not None:
        sent += 1
        assert sent <= 30, "a check is bounded"
        if lost and sent in lost:
            check.record(size, Answer.NOTHING)
        elif size <= path_mtu:
            check.record(size, Answer.REPLY)
        elif reports:
            check.record(size, Answer.TOO_BIG, path_mtu)
        else:
            check.record(size, Answer.NOTHING)
    assert check.result is not None
    assert check.result.probes == sent
    return check.result


def test_a_path_that_carries_the_probe_size_is_ok_after_one_request() -> None:
    assert run_check(9000, reports=False) == PathMtu(Verdict.OK, 1500, 1500, 1)


def test_one_lost_request_is_not_a_black_hole() -> None:
    assert run_check(9000, reports=False, lost={1}) == PathMtu(Verdict.OK, 1500, 1500, 2)


def test_a_reported_smaller_mtu_is_limited_not_a_black_hole() -> None:
    assert run_check(1280, reports=True) == PathMtu(Verdict.LIMITED, 1500, 1280, 1)


@pytest.mark.parametrize("hole", [85, 576, 1280, 1400, 1450, 1492, 1499])
def test_a_black_hole_is_bisected_to_within_the_resolution(hole: int) -> None:
    result = run_check(hole, reports=False)
    assert result.verdict is Verdict.BLACK_HOLE
    assert result.largest_bytes is not None and hole - 8 <= result.largest_bytes <= hole
    assert result.probes <= 2 * (2 + 8)


def test_a_black_hole_survives_one_lost_packet_per_size() -> None:
    # Every first request of a size vanishes: the second one decides.
    result = run_check(1400, reports=False, lost=set(range(1, 40, 2)))
    assert result.verdict is Verdict.BLACK_HOLE
    assert result.largest_bytes is not None and 1392 <= result.largest_bytes <= 1400


def test_a_peer_that_answers_nothing_is_inconclusive() -> None:
    result = run_check(0, reports=False)
    assert result == PathMtu(Verdict.INCONCLUSIVE, 1500, None, 4)


def test_the_floor_must_be_below_the_probe_size() -> None:
    with pytest.raises(ValueError):
        PathMtuCheck(84, 84)


ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
vxlan0\t0000F40A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
wg0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
garbage line
"""


def test_the_most_specific_route_names_the_interface() -> None:
    routes = parse_ipv4_routes(ROUTES)
    assert len(routes) == 4
    assert route_interface(routes, "10.244.1.7") == "wg0"
    assert route_interface(routes, "10.244.9.7") == "vxlan0"
    assert route_interface(routes, "192.168.2.9") == "eth0"
    assert route_interface(routes, "8.8.8.8") == "eth0"
    assert route_interface(routes, "fd00::1") is None
    assert route_interface(routes, "not an address") is None


def test_the_probe_size_is_the_routed_interfaces_mtu() -> None:
    files = {
        Path("/proc/net/route"): ROUTES,
        Path("/sys/class/net/wg0/mtu"): "1420\n",
        Path("/sys/class/net/eth0/mtu"): "9001\n",
        Path("/proc/net/ipv6_route"): (
            "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
            "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n"
        ),
    }

    def read(path: Path) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    mtu = InterfaceMtu(read)
    assert mtu.for_address("10.244.1.7") == 1420
    assert mtu.for_address("192.168.2.9") == 9001
    assert mtu.for_address("fd00::5") == 9001
    assert mtu.for_address("10.244.9.7") is None  # vxlan0: no MTU file
    assert mtu.for_address("fe80::1") is None


def test_mtu_settings_parse_once_and_say_what_is_wrong() -> None:
    config = parse_agent_config(["--peers", "b=10.0.0.2"], {})
    assert config.path_mtu == PathMtuConfig(interval_s=60.0, probe_bytes=None, timeout_s=1.0)
    config = parse_agent_config(
        ["--peers", "b=10.0.0.2", "--mtu-probe-size", "1400", "--mtu-check-interval", "0"], {}
    )
    assert config.path_mtu.probe_bytes == 1400 and config.path_mtu.interval_s == 0
    config = parse_agent_config(["--peers", "b=10.0.0.2"], {"MONLAT_MTU_PROBE_SIZE": "9000"})
    assert config.path_mtu.probe_bytes == 9000
    for argv, message in (
        (["--mtu-probe-size", "jumbo"], "expected a whole number from 68 to 65535"),
        (["--mtu-probe-size", "100"], "must be larger than the latency probes"),
        (["--mtu-check-interval", "100ms"], "must be 0 or at least 1s"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            parse_agent_config(["--peers", "b=10.0.0.2", *argv], {})
        assert caught.value.setting == argv[0]


def test_only_a_path_that_falls_short_has_mtu_series() -> None:
    store = ResultStore(
        window_s=60, interval_s=1, timeout_s=1, probes_per_interval=1, clock=lambda: 1.0
    )
    store.set_peers([("ok", "10.0.0.2"), ("hole", "10.0.0.3"), ("small", "10.0.0.4")])
    store.record_path_mtu("ok", "10.0.0.2", PathMtu(Verdict.OK, 1500, 1500, 1))
    store.record_path_mtu("hole", "10.0.0.3", PathMtu(Verdict.BLACK_HOLE, 1500, 1400, 14))
    store.record_path_mtu("small", "10.0.0.4", PathMtu(Verdict.LIMITED, 1500, 1280, 1))
    store.record_path_mtu("small", "10.9.9.9", PathMtu(Verdict.OK, 1500, 1500, 1))  # old address
    gauges = {gauge.name.prometheus: gauge for gauge in PAIR_GAUGES}
    exported = {
        summary.peer: (
            gauges["monlat_mtu_black_hole"].value(summary),
            gauges["monlat_path_mtu_bytes"].value(summary),
        )
        for summary in store.snapshot()
    }
    assert exported == {"ok": (None, None), "hole": (1.0, 1400), "small": (0.0, 1280)}
    store.set_peers([("hole", "10.0.0.30")])  # re-addressed: its conclusion is gone
    assert [summary.path_mtu for summary in store.snapshot()] == [None]


class InMemoryPath:
    """A PathMtuTransport to one peer behind a hop of `mtu` bytes, with the hop's reports on or
    off, and stray packets of its own on demand."""

    family = int(socket.AF_INET)
    ident = 4242
    parses_ip_header = False

    def __init__(self, mtu: int, reports: bool) -> None:
        self.mtu, self.reports = mtu, reports
        self.reader, self.writer = socket.socketpair()
        self.replies: list[tuple[bytes, str]] = []
        self.queued: list[QueuedError] = []
        self.sizes: list[int] = []
        self.forge = False  # a vanished request answered by a forger (another cookie)

    def fileno(self) -> int:
        return self.reader.fileno()

    def send(self, packet: bytes, address: str) -> bool:
        size = len(packet) + 20  # the IPv4 header in front of the ICMP message
        self.sizes.append(size)
        if size <= self.mtu:
            self.replies.append((b"\x00" + packet[1:], address))
        elif self.reports:
            self.queued.append(QueuedError(3, 4, self.mtu, packet[:8]))
        elif self.forge:
            forged = b"\x00" + packet[1:8] + b"\xee" * COOKIE_SIZE + packet[16:]
            self.replies.append((forged, address))
        self.writer.send(b"!")
        return True

    def receive_all(self) -> list[tuple[bytes, str]]:
        self.reader.recv(4096)
        replies, self.replies = self.replies, []
        return replies

    def errors(self) -> list[QueuedError]:
        queued, self.queued = self.queued, []
        return queued

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


async def check_once(path: PathMtuTransport, timeout_s: float = 0.05) -> PathMtu:
    """One check of peer b on `path`, as the agent's prober runs it; closes the path."""
    found: asyncio.Future[PathMtu] = asyncio.get_running_loop().create_future()
    prober = PathMtuProber(
        {path.family: path},
        PathMtuConfig(interval_s=3600, timeout_s=timeout_s),
        small_payload=56,
        probe_size=lambda address: 1500,
        listener=lambda target, result: found.done() or found.set_result(result),
    )
    prober.set_targets({"b": Target("b", "10.0.0.2")})
    task = asyncio.create_task(prober.run())
    try:
        return await asyncio.wait_for(found, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        path.close()


async def test_the_prober_finds_a_black_hole_on_an_in_memory_path() -> None:
    path = InMemoryPath(1400, reports=False)
    result = await check_once(path)
    assert result == run_check(1400, reports=False)  # the same decisions, asked for real
    assert path.sizes[:3] == [1500, 1500, 84]


async def test_the_prober_takes_a_report_quoting_only_eight_bytes() -> None:
    result = await check_once(InMemoryPath(1280, reports=True))
    assert result == PathMtu(Verdict.LIMITED, 1500, 1280, 1)


async def test_forged_replies_do_not_answer_a_check() -> None:
    path = InMemoryPath(1400, reports=False)
    # Every vanished request "answered" with its identifier and sequence but another cookie:
    # were any taken, the full size would pass and the hole go unseen.
    path.forge = True
    result = await check_once(path)
    assert result == run_check(1400, reports=False)
