"""Floods one address with ICMP of every kind at a fixed rate (run inside a lab node, as root).

    python -m tests.support.icmp_flood --target ADDR --peer ADDR --ident N --rate PPS \
        --duration SECONDS
    python -m tests.support.icmp_flood --capture-ident-from ADDR     # in the peer's node

The second form prints the identifier of the next echo request from ADDR (the prober's own,
as the peer sees it), for the first form's --ident.

A cycle of eight packets, each kind in turn:
  reply_spoofed  echo replies "from" --peer with the prober's identifier, random sequence and
                 payload: a forged answer to a probe in flight, but for the cookie
  reply_random   echo replies from random sources, random identifier, sequence and payload
  error_quoting  destination unreachable / time exceeded quoting an IPv4 header target->peer
                 and an echo request with the prober's identifier and a random sequence
  error_random   errors quoting random bytes (random inner protocol, length and addresses)
  garbage        random ICMP type and code, random bytes of 0 to 120
  truncated      1 to 7 bytes of ICMP
  reply_random, garbage again (the cheap kinds twice: the rate is what matters)
Prints a JSON summary when done: {"sent": {kind: n}, "seconds": s, "rate": pps, "passes_filter":
n}, the last the packets a raw ICMP socket with the prober's type filter (echo reply,
unreachable, time exceeded; unknown types >= 32 pass) is given by the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import time

from monlat.agent.probe.icmp import checksum

KINDS = (
    "reply_spoofed",
    "reply_random",
    "error_quoting",
    "error_random",
    "garbage",
    "truncated",
    "reply_random",
    "garbage",
)
BURST = 50  # packets per wake-up: 10,000 pps are 200 wake-ups a second


def icmp(icmp_type: int, code: int, rest: bytes) -> bytes:
    """An ICMP message with a correct checksum (the kernel would drop nothing either way)."""
    body = struct.pack("!BBH", icmp_type, code, 0) + rest
    return struct.pack("!BBH", icmp_type, code, checksum(body)) + rest


def ip(source: bytes, destination: bytes, payload: bytes, protocol: int = 1) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, protocol, 0, source, destination
        )
        + payload
    )


class Forger:
    def __init__(self, target: str, peer: str, ident: int, seed: int) -> None:
        self.target = socket.inet_aton(target)
        self.peer = socket.inet_aton(peer)
        self.ident = ident
        self.random = random.Random(seed)

    def _source(self) -> bytes:
        """A random unicast source: the kernel drops martians (0/8, 127/8, 224/3) before any
        socket sees them, which would only make the flood smaller."""
        first = self.random.choice([n for n in range(1, 224) if n != 127])
        return bytes([first]) + self.random.randbytes(3)

    def packet(self, kind: str) -> bytes:
        r = self.random
        if kind == "reply_spoofed":
            rest = struct.pack("!HH", self.ident, r.getrandbits(16)) + r.randbytes(56)
            return ip(self.peer, self.target, icmp(0, 0, rest))
        if kind == "reply_random":
            rest = r.randbytes(4 + r.randrange(0, 64))
            return ip(self._source(), self.target, icmp(0, 0, rest))
        if kind == "error_quoting":
            inner_icmp = struct.pack("!BBHHH", 8, 0, 0, self.ident, r.getrandbits(16))
            inner = ip(self.target, self.peer, inner_icmp + r.randbytes(r.choice((0, 8, 56))))
            error_type, code = r.choice(((3, 0), (3, 1), (3, 3), (3, 4), (11, 0)))
            return ip(self._source(), self.target, icmp(error_type, code, bytes(4) + inner))
        if kind == "error_random":
            inner = r.randbytes(r.randrange(0, 80))
            return ip(self._source(), self.target, icmp(r.choice((3, 11, 12)), 0, bytes(4) + inner))
        if kind == "garbage":
            return ip(self._source(), self.target, r.randbytes(r.randrange(0, 121)))
        return ip(self._source(), self.target, r.randbytes(r.randrange(1, 8)))


def passes_filter(packet: bytes) -> bool:
    """What the kernel gives the prober's raw socket (ICMP_FILTER, net/ipv4/raw.c)."""
    message = packet[20:]
    if len(message) < 8:  # the filter cannot read a whole header: dropped
        return False
    return message[0] >= 32 or message[0] in (0, 3, 11)


def capture_ident(source: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(10)
        while True:
            data, (sender, _) = sock.recvfrom(65535)
            message = data[(data[0] & 0x0F) * 4 :]
            if sender == source and len(message) >= 8 and message[0] == 8:
                return int(struct.unpack_from("!H", message, 4)[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capture-ident-from")
    parser.add_argument("--target")
    parser.add_argument("--peer")
    parser.add_argument("--ident", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    if args.capture_ident_from:
        print(capture_ident(args.capture_ident_from), flush=True)
        return

    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    forger = Forger(args.target, args.peer, args.ident, args.seed)
    passing = 0
    sent = dict.fromkeys(KINDS, 0)
    destination = (args.target, 0)
    started = time.monotonic()
    due = started
    total = 0
    while (now := time.monotonic()) < started + args.duration:
        if now < due:
            time.sleep(due - now)
        for _ in range(BURST):
            kind = KINDS[total % len(KINDS)]
            packet = forger.packet(kind)
            try:
                raw.sendto(packet, destination)
            except OSError:
                continue  # a full send buffer: the rate is what is reported, not what was asked
            sent[kind] += 1
            total += 1
            passing += passes_filter(packet)
        due += BURST / args.rate
    seconds = time.monotonic() - started
    summary = {"sent": sent, "seconds": seconds, "rate": total / seconds, "passes_filter": passing}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
