"""User-space packet switch with per-directed-link delay and loss.

Standalone (stdlib only, no package imports) so it runs both as
``python3 -m tests.support.lab.switch`` and as ``python3 path/to/switch.py``.

Each lab node owns one TUN interface (IFF_TUN | IFF_NO_PI, so every read is
exactly one IPv4 or IPv6 packet).  The switch reads a packet from the TUN of
node ``src``, looks the destination address up in its table to find node
``dst``, and writes the packet to ``dst``'s TUN after the delay configured for
the directed link ``src -> dst`` (or drops it with the link's loss
probability).  Packets to unknown destinations (multicast, link-local, anything
that is not a lab node address) are dropped, so nothing ever leaves the lab.

Startup: ``--config FILE`` or ``--config-json TEXT``::

    {"nodes": {"n1": {"ifname": "mlt%d", "addrs": ["198.18.0.1", "fd00:213::1"]},
               "n2": {"fd": 7, "addrs": ["198.18.0.2"]}},
     "default": {"delay_ms": 1.0, "loss": 0.0, "jitter_ms": 0.0},
     "links": [{"src": "n1", "dst": "n2", "delay_ms": 2.5}],
     "seed": 1, "spin_us": 200, "realtime": false}

A node may also own routed prefixes (``"prefixes": ["10.244.1.0/24"]``: a Kubernetes node's
pod network): a packet whose destination is no node address goes to the node whose prefix
holds it, over that node's links.

A node either names a TUN to create (a ``%d`` template lets the kernel pick a
free name) or gives an inherited, already attached TUN fd.  When everything is
set up the switch prints one JSON line ``{"ok": true, "ready": true,
"ifnames": {...}}`` on stdout.

Control: one JSON object per line on stdin, one JSON reply per line on stdout:

    {"op": "set_link", "src": "n1", "dst": "n2", "delay_ms": 3, "loss": 0.1}
    {"op": "set_link", "src": "n1", "dst": "n2", "mtu": 1400, "too_big_reports": false}
    {"op": "set_node", "node": "n1", "up": false}      # cut / restore a node
    {"op": "stats"}  {"op": "reset_stats"}  {"op": "ping"}  {"op": "quit"}

The switch exits on EOF of stdin (its parent died or closed the pipe), when
its parent process changes, on SIGTERM/SIGINT/SIGHUP, or on ``quit``.

MTU: a link with ``mtu`` (0: none) is a middle hop that carries IP packets up to that size.
A larger IPv4 packet with Don't Fragment set, or any larger IPv6 packet, is not forwarded; with
``too_big_reports`` (the default) the hop answers it as a router does, with ICMP "fragmentation
needed" or ICMPv6 "packet too big" naming the MTU, sent back over the reverse link from the
packet's destination address; without, the packet just vanishes (a filtered report: an MTU
black hole). Larger IPv4 packets without DF pass whole (fragmentation is not emulated).

Timing: deliveries are kept in a heap keyed by (deadline, seq); the loop
sleeps in select() (microsecond timeout, timer slack set to 1 ns) and, when
the next deadline is closer than ``spin_us``, polls without sleeping so the
write happens within a few microseconds of the deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import ipaddress
import json
import os
import random
import select
import signal
import struct
import sys
import time
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_TIMERSLACK = 29

MAX_PACKET = 65535
READ_BATCH = 64  # packets drained per readable fd per loop turn (fairness)
LATENESS_SAMPLES = 20000


def open_tun(name: str) -> tuple[int, str]:
    """Create (or attach to) TUN ``name``; return (fd, actual interface name)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except BaseException:
        os.close(fd)
        raise
    return fd, res[:16].rstrip(b"\0").decode()


def _set_timer_slack_ns(ns: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except Exception:  # pragma: no cover - best effort only
        pass


def _is_echo_request(pkt: bytes) -> bool:
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        first_fragment = (pkt[6] & 0x1F) == 0 and pkt[7] == 0
        return pkt[9] == 1 and first_fragment and len(pkt) > ihl and pkt[ihl] == 8
    # IPv6 without extension headers: next header ICMPv6, type 128
    return len(pkt) > 40 and pkt[6] == 58 and pkt[40] == 128


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def too_big_report(pkt: bytes, mtu: int) -> bytes | None:
    """What a router sends back for ``pkt`` that does not fit its next hop's ``mtu``: from the
    packet's destination to its source, quoting as much of it as the RFCs allow."""
    if pkt[0] >> 4 == 4:
        quoted = pkt[: 576 - 28]
        icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted
        icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                             pkt[16:20], pkt[12:16])  # fmt: skip
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + icmp
    if len(pkt) < 40:
        return None
    source, destination = pkt[24:40], pkt[8:24]
    quoted = pkt[: 1280 - 48]
    body = struct.pack("!BBHI", 2, 0, 0, mtu) + quoted
    pseudo = source + destination + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    return struct.pack("!IHBB", 0x60000000, len(body), 58, 64) + source + destination + body


