"""ICMP sockets: one per address family, raw when permitted, else the unprivileged datagram kind.

icmplib creates the socket and maps permission errors; this module adds what a latency monitor
needs on top: kernel receive timestamps, a large receive buffer, a type filter on raw sockets,
non-blocking I/O, and a start-up decision that says which kind it got and why.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
from pathlib import Path
from typing import NamedTuple

import icmplib

from monlat.agent.config import SocketMode

# <asm-generic/socket.h> and <linux/net_tstamp.h>; Python's socket module exports neither.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
_TX_SOFTWARE = 1 << 1
_RX_SOFTWARE = 1 << 3
_SOFTWARE = 1 << 4
_OPT_ID = 1 << 7
_OPT_TSONLY = 1 << 11
_TIMESTAMPING_FLAGS = _TX_SOFTWARE | _RX_SOFTWARE | _SOFTWARE | _OPT_ID | _OPT_TSONLY
_MSG_ERRQUEUE = 0x2000
_ENOMSG = 42  # sock_extended_err.ee_errno of a timestamp report
_TIMESPEC = struct.Struct("@qq")
_EXTENDED_ERR = struct.Struct("@IBBBBII")
# ee_errno and ee_data of a sock_extended_err, the only fields a timestamp report needs.
_ERRNO_AND_DATA = struct.Struct("@I8xI")
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1
_RECEIVE_BUFFER = 4 * 1024 * 1024
_SEND_BUFFER = 1024 * 1024
_ANCILLARY_SIZE = socket.CMSG_SPACE(3 * _TIMESPEC.size)
_ERRQUEUE_ANCILLARY_SIZE = _ANCILLARY_SIZE + socket.CMSG_SPACE(_EXTENDED_ERR.size + 64)
_MAX_PACKET = 65535


class ProbeSetupError(Exception):
    """No usable ICMP socket; the message says what to grant."""


class Datagram(NamedTuple):
    data: bytes
    source: str
    received_ns: int  # CLOCK_REALTIME from the kernel, when it stamped the packet


# NamedTuple's generated __new__ is a Python function; building the tuple directly skips that
# frame once per received packet (the same call `_make` uses).
_new_datagram = tuple.__new__


class IcmpSocket:
    """A non-blocking ICMP socket with kernel receive timestamps."""

    def __init__(self, family: int, raw: bool, reason: str) -> None:
        self.family = family
        self.raw = raw
        self.reason = reason
        factory = icmplib.ICMPv4Socket if family == socket.AF_INET else icmplib.ICMPv6Socket
        # icmplib closes its socket when garbage-collected, so keep the owner alive with it.
        self._owner = factory(privileged=raw)
        self.sock: socket.socket = self._owner.sock
        self.sock.setblocking(False)
        _set_buffer(self.sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", 33))
        _set_buffer(self.sock, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", 32))
        # What the kernel granted (it reports double the usable size).
        self.receive_buffer_bytes = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        self.tx_timestamps = _enable_timestamps(self.sock)
        self._tx_key = 0
        # Only IPv6 sources can carry a scope ("fe80::1%eth0").
        self._scoped_sources = family == socket.AF_INET6
        if raw:
            self.ident: int | None = random.randrange(1, 0xFFFF)
            _install_type_filter(self.sock, family)
        else:
            # The kernel owns the identifier of a datagram ICMP socket and delivers us only
            # replies carrying it; matching relies on sequence, cookie and token.
            self.ident = None

    @property
    def kind(self) -> str:
        return "raw" if self.raw else "dgram"

    @property
    def parses_ip_header(self) -> bool:
        return self.raw and self.family == socket.AF_INET

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, packet: bytes, address: str) -> int | None:
        """Send; returns the key under which the kernel reports the transmit time, if it does."""
        self.sock.sendto(packet, (address, 0))
        if not self.tx_timestamps:
            return None
        # SOF_TIMESTAMPING_OPT_ID numbers the packets of a datagram socket 0, 1, 2, ...; a send
        # that failed in the kernel after numbering would shift the count, so the prober checks
        # each reported time against the window of the send it is attributed to.
        key = self._tx_key
        self._tx_key = (key + 1) & 0xFFFFFFFF
        return key

    def transmit_times(self) -> list[tuple[int, int]]:
        """(key, CLOCK_REALTIME ns) for each packet the kernel has reported as sent."""
        reported: list[tuple[int, int]] = []
        # Bound once: this loop runs once per probe sent.
        recvmsg, append = self.sock.recvmsg, reported.append
        timespec, error_fields = _TIMESPEC.unpack_from, _ERRNO_AND_DATA.unpack_from
        sol_socket, error_size = socket.SOL_SOCKET, _EXTENDED_ERR.size
        while True:
            try:
                _, ancillary, _, _ = recvmsg(0, _ERRQUEUE_ANCILLARY_SIZE, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return reported
            stamp, key = 0, -1
            for level, kind, data in ancillary:
                if kind == SCM_TIMESTAMPING and level == sol_socket:
                    seconds, nanoseconds = timespec(data)
                    stamp = seconds * 1_000_000_000 + nanoseconds
                elif len(data) >= error_size:
                    error, info = error_fields(data)
                    if error == _ENOMSG:
                        key = info
            if key >= 0 and stamp:
                append((key, stamp))

    def receive_all(self) -> list[Datagram]:
        """Everything queued, read without blocking."""
        received: list[Datagram] = []
        # Bound once: this loop runs once per reply.
        recvmsg, append = self.sock.recvmsg, received.append
        timespec, timespec_size = _TIMESPEC.unpack_from, _TIMESPEC.size
        scoped = self._scoped_sources
        while True:
            try:
                data, ancillary, _, address = recvmsg(_MAX_PACKET, _ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return received
            except OSError as err:
                # An ICMP error queued on a datagram socket surfaces as a failed read; the
                # probe it concerns simply times out.
                if err.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            # SCM_TIMESTAMPING carries three timespecs, the software one first (SCM_TIMESTAMPNS
            # one); the receive path asks for nothing else, so it is the only message.
            stamp = 0
            if ancillary:
                stamps = ancillary[0][2]
                if len(stamps) >= timespec_size:
                    seconds, nanoseconds = timespec(stamps)
                    stamp = seconds * 1_000_000_000 + nanoseconds
            source = address[0]
            if scoped and "%" in source:
                source = source.split("%", 1)[0]
            append(_new_datagram(Datagram, (data, source, stamp)))

    def close(self) -> None:
        self._owner.close()


def _enable_timestamps(sock: socket.socket) -> bool:
    """Kernel timestamps on receive, and on transmit where the kernel offers them.

    True when transmit times will be reported (SO_TIMESTAMPING); otherwise receive times
    alone (SO_TIMESTAMPNS) and the send time is read in user space.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _TIMESTAMPING_FLAGS)
        return True
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return False


