"""Static peers from flags and a peers file. The file is re-read when it changes, so peers can be
added and removed without a restart (a ConfigMap mounted as a file works the same way)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from monlat.agent.config import StaticPeer, read_peers_file
from monlat.agent.discovery import Peer, PeerCallback, family_of
from monlat.agent.logs import EventLog
from monlat.common.errors import ConfigError

_POLL_S = 1.0


class StaticPeers:
    def __init__(
        self,
        peers: tuple[StaticPeer, ...],
        self_name: str,
        *,
        peers_file: Path | None = None,
        events: EventLog | None = None,
        dual_stack: bool = False,
    ) -> None:
        self._fixed = peers
        self._dual_stack = dual_stack
        self._self_name = self_name
        self._file = peers_file
        self._events = events

    def ready(self) -> tuple[bool, str]:
        return True, "ready"

    @property
    def own_zone(self) -> str | None:
        return None

    def _peer_map(self, from_file: tuple[StaticPeer, ...]) -> dict[str, Peer]:
        # The agent never probes itself; listing itself is normal in a shared peers file.
        peers = (
            Peer(p.name, p.address, family=family_of(p.address) if self._dual_stack else None)
            for p in (*self._fixed, *from_file)
            if p.name != self._self_name
        )
        return {peer.key: peer for peer in peers}

    async def run(self, publish: PeerCallback) -> None:
        if self._file is None:
            publish(self._peer_map(()))
            await asyncio.Event().wait()  # nothing more to discover; wait to be cancelled
            return
        seen: tuple[int, int] | None = (-1, -1)
        while True:
            signature = self._signature()
            if signature != seen:
                seen = signature
                try:
                    listed = await asyncio.to_thread(
                        read_peers_file, "--peers-file", self._file, dual_stack=self._dual_stack
                    )
                    publish(self._peer_map(listed))
                except ConfigError as err:
                    # A half-written or broken file must not empty the peer set: keep the last.
                    if self._events:
                        self._events.warning("peers_file_invalid", file=self._file, error=str(err))
            await asyncio.sleep(_POLL_S)

    def _signature(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            stat = self._file.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size
