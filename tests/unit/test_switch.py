"""The lab's own parts without root: the user-space link emulator (switch.py) driven over
socket pairs, the ping parser and the skip-or-fail policy."""

from __future__ import annotations

import ipaddress
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.support.lab.fixtures import lab_required, skip_or_fail
from tests.support.lab.netns import LabError
from tests.support.lab.ping import parse_ping
from tests.support.lab.switchctl import SWITCH_PY, SwitchProcess
from tests.support.waiting import wait_gone

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def ipv4_packet(
    dst: str, payload: bytes = b"x" * 8, proto: int = 17, src: str = "198.18.0.250"
) -> bytes:
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        1,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + payload


def ipv6_packet(dst: str, payload: bytes = b"y" * 8, nxt: int = 17) -> bytes:
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(payload),
        nxt,
        64,
        ipaddress.IPv6Address("fd00:213::fa").packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + payload


class SockSwitch:
    """A switch process whose 'TUNs' are socketpairs held by the test."""

    def __init__(self, nodes: dict[str, list[str]], **config: object) -> None:
        self.ends: dict[str, socket.socket] = {}
        theirs: dict[str, socket.socket] = {}
        for name in nodes:
            mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.ends[name], theirs[name] = mine, other
        cfg = {
            "nodes": {
                n: {"fd": theirs[n].fileno(), "ifname": f"sock-{n}", "addrs": a}
                for n, a in nodes.items()
            },
            **config,
        }
        try:
            self.proc = SwitchProcess(cfg, pass_fds=tuple(s.fileno() for s in theirs.values()))
        finally:
            for s in theirs.values():
                s.close()

    def send(self, node: str, pkt: bytes) -> float:
        t = time.monotonic()
        self.ends[node].send(pkt)
        return t

    def recv(self, node: str, timeout: float = 1.0) -> tuple[bytes, float] | None:
        ready, _, _ = select.select([self.ends[node]], [], [], timeout)
        if not ready:
            return None
        data = self.ends[node].recv(70000)
        return data, time.monotonic()

    def close(self) -> None:
        self.proc.stop()
        for s in self.ends.values():
            s.close()


@pytest.fixture
def sock_switch() -> Iterator[type[SockSwitch]]:
    made: list[SockSwitch] = []

    class Tracked(SockSwitch):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            made.append(self)

    yield Tracked
    for sw in made:
        sw.close()


NODES2 = {"a": ["198.18.0.1", "fd00:213::1"], "b": ["198.18.0.2", "fd00:213::2"]}

# --------------------------------------------------------------------------
# part 1: the switch process, no root needed
# --------------------------------------------------------------------------


