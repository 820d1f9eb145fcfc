"""The scaled-out topology: stateless collector replicas with config.remote-write.yaml, each
writing to a Prometheus-compatible store (the Debian Prometheus with
--web.enable-remote-write-receiver), and a real agent whose OTLP/gRPC connection moves between
replicas.

The agent reaches the replicas through `Forwarder`, a TCP forwarder standing in for the Service:
like kube-proxy it balances connections, not requests, handing each new connection to the next
backend. Every check reads the store through the Prometheus HTTP API:

- one series per (from, to), labelled from, to, job and instance only, whichever replica carried
  it (no duplicate because of the replica);
- samples at the agent's pace around the move: no gap beyond one push interval plus slack (no
  push lost), none closer than half an interval (no second source keeping the series alive);
- after the move the old replica receives and sends nothing more for that agent (its own
  telemetry), and once the agent stops, nothing keeps its series alive in the store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.support.agent_process import REPO, AgentProcess, http_get, parse_exposition
from tests.support.collector import Collector
from tests.support.lab.fixtures import skip_or_fail
from tests.support.ports import free_ports
from tests.support.prometheus_server import PrometheusServer
from tests.support.waiting import wait_until

INTERVAL_S = 2.0  # the agent's push period (--export-interval)
# A push's timestamp is the agent's collection time, and the next collection starts one interval
# after the previous export returned: consecutive samples are INTERVAL_S + export time apart.
SLACK_S = 0.5
PAIRS = {("nodeA", "nodeB"), ("nodeA", "nodeC")}
Labels = tuple[tuple[str, str], ...]
SERIES_LABELS = {"__name__", "from", "to", "job", "instance"}


# ---------------------------------------------------------------------------------------------
# The Service stand-in
# ---------------------------------------------------------------------------------------------


@dataclass
class Connection:
    backend: int  # the port of the replica it was handed to
    opened: float
    sockets: tuple[socket.socket, socket.socket]
    last_request: float = 0.0  # when the agent last sent bytes on it
    closed: bool = False


class Forwarder:
    """A TCP forwarder for 127.0.0.1: each new connection goes to the next of `backends` (round
    robin, skipping one that refuses), and bytes are copied both ways until either side closes."""

    def __init__(self, backends: list[int]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._backends = list(backends)
        self._next = 0
        self.connections: list[Connection] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def set_backends(self, backends: list[int]) -> None:
        """Where new connections go from now on (the Service's endpoints changed)."""
        with self._lock:
            self._backends = list(backends)
            self._next = 0

    def cut(self) -> None:
        """Close every open connection at both ends, as a broken path would."""
        for connection in self.open_connections():
            for sock in connection.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> list[Connection]:
        with self._lock:
            return [c for c in self.connections if not c.closed]

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            start = self._next
            self._next += 1
            count = len(self._backends)
            order = [self._backends[(start + i) % count] for i in range(count)]
        for backend in order:
            try:
                upstream = socket.create_connection(("127.0.0.1", backend), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            break
        else:
            client.close()
            return
        connection = Connection(backend, time.monotonic(), (client, upstream))
        with self._lock:
            self.connections.append(connection)
        done = threading.Barrier(2, action=lambda: self._closed(connection))
        for args in ((client, upstream, connection, done), (upstream, client, None, done)):
            threading.Thread(target=self._pump, args=args, daemon=True).start()

    @staticmethod
    def _pump(
        source: socket.socket,
        sink: socket.socket,
        connection: Connection | None,
        done: threading.Barrier,
    ) -> None:
        try:
            while chunk := source.recv(65536):
                if connection is not None:
                    connection.last_request = time.monotonic()
                sink.sendall(chunk)
        except OSError:
            pass
        for sock in (source, sink):  # one side is gone: so is the connection
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        done.wait()

    def _closed(self, connection: Connection) -> None:
        with self._lock:
            connection.closed = True
        for sock in connection.sockets:
            sock.close()


# ---------------------------------------------------------------------------------------------
# Replicas, store, agent
# ---------------------------------------------------------------------------------------------


@dataclass
class Replica:
    collector: Collector
    telemetry_port: int

    def telemetry(self) -> dict[str, float]:
        """The collector's own counters, summed over their labels, without a _total suffix."""
        status, body = self.collector.get(self.telemetry_port, "/metrics")
        assert status == 200, body
        totals: dict[str, float] = {}
        for name, _, value in parse_exposition(body):
            key = name.removesuffix("_total")
            totals[key] = totals.get(key, 0.0) + value
        return totals

    def received(self) -> float:
        return self.telemetry().get("otelcol_receiver_accepted_metric_points", 0.0)

    def sent(self) -> float:
        return self.telemetry().get("otelcol_exporter_sent_metric_points", 0.0)


class Store(PrometheusServer):
    """Prometheus as a remote-write receiver (no scrape target) on a fixed port and TSDB."""

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(
            workdir, None, port=port, connect=socket.socket,
            flags=("--web.enable-remote-write-receiver",),
        )  # fmt: skip
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}/api/v1/write"

    def api(self, path: str, **params: str) -> object:
        status, body = http_get(
            socket.socket, "127.0.0.1", self.port, f"{path}?{urllib.parse.urlencode(params)}"
        )
        assert status == 200, body
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return reply["data"]

    def series(self, selector: str, since: float) -> list[dict[str, str]]:
        data = self.api("/api/v1/series", **{"match[]": selector, "start": f"{since:.3f}"})
        assert isinstance(data, list)
        return data

    def samples(self, selector: str, since: float) -> dict[Labels, list[float]]:
        """{labels: [timestamp, ...]} of the raw samples since `since` (Unix seconds)."""
        window = max(1, int(time.time() - since) + 1)
        found: dict[Labels, list[float]] = {}
        for result in self.query(f"{selector}[{window}s]"):
            labels = tuple(sorted(result["metric"].items()))  # type: ignore[attr-defined]
            stamps = [float(ts) for ts, _ in result["values"]]  # type: ignore[index]
            found[labels] = [ts for ts in stamps if ts >= since]
        return found


def wait_for_pushes(store: Store, selector: str, since: float, count: int) -> None:
    """Until every pair has `count` samples since `since`."""

    def enough() -> bool:
        found = store.samples(selector, since)
        return len(found) == len(PAIRS) and all(len(s) >= count for s in found.values())

    wait_until(enough, timeout=count * INTERVAL_S + 20, what=f"{count} pushes of {selector}")


@dataclass
class Topology:
    binary: str
    workdir: Path
    store: Store
    replicas: dict[str, Replica] = field(default_factory=dict)
    agents: list[AgentProcess] = field(default_factory=list)
    forwarder: Forwarder | None = None

    @property
    def token_file(self) -> Path:
        path = self.workdir / "ingest-token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32) + "\n")
        return path

    def replica(self, name: str, *, max_age: str = "1h", env: dict[str, str] | None = None,
                exporters: str | None = None) -> Replica:  # fmt: skip
        telemetry_port, *ports = free_ports(5)
        overlay = self.workdir / f"telemetry-{name}.yaml"
        overlay.write_text(
            "service:\n  telemetry:\n    metrics:\n      level: normal\n      readers:\n"
            "        - pull:\n            exporter:\n              prometheus:\n"
            f"                host: 127.0.0.1\n                port: {telemetry_port}\n"
        )
        collector = Collector(
            self.binary, "127.0.0.1", *ports,
            overlays=("config.remote-write.yaml", str(overlay)),
            # One Secret for every replica, as in the cluster: an agent moved keeps its token.
            token_file=self.token_file,
            extra_env={
                "MONLAT_REMOTE_WRITE_URL": self.store.url,
                "MONLAT_OTLP_MAX_CONNECTION_AGE": max_age,
                "MONLAT_OTLP_MAX_CONNECTION_AGE_GRACE": "5s",
                **(env or {}),
            },
            settings=(f"service.pipelines.metrics.exporters={exporters}",) if exporters else (),
        )  # fmt: skip
        collector.start(self.workdir / f"collector-{name}.log")
        self.replicas[name] = replica = Replica(collector, telemetry_port)
        return replica

    def agent(self, grpc_port: int, interval_s: float = INTERVAL_S) -> AgentProcess:
        port = free_ports(1)[0]
        agent = AgentProcess(
            ["--node-name", "nodeA", "--peers", "nodeB=127.0.0.1,nodeC=::1", "--interval", "250ms",
             "--exporters", "otlp", "--export-interval", f"{interval_s}s",
             "--listen", f"127.0.0.1:{port}", "--log-measurements", "false"],
            port=port,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
                 "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                 "MONLAT_OTLP_TOKEN_FILE": str(self.token_file)},
        )  # fmt: skip
        self.agents.append(agent)
        agent.wait_ready()
        return agent


@pytest.fixture
def topology(collector_bin: str, tmp_path: Path) -> Iterator[Topology]:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    topo = Topology(collector_bin, tmp_path, Store(store_dir, free_ports(1)[0]))
    try:
        yield topo
    finally:
        for agent in topo.agents:
            if agent.proc.poll() is None:
                agent.stop()
        if topo.forwarder is not None:
            topo.forwarder.close()
        for replica in topo.replicas.values():
            replica.collector.stop()
        topo.store.stop()


# ---------------------------------------------------------------------------------------------
# What every move must leave in the store
# ---------------------------------------------------------------------------------------------


def assert_one_series_per_pair(store: Store, since: float) -> None:
    found = store.series("latency_between_nodes", since)
    pairs = [(s["from"], s["to"]) for s in found]
    assert sorted(pairs) == sorted(PAIRS), f"expected one series per pair: {found}"
    for labels in found:
        assert set(labels) == SERIES_LABELS, labels
        assert (labels["job"], labels["instance"]) == ("monlat", "nodeA"), labels


def assert_agent_pace(store: Store, since: float, until: float) -> list[float]:
    """Samples of every pair since `since` come one push interval apart: none missing, none
    doubled. Returns the timestamps of one pair."""
    one: list[float] = []
    for selector in ("latency_between_nodes", 'monlat_probes_total{result="reply"}'):
        found = store.samples(selector, since)
        assert len(found) == len(PAIRS), found
        for labels, all_stamps in found.items():
            stamps = [ts for ts in all_stamps if ts <= until]
            assert len(stamps) >= 4, (labels, stamps)
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            assert max(gaps) <= INTERVAL_S + SLACK_S, f"{labels}: a push is missing: {gaps}"
            assert min(gaps) >= INTERVAL_S / 2, f"{labels}: a second source: {gaps}"
            one = stamps
    return one


def assert_nothing_keeps_it_alive(topo: Topology, agent: AgentProcess) -> None:
    """After the agent's last push its series end: no replica goes on writing them. (The store
    drops a series from instant queries after its lookback, 5 s here.)"""
    assert agent.stop() == 0
    stopped = time.time()
    wait_until(
        lambda: not topo.store.query("latency_between_nodes"),
        timeout=20,
        what="latency_between_nodes gone from the store after the agent stopped",
    )
    last = max(
        max(stamps) for stamps in topo.store.samples("latency_between_nodes", stopped - 30).values()
    )
    assert last <= stopped + 1.0, "a sample written after the agent stopped"
    for name, replica in topo.replicas.items():
        if replica.collector.proc is not None and replica.collector.proc.poll() is None:
            assert replica.sent() == replica.received(), f"replica {name} still holds points"


# ---------------------------------------------------------------------------------------------
# Moves
# ---------------------------------------------------------------------------------------------


def test_an_agent_moved_to_another_replica(topology: Topology) -> None:
    """The Service's endpoints change and the agent's connection breaks while idle (a node or
    path failure): its next push opens a connection that lands on the other replica."""
    a, b = topology.replica("a"), topology.replica("b")
    since = time.time()
    forwarder = topology.forwarder = Forwarder([a.collector.grpc_port])
    agent = topology.agent(forwarder.port)
    wait_for_pushes(topology.store, "latency_between_nodes", since, 3)

    # Right after a push (the connection idle), point the Service at b and break the path.
    (first,) = forwarder.open_connections()
    pushes = a.received()
    wait_until(lambda: a.received() > pushes and time.monotonic() - first.last_request > 0.3,
             timeout=10, what="a push to a, then a quiet connection")  # fmt: skip
    forwarder.set_backends([b.collector.grpc_port])
    forwarder.cut()
    moved = time.time()
    wait_until(lambda: b.sent() > 0, timeout=10, what="the agent's next push through b")
    received_a, sent_a = a.received(), a.sent()
    assert sent_a == received_a, "replica a kept points it never wrote"
    first_b = b.sent()
    wait_until(lambda: b.sent() >= first_b * 4, timeout=20, what="three more pushes through b")

    assert (a.received(), a.sent()) == (received_a, sent_a), "a still carries the agent"
    assert [c.backend for c in forwarder.connections] == [
        a.collector.grpc_port, b.collector.grpc_port,
    ]  # fmt: skip
    assert_one_series_per_pair(topology.store, since)
    stamps = assert_agent_pace(topology.store, since, time.time())
    assert stamps[0] < moved - INTERVAL_S and stamps[-1] > moved + 3 * INTERVAL_S
    assert_nothing_keeps_it_alive(topology, agent)


def test_a_stopped_replica_hands_its_agents_over(topology: Topology) -> None:
    """Scale-down or rollout: the replica leaves the endpoints and gets SIGTERM. It closes the
    agent's connection gracefully and delivers what it holds; the agent reconnects to b."""
    a, b = topology.replica("a"), topology.replica("b")
    since = time.time()
    forwarder = topology.forwarder = Forwarder([a.collector.grpc_port])
    agent = topology.agent(forwarder.port)
    wait_for_pushes(topology.store, "latency_between_nodes", since, 3)

    forwarder.set_backends([b.collector.grpc_port])
    a.collector.stop()
    assert a.collector.proc is not None and a.collector.proc.returncode == 0, a.collector.log()
    stopped = time.time()
    wait_until(lambda: b.sent() > 0, timeout=15, what="the agent's next push through b")
    first_b = b.sent()
    wait_until(lambda: b.sent() >= first_b * 4, timeout=20, what="three more pushes through b")

    assert [c.backend for c in forwarder.connections] == [
        a.collector.grpc_port, b.collector.grpc_port,
    ]  # fmt: skip
    assert_one_series_per_pair(topology.store, since)
    stamps = assert_agent_pace(topology.store, since, time.time())
    assert stamps[0] < stopped - INTERVAL_S and stamps[-1] > stopped + 3 * INTERVAL_S
    assert_nothing_keeps_it_alive(topology, agent)


def test_max_connection_age_moves_the_agent_between_replicas(topology: Topology) -> None:
    """With max_connection_age the replicas close the agent's connection every few seconds
    (GOAWAY, in-flight push finished): it reconnects, and the Service hands it to the other
    replica. This is what spreads agents onto replicas added by a scale-up."""
    a = topology.replica("a", max_age="3s")
    b = topology.replica("b", max_age="3s")
    since = time.time()
    forwarder = topology.forwarder = Forwarder([a.collector.grpc_port, b.collector.grpc_port])
    agent = topology.agent(forwarder.port)
    # Four connections lived their age out: the fifth has just opened.
    wait_until(lambda: len(forwarder.connections) >= 5, timeout=60,
             what="the agent reconnected four times")  # fmt: skip

    backends = [c.backend for c in forwarder.connections]
    assert backends[:5] == [a.collector.grpc_port, b.collector.grpc_port] * 2 + [
        a.collector.grpc_port
    ], backends
    lifetimes = [
        later.opened - earlier.opened
        for earlier, later in itertools.pairwise(forwarder.connections)
    ]
    assert all(lifetime <= 3 * 1.1 + INTERVAL_S + SLACK_S for lifetime in lifetimes), lifetimes
    assert a.sent() > 0 and b.sent() > 0
    assert_one_series_per_pair(topology.store, since)
    assert_agent_pace(topology.store, since, time.time())
    assert_nothing_keeps_it_alive(topology, agent)


# ---------------------------------------------------------------------------------------------
# Names, the store's outage, headers and TLS
# ---------------------------------------------------------------------------------------------


def test_remote_write_names_equal_the_prometheus_exporter(topology: Topology) -> None:
    """The same pushes through both exporters (one collector, both in its pipeline): the store
    holds exactly the series /metrics serves, names and labels alike."""
    replica = topology.replica("both", exporters="[prometheus,prometheus_remote_write]")
    since = time.time()
    topology.agent(replica.collector.grpc_port)
    collector = replica.collector

    def exposition() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(name, tuple(sorted(labels.items()))) for name, labels, _ in collector.scrape()}

    def stored() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        found = topology.store.series('{job="monlat"}', since)
        return {
            (s["__name__"], tuple(sorted((k, v) for k, v in s.items() if k != "__name__")))
            for s in found
        }

    wait_until(lambda: bool(exposition()) and canonical(exposition()) == canonical(stored()),
             timeout=30, what="the store and /metrics hold the same series")  # fmt: skip
    names = {name for name, _ in stored()}
    assert {
        "latency_between_nodes",
        "monlat_probes_total",
        "monlat_rtt_seconds_bucket",
        "monlat_rtt_seconds_sum",
        "monlat_rtt_seconds_count",
        "target_info",
    } <= names, names
    assert not [n for n in names if "milliseconds" in n or n.startswith("otel_scope")]
    assert not [labels for _, labels in stored() if any(k.startswith("otel_") for k, _ in labels)]
    # Only the spelling of one bucket bound differs: Go's shortest float ("5e-05") on /metrics,
    # fixed-point ("0.00005") in remote write. PromQL reads both as the number 5e-05.
    les = {dict(labels)["le"] for name, labels in stored() if name == "monlat_rtt_seconds_bucket"}
    served = {
        dict(labels)["le"] for name, labels in exposition() if name == "monlat_rtt_seconds_bucket"
    }
    assert les - served == {"0.00005"} and served - les == {"5e-05"}, (les, served)

    # `monlat matrix` reads the store through Prometheus' /federate endpoint.
    selector = urllib.parse.quote('{job="monlat"}')
    done = subprocess.run(
        [sys.executable, "-m", "monlat", "matrix", "--format", "csv", "--url",
         f"http://127.0.0.1:{topology.store.port}/federate?match[]={selector}"],
        capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    measured = sorted((row[0], row[1]) for row in rows if row[4])  # latency_ms
    assert measured == sorted(PAIRS), done.stdout


def canonical(
    series: set[tuple[str, tuple[tuple[str, str], ...]]],
) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Bucket bounds as numbers, however they are spelt."""
    return {
        (name, tuple((k, repr(float(v)) if k == "le" else v) for k, v in labels))
        for name, labels in series
    }


def test_the_queue_keeps_pushes_while_the_store_is_down(topology: Topology) -> None:
    """The store is down for a few pushes: the replica holds them in its remote_write_queue (in
    memory) and writes them, in order and with their own timestamps, once the store is back."""
    replica = topology.replica("a")
    since = time.time()
    topology.agent(replica.collector.grpc_port)
    wait_for_pushes(topology.store, "latency_between_nodes", since, 2)

    def queued() -> float:
        return replica.telemetry().get("otelcol_exporter_queue_size", 0.0)

    topology.store.stop()
    down = time.time()
    # One batch retried, three more waiting behind it.
    wait_until(lambda: queued() >= 3, timeout=30, what="pushes queued while the store is down")
    topology.store = Store(topology.store.workdir, topology.store.port)
    up = time.time()
    wait_until(lambda: queued() == 0, timeout=30, what="the queue drained into the store")
    wait_for_pushes(topology.store, "latency_between_nodes", up + INTERVAL_S, 2)
    telemetry = replica.telemetry()
    assert telemetry.get("otelcol_exporter_send_failed_metric_points", 0.0) == 0, telemetry
    assert (
        telemetry["otelcol_exporter_sent_metric_points"]
        == telemetry["otelcol_receiver_accepted_metric_points"]
    )
    stamps = assert_agent_pace(topology.store, since, time.time())
    held = [ts for ts in stamps if down < ts < up]
    assert len(held) >= 3, f"pushes made while the store was down: {held}"


class _RemoteWriteSink(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append({**{k.lower(): v for k, v in self.headers.items()},
                              "path": self.path, "size": str(len(body))})  # fmt: skip
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_auth_tenant_and_tls_come_from_the_environment(topology: Topology, tmp_path: Path) -> None:
    """MONLAT_REMOTE_WRITE_AUTH_HEADER, _ORG_ID and _CA_FILE reach an https store; unset, the two
    headers go out empty; without the CA the store's certificate is refused."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        skip_or_fail(f"openssl cannot make a test certificate: {made.stderr}")
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _RemoteWriteSink)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink.socket = context.wrap_socket(sink.socket, server_side=True)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{sink.server_address[1]}/api/v1/push"
    received = _RemoteWriteSink.received
    received.clear()
    try:
        untrusted = topology.replica("untrusted", env={"MONLAT_REMOTE_WRITE_URL": url})
        anonymous = topology.replica("anonymous", env={
            "MONLAT_REMOTE_WRITE_URL": url, "MONLAT_REMOTE_WRITE_CA_FILE": str(cert),
        })  # fmt: skip
        tenant = topology.replica("tenant", env={
            "MONLAT_REMOTE_WRITE_URL": url,
            "MONLAT_REMOTE_WRITE_AUTH_HEADER": "Bearer s3cret",
            "MONLAT_REMOTE_WRITE_ORG_ID": "tenant-1",
            "MONLAT_REMOTE_WRITE_CA_FILE": str(cert),
        })  # fmt: skip
        for replica in (untrusted, anonymous, tenant):
            topology.agent(replica.collector.grpc_port)

        def both_arrived() -> bool:
            return {r["authorization"] for r in received} >= {"", "Bearer s3cret"}

        wait_until(both_arrived, timeout=20, what="remote writes from both trusting replicas")

        def refused() -> bool:  # tried, never delivered: the store's certificate is not trusted
            telemetry = untrusted.telemetry()
            return (
                telemetry.get("otelcol_exporter_prometheusremotewrite_sent_batches", 0) >= 2
                and telemetry.get("otelcol_exporter_sent_metric_points", 0) == 0
            )

        wait_until(refused, timeout=30, what="the untrusted replica trying in vain")
    finally:
        sink.shutdown()
    for request in received:
        assert request["path"] == "/api/v1/push"
        assert request["content-encoding"] == "snappy"
        assert request["content-type"] == "application/x-protobuf"
        assert request["x-prometheus-remote-write-version"] == "0.1.0"
        assert int(request["size"]) > 0
        expected = "tenant-1" if request["authorization"] else ""
        assert request["x-scope-orgid"] == expected, request
    assert {r["authorization"] for r in received} == {"", "Bearer s3cret"}


