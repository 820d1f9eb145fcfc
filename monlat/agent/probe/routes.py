"""Which interface a peer's packets leave by, and its MTU: the size the path should carry.

Read from /proc/net/route and /proc/net/ipv6_route (the main table, longest prefix first) and
/sys/class/net/IFACE/mtu, not from a connected socket's IP_MTU: that reports the kernel's cached
path MTU, which a "fragmentation needed" lowers, and the check must keep asking for the size the
interface was configured for. The parsing is pure; the reader is injected for tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Route(NamedTuple):
    network: Network
    metric: int
    interface: str


def parse_ipv4_routes(text: str) -> list[Route]:
    """/proc/net/route: little-endian hex destination and mask; unparsable lines are skipped."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination = int(fields[1], 16).to_bytes(4, "little")
            mask = int(fields[7], 16).to_bytes(4, "little")
            network = ipaddress.IPv4Network(
                (ipaddress.IPv4Address(destination), ipaddress.IPv4Address(mask).exploded),
                strict=False,
            )
            routes.append(Route(network, int(fields[6]), fields[0]))
        except (ValueError, OverflowError):
            continue
    return routes


def parse_ipv6_routes(text: str) -> list[Route]:
    """/proc/net/ipv6_route: destination hex, prefix length hex, ..., metric, ..., interface."""
    routes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            network = ipaddress.IPv6Network((address, int(fields[1], 16)), strict=False)
            routes.append(Route(network, int(fields[5], 16), fields[9]))
        except ValueError:
            continue
    return routes


def route_interface(routes: Iterable[Route], address: str) -> str | None:
    """The interface of the most specific route to `address` (lowest metric among equals)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    best: Route | None = None
    for route in routes:
        if route.network.version != ip.version or ip not in route.network:
            continue
        if route.interface == "lo" and not ip.is_loopback:
            continue  # local and unreachable routes of the kernel's own
        if (
            best is None
            or route.network.prefixlen > best.network.prefixlen
            or (route.network.prefixlen == best.network.prefixlen and route.metric < best.metric)
        ):
            best = route
    return None if best is None else best.interface


def _read(path: Path) -> str:
    return path.read_text()


class InterfaceMtu:
    """The MTU of the interface each peer address is routed through (None when unknown)."""

    def __init__(self, read: Callable[[Path], str] = _read, proc: Path = Path("/proc")) -> None:
        self._read = read
        self._proc = proc

    def for_address(self, address: str) -> int | None:
        ipv6 = ":" in address
        table = self._proc / "net" / ("ipv6_route" if ipv6 else "route")
        try:
            text = self._read(table)
        except OSError:
            return None
        routes = parse_ipv6_routes(text) if ipv6 else parse_ipv4_routes(text)
        interface = route_interface(routes, address)
        if interface is None or "/" in interface:
            return None
        try:
            mtu = int(self._read(Path("/sys/class/net") / interface / "mtu").strip())
        except (OSError, ValueError):
            return None
        return mtu if mtu > 0 else None
