"""An in-memory ICMP network for running a whole agent in the test process, without root: the
`Transport` the prober already abstracts, answering each echo request after the RTT set for its
address (or never, for an address marked down)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping

from monlat.agent.config import Config
from monlat.agent.logs import EventLog
from monlat.agent.probe.icmp import ECHO_REPLY
from monlat.agent.probe.prober import Transport
from monlat.agent.probe.sockets import Datagram


class FakeNetwork:
    def __init__(self, rtt_ms: Mapping[str, float]) -> None:
        self.rtt_ms = dict(rtt_ms)
        self.down: set[str] = set()
        self.sent = 0
        self._lock = threading.Lock()
        self._in_flight: list[tuple[int, Datagram]] = []  # (due wall ns, reply)

    def transports(self, config: Config, events: EventLog) -> Mapping[int, Transport]:
        """The agent's transport factory: one IPv4 'socket' on this network."""
        return {socket.AF_INET: FakeSocket(self)}

    def send(self, packet: bytes, address: str) -> None:
        with self._lock:
            self.sent += 1
            if address in self.down or address not in self.rtt_ms:
                return
            now = time.time_ns()
            due = now + int(self.rtt_ms[address] * 1e6)
            reply = bytes([ECHO_REPLY[socket.AF_INET]]) + packet[1:]
            self._in_flight.append((due, Datagram(reply, address, due)))

    def arrived(self) -> list[Datagram]:
        now = time.time_ns()
        with self._lock:
            ready = [d for due, d in self._in_flight if due <= now]
            self._in_flight = [(due, d) for due, d in self._in_flight if due > now]
        return ready


class FakeSocket:
    """What the prober sees: a datagram ICMP socket with kernel receive times, no transmit
    times (so the send time is the user-space one)."""

    family = socket.AF_INET
    ident = None
    tx_timestamps = False
    receive_buffer_bytes = 4 * 1024 * 1024
    kind = "dgram"
    reason = "in-memory test network"
    parses_ip_header = False

    def __init__(self, network: FakeNetwork) -> None:
        self._network = network
        self.closed = False

    def fileno(self) -> int:
        return -1

    def send(self, packet: bytes, address: str) -> int | None:
        self._network.send(packet, address)
        return None

    def receive_all(self) -> list[Datagram]:
        return self._network.arrived()

    def transmit_times(self) -> list[tuple[int, int]]:
        return []

    def close(self) -> None:
        self.closed = True
