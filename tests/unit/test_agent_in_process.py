"""A whole agent in the test process, without root: the composition root wired to an in-memory
ICMP network (the prober's Transport), its HTTP routes, readiness, measurements on /metrics and
the final OTLP push on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from monlat.agent.agent import Agent
from monlat.agent.settings import parse_agent_config
from tests.support.agent_process import parse_exposition
from tests.support.fake_network import FakeNetwork
from tests.support.ports import free_port
from tests.support.waiting import until

FAST = ["--interval", "100ms", "--timeout", "300ms", "--window", "10s", "--log-measurements",
        "false"]  # fmt: skip


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


class RunningAgent:
    def __init__(self, argv: list[str], network: FakeNetwork, environ: dict[str, str]) -> None:
        self.stderr = io.StringIO()
        self.agent = Agent(
            parse_agent_config(argv, environ),
            stdout=io.StringIO(),
            stderr=self.stderr,
            transports=network.transports,
        )
        self.task: asyncio.Task[int] | None = None

    def events(self, name: str) -> list[str]:
        return [line for line in self.stderr.getvalue().splitlines() if f" event={name}" in line]


@pytest.fixture
async def started() -> AsyncIterator[object]:
    running: list[RunningAgent] = []

    def start(
        argv: list[str], network: FakeNetwork, environ: dict[str, str] | None = None
    ) -> RunningAgent:
        agent = RunningAgent(argv, network, environ or {})
        agent.task = asyncio.create_task(agent.agent.run())
        running.append(agent)
        return agent

    yield start
    for agent in running:
        if agent.task is not None and not agent.task.done():
            agent.agent.request_stop()
            await asyncio.wait_for(agent.task, 10)


async def test_routes_readiness_and_measurements(started: object) -> None:
    port = free_port()
    network = FakeNetwork({"10.0.0.2": 2.0})  # 10.0.0.3 never answers
    agent = started(  # type: ignore[operator]
        ["--node-name", "a", "--peers", "b=10.0.0.2,c=10.0.0.3",
         "--prometheus", f"127.0.0.1:{port}", *FAST],
        network,
    )  # fmt: skip

    async def ready() -> bool:
        try:
            return (await get(port, "/readyz"))[0] == 200
        except OSError:
            return False

    await until(ready, 10, "the agent ready")
    assert await get(port, "/healthz") == (200, "ok\n")
    assert (await get(port, "/nope"))[0] == 404
    assert (await get(port, "/metrics", method="POST"))[0] == 405

    async def measured() -> bool:
        samples = parse_exposition((await get(port, "/metrics"))[1])
        latency = {lab["to"]: v for n, lab, v in samples if n == "latency_between_nodes"}
        loss = {lab["to"]: v for n, lab, v in samples if n == "monlat_loss_ratio"}
        return "b" in latency and loss.get("c") == 1.0

    await until(measured, 10, "both peers measured")
    samples = parse_exposition((await get(port, "/metrics"))[1])
    latency = {lab["to"]: v for n, lab, v in samples if n == "latency_between_nodes"}
    assert set(latency) == {"b"}  # the silent peer has loss, no latency
    assert 2.0 <= latency["b"] < 2.5
    assert agent.events("started") and len(agent.events("peer_added")) == 2


async def test_the_shutdown_flush_pushes_what_was_measured(started: object) -> None:
    pushes: list[ExportMetricsServiceRequest] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            pushes.append(ExportMetricsServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Receiver) as receiver_port:
        port = free_port()
        network = FakeNetwork({"10.0.0.2": 1.0})
        agent = started(  # type: ignore[operator]
            ["--node-name", "a", "--peers", "b=10.0.0.2", "--exporters", "otlp",
             "--otlp-endpoint", f"http://127.0.0.1:{receiver_port}", "--export-interval", "1h",
             "--listen", f"127.0.0.1:{port}", *FAST],
            network,
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        )  # fmt: skip

        async def probed() -> bool:
            return network.sent >= 3

        await until(probed, 10, "three probes sent")
        assert pushes == []  # nothing before the hour is up...
        agent.agent.request_stop()
        assert await asyncio.wait_for(agent.task, 10) == 0
    # ...and the measurements so far on the way out.
    names = {
        metric.name
        for push in pushes
        for resource in push.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {"latency_between_nodes", "monlat_probes", "monlat_peers"} <= names
    assert agent.events("flushed") and agent.events("stopped")


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """An HTTP server on a free port in a thread, for as long as the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def test_a_node_without_icmp_sockets_keeps_the_agent_up_unready_until_it_allows_one(
    started: object,
) -> None:
    """--socket-retry: no crash loop; /healthz ok, /readyz says why, the log says how to fix it,
    and probing starts by itself once a socket opens."""
    from monlat.agent.probe.sockets import ProbeSetupError

    port = free_port()
    network = FakeNetwork({"10.0.0.2": 2.0})
    refusals = {"left": 2}

    def transports(config: object, events: object) -> object:
        if refusals["left"]:
            refusals["left"] -= 1
            raise ProbeSetupError(
                "cannot open an ICMPv4 socket: raw socket refused (no CAP_NET_RAW)"
            )
        return network.transports(config, events)  # type: ignore[arg-type]

    agent = RunningAgent(
        ["--node-name", "a", "--peers", "b=10.0.0.2", "--prometheus", f"127.0.0.1:{port}",
         "--socket-retry", "300ms", *FAST],
        network, {},
    )  # fmt: skip
    agent.agent._open_transports = transports  # type: ignore[assignment]
    agent.task = asyncio.create_task(agent.agent.run())
    try:
        await until(lambda: _answers(port), timeout=10, what="the waiting agent listening")
        status, body = await get(port, "/readyz")
        assert status == 503 and "cannot probe: cannot open an ICMPv4 socket" in body
        assert (await get(port, "/healthz"))[0] == 200
        [first, *_] = agent.events("icmp_socket_unavailable")
        assert "level=error" in first and "retry_in=0.3s" in first and "CAP_NET_RAW" in first
        await until(lambda: _ready(port), timeout=10, what="ready once a socket opened")
        assert len(agent.events("icmp_socket_unavailable")) == 2

        async def measured() -> bool:
            samples = parse_exposition((await get(port, "/metrics"))[1])
            return any(name == "latency_between_nodes" for name, _, _ in samples)

        await until(measured, timeout=10, what="b measured once probing started")
    finally:
        agent.agent.request_stop()
        assert await asyncio.wait_for(agent.task, 10) == 0


async def _answers(port: int) -> bool:
    with contextlib.suppress(OSError):
        return (await get(port, "/healthz"))[0] == 200
    return False


async def _ready(port: int) -> bool:
    with contextlib.suppress(OSError):
        return (await get(port, "/readyz"))[0] == 200
    return False