def test_switch_applies_directed_delays(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(
        NODES2,
        links=[
            {"src": "a", "dst": "b", "delay_ms": 30.0},
            {"src": "b", "dst": "a", "delay_ms": 10.0},
        ],
    )
    for src, dst, dst_addr, want in (
        ("a", "b", "198.18.0.2", 30.0),
        ("b", "a", "198.18.0.1", 10.0),
    ):
        pkt = ipv4_packet(dst_addr)
        t0 = sw.send(src, pkt)
        got = sw.recv(dst)
        assert got is not None and got[0] == pkt
        elapsed_ms = (got[1] - t0) * 1000
        assert want - 0.05 <= elapsed_ms <= want + 5.0, (src, dst, elapsed_ms)
    pkt6 = ipv6_packet("fd00:213::2")
    t0 = sw.send("a", pkt6)
    got = sw.recv("b")
    assert got is not None and got[0] == pkt6 and (got[1] - t0) * 1000 >= 29.95
    stats = sw.proc.request("stats")["stats"]
    assert stats["links"]["a>b"]["forwarded"] == 2 and stats["links"]["b>a"]["forwarded"] == 1


def test_switch_keeps_order_and_timer_precision(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2, default={"delay_ms": 5.0})
    sent = [ipv4_packet("198.18.0.2", struct.pack("!I", i)) for i in range(50)]
    for pkt in sent:
        sw.send("a", pkt)
        time.sleep(0.002)
    got = [sw.recv("b") for _ in sent]
    assert [g[0] for g in got if g] == sent
    late = sw.proc.request("stats")["stats"]["lateness_us"]
    assert late["count"] == 50
    assert late["p50"] < 200.0, late  # timer fires on time (typically ~1 us)


def test_switch_jitter(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2, seed=3, default={"delay_ms": 10.0, "jitter_ms": 5.0})
    delays = []
    for i in range(40):
        t0 = sw.send("a", ipv4_packet("198.18.0.2", struct.pack("!I", i)))
        got = sw.recv("b")
        assert got is not None
        delays.append((got[1] - t0) * 1000)
    assert min(delays) >= 5.0 - 0.05 and max(delays) <= 15.0 + 5.0
    assert max(delays) - min(delays) > 3.0  # really spread, not constant


def test_a_hop_with_a_smaller_mtu_reports_or_swallows_what_does_not_fit(
    sock_switch: type[SockSwitch],
) -> None:
    sw = sock_switch(NODES2, links=[{"src": "a", "dst": "b", "mtu": 1400}])
    big = ipv4_packet("198.18.0.2", b"z" * 1480, proto=1, src="198.18.0.1")
    big_df = big[:6] + b"\x40\x00" + big[8:]  # Don't Fragment
    fits = ipv4_packet("198.18.0.2", b"z" * 1380, proto=1, src="198.18.0.1")
    # Fits: forwarded. Larger without DF: passes (fragmentation is not emulated).
    for pkt in (fits, big):
        sw.send("a", pkt)
        got = sw.recv("b")
        assert got is not None and got[0] == pkt
    # Larger with DF: not forwarded; the hop answers from b's address with "fragmentation
    # needed", next-hop MTU 1400, quoting the packet.
    sw.send("a", big_df)
    assert sw.recv("b", timeout=0.2) is None
    got = sw.recv("a")
    assert got is not None
    report = got[0]
    assert report[12:16] == ipaddress.IPv4Address("198.18.0.2").packed
    assert report[16:20] == ipaddress.IPv4Address("198.18.0.1").packed
    assert report[20:22] == b"\x03\x04" and struct.unpack("!H", report[26:28]) == (1400,)
    assert report[28:] == big_df[: 576 - 28]
    assert icmp_checksum_ok(report[20:])
    # Reports filtered: the packet just vanishes (an MTU black hole).
    sw.proc.request("set_link", src="a", dst="b", too_big_reports=False)
    sw.send("a", big_df)
    assert sw.recv("b", timeout=0.2) is None and sw.recv("a", timeout=0.2) is None
    # IPv6 packets never fragment on the way: too big is too big, reported as such.
    sw.proc.request("set_link", src="a", dst="b", too_big_reports=True)
    sw.send("a", ipv6_packet("fd00:213::2", b"y" * 1400, nxt=58))
    got = sw.recv("a")
    assert got is not None and got[0][6] == 58 and got[0][40:42] == b"\x02\x00"
    assert struct.unpack("!I", got[0][44:48]) == (1400,)
    stats = sw.proc.request("stats")["stats"]["links"]["a>b"]
    assert stats["too_big"] == 3 and stats["forwarded"] == 2


def icmp_checksum_ok(message: bytes) -> bool:
    data = message + b"\x00" * (len(message) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_switch_survives_odd_packets(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2)
    odd = [
        b"\x45",  # 1 byte
        b"\x45" + b"\0" * 18,  # 19 bytes
        b"\x55" + b"\0" * 40,  # IP version 5
        b"\x00" * 60,  # version 0
        b"\x60" + b"\0" * 30,  # truncated IPv6
        ipv4_packet("198.18.0.99"),  # not a lab node
        ipv4_packet("224.0.0.1"),  # multicast
        ipv4_packet("8.8.8.8"),  # outside: must never be forwarded anywhere
        ipv6_packet("ff02::1"),
        ipv6_packet("fe80::1"),
        b"\x45" + b"\xff" * 65000,  # huge garbage
    ]
    for pkt in odd:
        sw.send("a", pkt)
    good = ipv4_packet("198.18.0.2", b"still alive")
    sw.send("a", good)
    got = sw.recv("b")
    assert got is not None and got[0] == good
    assert sw.recv("a", timeout=0.1) is None and sw.recv("b", timeout=0.1) is None
    stats = sw.proc.request("stats")["stats"]
    assert stats["malformed"] == 5
    assert stats["unknown_dst"] == 6
    assert sw.proc.alive()


def test_switch_loss_and_node_down(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2, seed=7, links=[{"src": "a", "dst": "b", "loss": 0.5}])
    n = 400
    for i in range(n):
        sw.send("a", ipv4_packet("198.18.0.2", struct.pack("!I", i)))
    received = 0
    while sw.recv("b", timeout=0.3) is not None:
        received += 1
    assert 0.35 * n < received < 0.65 * n
    link = sw.proc.request("stats")["stats"]["links"]["a>b"]
    assert link["forwarded"] == received and link["lost"] == n - received

    sw.proc.request("set_link", src="a", dst="b", loss=1.0)
    for _ in range(20):
        sw.send("a", ipv4_packet("198.18.0.2"))
    assert sw.recv("b", timeout=0.2) is None
    sw.proc.request("set_link", src="a", dst="b", loss=0.0)
    sw.proc.request("set_node", node="b", up=False)
    sw.send("a", ipv4_packet("198.18.0.2"))
    sw.send("b", ipv4_packet("198.18.0.1"))
    assert sw.recv("b", timeout=0.2) is None and sw.recv("a", timeout=0.05) is None
    sw.proc.request("set_node", node="b", up=True)
    sw.send("a", ipv4_packet("198.18.0.2"))
    assert sw.recv("b") is not None
    stats = sw.proc.request("stats")["stats"]
    assert stats["links"]["a>b"]["down_drops"] == 1 and stats["links"]["b>a"]["down_drops"] == 1


def test_switch_counts_echo_requests_per_direction(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2)
    echo4 = ipv4_packet("198.18.0.2", b"\x08\x00" + b"\0" * 6, proto=1)
    reply4 = ipv4_packet("198.18.0.1", b"\x00\x00" + b"\0" * 6, proto=1)
    echo6 = ipv6_packet("fd00:213::2", b"\x80\x00" + b"\0" * 6, nxt=58)
    for node, pkt in (("a", echo4), ("b", reply4), ("a", echo6)):
        sw.send(node, pkt)
    assert sw.recv("b") and sw.recv("a") and sw.recv("b")
    links = sw.proc.request("stats")["stats"]["links"]
    assert links["a>b"]["echo_requests"] == 2 and links["b>a"]["echo_requests"] == 0


def test_switch_rejects_bad_commands_and_keeps_running(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2)
    cases: list[tuple[str, dict[str, object]]] = [
        ("nope", {}),
        ("set_link", {"src": "a", "dst": "zz", "delay_ms": 1}),
        ("set_link", {"src": "a", "dst": "b", "loss": 1.5}),
        ("set_link", {"src": "a", "dst": "b", "delay_ms": -1}),
        ("set_node", {"node": "zz", "up": False}),
    ]
    for op, fields in cases:
        with pytest.raises(LabError):
            sw.proc.request(op, **fields)  # type: ignore[arg-type]
    assert sw.proc.proc.stdin is not None
    sw.proc.proc.stdin.write(b"this is not json\n")
    sw.proc.proc.stdin.flush()
    assert sw.proc._read_reply(5.0)["ok"] is False
    assert sw.proc.request("ping")["ok"]


def test_switch_bad_config_reports_error() -> None:
    with pytest.raises(LabError, match="duplicate address"):
        SwitchProcess(
            {
                "nodes": {
                    "a": {"fd": 0, "addrs": ["198.18.0.1"]},
                    "b": {"fd": 0, "addrs": ["198.18.0.1"]},
                }
            }
        )


def test_switch_exits_on_sigterm(sock_switch: type[SockSwitch]) -> None:
    sw = sock_switch(NODES2)
    sw.proc.proc.send_signal(signal.SIGTERM)
    assert sw.proc.proc.wait(timeout=5) == 128 + signal.SIGTERM
    assert not sw.proc.alive()


def test_switch_exits_when_parent_dies(tmp_path: object) -> None:
    # A parent that starts a switch and dies without cleaning up.
    script = textwrap.dedent(
        f"""
        import json, os, socket, subprocess, sys
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = {{"nodes": {{"a": {{"fd": b.fileno(), "addrs": ["198.18.0.1"]}}}}}}
        p = subprocess.Popen([sys.executable, {SWITCH_PY!r}, "--config-json", json.dumps(cfg)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=[b.fileno()],
                             start_new_session=True)
        p.stdout.readline()
        print(p.pid, flush=True)
        os._exit(0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=30
    )
    pid = int(out.stdout.strip())
    assert wait_gone(pid), "switch outlived its parent"


# --------------------------------------------------------------------------
# part 2: real labs (root, namespaces, TUN)
# --------------------------------------------------------------------------


def test_skip_or_fail_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for env, strict in (
        ({}, False),
        ({"CI": "true"}, True),
        ({"MONLAT_REQUIRE_LAB": "1"}, True),
        ({"CI": "false"}, False),
    ):
        monkeypatch.delenv("CI", raising=False)
        monkeypatch.delenv("MONLAT_REQUIRE_LAB", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert lab_required() is strict
        expected = pytest.fail.Exception if strict else pytest.skip.Exception
        with pytest.raises(expected, match="no tun here"):
            skip_or_fail("no tun here")


def test_parse_ping() -> None:
    out = textwrap.dedent(
        """\
        PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.
        64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=5.21 ms
        64 bytes from 198.18.0.2: icmp_seq=3 ttl=64 time=10.1 ms

        --- 198.18.0.2 ping statistics ---
        3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms
        """
    )
    res = parse_ping(out)
    assert res.transmitted == 3 and res.received == 2 and res.rtts_ms == (5.21, 10.1)
    assert abs(res.loss - 1 / 3) < 1e-9 and res.median_ms == pytest.approx(7.655)
    assert res.percentile_ms(99) == 10.1 and res.percentile_ms(50) == 5.21
