"""A small asyncio HTTP/1.1 server for /metrics, /healthz and /readyz.

Rendering the exposition runs in a worker thread (it walks every series), so a scrape never holds
up the probe loop; the exposition itself is prometheus_client's (`generate_latest`).

Why not a library server: aiohttp would add 12 MB of packages (aiohttp, multidict, yarl,
frozenlist, propcache ...) and 0.39 s of import to every agent start (measured 2026-12-03,
`python -X importtime -c "import aiohttp.web"`), for three fixed GET routes; prometheus_client's
own server (`start_http_server`, wsgiref in threads) serves /metrics only, and the health
routes, which read the probe loop's state, would then live in a second HTTP stack off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from monlat.agent.config import ListenAddress

_MAX_HEADER_BYTES = 16 * 1024
_READ_TIMEOUT_S = 10.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Response]]


class HttpServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self._routes = routes
        self._server: asyncio.Server | None = None

    async def start(self, listen: ListenAddress) -> None:
        """Bind now, so that a port in use is reported at start-up."""
        self._server = await asyncio.start_server(
            self._serve, host=listen.host, port=listen.port, reuse_address=True
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            await self._respond(head, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _respond(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        lines = head[:_MAX_HEADER_BYTES].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        path = target.split("?", 1)[0]
        handler = self._routes.get(path)
        if handler is None:
            response = Response(404, b"not found\n")
        elif method not in ("GET", "HEAD"):
            response = Response(405, b"method not allowed\n")
        else:
            response = await handler()
        body = response.body
        headers = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'OK')}",
            f"Content-Type: {response.content_type}",
            "Connection: close",
        ]
        accepts_gzip = any(
            line.lower().startswith("accept-encoding:") and "gzip" in line.lower()
            for line in lines[1:]
        )
        if accepts_gzip and len(body) > 1024:
            body = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, body, 1)
            headers.append("Content-Encoding: gzip")
        headers.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
