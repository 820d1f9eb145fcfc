"""Static peers from flags or a file: published once."""

from __future__ import annotations

import asyncio

from monlat.config import StaticPeer
from monlat.discovery import Peer, PeerCallback


class StaticPeers:
    def __init__(self, peers: tuple[StaticPeer, ...]) -> None:
        self._peers = {peer.name: Peer(peer.name, peer.address) for peer in peers}

    async def run(self, publish: PeerCallback) -> None:
        publish(dict(self._peers))
        await asyncio.Event().wait()  # nothing more to discover; wait to be cancelled
