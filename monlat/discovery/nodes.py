"""Pure decisions about Kubernetes Nodes: which address to probe, and the node cache.

Nodes are handled as the API's JSON (dicts), not as generated client models: lighter for thousands
of nodes, and testable with literal data.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monlat.config import IpFamily
from monlat.discovery import Peer

NodeObject = Mapping[str, Any]


@dataclass(frozen=True)
class AddressPolicy:
    types: tuple[str, ...] = ("InternalIP", "ExternalIP")
    family: IpFamily | None = IpFamily.IPV4  # a preference; None takes the first usable address


def _family(address: str) -> IpFamily | None:
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return None  # e.g. a Hostname entry
    return IpFamily.IPV4 if version == 4 else IpFamily.IPV6


def choose_address(addresses: Iterable[Mapping[str, str]], policy: AddressPolicy) -> str | None:
    """The first address type in the policy's order that has an IP wins; within it, the
    preferred family, else the other one."""
    entries = [(entry.get("type", ""), entry.get("address", "")) for entry in addresses]
    for wanted_type in policy.types:
        candidates = [
            (address, family)
            for kind, address in entries
            if kind == wanted_type and (family := _family(address)) is not None
        ]
        if not candidates:
            continue
        for address, family in candidates:
            if policy.family is None or family is policy.family:
                return str(ipaddress.ip_address(address))
        return str(ipaddress.ip_address(candidates[0][0]))
    return None


def node_name(node: NodeObject) -> str:
    return str(node.get("metadata", {}).get("name", ""))


def peer_for(node: NodeObject, policy: AddressPolicy) -> Peer | None:
    name = node_name(node)
    address = choose_address(node.get("status", {}).get("addresses") or (), policy)
    if not name or address is None:
        return None
    return Peer(name, address)


class NodeCache:
    """The last known Nodes, updated by list and watch events; yields the peer set."""

    def __init__(self, self_name: str, policy: AddressPolicy) -> None:
        self._self_name = self_name
        self._policy = policy
        self._nodes: dict[str, Peer | None] = {}

    def replace(self, nodes: Iterable[NodeObject]) -> None:
        self._nodes = {node_name(node): peer_for(node, self._policy) for node in nodes}

    def apply(self, event_type: str, node: NodeObject) -> bool:
        """Apply one watch event; true when the peer set changed."""
        name = node_name(node)
        before = self._nodes.get(name)
        if event_type in ("ADDED", "MODIFIED"):
            self._nodes[name] = peer_for(node, self._policy)
        elif event_type == "DELETED":
            self._nodes.pop(name, None)
        else:
            return False
        return name != self._self_name and self._nodes.get(name) != before

    def unaddressable(self) -> list[str]:
        return sorted(name for name, peer in self._nodes.items() if peer is None)

    def peers(self) -> dict[str, Peer]:
        """Every addressable node except this agent's own."""
        return {
            name: peer
            for name, peer in self._nodes.items()
            if peer is not None and name != self._self_name
        }