def test_without_the_url_the_layer_refuses_to_start(collector_bin: str) -> None:
    config = REPO / "deploy" / "otel-collector"
    env = {k: v for k, v in os.environ.items() if k != "MONLAT_REMOTE_WRITE_URL"}
    done = subprocess.run(
        [collector_bin, "validate", f"--config={config / 'config.yaml'}",
         f"--config={config / 'config.remote-write.yaml'}"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert "prometheus_remote_write" in done.stderr and "invalid endpoint" in done.stderr


def test_the_layer_serves_no_metrics_endpoint(topology: Topology) -> None:
    """A replica never serves /metrics: nothing there for a central Prometheus to scrape twice."""
    replica = topology.replica("a")
    with pytest.raises(ConnectionRefusedError):
        replica.collector.get(replica.collector.metrics_port, "/metrics")
    assert replica.collector.proc is not None and replica.collector.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# The Kubernetes component (validated against the schemas in tests/unit/test_manifests.py)
# ---------------------------------------------------------------------------------------------


def test_scale_out_overlay_runs_the_layer_on_spread_replicas() -> None:
    import yaml

    from tests.unit.test_manifests import kustomize

    objects = {
        (o["kind"], o["metadata"]["name"]): o
        for o in yaml.safe_load_all(kustomize("deploy/overlays/scale-out"))
    }
    base = {
        (o["kind"], o["metadata"]["name"]): o
        for o in yaml.safe_load_all((REPO / "deploy" / "k8s" / "monlat.yaml").read_text())
    }
    deployment = objects["Deployment", "monlat"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    (base_container,) = base["Deployment", "monlat"]["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert container["args"] == [
        "--config=/etc/otelcol/config.yaml",
        "--config=/etc/otelcol-remote-write/config.remote-write.yaml",
    ]
    assert container["envFrom"] == [{"secretRef": {"name": "monlat-remote-write"}}]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MONLAT_OTLP_MAX_CONNECTION_AGE"] == "2m"
    assert container["resources"] == base_container["resources"]
    assert {port["name"] for port in container["ports"]} == {
        "otlp-grpc", "otlp-http", "health", "telemetry"
    }  # fmt: skip
    # Every replica holds the one ingest Secret: an agent moved to another is still let in.
    assert {m["name"] for m in container["volumeMounts"]} >= {"ingest-token"}
    assert container["readinessProbe"] == base_container["readinessProbe"]

    mount = {m["name"]: m for m in container["volumeMounts"]}["remote-write-config"]
    assert mount["mountPath"] == "/etc/otelcol-remote-write"
    volume = {v["name"]: v for v in pod["spec"]["volumes"]}["remote-write-config"]
    config_map = objects["ConfigMap", volume["configMap"]["name"]]
    layer = (REPO / "deploy" / "otel-collector" / "config.remote-write.yaml").read_text()
    assert config_map["data"]["config.remote-write.yaml"] == layer

    assert "affinity" not in pod["spec"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    budget = objects["PodDisruptionBudget", "monlat"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = objects["Service", "monlat"]
    assert {port["port"] for port in service["spec"]["ports"]} == {4317, 4318}
    assert not service["metadata"].get("annotations"), "nothing to scrape on the replicas"
    # The agents are those of the base, unchanged.
    agents = yaml.safe_load((REPO / "deploy" / "k8s" / "agents.yaml").read_text())
    assert objects["DaemonSet", "monlat-agent"] == agents
