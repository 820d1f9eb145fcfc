"""Discovery: where are the peers? Sources publish complete peer sets; the agent diffs them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    zone: str | None = None  # topology.kubernetes.io/zone, when known


PeerMap = Mapping[str, Peer]
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
    changed: tuple[tuple[Peer, Peer], ...]  # (old, new): same name, new address

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
