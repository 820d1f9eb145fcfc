"""FakeApiServer: a STAND-IN for the Kubernetes API server, for fast unit-level tests only.

This is not kube-apiserver. It serves one resource, Nodes, over plain HTTP on 127.0.0.1, and
speaks just enough of the list/watch protocol for the official `kubernetes` Python client:

* ``GET /api/v1/nodes``: a NodeList with ``metadata.resourceVersion``; ``limit``/``continue``
  pagination over a consistent snapshot (later pages come from the first page's snapshot, as the
  real server guarantees); ``labelSelector`` with ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``.
* ``GET /api/v1/nodes?watch=true&resourceVersion=N``: a chunked stream of newline-delimited watch
  events, replaying the history after N, then live changes. With ``allowWatchBookmarks=true`` a
  BOOKMARK is sent every ``bookmark_interval_s`` while idle. ``timeoutSeconds`` ends the stream
  cleanly. With a selector, an object that starts or stops matching is sent as ADDED or DELETED,
  as the real watch cache does. A resourceVersion older than the compacted history yields an
  ERROR event carrying a ``Status`` with code 410 / reason ``Expired``; so does a live watch
  that lagged behind a compaction.
* Bearer-token authentication (401 otherwise); 404 for any other path.

Test controls: add_node / modify_node / delete_node, compact(), end_watches() (streams end
cleanly, as after the server-side timeout), batch() (several changes that watchers see only
together), fail_next() (error responses), stop()/start() on the same port (an outage: stop also
cuts open connections, watches included), request counters and write_kubeconfig().
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NODES_PATH = "/api/v1/nodes"
DEFAULT_TOKEN = "fake-apiserver-token"  # a test credential for the fake, not a secret
_HOSTNAME_LABEL = "kubernetes.io/hostname"
_CREATED = "2024-01-01T00:00:00Z"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One request as received: kind is "list", "watch" or "other"."""

    kind: str
    path: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class _Change:
    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    old: Obj | None  # the object before (None for ADDED)
    new: Obj  # the object after (for DELETED: the last state, carrying the deletion's RV)


class SelectorError(ValueError):
    pass


Requirement = tuple[str, str, str]  # (key, operator, value)