def _set_buffer(sock: socket.socket, option: int, force_option: int) -> None:
    size = _RECEIVE_BUFFER if option == socket.SO_RCVBUF else _SEND_BUFFER
    try:
        # The FORCE variant ignores net.core.*mem_max but needs CAP_NET_ADMIN; fall back quietly.
        sock.setsockopt(socket.SOL_SOCKET, force_option, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


def _install_type_filter(sock: socket.socket, family: int) -> None:
    """Raw sockets see every ICMP packet the host receives; keep only replies and errors."""
    if family == socket.AF_INET:
        allowed = (1 << 0) | (1 << 3) | (1 << 11)
        sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~allowed & 0xFFFFFFFF))
        return
    blocked = [0xFFFFFFFF] * 8
    for icmp_type in (1, 2, 3, 129):
        blocked[icmp_type >> 5] &= ~(1 << (icmp_type & 31)) & 0xFFFFFFFF
    sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *blocked))


def ping_group_range(path: Path = Path("/proc/sys/net/ipv4/ping_group_range")) -> tuple[int, int]:
    try:
        low, high = path.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 1, 0


def dgram_allowed(gids: set[int], group_range: tuple[int, int]) -> bool:
    low, high = group_range
    return any(low <= gid <= high for gid in gids)


def open_socket(family: int, mode: SocketMode) -> IcmpSocket:
    """Open the best ICMP socket `mode` allows, or explain what to grant."""
    gids = {os.getegid(), *os.getgroups()}
    group_range = ping_group_range()
    errors: list[str] = []
    if mode in (SocketMode.AUTO, SocketMode.RAW):
        try:
            return IcmpSocket(family, raw=True, reason="CAP_NET_RAW is available")
        except icmplib.SocketPermissionError:
            errors.append("raw socket refused (no CAP_NET_RAW)")
    if mode in (SocketMode.AUTO, SocketMode.DGRAM):
        try:
            return IcmpSocket(
                family,
                raw=False,
                reason=f"net.ipv4.ping_group_range {group_range[0]} {group_range[1]} "
                f"includes group {min(g for g in gids if group_range[0] <= g <= group_range[1])}"
                if dgram_allowed(gids, group_range)
                else "datagram ICMP socket permitted",
            )
        except icmplib.SocketPermissionError:
            errors.append(
                f"datagram socket refused (net.ipv4.ping_group_range is "
                f"{group_range[0]} {group_range[1]}, process groups {sorted(gids)})"
            )
    except_family = "ICMPv4" if family == socket.AF_INET else "ICMPv6"
    raise ProbeSetupError(
        f"cannot open an {except_family} socket: {'; '.join(errors)}. Grant CAP_NET_RAW, or set "
        f"net.ipv4.ping_group_range to include group {os.getegid()}"
    )


