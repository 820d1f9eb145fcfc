"""Answer ICMPv4 echo requests for a whole prefix from user space, behind a TUN device.

The steady-state benchmark probes thousands of peers on one machine. Probed on loopback, the
agent's own send call also runs the kernel's echo-reply path (the "peer" is the same kernel, in
the same system call), so the agent is charged for work its peers do in a cluster. Behind this
responder the agent pays what it pays when deployed: its sends leave through a device, and the
replies are delivered to its socket by another process (here the responder's writes; on a node,
the NIC's interrupt handling).

    python3 benchmarks/echo_responder.py --device mlsteady0 --local 198.18.0.1 \\
        --peers 198.19.0.0/16

Run it inside a network namespace of its own (the steady benchmark does): it adds the local
address and the route to the prefix on the device. Stdlib only; prints `ready` when answering,
exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import struct
import subprocess
import sys

_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def echo_reply(packet: bytes) -> bytes | None:
    """The reply to an IPv4 ICMP echo request, or None for anything else.

    Swapping the addresses leaves the IP header checksum as it was; the ICMP checksum is
    adjusted for the type going from 8 to 0 (RFC 1624) instead of recomputed.
    """
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    start = (packet[0] & 0x0F) * 4
    if packet[start] != 8:
        return None
    checksum = struct.unpack_from("!H", packet, start + 2)[0] + 0x0800
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    reply = bytearray(packet)
    reply[12:16], reply[16:20] = packet[16:20], packet[12:16]
    reply[start] = 0
    struct.pack_into("!H", reply, start + 2, checksum)
    return bytes(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="mlsteady0")
    parser.add_argument("--local", default="198.18.0.1", help="the agent's address")
    parser.add_argument("--peers", default="198.19.0.0/16", help="the prefix answered")
    args = parser.parse_args(argv)
    fd = open_tun(args.device)
    for command in (
        ["ip", "addr", "add", f"{args.local}/32", "dev", args.device],
        ["ip", "link", "set", args.device, "up"],
        ["ip", "route", "add", args.peers, "dev", args.device, "src", args.local],
    ):
        subprocess.run(command, check=True)
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    os.set_blocking(fd, False)
    while True:
        readable, _, _ = select.select([fd, stdin], [], [])
        if stdin in readable and not os.read(stdin, 4096):
            return 0
        # Everything queued before sleeping again: one select per burst, not per packet.
        while True:
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                break
            reply = echo_reply(packet)
            if reply is not None:
                os.write(fd, reply)


if __name__ == "__main__":
    raise SystemExit(main())
