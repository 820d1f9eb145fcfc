"""Pure decisions about the pod-network agents' Pods: which pod stands for a node, which IP.

In pod-network mode the agents find each other through their own Pods (a label selector): a
peer is named after the pod's node (`spec.nodeName`) and probed at the pod's IP, so the series
line up with the host-network agents' and the two paths can be compared pair by pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monlat.agent.discovery import Peer, family_of, peer_key
from monlat.agent.discovery.nodes import AddressPolicy, choose_address, choose_dual_stack
from monlat.agent.discovery.objects import mapping, mappings, text

PodObject = Mapping[str, Any]

_POD_IP = "PodIP"


@dataclass(frozen=True)
class PodState:
    node: str  # "" until scheduled
    peers: tuple[Peer, ...]  # empty until the pod has an IP
    running: bool
    terminating: bool
    host_network: bool
    created: str  # RFC 3339: sorts chronologically
    # The pod's Ready condition: its agent answers /readyz, and its node is not NotReady (the
    # node lifecycle controller marks every pod of a NotReady node not ready).
    ready: bool = True

    def eligible(self, skip_not_ready: bool = True) -> bool:
        # A pod sharing the node's network namespace would measure the host path under the
        # pod label: never a peer here.
        return (
            bool(self.node and self.peers)
            and self.running
            and not self.terminating
            and not self.host_network
            and (self.ready or not skip_not_ready)
        )


def pod_key(pod: PodObject) -> str:
    metadata = mapping(pod.get("metadata"))
    return f"{text(metadata.get('namespace'))}/{text(metadata.get('name'))}"


def pod_addresses(pod: PodObject) -> list[str]:
    status = mapping(pod.get("status"))
    ips = [ip for entry in mappings(status.get("podIPs")) if (ip := text(entry.get("ip")))]
    if not ips and text(status.get("podIP")):
        ips = [status["podIP"]]  # servers before dual-stack fill only podIP
    return ips


def pod_state(pod: PodObject, policy: AddressPolicy) -> PodState:
    metadata = mapping(pod.get("metadata"))
    spec = mapping(pod.get("spec"))
    status = mapping(pod.get("status"))
    node = text(spec.get("nodeName"))
    entries = [{"type": _POD_IP, "address": ip} for ip in pod_addresses(pod)]
    peers: tuple[Peer, ...] = ()
    if node and policy.dual_stack:
        peers = tuple(
            Peer(node, address, family=family_of(address))
            for address in choose_dual_stack(entries, (_POD_IP,))
        )
    elif node:
        address = choose_address(entries, AddressPolicy((_POD_IP,), policy.family))
        peers = () if address is None else (Peer(node, address),)
    conditions = mappings(status.get("conditions"))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return PodState(
        ready=ready,
        node=node,
        peers=peers,
        running=status.get("phase") == "Running",
        terminating=bool(metadata.get("deletionTimestamp")),
        host_network=spec.get("hostNetwork") is True,
        created=text(metadata.get("creationTimestamp")),
    )


def representatives(states: Iterable[PodState], skip_not_ready: bool = True) -> dict[str, PodState]:
    """One pod per node: the newest eligible one (a DaemonSet rollout briefly has two)."""
    chosen: dict[str, PodState] = {}
    for state in states:
        if not state.eligible(skip_not_ready):
            continue
        current = chosen.get(state.node)
        if current is None or state.created > current.created:
            chosen[state.node] = state
    return chosen


class PodCache:
    """The last known agent Pods, updated by list and watch events; yields the peer set.

    An event re-decides only its pod's node, so a rollout over thousands of nodes stays linear.
    """

    def __init__(
        self, self_node: str, policy: AddressPolicy, *, skip_not_ready: bool = True
    ) -> None:
        self._self_node = self_node
        self._policy = policy
        self._skip_not_ready = skip_not_ready
        self._pods: dict[str, PodState] = {}
        self._on_node: dict[str, set[str]] = {}  # node -> pod keys
        self._peers: dict[str, Peer] = {}

    def replace(self, pods: Iterable[PodObject]) -> None:
        self._pods, self._on_node, self._peers = {}, {}, {}
        for pod in pods:
            self._store(pod_key(pod), pod_state(pod, self._policy))
        for node in self._on_node:
            self._decide(node)

    def apply(self, event_type: str, pod: PodObject) -> bool:
        """Apply one watch event; true when the peer set changed."""
        key = pod_key(pod)
        old = self._pods.get(key)
        if event_type in ("ADDED", "MODIFIED"):
            new: PodState | None = pod_state(pod, self._policy)
        elif event_type == "DELETED":
            new = None
        else:
            return False
        self._forget(key)
        if new is not None:
            self._store(key, new)
        nodes = {state.node for state in (old, new) if state is not None}
        return any([self._decide(node) for node in nodes])

    def _store(self, key: str, state: PodState) -> None:
        self._pods[key] = state
        self._on_node.setdefault(state.node, set()).add(key)

    def _forget(self, key: str) -> None:
        state = self._pods.pop(key, None)
        if state is not None:
            keys = self._on_node.get(state.node, set())
            keys.discard(key)
            if not keys:
                self._on_node.pop(state.node, None)

    def _decide(self, node: str) -> bool:
        """Re-pick the node's pod; true when its peers changed."""
        keys = [peer_key(node, family) for family in (None, "ipv4", "ipv6")]
        before = {key: self._peers.pop(key) for key in keys if key in self._peers}
        if node and node != self._self_node:
            states = (self._pods[key] for key in self._on_node.get(node, ()))
            chosen = representatives(states, self._skip_not_ready).get(node)
            for peer in chosen.peers if chosen is not None else ():
                self._peers[peer.key] = peer
        after = {key: self._peers[key] for key in keys if key in self._peers}
        return after != before

    def peers(self) -> dict[str, Peer]:
        return dict(self._peers)

    def summary(self) -> dict[str, object]:
        """Fields for the `pods_listed` event."""
        waiting = sorted(
            key
            for key, state in self._pods.items()
            if not (state.eligible(self._skip_not_ready) or state.host_network)
        )
        host_network = sorted(key for key, state in self._pods.items() if state.host_network)
        return {
            "pods": len(self._pods),
            "peers": len(self._peers),
            "not_ready": ",".join(waiting) or "none",
            "host_network_ignored": ",".join(host_network) or "none",
        }