def parse_selector(text: str | None) -> list[Requirement]:
    """Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a` (exists), `!a` (absent)."""
    requirements: list[Requirement] = []
    for raw in (text or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if " in " in term or " notin " in term or "(" in term:
            raise SelectorError(f"set-based selector not supported by the fake: {term!r}")
        if "!=" in term:
            key, value = term.split("!=", 1)
            operator = "!="
        elif "==" in term:
            key, value = term.split("==", 1)
            operator = "="
        elif "=" in term:
            key, value = term.split("=", 1)
            operator = "="
        elif term.startswith("!"):
            key, value, operator = term[1:], "", "!"
        else:
            key, value, operator = term, "", "exists"
        key, value = key.strip(), value.strip()
        if not key:
            raise SelectorError(f"unable to parse requirement: {term!r}")
        requirements.append((key, operator, value))
    return requirements


def selector_matches(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    for key, operator, value in requirements:
        if operator == "=" and labels.get(key) != value:
            return False
        if operator == "!=" and labels.get(key) == value:
            return False
        if operator == "exists" and key not in labels:
            return False
        if operator == "!" and key in labels:
            return False
    return True


def _labels(node: Obj) -> Mapping[str, str]:
    return node.get("metadata", {}).get("labels") or {}


def status_object(code: int, reason: str, message: str) -> Obj:
    """A metav1.Status as the API server sends it for failures."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _encode_continue(rv: int, after: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": after + "\x00"}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError) as err:
        raise SelectorError(f"invalid continue token: {err}") from None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, like the real server
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: failures show up in assertions, not on stderr

    def do_GET(self) -> None:
        with contextlib.suppress(OSError):  # the client went away, or stop() cut the connection
            self.server.fake._handle(self)

    def send_json(self, status: int, body: Obj) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


class FakeApiServer:
    """The stand-in server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        bookmark_interval_s: float = 1.0,
        token: str = DEFAULT_TOKEN,
        first_resource_version: int = 1000,
    ) -> None:
        self.token = token
        self.bookmark_interval_s = bookmark_interval_s
        # One re-entrant lock guards everything; watchers wait on the condition for changes.
        self._cond = threading.Condition(threading.RLock())
        self._nodes: dict[str, Obj] = {}
        self._history: list[_Change] = []
        self._rv = first_resource_version
        self._compacted_rv = first_resource_version  # watches from an older RV get 410
        self._snapshots: dict[int, list[Obj]] = {}  # list snapshots, for continue tokens
        self._uid = 0
        self._requests: list[Request] = []
        self._failures: list[tuple[int, str]] = []
        self._expired = 0
        self._watch_generation = 0
        self._epoch = 0
        self._running = False
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._port = 0
        # Called (outside the lock) after a list page is computed, before it is sent: lets a
        # test change the cluster between pages. Receives the request's query parameters.
        self.on_list_page: Callable[[Mapping[str, str]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again, on the same port after a stop) and serve in a background thread."""
        with self._cond:
            if self._httpd is not None:
                return
            httpd = _HttpServer(("127.0.0.1", self._port), _Handler)
            httpd.fake = self
            self._port = httpd.server_address[1]
            self._httpd = httpd
            self._running = True
            self._epoch += 1
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-apiserver-{self._port}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """An outage: stop listening and cut every open connection, watch streams included.

        Streams are cut without the terminating chunk, as when the server process dies."""
        with self._cond:
            httpd, thread = self._httpd, self._thread
            if httpd is None:
                return
            self._httpd = None
            self._thread = None
            self._running = False
            connections = list(self._connections)
            self._cond.notify_all()
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._running

    def write_kubeconfig(self, path: str | Path) -> Path:
        """A kubeconfig for this server with a bearer-token user (JSON, which is valid YAML)."""
        if not self._port:
            raise RuntimeError("start() the server first: the kubeconfig needs its port")
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake-user"}}],
            "current-context": "fake",
            "preferences": {},
        }
        target = Path(path)
        target.write_text(json.dumps(kubeconfig, indent=2) + "\n")
        return target

    # -- cluster changes (test controls) ---------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the lock: watchers see the changes made inside only after the block."""
        with self._cond:
            yield

    def add_node(
        self,
        name: str,
        ip: str | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        addresses: list[dict[str, str]] | None = None,
    ) -> int:
        """Add a Node whose InternalIP is `ip` (none: only a Hostname address); returns its RV.

        `addresses` replaces the whole status.addresses list instead."""
        with self._cond:
            if name in self._nodes:
                raise ValueError(f"node {name!r} already exists")
            self._uid += 1
            rv = self._next_rv()
            node: Obj = {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": f"00000000-0000-4000-8000-{self._uid:012d}",
                    "resourceVersion": str(rv),
                    "creationTimestamp": _CREATED,
                    "labels": {_HOSTNAME_LABEL: name, **(labels or {})},
                },
                "spec": {},
                "status": {
                    "addresses": addresses
                    if addresses is not None
                    else _addresses(name, ip, "InternalIP")
                },
            }
            self._record(_Change(rv, "ADDED", None, node))
            return rv

    def modify_node(
        self,
        name: str,
        ip: str | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        addresses: list[dict[str, str]] | None = None,
        unschedulable: bool | None = None,
        ready: bool | None = None,
    ) -> int:
        """Change a Node's InternalIP (`ip`), its labels (replaced, hostname label kept), its
        whole address list, its cordon (`unschedulable`) or its Ready condition; every call is
        one MODIFIED with a new RV. Returns the RV."""
        with self._cond:
            old = self._nodes[name]
            node = copy.deepcopy(old)
            if ip is not None:
                kept = [a for a in node["status"]["addresses"] if a.get("type") != "InternalIP"]
                node["status"]["addresses"] = [{"type": "InternalIP", "address": ip}, *kept]
            if addresses is not None:
                node["status"]["addresses"] = copy.deepcopy(addresses)
            if labels is not None:
                node["metadata"]["labels"] = {_HOSTNAME_LABEL: name, **labels}
            if unschedulable is not None:
                node["spec"]["unschedulable"] = unschedulable
            if ready is not None:
                condition = {"type": "Ready", "status": "True" if ready else "False"}
                node["status"]["conditions"] = [condition]
            rv = self._next_rv()
            node["metadata"]["resourceVersion"] = str(rv)
            self._record(_Change(rv, "MODIFIED", old, node))
            return rv

    def delete_node(self, name: str) -> int:
        with self._cond:
            old = self._nodes[name]
            rv = self._next_rv()
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(rv)
            self._record(_Change(rv, "DELETED", old, gone))
            return rv

    def compact(self) -> int:
        """Forget the history (and list snapshots): a watch or a continue token from an older
        RV now gets 410 Expired. Returns the compaction RV."""
        with self._cond:
            self._compacted_rv = self._rv
            self._history.clear()
            self._snapshots.clear()
            self._cond.notify_all()
            return self._compacted_rv

    def end_watches(self) -> None:
        """End every open watch stream cleanly (as at the server-side timeout)."""
        with self._cond:
            self._watch_generation += 1
            self._cond.notify_all()

    def fail_next(self, count: int = 1, status: int = 500, reason: str = "InternalError") -> None:
        """Answer the next `count` list/watch requests with an HTTP error Status."""
        with self._cond:
            self._failures.extend([(status, reason)] * count)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, change: _Change) -> None:
        if change.type == "DELETED":
            del self._nodes[change.new["metadata"]["name"]]
        else:
            self._nodes[change.new["metadata"]["name"]] = change.new
        self._history.append(change)
        self._cond.notify_all()

    # -- observations ----------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    @property
    def list_requests(self) -> int:
        return sum(1 for r in self.requests if r.kind == "list")

    @property
    def watch_requests(self) -> int:
        return sum(1 for r in self.requests if r.kind == "watch")

    @property
    def expired_responses(self) -> int:
        """How many 410 Expired answers (watch ERROR events or list errors) were sent."""
        return self._expired

    def node_names(self) -> list[str]:
        with self._cond:
            return sorted(self._nodes)

    # -- serving ---------------------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections.add(sock)
            if not self._running:  # accepted just before stop(): cut it too
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _untrack(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections.discard(sock)

    def _handle(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        is_watch = params.get("watch", "").lower() in ("true", "1")
        kind = "other" if url.path != NODES_PATH else ("watch" if is_watch else "list")
        with self._cond:
            self._requests.append(Request(kind, url.path, params))
            failure = self._failures.pop(0) if self._failures and kind != "other" else None
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            handler.send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
            return
        if kind == "other":
            message = f"the server could not find the requested resource ({url.path})"
            handler.send_json(404, status_object(404, "NotFound", message))
            return
        if failure is not None:
            status, reason = failure
            handler.send_json(status, status_object(status, reason, f"injected {reason}"))
            return
        try:
            selector = parse_selector(params.get("labelSelector"))
        except SelectorError as err:
            handler.send_json(400, status_object(400, "BadRequest", str(err)))
            return
        if is_watch:
            self._serve_watch(handler, params, selector)
        else:
            self._serve_list(handler, params, selector)

    def _serve_list(
        self, handler: _Handler, params: Mapping[str, str], selector: list[Requirement]
    ) -> None:
        try:
            limit = int(params.get("limit") or 0)
            token = params.get("continue") or ""
            start = _decode_continue(token) if token else None
        except (ValueError, SelectorError) as err:
            handler.send_json(400, status_object(400, "BadRequest", str(err)))
            return
        expired = status_object(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. "
            "You can start a new list without the continue parameter.",
        )
        snapshot: list[Obj] | None
        with self._cond:
            if start is not None:
                rv, after = start
                snapshot = self._snapshots.get(rv) if rv >= self._compacted_rv else None
                if snapshot is None:
                    self._expired += 1
            else:
                rv, after = self._rv, ""
                snapshot = [self._nodes[name] for name in sorted(self._nodes)]
                if limit:
                    self._snapshots[rv] = snapshot
        if snapshot is None:
            handler.send_json(410, expired)
            return
        matching = [
            node
            for node in snapshot
            if node["metadata"]["name"] > after and selector_matches(selector, _labels(node))
        ]
        page = matching[:limit] if limit else matching
        metadata: Obj = {"resourceVersion": str(rv)}
        if limit and len(matching) > limit:
            metadata["continue"] = _encode_continue(rv, page[-1]["metadata"]["name"])
            if not selector:
                metadata["remainingItemCount"] = len(matching) - limit
        items = [
            {k: v for k, v in node.items() if k not in ("kind", "apiVersion")} for node in page
        ]
        body = {"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": items}
        hook = self.on_list_page
        if hook is not None:
            hook(params)
        handler.send_json(200, body)

    def _serve_watch(
        self, handler: _Handler, params: Mapping[str, str], selector: list[Requirement]
    ) -> None:
        bookmarks = params.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout_s = float(params.get("timeoutSeconds") or 1800)
        requested = params.get("resourceVersion", "")
        initial: list[tuple[str, Obj]] = []
        with self._cond:
            epoch, generation = self._epoch, self._watch_generation
            if requested in ("", "0"):  # "any"/"most recent": synthetic ADDED for current state
                initial = [
                    ("ADDED", self._nodes[name])
                    for name in sorted(self._nodes)
                    if selector_matches(selector, _labels(self._nodes[name]))
                ]
                sent_rv = self._rv
            else:
                try:
                    sent_rv = int(requested)
                except ValueError:
                    message = f"invalid resourceVersion {requested!r}"
                    handler.send_json(400, status_object(400, "BadRequest", message))
                    return
        handler.start_chunked()
        for kind, node in initial:
            handler.send_chunk(_event(kind, node))
        deadline = time.monotonic() + timeout_s
        next_bookmark = time.monotonic() + self.bookmark_interval_s
        while True:
            with self._cond:
                while True:
                    if not self._running or self._epoch != epoch:
                        return  # outage: the connection is cut, no terminating chunk
                    if self._watch_generation != generation:
                        break  # end_watches(): clean end
                    if sent_rv < self._compacted_rv:
                        break  # history this watcher needs is gone: 410
                    index = bisect.bisect_right(self._history, sent_rv, key=lambda c: c.rv)
                    now = time.monotonic()
                    if index < len(self._history) or now >= deadline:
                        break
                    if bookmarks and now >= next_bookmark:
                        break
                    wake = min(deadline, next_bookmark) if bookmarks else deadline
                    self._cond.wait(max(0.0, wake - now))
                ended = self._watch_generation != generation or time.monotonic() >= deadline
                expired = not ended and sent_rv < self._compacted_rv
                compacted = self._compacted_rv
                if expired:
                    self._expired += 1
                first = bisect.bisect_right(self._history, sent_rv, key=lambda c: c.rv)
                pending = [] if ended or expired else self._history[first:]
                current_rv = self._rv
            if expired:
                message = f"too old resource version: {sent_rv} ({compacted})"
                error = status_object(410, "Expired", message)
                handler.send_chunk(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
                handler.end_chunked()
                return
            if ended:
                handler.end_chunked()
                return
            if pending:
                for change in pending:
                    shown = _as_seen_through(change, selector)
                    if shown is not None:
                        handler.send_chunk(_event(*shown))
            elif bookmarks:
                bookmark = {
                    "kind": "Node",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(current_rv), "creationTimestamp": None},
                }
                handler.send_chunk(_event("BOOKMARK", bookmark))
                next_bookmark = time.monotonic() + self.bookmark_interval_s
            sent_rv = current_rv


def _addresses(name: str, ip: str | None, kind: str) -> list[dict[str, str]]:
    addresses = [{"type": kind, "address": ip}] if ip else []
    return [*addresses, {"type": "Hostname", "address": name}]


def _event(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _as_seen_through(change: _Change, selector: list[Requirement]) -> tuple[str, Obj] | None:
    """The event a watcher with this selector gets: objects entering or leaving the selection
    appear as ADDED or DELETED, as with the real API server's watch cache."""
    was = change.old is not None and selector_matches(selector, _labels(change.old))
    now = change.type != "DELETED" and selector_matches(selector, _labels(change.new))
    if change.type == "ADDED":
        return ("ADDED", change.new) if now else None
    if change.type == "DELETED":
        return ("DELETED", change.new) if was else None
    if was and now:
        return ("MODIFIED", change.new)
    if now:
        return ("ADDED", change.new)
    if was:
        return ("DELETED", change.new)
    return None
