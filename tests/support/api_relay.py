"""A TCP relay that lets lab nodes reach the API server, which listens on the root namespace's
loopback only.

Each lab node gets a listening socket created *inside* its network namespace (``lab.socket(node)``)
and bound to ``127.0.0.1:6443`` there; every accepted connection is forwarded to the API server's
``127.0.0.1:<port>`` in the root namespace, with one thread pumping bytes each way. TLS passes
through untouched, so the agent checks the API server's own certificate (its SANs include
127.0.0.1) and sends its own bearer token, as a pod does through the ``kubernetes`` Service::

    relay = ApiRelay(("127.0.0.1", control_plane.port))
    for node in lab.nodes:
        relay.listen(lab.socket(node), name=node)
    ...
    relay.close()

While the API server is down, an accepted connection is reset at once (RST, like a refused
connection), so clients fail fast instead of waiting for a handshake that never comes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

DEFAULT_LISTEN = ("127.0.0.1", 6443)
_CHUNK = 65536
_ACCEPT_POLL_S = 0.2


@dataclass
class RelayStats:
    accepted: int = 0
    refused: int = 0  # accepted, but the API server could not be reached: reset
    bytes_up: int = 0  # client -> API server
    bytes_down: int = 0  # API server -> client
    accept_times: list[tuple[str, float]] = field(default_factory=list)  # (name, time.time())


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the client sees a reset, as from a closed port."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class ApiRelay:
    """Forwards connections accepted on any number of listening sockets to one ``target``."""

    def __init__(self, target: tuple[str, int], *, connect_timeout: float = 5.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.stats = RelayStats()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listeners: dict[str, socket.socket] = {}
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    # -- setup -------------------------------------------------------------------------------

    def listen(
        self,
        sock: socket.socket,
        address: tuple[str, int] = DEFAULT_LISTEN,
        *,
        name: str = "",
    ) -> None:
        """Bind ``sock`` (created in the namespace to serve) to ``address`` and start accepting.

        The relay owns the socket from here on and closes it in :meth:`close`.
        """
        if self._closed.is_set():
            sock.close()
            raise RuntimeError("the relay is closed")
        name = name or f"listener-{len(self._listeners)}"
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
            sock.settimeout(_ACCEPT_POLL_S)  # accept() wakes up to notice close()
        except OSError:
            sock.close()
            raise
        with self._lock:
            if name in self._listeners:
                sock.close()
                raise ValueError(f"a listener named {name!r} exists already")
            self._listeners[name] = sock
        self._spawn(self._accept_loop, sock, name, thread_name=f"relay-accept-{name}")

    def stop_listening(self, name: str) -> None:
        """Close one listener (new connections are refused by the kernel); open ones stay."""
        with self._lock:
            sock = self._listeners.pop(name, None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def cut(self) -> int:
        """Reset every open relayed connection (listeners stay); returns how many were open."""
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(connections) // 2

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections) // 2

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every relayed connection and wait for the threads."""
        self._closed.set()
        with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
        for sock in listeners:
            with contextlib.suppress(OSError):
                sock.close()
        self.cut()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"relay threads still running after {timeout}s: {alive}")

    def __enter__(self) -> ApiRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- work --------------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object, thread_name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=thread_name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket, name: str) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop_listening() or close()
            with self._lock:
                self.stats.accepted += 1
                self.stats.accept_times.append((name, time.time()))
            self._spawn(self._serve, client, thread_name=f"relay-conn-{name}")

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            with self._lock:
                self.stats.refused += 1
            _reset(client)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed.is_set():
                _reset(client)
                upstream.close()
                return
            self._connections.update((client, upstream))
        try:
            down = threading.Thread(
                target=self._pump, args=(upstream, client, False), name="relay-down", daemon=True
            )
            down.start()
            self._pump(client, upstream, True)
            down.join()
        finally:
            with self._lock:
                self._connections.difference_update((client, upstream))
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        """Copy until end of stream (then half-close ``sink``) or an error (then end both)."""
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
                with self._lock:
                    if up:
                        self.stats.bytes_up += len(data)
                    else:
                        self.stats.bytes_down += len(data)
        except OSError:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
