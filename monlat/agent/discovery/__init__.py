"""Discovery: where are the peers? Sources publish complete peer sets; the agent diffs them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

FAMILY_SEPARATOR = "/"


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    zone: str | None = None  # topology.kubernetes.io/zone, when known
    # Set in dual-stack mode only, where a node is one peer per address family and every series
    # carries a family label; None keeps the original one-peer-per-node identity and labels.
    family: str | None = None

    @property
    def key(self) -> str:
        """Identity of this peer in maps, the prober and results: unique per (node, family)."""
        return peer_key(self.name, self.family)


def peer_key(name: str, family: str | None) -> str:
    # Node names never contain "/" (DNS subdomain names), so the key splits back unambiguously.
    return name if family is None else f"{name}{FAMILY_SEPARATOR}{family}"


def split_key(key: str) -> tuple[str, str | None]:
    """(node name, family or None) of a peer key."""
    name, sep, family = key.partition(FAMILY_SEPARATOR)
    return (name, family) if sep else (key, None)


def family_of(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


PeerMap = Mapping[str, Peer]  # keyed by Peer.key
PeerCallback = Callable[[PeerMap], None]


class PeerSource(Protocol):
    async def run(self, publish: PeerCallback) -> None:
        """Publish the full peer set whenever it changes, until cancelled."""
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether this agent should report ready, and why (or why not)."""
        ...

    @property
    def own_zone(self) -> str | None:
        """This agent's own zone, when the source knows it."""
        ...


@dataclass(frozen=True)
class PeerChanges:
    added: tuple[Peer, ...]
    removed: tuple[Peer, ...]
    changed: tuple[tuple[Peer, Peer], ...]  # (old, new): same key, new address

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff_peers(old: PeerMap, new: PeerMap) -> PeerChanges:
    added = tuple(new[name] for name in sorted(new.keys() - old.keys()))
    removed = tuple(old[name] for name in sorted(old.keys() - new.keys()))
    changed = tuple(
        (old[name], new[name])
        for name in sorted(old.keys() & new.keys())
        if old[name].address != new[name].address
    )
    return PeerChanges(added, removed, changed)