# <linux/in.h>, <linux/in6.h>, <linux/errqueue.h>: not in Python's socket module.
_IP_MTU_DISCOVER = 10
_IP_RECVERR = 11
_IPV6_MTU_DISCOVER = 23
_IPV6_RECVERR = 25
# Don't Fragment always, and ignore the kernel's cached path MTU: every check asks the path
# itself, even after a "fragmentation needed" lowered what the kernel believes.
_PMTUDISC_PROBE = 3
_ORIGIN_ICMP = 2
_ORIGIN_ICMP6 = 3
_ERROR_FIELDS = struct.Struct("@IBBBBII")  # sock_extended_err


class QueuedError(NamedTuple):
    """An ICMP error the kernel matched to one of our requests (IP_RECVERR)."""

    icmp_type: int
    icmp_code: int
    info: int  # the next-hop MTU of a "fragmentation needed" / "packet too big"
    quoted: bytes  # our request as quoted: its ICMP header and as much payload as came back

    @property
    def too_big(self) -> bool:
        return (self.icmp_type, self.icmp_code) in ((3, 4), (2, 0))


class PathMtuSocket:
    """An ICMP socket for path MTU checks: Don't Fragment set, errors queued to us with the
    MTU they report, no timestamps (a check needs an answer, not a time).

    Its own socket, so that the large requests, the DF setting and the error queue never touch
    the latency probes' socket and its transmit timestamps.
    """

    def __init__(self, family: int, mode: SocketMode) -> None:
        self._socket = open_socket(family, mode)
        self.family = family
        self.sock = self._socket.sock
        self.raw = self._socket.raw
        self.ident = self._socket.ident
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_PROBE)
            self.sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_PROBE)
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
        if self.raw:
            # Errors come through the error queue with their MTU; only replies on the socket.
            _install_reply_filter(self.sock, family)

    @property
    def parses_ip_header(self) -> bool:
        return self._socket.parses_ip_header

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, packet: bytes, address: str) -> bool:
        """False when the kernel refused it here (larger than the interface, no route)."""
        try:
            self.sock.sendto(packet, (address, 0))
        except OSError:
            return False
        return True

    def receive_all(self) -> list[tuple[bytes, str]]:
        received: list[tuple[bytes, str]] = []
        while True:
            try:
                data, address = self.sock.recvfrom(_MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return received
            except OSError:
                continue  # a pending error reported on read; the error queue has it whole
            received.append((data, address[0].split("%", 1)[0]))

    def errors(self) -> list[QueuedError]:
        queued: list[QueuedError] = []
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(
                    _MAX_PACKET, socket.CMSG_SPACE(_ERROR_FIELDS.size + 64), _MSG_ERRQUEUE
                )
            except (BlockingIOError, InterruptedError):
                return queued
            except OSError:
                return queued
            for _level, _kind, field_data in ancillary:
                if len(field_data) < _ERROR_FIELDS.size:
                    continue
                _, origin, icmp_type, icmp_code, _, info, _ = _ERROR_FIELDS.unpack_from(field_data)
                if origin in (_ORIGIN_ICMP, _ORIGIN_ICMP6):
                    queued.append(QueuedError(icmp_type, icmp_code, info, data))

    def close(self) -> None:
        self._socket.close()


def _install_reply_filter(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET:
        sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~1 & 0xFFFFFFFF))
        return
    blocked = [0xFFFFFFFF] * 8
    blocked[129 >> 5] &= ~(1 << (129 & 31)) & 0xFFFFFFFF
    sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *blocked))
