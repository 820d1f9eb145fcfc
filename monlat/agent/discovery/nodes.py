"""Pure decisions about Kubernetes Nodes: which address to probe, and the node cache.

Nodes are handled as the API's JSON (dicts), not as generated client models: lighter for thousands
of nodes, and testable with literal data.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monlat.agent.config import IpFamily
from monlat.agent.discovery import Peer, family_of
from monlat.agent.discovery.objects import mapping, mappings, text

NodeObject = Mapping[str, Any]


ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class AddressPolicy:
    types: tuple[str, ...] = ("InternalIP", "ExternalIP")
    family: IpFamily | None = IpFamily.IPV4  # a preference; None takes the first usable address
    # One address per family (each from the first type that has one), each its own peer.
    dual_stack: bool = False


@dataclass(frozen=True)
class Eligibility:
    """Which nodes are probed at all."""

    skip_not_ready: bool = True
    skip_cordoned: bool = True


@dataclass(frozen=True)
class NodeState:
    peers: tuple[Peer, ...]  # empty: no usable address; two in dual-stack mode
    ready: bool
    cordoned: bool
    zone: str | None = None

    def eligible(self, rules: Eligibility) -> bool:
        if not self.peers:
            return False
        if rules.skip_not_ready and not self.ready:
            return False
        return not (rules.skip_cordoned and self.cordoned)


def _family(address: str) -> IpFamily | None:
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return None  # e.g. a Hostname entry
    return IpFamily.IPV4 if version == 4 else IpFamily.IPV6


def choose_address(addresses: Iterable[Mapping[str, str]], policy: AddressPolicy) -> str | None:
    """The first address type in the policy's order that has an IP wins; within it, the
    preferred family, else the other one."""
    entries = [(text(e.get("type")), text(e.get("address"))) for e in addresses]
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


def choose_dual_stack(addresses: Iterable[Mapping[str, str]], types: Sequence[str]) -> list[str]:
    """For each family, the address of the first type in `types` that has one: IPv4 first."""
    entries = [(text(e.get("type")), text(e.get("address"))) for e in addresses]
    chosen: dict[IpFamily, str] = {}
    for wanted_type in types:
        for kind, address in entries:
            family = _family(address) if kind == wanted_type else None
            if family is not None and family not in chosen:
                chosen[family] = str(ipaddress.ip_address(address))
    return [chosen[family] for family in (IpFamily.IPV4, IpFamily.IPV6) if family in chosen]


def node_name(node: NodeObject) -> str:
    return text(mapping(node.get("metadata")).get("name"))


def node_zone(node: NodeObject) -> str | None:
    zone = text(mapping(mapping(node.get("metadata")).get("labels")).get(ZONE_LABEL))
    return zone or None


def peers_for(node: NodeObject, policy: AddressPolicy) -> tuple[Peer, ...]:
    """The node's peers: one, or one per family in dual-stack mode; none without an address."""
    name = node_name(node)
    if not name:
        return ()
    addresses = mappings(mapping(node.get("status")).get("addresses"))
    zone = node_zone(node)
    if policy.dual_stack:
        return tuple(
            Peer(name, address, zone, family_of(address))
            for address in choose_dual_stack(addresses, policy.types)
        )
    address = choose_address(addresses, policy)
    return () if address is None else (Peer(name, address, zone),)


def is_ready(node: NodeObject) -> bool:
    for condition in mappings(mapping(node.get("status")).get("conditions")):
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    # A Node without conditions has not been reported on by a kubelet yet (or never will be,
    # as in clusters that create Node objects by hand): treat it as ready.
    return True


def node_state(node: NodeObject, policy: AddressPolicy) -> NodeState:
    cordoned = mapping(node.get("spec")).get("unschedulable") is True
    return NodeState(peers_for(node, policy), is_ready(node), cordoned, node_zone(node))


def _own_facts(state: NodeState | None) -> tuple[bool, str | None]:
    if state is None:
        return False, None
    return state.cordoned, state.zone


class NodeCache:
    """The last known Nodes, updated by list and watch events; yields the peer set."""

    def __init__(
        self, self_name: str, policy: AddressPolicy, eligibility: Eligibility | None = None
    ) -> None:
        self._self_name = self_name
        self._policy = policy
        self._eligibility = eligibility or Eligibility()
        self._nodes: dict[str, NodeState] = {}

    def replace(self, nodes: Iterable[NodeObject]) -> None:
        self._nodes = {node_name(node): node_state(node, self._policy) for node in nodes}

    def _peers_of(self, name: str) -> tuple[Peer, ...]:
        state = self._nodes.get(name)
        return state.peers if state is not None and state.eligible(self._eligibility) else ()

    def apply(self, event_type: str, node: NodeObject) -> bool:
        """Apply one watch event; true when the peer set (or this agent's own state) changed."""
        name = node_name(node)
        before, own_before = self._peers_of(name), self._nodes.get(name)
        if event_type in ("ADDED", "MODIFIED"):
            self._nodes[name] = node_state(node, self._policy)
        elif event_type == "DELETED":
            self._nodes.pop(name, None)
        else:
            return False
        if name == self._self_name:
            # Its own address is not a peer; being cordoned (readiness) or its zone is news.
            return _own_facts(self._nodes.get(name)) != _own_facts(own_before)
        return self._peers_of(name) != before

    def unaddressable(self) -> list[str]:
        return sorted(name for name, state in self._nodes.items() if not state.peers)

    def excluded(self) -> list[str]:
        """Addressable nodes left out by the eligibility rules (NotReady, cordoned)."""
        return sorted(
            name
            for name, state in self._nodes.items()
            if state.peers and not state.eligible(self._eligibility)
        )

    def summary(self) -> dict[str, object]:
        """Fields for the `nodes_listed` event."""
        return {
            "nodes": len(self._nodes),
            "peers": len({peer.name for peer in self.peers().values()}),
            "unaddressable": ",".join(self.unaddressable()) or "none",
            "excluded": ",".join(self.excluded()) or "none",
        }

    @property
    def self_state(self) -> NodeState | None:
        return self._nodes.get(self._self_name)

    def peers(self) -> dict[str, Peer]:
        """Every eligible node except this agent's own, keyed by Peer.key."""
        return {
            peer.key: peer
            for name, state in self._nodes.items()
            if name != self._self_name and state.eligible(self._eligibility)
            for peer in state.peers
        }