class LinkState:
    __slots__ = ("delay_s", "down_drops", "echo_requests", "forwarded", "jitter_s", "loss", "lost",
                 "mtu", "too_big", "too_big_reports")  # fmt: skip

    def __init__(self, delay_ms: float, loss: float, jitter_ms: float) -> None:
        self.delay_s = 0.0
        self.loss = 0.0
        self.jitter_s = 0.0
        self.forwarded = 0
        self.lost = 0
        self.down_drops = 0
        self.echo_requests = 0  # ICMP/ICMPv6 echo requests entering this link
        self.mtu = 0
        self.too_big_reports = True
        self.too_big = 0  # packets not forwarded for their size
        self.update(delay_ms=delay_ms, loss=loss, jitter_ms=jitter_ms)

    def update(
        self,
        delay_ms: Any = None,
        loss: Any = None,
        jitter_ms: Any = None,
        mtu: Any = None,
        too_big_reports: Any = None,
    ) -> None:
        if mtu is not None:
            m = int(mtu)
            if m != 0 and not 68 <= m <= MAX_PACKET:
                raise ValueError(f"mtu must be 0 or within [68, {MAX_PACKET}], got {mtu!r}")
            self.mtu = m
        if too_big_reports is not None:
            self.too_big_reports = bool(too_big_reports)
        if delay_ms is not None:
            d = float(delay_ms)
            if not d >= 0.0:
                raise ValueError(f"delay_ms must be >= 0, got {delay_ms!r}")
            self.delay_s = d / 1000.0
        if loss is not None:
            p = float(loss)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"loss must be within [0, 1], got {loss!r}")
            self.loss = p
        if jitter_ms is not None:
            j = float(jitter_ms)
            if not j >= 0.0:
                raise ValueError(f"jitter_ms must be >= 0, got {jitter_ms!r}")
            self.jitter_s = j / 1000.0

    def describe(self) -> dict[str, Any]:
        return {
            "delay_ms": self.delay_s * 1000.0,
            "loss": self.loss,
            "jitter_ms": self.jitter_s * 1000.0,
            "forwarded": self.forwarded,
            "lost": self.lost,
            "down_drops": self.down_drops,
            "echo_requests": self.echo_requests,
            "mtu": self.mtu,
            "too_big_reports": self.too_big_reports,
            "too_big": self.too_big,
        }


