"""The Kubernetes discovery loop: the real KubernetesNodes, the official client, a fake API server.

The server is tests/support/fake_apiserver.py, a stand-in speaking the Node list/watch protocol
over HTTP
on 127.0.0.1; nothing here needs a cluster. Each test runs `KubernetesNodes.run(publish)` as an
asyncio task, records every published peer set with its arrival time, cancels the task at the end
and checks that the worker thread has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from monlat.agent.config import IpFamily, KubernetesConfig
from monlat.agent.discovery import PeerMap
from monlat.agent.discovery.kubernetes import KubernetesNodes, load_api_client
from monlat.agent.logs import EventLog
from tests.support.fake_apiserver import FakeApiServer

SELF = "self-node"
WORKER_THREAD = "monlat-node-watch"
QUICK_S = 2.0  # a watch event must reach the agent within this
BACKOFF_MAX_S = 0.5  # retries during outages: 1 s, then every 0.5 s

Peers = dict[str, str]  # name -> address, what the tests compare

pytestmark = pytest.mark.timeout(30)  # a stuck worker thread or watch must not hang the run


class EventCapture:
    """A thread-safe text stream for EventLog; parses the logfmt lines back into dicts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._text += text
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        with self._lock:
            return self._text.splitlines()

    def events(self, name: str | None = None) -> list[dict[str, str]]:
        parsed = []
        for line in self.lines():
            fields = dict(token.partition("=")[::2] for token in shlex.split(line))
            if name is None or fields.get("event") == name:
                parsed.append(fields)
        return parsed

    def count(self, name: str) -> int:
        return len(self.events(name))


class Publishes:
    """The publish callback: keeps every peer set with its arrival time (monotonic)."""

    def __init__(self) -> None:
        self.sets: list[tuple[float, Peers]] = []
        self._arrived = asyncio.Event()

    def __call__(self, peers: PeerMap) -> None:
        self.sets.append((time.monotonic(), {n: p.address for n, p in peers.items()}))
        self._arrived.set()

    @property
    def latest(self) -> Peers | None:
        return self.sets[-1][1] if self.sets else None

    async def wait_for(
        self,
        expected: Peers | Callable[[Peers], bool],
        *,
        timeout: float = QUICK_S,
        after: int = 0,
    ) -> float:
        """Wait for a publish (the `after`-th or later) matching `expected`; its arrival time."""
        matches = expected if callable(expected) else (lambda peers: peers == expected)
        deadline = time.monotonic() + timeout
        while True:
            for arrived, peers in self.sets[after:]:
                if matches(peers):
                    return arrived
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = self.latest if self.latest is None or len(self.latest) < 10 else "..."
                raise AssertionError(
                    f"no matching peer set published within {timeout}s "
                    f"({len(self.sets)} publishes, latest {shown})"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)


@dataclass
class Discovery:
    nodes: KubernetesNodes
    published: Publishes
    log: EventCapture
    thread: threading.Thread


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval_s=1.0) as server:
        yield server


@contextlib.asynccontextmanager
async def running_discovery(
    server: FakeApiServer,
    tmp_path: Path,
    *,
    label_selector: str | None = None,
    address_types: tuple[str, ...] = ("InternalIP", "ExternalIP"),
) -> AsyncIterator[Discovery]:
    """KubernetesNodes.run() as a task; on exit cancel it and require the worker thread gone."""
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    config = KubernetesConfig(
        kubeconfig=str(kubeconfig),
        label_selector=label_selector,
        address_types=address_types,
        ip_family=IpFamily.IPV4,
        resync_backoff_max_s=BACKOFF_MAX_S,
    )
    api_client = load_api_client(config)
    log = EventCapture()
    published = Publishes()
    nodes = KubernetesNodes(api_client, config, SELF, EventLog(log))  # type: ignore[arg-type]
    before = set(threading.enumerate())
    task = asyncio.create_task(nodes.run(published), name="discovery")
    thread = await _new_worker_thread(before)
    try:
        yield Discovery(nodes, published, log, thread)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(thread.join, 10.0)
        api_client.close()  # type: ignore[no-untyped-call]
    assert not thread.is_alive(), "the discovery worker thread did not stop after cancel"


