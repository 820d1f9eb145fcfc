"""Peers from the Kubernetes API: list, then watch Nodes from the list's resourceVersion.

The `kubernetes` client blocks, so the list/watch loop runs in one worker thread and hands each
new peer set to the event loop. While the API server is unreachable the last known peers stay in
place (the agent keeps probing them); a 410 Gone triggers a fresh list.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from monlat.config import ConfigError, KubernetesConfig
from monlat.discovery import PeerCallback
from monlat.discovery.nodes import AddressPolicy, Eligibility, NodeCache
from monlat.logs import EventLog

_WATCH_SECONDS = 300
_REQUEST_TIMEOUT = (5.0, _WATCH_SECONDS + 30.0)
_LIST_PAGE = 500


def load_api_client(config: KubernetesConfig) -> kubernetes.client.ApiClient:
    """Load credentials into a private Configuration (never the client's global default)."""
    configuration = kubernetes.client.Configuration()
    try:
        if config.kubeconfig:
            kubernetes.config.load_kube_config(
                config_file=config.kubeconfig, client_configuration=configuration
            )
        else:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
    except Exception as err:  # YAML, key and type errors all mean an unusable kubeconfig
        setting = "--kubeconfig" if config.kubeconfig else "in-cluster config"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(setting, f"cannot load: {first_line}") from None
    return kubernetes.client.ApiClient(configuration)


class KubernetesNodes:
    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        config: KubernetesConfig,
        self_name: str,
        events: EventLog,
    ) -> None:
        self._api = kubernetes.client.CoreV1Api(api_client)
        self._config = config
        self._new_cache = functools.partial(
            NodeCache,
            self_name,
            AddressPolicy(config.address_types, config.ip_family),
            Eligibility(config.skip_not_ready, config.skip_cordoned),
        )
        self._cache = self._new_cache()
        self._skip_cordoned = config.skip_cordoned
        self._events = events
        self._stop = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        # The cache is written by the watch thread and read by the event loop when it publishes.
        self._lock = threading.Lock()
        self._publish_pending = False
        self.synced = threading.Event()  # set after the first successful list

    def ready(self) -> tuple[bool, str]:
        """Ready once listed, and unless this agent's own node is cordoned (when skipped)."""
        if not self.synced.is_set():
            return False, "waiting for the first list of Nodes"
        own = self._cache.self_state
        if self._skip_cordoned and own is not None and own.cordoned:
            return False, "this node is cordoned"
        return True, "ready"

    @property
    def own_zone(self) -> str | None:
        own = self._cache.self_state
        return own.peer.zone if own is not None and own.peer is not None else None

    async def run(self, publish: PeerCallback) -> None:
        loop = asyncio.get_running_loop()

        def deliver() -> None:
            with self._lock:
                self._publish_pending = False
                peers = self._cache.peers()
            publish(peers)

        def hand_over() -> None:
            """Queue one publish of the cache as it is when the loop gets to it: a burst of
            watch events (nodes added or deleted in bulk) costs a few publishes, not one each."""
            if self._stop.is_set():
                return
            with self._lock:
                if self._publish_pending:
                    return
                self._publish_pending = True
            # The loop may close between the check and the call when the agent shuts down.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver)

        thread = threading.Thread(
            target=self._loop, args=(hand_over,), name="monlat-node-watch", daemon=True
        )
        thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()
            if self._watch is not None:
                self._watch.stop()

    def _loop(self, hand_over: Any) -> None:
        backoff = 1.0
        resource_version: str | None = None
        outage = False

        def reached() -> None:
            """The API server answered: an outage is over, the backoff starts again."""
            nonlocal backoff, outage
            backoff = 1.0
            if outage:
                self._events.info("api_recovered")
                outage = False

        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                    reached()
                    hand_over()
                    self.synced.set()
                resource_version = self._watch_from(resource_version, hand_over, reached)
                continue
            except ApiException as err:
                if self._stop.is_set():
                    break
                if err.status == 410:
                    reached()
                    self._events.info("watch_expired", action="relist")
                    resource_version = None
                    continue
                self._events.warning(
                    "api_error", status=err.status, reason=err.reason, keep_peers=True
                )
            except (HTTPError, OSError, ValueError) as err:
                if self._stop.is_set():
                    break  # run() was cancelled: Watch.stop() cut the stream on purpose
                if not outage:
                    self._events.warning(
                        "api_unreachable", error=type(err).__name__, keep_peers=True
                    )
                outage = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._config.resync_backoff_max_s)

    def _list(self) -> str:
        listed = 0
        resource_version = ""

        def nodes() -> Iterator[dict[str, Any]]:
            """The Nodes of every page, fetched as they are consumed: only one page of raw
            Nodes is alive at a time, however large the cluster."""
            nonlocal listed, resource_version
            continue_token: str | None = None
            while True:
                kwargs: dict[str, Any] = {
                    "limit": _LIST_PAGE,
                    "_request_timeout": _REQUEST_TIMEOUT,
                }
                if continue_token:
                    kwargs["_continue"] = continue_token
                if self._config.label_selector:
                    kwargs["label_selector"] = self._config.label_selector
                # Raw JSON: far lighter than generated models for thousands of nodes.
                response: Any = self._api.list_node(_preload_content=False, **kwargs)
                page = json.loads(response.data)
                del response
                metadata = page.get("metadata") or {}
                resource_version = str(metadata.get("resourceVersion", ""))
                continue_token = metadata.get("continue")
                items = page.pop("items", None) or []
                del page
                listed += len(items)
                while items:  # hand each Node over and let it go
                    yield items.pop()
                if not continue_token:
                    return

        # Filled outside the lock (pages come over the network), then swapped in whole; a failed
        # page raises before the swap, and the last known peers stay.
        fresh = self._new_cache()
        fresh.replace(nodes())
        with self._lock:
            self._cache = fresh
        unaddressable = fresh.unaddressable()
        self._events.info(
            "nodes_listed",
            nodes=listed,
            peers=len(fresh.peers()),
            unaddressable=",".join(unaddressable) or "none",
            excluded=",".join(fresh.excluded()) or "none",
        )
        return resource_version

    def _watch_from(
        self, resource_version: str, hand_over: Any, reached: Callable[[], None]
    ) -> str:
        self._watch = kubernetes.watch.Watch()
        list_node = self._api.list_node

        # Watch.stream() reads list_node's signature and docstring (kept by wraps) for the
        # event type; the wrapper only notes that the server accepted the watch (2xx).
        @functools.wraps(list_node)
        def connect(*args: Any, **kwargs: Any) -> Any:
            response = list_node(*args, **kwargs)
            reached()
            return response

        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": _WATCH_SECONDS,
            "_request_timeout": _REQUEST_TIMEOUT,
        }
        if self._config.label_selector:
            kwargs["label_selector"] = self._config.label_selector
        for event in self._watch.stream(connect, **kwargs):
            if self._stop.is_set():
                break
            # The client's 410 handling needs deserialised events; the raw JSON is kept beside.
            kind = event.get("type")
            node = event.get("raw_object") or {}
            version = (node.get("metadata") or {}).get("resourceVersion")
            if version:
                resource_version = version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                with self._lock:
                    changed = self._cache.apply(kind, node)
                if changed:
                    hand_over()
        return resource_version
