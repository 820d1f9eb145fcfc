import socket
import struct

import icmplib
import pytest

from monlat.agent.probe.icmp import EchoBuilder, Ignored, Packet, checksum, parse

COOKIE = b"monlat01"


def _reply_from_request(request: bytes, family: int) -> bytes:
    reply_type = 0 if family == socket.AF_INET else 129
    return bytes([reply_type]) + request[1:]


def _ipv4_header(source: str, destination: str, length: int) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + length, 0, 0, 64, socket.IPPROTO_ICMP, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip


@pytest.mark.parametrize("size", [0, 1, 2, 7, 56, 57, 1400])
def test_checksum_matches_icmplib(size: int) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    # _checksum uses no instance state; calling it unbound avoids opening a socket.
    assert checksum(data) == icmplib.ICMPv4Socket._checksum(None, data)


def test_checksum_of_built_request_verifies_to_zero() -> None:
    packet = EchoBuilder(socket.AF_INET, COOKIE, 56).build(0x1234, 7, 99)
    assert len(packet) == 8 + 56
    assert checksum(packet) == 0


def test_reply_round_trip_ipv4_raw() -> None:
    request = EchoBuilder(socket.AF_INET, COOKIE, 56).build(0x1234, 7, 99)
    reply = _reply_from_request(request, socket.AF_INET)
    data = _ipv4_header("10.0.0.2", "10.0.0.1", len(reply)) + reply
    packet = parse(data, socket.AF_INET, "10.0.0.2", ip_header=True)
    assert packet == Packet(False, "10.0.0.2", 0x1234, 7, COOKIE, 99, 0, 0, "10.0.0.2")


def test_reply_round_trip_ipv6_without_header() -> None:
    request = EchoBuilder(socket.AF_INET6, COOKIE, 24).build(5, 65535, 2**32 - 1)
    packet = parse(_reply_from_request(request, socket.AF_INET6), socket.AF_INET6, "::1",
                   ip_header=False)  # fmt: skip
    assert isinstance(packet, Packet)
    assert (packet.sequence, packet.token, packet.cookie) == (65535, 2**32 - 1, COOKIE)


def test_truncated_and_other_types_are_classified() -> None:
    assert parse(b"\x00\x00\x00", socket.AF_INET, "1.1.1.1", ip_header=False) is Ignored.TRUNCATED
    assert parse(b"\x45" + b"\x00" * 10, socket.AF_INET, "1.1.1.1", ip_header=True) is (
        Ignored.TRUNCATED
    )
    request = EchoBuilder(socket.AF_INET, COOKIE, 56).build(1, 1, 1)
    assert parse(request, socket.AF_INET, "1.1.1.1", ip_header=False) is Ignored.OTHER_TYPE


def test_reply_with_short_payload_has_no_cookie() -> None:
    request = EchoBuilder(socket.AF_INET, COOKIE, 56).build(1, 2, 3)
    packet = parse(_reply_from_request(request, socket.AF_INET)[:12], socket.AF_INET, "10.0.0.2",
                   ip_header=False)  # fmt: skip
    assert isinstance(packet, Packet)
    assert packet.cookie is None and packet.token is None


def test_destination_unreachable_quoting_our_request() -> None:
    request = EchoBuilder(socket.AF_INET, COOKIE, 56).build(0x4242, 9, 1234)
    quoted = _ipv4_header("10.0.0.1", "10.0.0.9", len(request)) + request
    error = struct.pack("!BBHI", 3, 1, 0, 0) + quoted
    data = _ipv4_header("10.0.0.254", "10.0.0.1", len(error)) + error
    packet = parse(data, socket.AF_INET, "10.0.0.254", ip_header=True)
    assert isinstance(packet, Packet)
    assert packet.is_error
    assert (packet.peer, packet.reporter) == ("10.0.0.9", "10.0.0.254")
    assert (packet.ident, packet.sequence, packet.token) == (0x4242, 9, 1234)
    assert (packet.icmp_type, packet.icmp_code) == (3, 1)


def test_error_quoting_something_else_is_foreign() -> None:
    udp = struct.pack("!HHHH", 1, 2, 8, 0)
    quoted = bytearray(_ipv4_header("10.0.0.1", "10.0.0.9", len(udp)) + udp)
    quoted[9] = socket.IPPROTO_UDP
    error = struct.pack("!BBHI", 3, 3, 0, 0) + bytes(quoted)
    assert parse(error, socket.AF_INET, "10.0.0.9", ip_header=False) is Ignored.FOREIGN
