"""Answers echo requests with forged and stray replies, in a fixed cycle (run inside a lab node).

    python -m tests.support.icmp_injector --spoof-source ADDR --late-after SECONDS \\
        --duration SECONDS

Kernel echo replies must be off in the node (net.ipv4.icmp_echo_ignore_all=1) so that only these
answers exist. Prints a JSON summary of what it sent when done.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import threading
import time

from monlat.agent.probe.icmp import checksum

BEHAVIOURS = (
    "good",
    "bad_cookie",
    "wrong_sequence",
    "wrong_source",
    "truncated",
    "duplicate",
    "late",
)


def icmp_reply(request_icmp: bytes, *, sequence_delta: int = 0, cookie_flip: bool = False,
               truncate_to: int | None = None) -> bytes:  # fmt: skip
    _, _, _, ident, sequence = struct.unpack_from("!BBHHH", request_icmp)
    payload = bytearray(request_icmp[8:])
    if cookie_flip:
        payload[0] ^= 0xFF
    if truncate_to is not None:
        payload = payload[:truncate_to]
    header = struct.pack("!BBHHH", 0, 0, 0, ident, (sequence + sequence_delta) & 0xFFFF)
    body = header + bytes(payload)
    return struct.pack(
        "!BBHHH", 0, 0, checksum(body), ident, (sequence + sequence_delta) & 0xFFFF
    ) + bytes(payload)


def ip_packet(source: str, destination: str, icmp: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, socket.IPPROTO_ICMP, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    return header + icmp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spoof-source", required=True)
    parser.add_argument("--late-after", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()

    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    spoof = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = dict.fromkeys(BEHAVIOURS, 0)
    genuine = 0  # replies that should each become exactly one measurement
    lock = threading.Lock()
    index = 0
    end = time.monotonic() + args.duration
    timers: list[threading.Timer] = []
    while time.monotonic() < end:
        ready, _, _ = select.select([icmp], [], [], 0.1)
        if not ready:
            continue
        data, (source, _) = icmp.recvfrom(65535)
        request = data[(data[0] & 0x0F) * 4 :]
        if request[0] != 8:
            continue
        behaviour = BEHAVIOURS[index % len(BEHAVIOURS)]
        index += 1
        good = icmp_reply(request)
        if behaviour == "good":
            icmp.sendto(good, (source, 0))
            genuine += 1
        elif behaviour == "bad_cookie":
            icmp.sendto(icmp_reply(request, cookie_flip=True), (source, 0))
        elif behaviour == "wrong_sequence":
            icmp.sendto(icmp_reply(request, sequence_delta=1), (source, 0))
        elif behaviour == "wrong_source":
            spoof.sendto(ip_packet(args.spoof_source, source, good), (source, 0))
        elif behaviour == "truncated":
            icmp.sendto(icmp_reply(request, truncate_to=4), (source, 0))
        elif behaviour == "duplicate":
            icmp.sendto(good, (source, 0))
            icmp.sendto(good, (source, 0))
            genuine += 1
        elif behaviour == "late":
            timer = threading.Timer(args.late_after, icmp.sendto, (good, (source, 0)))
            timer.start()
            timers.append(timer)
        with lock:
            sent[behaviour] += 1
    for timer in timers:
        timer.join()
    print(json.dumps({"sent": sent, "genuine": genuine}), flush=True)


if __name__ == "__main__":
    main()