class Switch:
    def __init__(self, config: dict[str, Any]) -> None:
        nodes = config.get("nodes") or {}
        if not isinstance(nodes, dict) or not nodes:
            raise ValueError("config.nodes must be a non-empty object")
        self.names: list[str] = list(nodes)
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.fds: list[int] = []
        self.ifnames: dict[str, str] = {}
        self.routes: dict[bytes, int] = {}
        # (network, node) pairs, longest first: tried only when no node address matches.
        self.prefixes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = []
        self.up: list[bool] = [True] * len(self.names)
        self.rng = random.Random(config.get("seed"))
        self.spin_s = float(config.get("spin_us", 200)) / 1e6
        default = config.get("default") or {}
        self.default = (
            float(default.get("delay_ms", 0.0)),
            float(default.get("loss", 0.0)),
            float(default.get("jitter_ms", 0.0)),
        )
        n = len(self.names)
        self.links: list[list[LinkState]] = [
            [LinkState(*self.default) for _ in range(n)] for _ in range(n)
        ]
        for link in config.get("links") or []:
            self._link(link["src"], link["dst"]).update(
                link.get("delay_ms"), link.get("loss"), link.get("jitter_ms"),
                link.get("mtu"), link.get("too_big_reports"),
            )  # fmt: skip
        try:
            for name in self.names:
                spec = nodes[name]
                if "fd" in spec:
                    fd = int(spec["fd"])
                    os.set_blocking(fd, False)
                    os.set_inheritable(fd, False)
                    ifname = str(spec.get("ifname", ""))
                else:
                    fd, ifname = open_tun(str(spec.get("ifname", "mlt%d")))
                self.fds.append(fd)
                self.ifnames[name] = ifname
                for addr in spec.get("addrs", []):
                    packed = ipaddress.ip_address(addr).packed
                    if packed in self.routes:
                        raise ValueError(f"duplicate address {addr}")
                    self.routes[packed] = self.index[name]
                for prefix in spec.get("prefixes", []):
                    self.prefixes.append((ipaddress.ip_network(prefix), self.index[name]))
            self.prefixes.sort(key=lambda entry: -entry[0].prefixlen)
        except BaseException:
            self.close()
            raise
        self.fd_node: dict[int, int] = {fd: i for i, fd in enumerate(self.fds)}
        self.heap: list[tuple[float, int, int, bytes]] = []  # (deadline, seq, dst, pkt)
        self.seq = 0
        self._reset_counters()

    # -- helpers -----------------------------------------------------------
    def _link(self, src: str, dst: str) -> LinkState:
        try:
            return self.links[self.index[src]][self.index[dst]]
        except KeyError as exc:
            raise ValueError(f"unknown node {exc.args[0]!r}") from None

    def _reset_counters(self) -> None:
        self.unknown_dst = 0
        self.malformed = 0
        self.write_errors = 0
        self.lateness: list[float] = []
        self.lateness_pos = 0
        self.lateness_max = 0.0
        for row in self.links:
            for link in row:
                link.forwarded = link.lost = link.down_drops = link.echo_requests = 0
                link.too_big = 0

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    # -- data path ---------------------------------------------------------
    def _route(self, pkt: bytes) -> int | None:
        if len(pkt) < 20:
            return None
        version = pkt[0] >> 4
        if version == 4:
            dst = pkt[16:20]
        elif version == 6 and len(pkt) >= 40:
            dst = pkt[24:40]
        else:
            return None
        node = self.routes.get(dst)
        if node is None and self.prefixes:
            address = ipaddress.ip_address(dst)
            for network, owner in self.prefixes:
                if address in network:
                    return owner
        return node

    def _ingress(self, src: int, pkt: bytes, now: float) -> None:
        version = pkt[0] >> 4 if pkt else 0
        if len(pkt) < 20 or version not in (4, 6) or (version == 6 and len(pkt) < 40):
            self.malformed += 1
            return
        dst = self._route(pkt)
        if dst is None:
            self.unknown_dst += 1
            return
        link = self.links[src][dst]
        if _is_echo_request(pkt):
            link.echo_requests += 1  # tells who probed whom, whatever happens next
        if not (self.up[src] and self.up[dst]):
            link.down_drops += 1
            return
        if link.loss > 0.0 and (link.loss >= 1.0 or self.rng.random() < link.loss):
            link.lost += 1
            return
        if link.mtu and len(pkt) > link.mtu and (version == 6 or pkt[6] & 0x40):
            link.too_big += 1
            if link.too_big_reports:
                report = too_big_report(pkt, link.mtu)
                if report is not None:
                    self.seq += 1
                    heapq.heappush(
                        self.heap, (now + self.links[dst][src].delay_s, self.seq, src, report)
                    )
            return
        delay = link.delay_s
        if link.jitter_s > 0.0:
            delay = max(0.0, delay + self.rng.uniform(-link.jitter_s, link.jitter_s))
        link.forwarded += 1
        self.seq += 1
        heapq.heappush(self.heap, (now + delay, self.seq, dst, pkt))

    def _drain(self, fd: int) -> bool:
        """Read up to READ_BATCH packets from ``fd``; False if the fd is dead."""
        src = self.fd_node[fd]
        for _ in range(READ_BATCH):
            try:
                pkt = os.read(fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                # EBADFD/EIO...: the interface went away (namespace deleted).
                print(
                    f"switch: node {self.names[src]}: read failed: {exc}; ignoring it",
                    file=sys.stderr,
                )
                return False
            if not pkt:  # EOF (socketpair peer closed); a TUN never does this
                return False
            self._ingress(src, pkt, time.monotonic())
            if self.heap and self.heap[0][0] <= time.monotonic():
                self._deliver_due()  # zero delay: forward without another loop turn
        return True

    def _deliver_due(self) -> None:
        heap = self.heap
        while heap:
            now = time.monotonic()
            if heap[0][0] > now:
                return
            deadline, _seq, dst, pkt = heapq.heappop(heap)
            late = now - deadline  # how late the write starts
            try:
                os.write(self.fds[dst], pkt)
            except OSError:
                self.write_errors += 1
                continue
            self.lateness_max = max(self.lateness_max, late)
            if len(self.lateness) < LATENESS_SAMPLES:
                self.lateness.append(late)
            else:
                self.lateness[self.lateness_pos] = late
                self.lateness_pos = (self.lateness_pos + 1) % LATENESS_SAMPLES

    # -- control -----------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "set_link":
            self._link(req["src"], req["dst"]).update(
                req.get("delay_ms"), req.get("loss"), req.get("jitter_ms"),
                req.get("mtu"), req.get("too_big_reports"),
            )  # fmt: skip
            return {"ok": True}
        if op == "set_node":
            if req["node"] not in self.index:
                raise ValueError(f"unknown node {req['node']!r}")
            self.up[self.index[req["node"]]] = bool(req["up"])
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": self.stats()}
        if op == "reset_stats":
            self._reset_counters()
            return {"ok": True}
        if op == "quit":
            return {"ok": True, "quit": True}
        raise ValueError(f"unknown op {op!r}")

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.lateness)

        def pct(q: float) -> float:
            if not lat:
                return 0.0
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6

        links = {}
        for i, src in enumerate(self.names):
            for j, dst in enumerate(self.names):
                if i != j:
                    links[f"{src}>{dst}"] = self.links[i][j].describe()
        return {
            "links": links,
            "nodes_up": {n: self.up[i] for i, n in enumerate(self.names)},
            "unknown_dst": self.unknown_dst,
            "malformed": self.malformed,
            "write_errors": self.write_errors,
            "queued": len(self.heap),
            "lateness_us": {
                "count": len(lat),
                "p50": pct(0.50),
                "p99": pct(0.99),
                "max": self.lateness_max * 1e6,
            },
        }

    # -- main loop ---------------------------------------------------------
    def run(self, ctl_in: int, ctl_out: int) -> int:
        os.set_blocking(ctl_in, False)
        ppid = os.getppid()
        next_ppid_check = time.monotonic() + 1.0
        inbuf = b""
        rfds = [ctl_in, *self.fds]
        while True:
            self._deliver_due()
            now = time.monotonic()
            if now >= next_ppid_check:
                if os.getppid() != ppid:
                    return 0
                next_ppid_check = now + 1.0
            timeout = next_ppid_check - now
            if self.heap:
                until = self.heap[0][0] - now
                # Close to a deadline: poll instead of sleeping (precise).
                timeout = 0.0 if until <= self.spin_s else min(timeout, until - self.spin_s)
            try:
                readable, _, _ = select.select(rfds, [], [], max(0.0, timeout))
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            for fd in readable:
                if fd != ctl_in:
                    if not self._drain(fd):
                        rfds.remove(fd)
                    continue
                try:
                    chunk = os.read(ctl_in, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return 0  # parent went away / closed the pipe
                inbuf += chunk
                while b"\n" in inbuf:
                    line, inbuf = inbuf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        reply = self.handle(json.loads(line))
                    except Exception as exc:  # bad request must not kill us
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    _write_all(ctl_out, (json.dumps(reply) + "\n").encode())
                    if reply.get("quit"):
                        return 0


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        data = data[n:]


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="path of a JSON config file")
    src.add_argument("--config-json", help="JSON config text")
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            config = json.load(fh)
    else:
        config = json.loads(args.config_json)
    _set_timer_slack_ns(1)
    realtime = False
    if config.get("realtime"):
        try:  # fewer scheduling outliers; spinning is bounded by spin_us per deadline
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            realtime = True
        except OSError:
            pass
    ctl_out = sys.stdout.fileno()
    try:
        switch = Switch(config)
    except Exception as exc:
        _write_all(
            ctl_out,
            (json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n").encode(),
        )
        return 2
    try:
        _write_all(
            ctl_out,
            (
                json.dumps(
                    {"ok": True, "ready": True, "ifnames": switch.ifnames, "realtime": realtime}
                )
                + "\n"
            ).encode(),
        )
        return switch.run(sys.stdin.fileno(), ctl_out)
    finally:
        switch.close()


if __name__ == "__main__":
    sys.exit(main())
