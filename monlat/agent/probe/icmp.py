"""ICMP echo codec: build requests, parse what a socket hands back.

icmplib opens the sockets; its reply parser drops the payload, and monlat matches on a payload
cookie, so the codec lives here. Everything in this module is pure and allocation-light because it
runs once per probe and once per received packet.
"""

from __future__ import annotations

import enum
import socket
import struct
from array import array
from typing import NamedTuple

AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)
ECHO_REQUEST: dict[int, int] = {AF_INET: 8, AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {AF_INET: 0, AF_INET6: 129}
# Errors that quote our request back to us: destination unreachable, time exceeded (and, for
# IPv6, packet too big). They end a probe early instead of letting it time out.
ERROR_TYPES: dict[int, frozenset[int]] = {
    AF_INET: frozenset({3, 11}),
    AF_INET6: frozenset({1, 2, 3}),
}

COOKIE_SIZE = 8
_TOKEN = struct.Struct("!I")
_HEADER = struct.Struct("!BBHHH")
MIN_PAYLOAD = COOKIE_SIZE + _TOKEN.size
# Header, cookie and token in one unpack: the shape of nearly every packet an agent reads.
_ECHO = struct.Struct(f"!BBHHH{COOKIE_SIZE}s{_TOKEN.format[1:]}")


class Ignored(enum.Enum):
    """Why a received packet did not become a measurement (exported as a label value)."""

    TRUNCATED = "truncated"
    OTHER_TYPE = "other_type"
    FOREIGN = "foreign"  # another program's echo (identifier or cookie not ours)
    BAD_COOKIE = "bad_cookie"
    UNEXPECTED = "unexpected"  # ours in form, but no probe was waiting for it
    WRONG_SOURCE = "wrong_source"
    WRONG_SEQUENCE = "wrong_sequence"
    DUPLICATE = "duplicate"
    LATE = "late"

    # Members are singletons compared by identity; Enum's own hash is a Python-level call on
    # every counter update keyed by a reason.
    __hash__ = object.__hash__


class Packet(NamedTuple):
    """A parsed echo reply, or an ICMP error quoting one of our requests.

    A NamedTuple rather than a frozen dataclass: one is built per received packet, and tuple
    construction is several times cheaper.
    """

    is_error: bool
    peer: str  # the reply's source; for an error, the quoted request's destination
    ident: int
    sequence: int
    cookie: bytes | None  # None when an error quoted too little of the request
    token: int | None
    icmp_type: int
    icmp_code: int
    reporter: str  # who sent this packet (differs from peer for errors)


# NamedTuple's generated __new__ is a Python function; building the tuple directly skips that
# frame on the per-packet path (the same call `_make` uses).
_new_packet = tuple.__new__


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    words = array("H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    # array("H") sums in host byte order; swapping back yields network order.
    return socket.ntohs(~total & 0xFFFF)


def _word_sum(data: bytes) -> int:
    """One's-complement partial sum of big-endian 16-bit words (not folded)."""
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class EchoBuilder:
    """Builds echo requests carrying this agent's cookie and a per-probe token.

    Everything but identifier, sequence and token is fixed, so its checksum contribution is
    summed once; a request then costs a few additions instead of a pass over the packet.
    """

    def __init__(self, family: int, cookie: bytes, payload_size: int) -> None:
        if len(cookie) != COOKIE_SIZE:
            raise ValueError("cookie must be 8 bytes")
        if payload_size < MIN_PAYLOAD:
            raise ValueError(f"payload must be at least {MIN_PAYLOAD} bytes")
        self._type = ECHO_REQUEST[family]
        # ICMPv6 checksums cover a pseudo-header the kernel knows and fills in itself.
        self._compute_checksum = family == socket.AF_INET
        self._cookie = cookie
        self._padding = bytes(i & 0xFF for i in range(payload_size - MIN_PAYLOAD))
        # Type/code word, cookie and padding; the token sits on a 16-bit boundary after them.
        self._fixed_sum = (self._type << 8) + _word_sum(cookie) + _word_sum(self._padding)
        # The whole request in one pack: one allocation per probe instead of a concatenation.
        self._pack = struct.Struct(f"{_ECHO.format}{len(self._padding)}s").pack

    def build(self, ident: int, sequence: int, token: int) -> bytes:
        if not self._compute_checksum:
            return self._pack(self._type, 0, 0, ident, sequence, self._cookie, token, self._padding)
        total = self._fixed_sum + ident + sequence + (token >> 16) + (token & 0xFFFF)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        return self._pack(
            self._type, 0, ~total & 0xFFFF, ident, sequence, self._cookie, token, self._padding
        )


def parse(data: bytes, family: int, source: str, *, ip_header: bool) -> Packet | Ignored:
    """Parse one datagram from an ICMP socket.

    `ip_header` is true for raw IPv4 sockets, which deliver the IP header; ICMPv6 raw sockets and
    datagram ("ping") sockets of both families deliver the ICMP message alone.
    """
    start = 0
    if ip_header:
        if len(data) < 20:
            return Ignored.TRUNCATED
        start = (data[0] & 0x0F) * 4
    size = len(data) - start
    if size >= _ECHO.size:
        # Offsets into `data` itself: no view or slice objects for a packet this common.
        icmp_type, icmp_code, _, ident, sequence, cookie, token = _ECHO.unpack_from(data, start)
        if icmp_type == ECHO_REPLY[family]:
            return _new_packet(
                Packet,
                (False, source, ident, sequence, cookie, token, icmp_type, icmp_code, source),
            )
    elif size < _HEADER.size:
        return Ignored.TRUNCATED
    icmp_type, icmp_code, _, ident, sequence = _HEADER.unpack_from(data, start)
    if icmp_type == ECHO_REPLY[family]:
        # Shorter than our payload: no cookie, no token (the fast path above takes the rest).
        return Packet(False, source, ident, sequence, None, None, icmp_type, icmp_code, source)
    if icmp_type in ERROR_TYPES[family]:
        quoted = memoryview(data)[start + _HEADER.size :]
        return _parse_error(quoted, family, source, icmp_type, icmp_code)
    return Ignored.OTHER_TYPE


def _payload(view: memoryview) -> tuple[bytes | None, int | None]:
    if len(view) < MIN_PAYLOAD:
        return None, None
    return bytes(view[:COOKIE_SIZE]), _TOKEN.unpack_from(view, COOKIE_SIZE)[0]


def _parse_error(
    quoted: memoryview, family: int, reporter: str, icmp_type: int, icmp_code: int
) -> Packet | Ignored:
    if family == socket.AF_INET:
        if len(quoted) < 20:
            return Ignored.TRUNCATED
        header_len = (quoted[0] & 0x0F) * 4
        if quoted[9] != socket.IPPROTO_ICMP:
            return Ignored.FOREIGN
        destination = socket.inet_ntop(socket.AF_INET, bytes(quoted[16:20]))
    else:
        header_len = 40
        if len(quoted) < header_len or quoted[6] != socket.IPPROTO_ICMPV6:
            return Ignored.TRUNCATED if len(quoted) < header_len else Ignored.FOREIGN
        destination = socket.inet_ntop(socket.AF_INET6, bytes(quoted[24:40]))
    inner = quoted[header_len:]
    if len(inner) < _HEADER.size:
        return Ignored.TRUNCATED
    inner_type, _, _, ident, sequence = _HEADER.unpack_from(inner)
    if inner_type != ECHO_REQUEST[family]:
        return Ignored.FOREIGN
    cookie, token = _payload(inner[_HEADER.size :])
    return Packet(True, destination, ident, sequence, cookie, token, icmp_type, icmp_code, reporter)
