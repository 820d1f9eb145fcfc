"""Peers from the Kubernetes API: list, then watch Nodes (or the pod-network agents' Pods) from
the list's resourceVersion.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import kubernetes.client
import kubernetes.config
import kubernetes.watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from monlat.agent.config import KubernetesConfig
from monlat.agent.discovery import Peer, PeerCallback
from monlat.agent.discovery.nodes import AddressPolicy, Eligibility, NodeCache
from monlat.agent.discovery.objects import mapping, mappings, text
from monlat.agent.discovery.pods import PodCache
from monlat.agent.logs import EventLog
from monlat.common.errors import ConfigError

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


class ObjectCache(Protocol):
    """What the list/watch loop keeps: Nodes or Pods, as JSON, turned into peers."""

    def replace(self, objects: Iterable[Mapping[str, Any]]) -> None: ...
    def apply(self, event_type: str, obj: Mapping[str, Any]) -> bool: ...
    def peers(self) -> dict[str, Peer]: ...
    def summary(self) -> dict[str, object]: ...


class _ListWatch:
    """List, then watch one kind of object into a cache, in a worker thread."""

    kind = "objects"  # for log events: nodes_listed, pods_listed
    thread_name = "monlat-watch"

    def __init__(
        self,
        list_call: Callable[..., Any],
        fixed: Mapping[str, Any],
        label_selector: str | None,
        new_cache: Callable[[], ObjectCache],
        backoff_max_s: float,
        events: EventLog,
    ) -> None:
        self._list_call = list_call  # a generated CoreV1Api list method (watch reads its doc)
        self._fixed = dict(fixed)  # e.g. the namespace of the Pods
        if label_selector:
            self._fixed["label_selector"] = label_selector
        self._new_cache = new_cache
        self._cache = new_cache()
        self._backoff_max_s = backoff_max_s
        self._events = events
        self._stop = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        # The cache is written by the watch thread and read by the event loop when it publishes.
        self._lock = threading.Lock()
        self._publish_pending = False
        self.synced = threading.Event()  # set after the first successful list

    def ready(self) -> tuple[bool, str]:
        if not self.synced.is_set():
            return False, f"waiting for the first list of {self.kind.capitalize()}"
        return True, "ready"

    @property
    def own_zone(self) -> str | None:
        return None

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
            target=self._loop, args=(hand_over,), name=self.thread_name, daemon=True
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
            except Exception as err:
                # A response no API server sends (the client's own decoding can fail on it with
                # anything): this thread is the agent's only view of the peers, so it must not
                # end; relist after the backoff, keeping the last known peers.
                if self._stop.is_set():
                    break
                self._events.warning("api_bad_response", error=repr(err), keep_peers=True)
                resource_version = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._backoff_max_s)

    def _list(self) -> str:
        resource_version = ""

        def objects() -> Iterator[Mapping[str, Any]]:
            """The objects of every page, fetched as they are consumed: only one page of raw
            objects is alive at a time, however large the cluster."""
            nonlocal resource_version
            continue_token: str | None = None
            while True:
                kwargs: dict[str, Any] = {
                    **self._fixed,
                    "limit": _LIST_PAGE,
                    "_request_timeout": _REQUEST_TIMEOUT,
                }
                if continue_token:
                    kwargs["_continue"] = continue_token
                # Raw JSON: far lighter than generated models for thousands of objects.
                response: Any = self._list_call(_preload_content=False, **kwargs)
                page = mapping(json.loads(response.data))
                del response
                metadata = mapping(page.get("metadata"))
                resource_version = text(metadata.get("resourceVersion"))
                continue_token = text(metadata.get("continue"))
                items = mappings(page.get("items"))
                del page
                while items:  # hand each object over and let it go
                    yield items.pop()
                if not continue_token:
                    return

        # Filled outside the lock (pages come over the network), then swapped in whole; a failed
        # page raises before the swap, and the last known peers stay.
        fresh = self._new_cache()
        fresh.replace(objects())
        with self._lock:
            self._cache = fresh
        self._events.info(f"{self.kind}_listed", **fresh.summary())
        return resource_version

    def _watch_from(
        self, resource_version: str, hand_over: Any, reached: Callable[[], None]
    ) -> str:
        self._watch = kubernetes.watch.Watch()
        list_call = self._list_call
        fixed = {k: v for k, v in self._fixed.items() if k != "label_selector"}

        # Watch.stream() reads the list method's signature and docstring (kept by wraps) for
        # the event type; the wrapper only notes that the server accepted the watch (2xx).
        @functools.wraps(list_call)
        def connect(*args: Any, **kwargs: Any) -> Any:
            response = list_call(*args, **fixed, **kwargs)
            reached()
            return response

        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": _WATCH_SECONDS,
            "_request_timeout": _REQUEST_TIMEOUT,
        }
        if "label_selector" in self._fixed:
            kwargs["label_selector"] = self._fixed["label_selector"]
        for event in self._watch.stream(connect, **kwargs):
            if self._stop.is_set():
                break
            # The client's 410 handling needs deserialised events; the raw JSON is kept beside.
            kind = event.get("type")
            obj = mapping(event.get("raw_object"))
            version = text(mapping(obj.get("metadata")).get("resourceVersion"))
            if version:
                resource_version = version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                with self._lock:
                    changed = self._cache.apply(kind, obj)
                if changed:
                    hand_over()
        return resource_version


class KubernetesNodes(_ListWatch):
    """Peers are the cluster's Nodes (the host-network DaemonSet)."""

    kind = "nodes"
    thread_name = "monlat-node-watch"

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        config: KubernetesConfig,
        self_name: str,
        events: EventLog,
    ) -> None:
        api = kubernetes.client.CoreV1Api(api_client)
        super().__init__(
            api.list_node,
            {},
            config.label_selector,
            functools.partial(
                NodeCache,
                self_name,
                AddressPolicy(config.address_types, config.ip_family, config.dual_stack),
                Eligibility(config.skip_not_ready, config.skip_cordoned),
            ),
            config.resync_backoff_max_s,
            events,
        )
        self._skip_cordoned = config.skip_cordoned

    def _node_cache(self) -> NodeCache:
        assert isinstance(self._cache, NodeCache)
        return self._cache

    def ready(self) -> tuple[bool, str]:
        """Ready once listed, and unless this agent's own node is cordoned (when skipped)."""
        listed, reason = super().ready()
        if not listed:
            return listed, reason
        own = self._node_cache().self_state
        if self._skip_cordoned and own is not None and own.cordoned:
            return False, "this node is cordoned"
        return True, "ready"

    @property
    def own_zone(self) -> str | None:
        own = self._node_cache().self_state
        return own.zone if own is not None else None


class KubernetesPods(_ListWatch):
    """Peers are the pod-network agents' own Pods, found by label selector in one namespace."""

    kind = "pods"
    thread_name = "monlat-pod-watch"

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        config: KubernetesConfig,
        self_name: str,
        events: EventLog,
    ) -> None:
        assert config.pod_namespace is not None
        api = kubernetes.client.CoreV1Api(api_client)
        super().__init__(
            api.list_namespaced_pod,
            {"namespace": config.pod_namespace},
            config.pod_selector,
            functools.partial(
                PodCache,
                self_name,
                AddressPolicy(("PodIP",), config.ip_family, config.dual_stack),
                skip_not_ready=config.skip_not_ready,
            ),
            config.resync_backoff_max_s,
            events,
        )