async def _new_worker_thread(before: set[threading.Thread]) -> threading.Thread:
    for _ in range(200):
        for thread in threading.enumerate():
            if thread.name == WORKER_THREAD and thread not in before:
                return thread
        await asyncio.sleep(0.01)
    raise AssertionError("KubernetesNodes.run() started no worker thread")


def ipv4(index: int) -> str:
    return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"


def cluster(server: FakeApiServer, peers: Mapping[str, str], self_ip: str = "10.255.0.1") -> None:
    """The agent's own node plus `peers` (name -> InternalIP)."""
    with server.batch():
        server.add_node(SELF, self_ip)
        for name, ip in peers.items():
            server.add_node(name, ip)


def lists_and_watches(server: FakeApiServer) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    requests = server.requests
    lists = [dict(r.params) for r in requests if r.kind == "list"]
    watches = [dict(r.params) for r in requests if r.kind == "watch"]
    return lists, watches


# -- initial list ------------------------------------------------------------------------------


async def test_initial_list_publishes_every_peer_except_its_own_node(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    cluster(apiserver, {"node-a": "10.0.0.2", "node-b": "10.0.0.3"})
    apiserver.add_node(
        "node-c",
        addresses=[
            {"type": "ExternalIP", "address": "203.0.113.7"},
            {"type": "Hostname", "address": "node-c"},
        ],
    )
    list_rv = str(apiserver.resource_version)

    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for(
            {"node-a": "10.0.0.2", "node-b": "10.0.0.3", "node-c": "203.0.113.7"}
        )
        await _until(d.nodes.synced.is_set)  # set by the worker right after handing over
        assert d.published.sets[0][1] == d.published.latest, "one complete set, not increments"
        [listed] = d.log.events("nodes_listed")
        assert listed["nodes"] == "4"
        assert listed["peers"] == "3"
        assert listed["unaddressable"] == "none"
        # The watch starts from the list's resourceVersion, with bookmarks and a timeout.
        await _until(lambda: apiserver.watch_requests >= 1)
        lists, watches = lists_and_watches(apiserver)
        assert lists == [{"limit": "500"}]
        assert watches[0]["resourceVersion"] == list_rv
        assert watches[0]["allowWatchBookmarks"] == "true"
        assert watches[0]["timeoutSeconds"] == "300"
        assert "labelSelector" not in watches[0]
    assert not d.log.events("api_error")


async def test_unaddressable_nodes_are_named_in_nodes_listed(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    cluster(apiserver, {"node-a": "10.0.0.2"})
    apiserver.add_node("no-ip")  # only a Hostname address
    apiserver.add_node("dns-only", addresses=[{"type": "InternalDNS", "address": "x.internal"}])
    apiserver.add_node("v6-only", addresses=[{"type": "InternalIP", "address": "fd00::9"}])

    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for({"node-a": "10.0.0.2", "v6-only": "fd00::9"})
        [listed] = d.log.events("nodes_listed")
        assert listed["unaddressable"] == "dns-only,no-ip"
        assert (listed["nodes"], listed["peers"]) == ("5", "2")


async def test_pagination_lists_every_page_from_one_snapshot(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    count = 1200  # more than two pages of 500
    expected = {f"node-{i:04d}": ipv4(i) for i in range(count)}
    cluster(apiserver, expected)
    pages: list[dict[str, str]] = []

    def between_pages(params: Mapping[str, str]) -> None:
        pages.append(dict(params))
        if len(pages) == 1:  # created after the snapshot: must arrive through the watch
            apiserver.add_node("node-late", "10.254.0.1")

    apiserver.on_list_page = between_pages
    started = time.monotonic()
    async with running_discovery(apiserver, tmp_path) as d:
        listed_at = await d.published.wait_for(lambda p: len(p) >= count, timeout=10.0)
        assert d.published.sets[0][1] == expected, "the list is the first page's snapshot"
        await d.published.wait_for({**expected, "node-late": "10.254.0.1"})
        [listed] = d.log.events("nodes_listed")
        assert (listed["nodes"], listed["peers"]) == (str(count + 1), str(count))
    print(f"\nlisted {count + 1} nodes in 3 pages: first publish after {listed_at - started:.2f}s")
    assert [p.get("limit") for p in pages] == ["500", "500", "500"]
    assert "continue" not in pages[0]
    assert pages[1]["continue"] and pages[2]["continue"] != pages[1]["continue"]
    assert apiserver.list_requests == 3


# -- watch events --------------------------------------------------------------------------------


async def test_added_modified_deleted_each_publish_quickly(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    peers = {"node-a": "10.0.0.2", "node-b": "10.0.0.3"}
    cluster(apiserver, peers)
    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for(peers)
        await _until(lambda: apiserver.watch_requests >= 1)
        await asyncio.sleep(0.2)  # let the watch connect; the change must not ride on a list
        latencies: dict[str, float] = {}

        async def change(label: str, act: Callable[[], object], result: Peers) -> None:
            already = len(d.published.sets)
            changed_at = time.monotonic()
            act()
            arrived = await d.published.wait_for(result, after=already)
            latencies[label] = arrived - changed_at

        peers = {**peers, "node-c": "10.0.0.4"}
        await change("ADDED", lambda: apiserver.add_node("node-c", "10.0.0.4"), peers)
        peers = {**peers, "node-a": "10.0.1.2"}
        await change("MODIFIED", lambda: apiserver.modify_node("node-a", "10.0.1.2"), peers)
        peers = {k: v for k, v in peers.items() if k != "node-b"}
        await change("DELETED", lambda: apiserver.delete_node("node-b"), peers)

    shown = ", ".join(f"{kind} {seconds * 1000:.0f}ms" for kind, seconds in latencies.items())
    print(f"\nwatch event -> publish: {shown}")
    assert all(latency < QUICK_S for latency in latencies.values())
    assert apiserver.list_requests == 1, "events came through the watch, without relisting"


async def test_changes_that_do_not_move_a_peer_do_not_publish(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    peers = {"node-a": "10.0.0.2", "node-b": "10.0.0.3"}
    cluster(apiserver, peers)
    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for(peers)
        before = len(d.published.sets)
        apiserver.modify_node("node-a", labels={"team": "blue"})  # a label only
        apiserver.modify_node("node-a", ip="10.0.0.2")  # same address, new resourceVersion
        apiserver.modify_node(SELF, ip="10.255.9.9")  # the agent's own node is never a peer
        apiserver.add_node("no-ip")  # an unaddressable node is no peer either
        # A relevant change afterwards: once it is published, the others were processed.
        apiserver.modify_node("node-b", ip="10.0.0.33")
        await d.published.wait_for({**peers, "node-b": "10.0.0.33"}, after=before)
        await asyncio.sleep(0.3)
        assert len(d.published.sets) == before + 1, d.published.sets[before:]


async def test_label_selector_is_sent_and_honoured(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    selector = "monlat.io/probe=true"
    with apiserver.batch():
        apiserver.add_node(SELF, "10.255.0.1", labels={"monlat.io/probe": "true"})
        apiserver.add_node("in", "10.0.0.2", labels={"monlat.io/probe": "true"})
        apiserver.add_node("off", "10.0.0.3", labels={"monlat.io/probe": "false"})
        apiserver.add_node("unlabelled", "10.0.0.4")

    async with running_discovery(apiserver, tmp_path, label_selector=selector) as d:
        await d.published.wait_for({"in": "10.0.0.2"})
        [listed] = d.log.events("nodes_listed")
        assert listed["nodes"] == "2"  # the server filtered: only the selected nodes came
        await _until(lambda: apiserver.watch_requests >= 1)
        # Entering the selection arrives as ADDED, leaving it as DELETED.
        before = len(d.published.sets)
        apiserver.modify_node("unlabelled", labels={"monlat.io/probe": "true"})
        await d.published.wait_for({"in": "10.0.0.2", "unlabelled": "10.0.0.4"}, after=before)
        before = len(d.published.sets)
        apiserver.modify_node("in", labels={"monlat.io/probe": "false"})
        await d.published.wait_for({"unlabelled": "10.0.0.4"}, after=before)
        apiserver.add_node("late", "10.0.0.5", labels={"monlat.io/probe": "false"})
        before = len(d.published.sets)
        apiserver.add_node("later", "10.0.0.6", labels={"monlat.io/probe": "true"})
        await d.published.wait_for(lambda p: "later" in p, after=before)
        assert "late" not in d.published.latest  # type: ignore[operator]

    lists, watches = lists_and_watches(apiserver)
    assert lists and watches
    assert all(params.get("labelSelector") == selector for params in lists + watches)


# -- 410 Gone ------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["during_watch", "on_reconnect"])
async def test_expired_watch_relists_and_catches_up_with_the_gap(
    apiserver: FakeApiServer, tmp_path: Path, when: str
) -> None:
    """The history is compacted while the agent has not seen some changes.

    during_watch: the open watch lags behind the compaction and gets an ERROR 410 event.
    on_reconnect: the watch ends (server timeout) and the new one, from the old RV, gets 410."""
    cluster(apiserver, {"node-a": "10.0.0.2", "node-b": "10.0.0.3"})
    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for({"node-a": "10.0.0.2", "node-b": "10.0.0.3"})
        await _until(lambda: apiserver.watch_requests >= 1)
        before = len(d.published.sets)
        with apiserver.batch():  # no watcher sees these before the compaction
            apiserver.add_node("node-c", "10.0.0.4")
            apiserver.modify_node("node-a", "10.0.1.2")
            apiserver.delete_node("node-b")
            apiserver.compact()
            if when == "on_reconnect":
                apiserver.end_watches()
        gap = {"node-a": "10.0.1.2", "node-c": "10.0.0.4"}
        await d.published.wait_for(gap, after=before)
        assert apiserver.expired_responses == 1
        assert apiserver.list_requests == 2, "one relist after the 410"
        [expired] = d.log.events("watch_expired")
        assert expired["action"] == "relist"
        assert d.log.events("nodes_listed")[-1]["peers"] == "2"
        # And the watch after the relist works.
        await _until(lambda: apiserver.watch_requests >= (3 if when == "on_reconnect" else 2))
        before = len(d.published.sets)
        apiserver.add_node("node-d", "10.0.0.5")
        await d.published.wait_for({**gap, "node-d": "10.0.0.5"}, after=before)
    assert d.log.count("api_error") == 0
    assert all(peers for _, peers in d.published.sets), "never an empty peer set"


async def test_expired_continue_token_restarts_the_list(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    expected = {f"node-{i:04d}": ipv4(i) for i in range(700)}
    cluster(apiserver, expected)
    pages = 0

    def compact_after_first_page(params: Mapping[str, str]) -> None:
        nonlocal pages
        pages += 1
        if pages == 1:
            apiserver.delete_node("node-0000")
            apiserver.compact()  # the first page's continue token is now too old

    apiserver.on_list_page = compact_after_first_page
    async with running_discovery(apiserver, tmp_path) as d:
        expected.pop("node-0000")
        await d.published.wait_for(expected, timeout=5.0)
        assert d.published.sets[0][1] == expected, "no partial or mixed list was published"
    assert apiserver.expired_responses == 1
    # page 1, the expired page 2, then a fresh list of two pages
    assert apiserver.list_requests == 4


# -- API server outage ---------------------------------------------------------------------------


@dataclass
class Outage:
    published: Publishes
    log: EventCapture
    before_outage: Peers
    down_at: float
    up_at: float
    resynced_at: float
    expected_after: Peers
    unreachable_while_down: int
    recovered_while_down: int
    publishes_while_down: int


async def _outage(server: FakeApiServer, tmp_path: Path, down_s: float = 3.0) -> Outage:
    """Stop the API server for `down_s` seconds while changing the cluster, then restart it."""
    peers = {"node-a": "10.0.0.2", "node-b": "10.0.0.3"}
    cluster(server, peers)
    async with running_discovery(server, tmp_path) as d:
        await d.published.wait_for(peers)
        await _until(lambda: server.watch_requests >= 1)
        await asyncio.sleep(0.2)
        before = len(d.published.sets)
        down_at = time.monotonic()
        server.stop()
        # Changes while the agent cannot see them.
        server.add_node("node-c", "10.0.0.4")
        server.modify_node("node-a", "10.0.1.2")
        server.delete_node("node-b")
        await asyncio.sleep(down_s)
        unreachable = d.log.count("api_unreachable")
        recovered = d.log.count("api_recovered")
        during = len(d.published.sets) - before
        server.start()
        up_at = time.monotonic()
        expected = {"node-a": "10.0.1.2", "node-c": "10.0.0.4"}
        resynced_at = await d.published.wait_for(expected, after=before, timeout=5.0)
        await asyncio.sleep(0.3)  # let any late warning land before counting
        return Outage(
            d.published,
            d.log,
            peers,
            down_at,
            up_at,
            resynced_at,
            expected,
            unreachable,
            recovered,
            during,
        )
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


async def test_outage_keeps_the_last_peers_and_resynchronises(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    outage = await _outage(apiserver, tmp_path)
    print(
        f"\noutage {outage.up_at - outage.down_at:.1f}s; "
        f"resynchronised {outage.resynced_at - outage.up_at:.2f}s after the restart"
    )
    assert outage.publishes_while_down == 0, "the last peers stay while the API is unreachable"
    assert all(peers for _, peers in outage.published.sets), "never an empty peer set"
    assert outage.published.latest == outage.expected_after
    assert outage.unreachable_while_down >= 1
    # Retried by itself, within the backoff (1 s, then BACKOFF_MAX_S) plus a little.
    assert outage.resynced_at - outage.up_at < 1.0 + BACKOFF_MAX_S + QUICK_S


async def test_outage_logs_unreachable_once_and_recovered_after_the_restart(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    outage = await _outage(apiserver, tmp_path)
    unreachable = outage.log.events("api_unreachable")
    assert unreachable and unreachable[0]["keep_peers"] == "True"
    assert outage.unreachable_while_down == 1, (
        "api_unreachable must be logged once per outage, not per retry:\n"
        + "\n".join(line for line in outage.log.lines() if "event=api_" in line)
    )
    assert outage.recovered_while_down == 0, "api_recovered logged while the API was still down"
    assert outage.log.count("api_recovered") == 1


async def test_start_while_api_server_is_down(apiserver: FakeApiServer, tmp_path: Path) -> None:
    cluster(apiserver, {"node-a": "10.0.0.2"})
    apiserver.stop()
    async with running_discovery(apiserver, tmp_path) as d:
        await _until(lambda: d.log.count("api_unreachable") >= 1, timeout=QUICK_S)
        await asyncio.sleep(1.5)
        assert not d.published.sets, "nothing published before a list succeeded"
        assert not d.nodes.synced.is_set()
        apiserver.start()
        await d.published.wait_for({"node-a": "10.0.0.2"}, timeout=1.0 + BACKOFF_MAX_S + QUICK_S)
        await _until(d.nodes.synced.is_set)
        await _until(lambda: d.log.count("api_recovered") == 1)
        assert d.log.count("api_unreachable") == 1


async def test_api_error_is_logged_and_retried(apiserver: FakeApiServer, tmp_path: Path) -> None:
    cluster(apiserver, {"node-a": "10.0.0.2"})
    apiserver.fail_next(1, status=403, reason="Forbidden")
    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for({"node-a": "10.0.0.2"}, timeout=1.0 + QUICK_S)
        [error] = d.log.events("api_error")
        assert (error["status"], error["keep_peers"]) == ("403", "True")
        assert apiserver.list_requests == 2


# -- shutdown ------------------------------------------------------------------------------------


async def test_cancel_stops_the_worker_thread_promptly_and_quietly(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    cluster(apiserver, {"node-a": "10.0.0.2"})
    async with running_discovery(apiserver, tmp_path) as d:
        await d.published.wait_for({"node-a": "10.0.0.2"})
        await _until(lambda: apiserver.watch_requests >= 1)
        await asyncio.sleep(0.2)  # the worker is now blocked reading the watch stream
        cancelled_at = time.monotonic()
    stopped_s = time.monotonic() - cancelled_at
    assert not d.thread.is_alive()
    assert stopped_s < 1.0, f"worker thread took {stopped_s:.2f}s to stop"
    warnings = [line for line in d.log.lines() if "level=info" not in line]
    assert not warnings, "a requested shutdown is no API failure:\n" + "\n".join(warnings)


async def _until(condition: Callable[[], bool], timeout: float = QUICK_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
