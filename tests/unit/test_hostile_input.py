"""Every parser that reads outside bytes, tried with generated and mutated input: it returns a
value or raises the one error it documents, never anything else, and an ICMP packet becomes a
measurement only when it answers a probe this agent sent.

The unit tier runs a fast slice (tests/support/fuzzing.py: 200 inputs per target); the long runs
are `hatch run fuzz:long`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import socket
import string
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes
import requests
from hypothesis import assume, given
from hypothesis import strategies as st

import tests.support.fuzzing  # noqa: F401  (the profile)
from monlat.agent.config import parse_peers, read_peers_file
from monlat.agent.discovery.kubernetes import _ListWatch
from monlat.agent.discovery.nodes import AddressPolicy, Eligibility, NodeCache
from monlat.agent.discovery.pods import PodCache
from monlat.agent.logs import EventLog
from monlat.agent.probe.icmp import EchoBuilder, Ignored, Packet, parse
from monlat.agent.probe.pending import Outcome, PendingProbes, Result
from monlat.agent.probe.pmtu import Verdict
from monlat.agent.probe.sockets import QueuedError
from monlat.agent.settings import AGENT_FLAGS, otlp_headers, parse_agent_config
from monlat.common.errors import ConfigError
from monlat.tools.scrape import ExpositionError, parse_exposition
from tests.unit.test_path_mtu import check_once

COOKIE = b"monlat42"
IDENT = 0x4242
FAMILIES = st.sampled_from([socket.AF_INET, socket.AF_INET6])
ADDRESSES = st.sampled_from(["10.0.0.2", "10.0.0.3", "fd00::2", "192.0.2.9"])


# -- ICMP -------------------------------------------------------------------------------------


@given(data=st.binary(max_size=1600), family=FAMILIES, ip_header=st.booleans(), source=ADDRESSES)
def test_any_datagram_parses_to_a_packet_or_a_reason(
    data: bytes, family: int, ip_header: bool, source: str
) -> None:
    assert isinstance(parse(data, family, source, ip_header=ip_header), Packet | Ignored)


def probes(family: int) -> tuple[PendingProbes, EchoBuilder, dict[int, tuple[str, int]]]:
    """Three probes in flight to 10.0.0.2 (sequences 1-3, tokens 101-103)."""
    pending = PendingProbes(COOKIE, IDENT, timeout_s=1.0)
    builder = EchoBuilder(family, COOKIE, 56)
    sent = {}
    for sequence in (1, 2, 3):
        token = 100 + sequence
        pending.add("b", "10.0.0.2", sequence, token, sent_ns=0, deadline=1e18)
        sent[token] = ("10.0.0.2", sequence)
    return pending, builder, sent


def as_reply(request: bytes, family: int) -> bytes:
    reply_type = 0 if family == socket.AF_INET else 129
    return bytes([reply_type]) + request[1:]


@st.composite
def mutated_replies(draw: st.DrawFn) -> tuple[int, bytes, str]:
    """A genuine reply to one of the probes, then flipped, cut, extended or re-addressed."""
    family = draw(FAMILIES)
    _, builder, _ = probes(family)
    sequence = draw(st.integers(1, 3))
    packet = bytearray(as_reply(builder.build(IDENT, sequence, 100 + sequence), family))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(packet) - 1))
        packet[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        packet = packet[: draw(st.integers(0, len(packet)))]
    packet += draw(st.binary(max_size=40))
    return family, bytes(packet), draw(ADDRESSES)


def is_answer(packet: Packet, sent: dict[int, tuple[str, int]]) -> bool:
    return (
        packet.cookie == COOKIE
        and packet.ident == IDENT
        and packet.token in sent
        and sent[packet.token] == (packet.peer, packet.sequence)
    )


@given(mutated_replies())
def test_only_an_answer_to_a_probe_we_sent_becomes_a_measurement(
    case: tuple[int, bytes, str],
) -> None:
    family, data, source = case
    pending, _, sent = probes(family)
    packet = parse(data, family, source, ip_header=False)
    if isinstance(packet, Ignored):
        return
    outcome = pending.match(packet, received_ns=1_000_000)
    if isinstance(outcome, Outcome) and outcome.result is Result.REPLY:
        assert not packet.is_error and is_answer(packet, sent), (packet, outcome)


@given(st.lists(st.binary(max_size=120), max_size=30), FAMILIES)
def test_a_stream_of_garbage_never_measures_and_leaves_the_probes_waiting(
    datagrams: list[bytes], family: int
) -> None:
    pending, _, _ = probes(family)
    for data in datagrams:
        packet = parse(data, family, "10.0.0.2", ip_header=family == socket.AF_INET)
        if isinstance(packet, Packet):
            assume(packet.cookie != COOKIE)  # random bytes that carry our cookie are not garbage
            outcome = pending.match(packet, received_ns=1)
            assert isinstance(outcome, Ignored) or outcome.result is not Result.REPLY
    assert len(pending) == 3 or family == socket.AF_INET  # IPv4 errors may quote by sequence


# -- peers file, flags, environment, OTLP headers -----------------------------------------------

PEER_TEXT = st.text(alphabet=string.printable + "é\u2028=#,", max_size=300)


class ForgedPath:
    """A path MTU transport on which no genuine answer ever arrives: every request is met by
    the generated replies and queued errors (forged, stray, truncated)."""

    family = int(socket.AF_INET)
    ident = IDENT
    parses_ip_header = False

    def __init__(self, replies: list[bytes], errors: list[tuple[int, int, int, bytes]]) -> None:
        self.reader, self.writer = socket.socketpair()
        self._replies, self._errors = replies, errors
        self.pending: tuple[list[tuple[bytes, str]], list[QueuedError]] = ([], [])

    def fileno(self) -> int:
        return self.reader.fileno()

    def send(self, packet: bytes, address: str) -> bool:
        self.pending = (
            [(data, address) for data in self._replies],
            [QueuedError(*error) for error in self._errors],
        )
        self.writer.send(b"!")
        return True

    def receive_all(self) -> list[tuple[bytes, str]]:
        self.reader.recv(4096)
        replies, self.pending = self.pending[0], ([], self.pending[1])
        return replies

    def errors(self) -> list[QueuedError]:
        errors, self.pending = self.pending[1], (self.pending[0], [])
        return errors

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


@given(
    st.lists(st.binary(max_size=64), max_size=6),
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1),
                  st.binary(max_size=40)),
        max_size=6,
    ),
)  # fmt: skip
def test_forged_answers_never_make_a_path_look_fine_or_black_holed(
    replies: list[bytes], errors: list[tuple[int, int, int, bytes]]
) -> None:
    path = ForgedPath(replies, errors)

    result = asyncio.run(check_once(path, timeout_s=0.001))
    # Without our cookie nothing is a reply; a short error quoting our identifier and sequence
    # may claim a smaller MTU (as a router quoting 8 bytes does), never more.
    assert result.verdict in (Verdict.INCONCLUSIVE, Verdict.LIMITED)


@given(PEER_TEXT, st.booleans())
def test_a_peers_file_is_peers_or_one_config_error(text: str, dual_stack: bool) -> None:
    try:
        peers = parse_peers("--peers-file", text, dual_stack=dual_stack)
    except ConfigError as err:
        assert err.setting == "--peers-file"
    else:
        assert all(p.name and p.address for p in peers)


@given(st.binary(max_size=300), st.booleans())
def test_a_peers_file_of_any_bytes_is_peers_or_one_config_error(
    content: bytes, dual_stack: bool
) -> None:
    with tempfile.NamedTemporaryFile() as file:
        file.write(content)
        file.flush()
        try:
            read_peers_file("--peers-file", Path(file.name), dual_stack=dual_stack)
        except ConfigError as err:
            assert err.setting == "--peers-file"


FLAGS = [row.flag for row in AGENT_FLAGS]
ENV_NAMES = [row.env for row in AGENT_FLAGS if row.env]
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0", "-1", "1s", "99999999999h", "nan", "inf", "1e309", "auto", "all",
                     "true", "dual", "kubernetes", "pods", "127.0.0.1:0", "[::1]:9090", ":",
                     "http://x:4317", "a=b", "%zz", "\x00", "ms"]),
)  # fmt: skip


@given(
    st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=6),
    st.dictionaries(st.sampled_from(ENV_NAMES), VALUES.filter(lambda v: "\x00" not in v),
                    max_size=6),
)  # fmt: skip
def test_any_flags_and_environment_give_a_config_or_one_config_error(
    flags: list[tuple[str, str]], environ: dict[str, str]
) -> None:
    argv = [part for flag, value in flags for part in (f"{flag}={value}",)]
    try:
        parse_agent_config(argv, {"HOME": "/nonexistent", **environ})
    except ConfigError as err:
        assert err.setting and err.problem


HEADER_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=120) | st.sampled_from(
    ["authorization=Bearer%20x", "a=b,c=d", "X-Scope-OrgID=1", "k=%0a", "k=%zz", "k", "=v"]
)


@given(HEADER_TEXT)
def test_otlp_headers_are_sendable_or_one_config_error(text: str) -> None:
    try:
        headers = otlp_headers("OTEL_EXPORTER_OTLP_HEADERS", text)
    except ConfigError as err:
        assert err.setting == "OTEL_EXPORTER_OTLP_HEADERS"
        return
    for key, value in headers:  # what gRPC and requests accept, checked by themselves
        assert grpc_validates(key, value)
        requests.models.PreparedRequest().prepare_headers({key: value})


def grpc_validates(key: str, value: str) -> bool:
    from grpc._cython import cygrpc

    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        future = channel.unary_unary("/x/y").future(b"", metadata=((key, value),), timeout=0.001)
        with contextlib.suppress(grpc.RpcError, grpc.FutureTimeoutError):
            future.result()
        return future.code() is not grpc.StatusCode.INTERNAL  # a bad metadatum is INTERNAL
    except (ValueError, cygrpc.InternalError):
        return False
    finally:
        channel.close()


# -- Kubernetes watch streams ---------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
NODE_KEYS = ["metadata", "name", "labels", "status", "addresses", "type", "address",
             "conditions", "spec", "unschedulable", "podIP", "podIPs", "ip", "nodeName",
             "phase", "deletionTimestamp", "topology.kubernetes.io/zone"]  # fmt: skip
SHAPED = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | ADDRESSES
    | st.sampled_from(["InternalIP", "Ready", "True", "Running", "n1", "n2"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(NODE_KEYS), children, max_size=5)
    ),
    max_leaves=20,
)  # an object that looks like a Node or Pod in places, and is wrong in others
EVENTS = st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", ""])


def caches() -> list[Any]:
    policy = AddressPolicy(("InternalIP", "ExternalIP"), None, False)
    return [NodeCache("n1", policy, Eligibility()), PodCache("n1", policy)]


@given(st.lists(st.tuples(EVENTS, SHAPED | JSON), max_size=8), st.lists(SHAPED, max_size=4))
def test_any_watch_events_leave_a_consistent_peer_set(
    events: list[tuple[str, Any]], listed: list[Any]
) -> None:
    for cache in caches():
        cache.replace(obj for obj in listed if isinstance(obj, dict))
        for event_type, obj in events:
            if isinstance(obj, dict):
                assert isinstance(cache.apply(event_type, obj), bool)
        for key, peer in cache.peers().items():
            assert key and peer.name != "n1" and peer.address


class NoBackoff(threading.Event):
    """The watch loop's stop event, minus its waits: a test of 200 streams cannot sleep."""

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


class Response:
    """What the Kubernetes client reads a list or a watch from (`data`, `stream`)."""

    def __init__(self, data: bytes = b"", chunks: list[bytes] | None = None) -> None:
        self.data, self._chunks = data, chunks or []

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


WATCH_LINES = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda t, o: json.dumps({"type": t, "object": o}).encode(), EVENTS, SHAPED | JSON),
    st.sampled_from([b'{"type": "ADDED"}', b'{"object": null}', b"[]", b"null", b"{",
                     b'{"type": "ERROR", "object": {"code": 410}}',
                     b'{"type": "ADDED", "object": {"metadata": {"name": "n2"}, "status": '
                     b'{"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}}']),
)  # fmt: skip


@given(st.binary(max_size=200) | st.builds(lambda o: json.dumps(o).encode(), JSON | SHAPED),
       st.lists(WATCH_LINES, max_size=12))  # fmt: skip
def test_any_list_and_watch_stream_leave_the_watch_running(
    listed: bytes, lines: list[bytes]
) -> None:
    """A list page and a watch stream of any bytes: the watch loop (the agent's only view of the
    peers) survives them all and goes on relisting; nothing escapes it."""
    calls: list[bool] = []

    @functools.wraps(kubernetes.client.CoreV1Api.list_node)
    def list_node(*args: Any, watch: bool = False, **kwargs: Any) -> Response:
        calls.append(watch)
        if len(calls) > 6:
            watcher._stop.set()  # enough rounds for this example: end the loop
        if not watch:
            return Response(data=listed if len(calls) == 1 else b'{"items": []}')
        return Response(chunks=[b"\n".join(lines) + b"\n"])

    policy = AddressPolicy(("InternalIP",), None, False)
    watcher = _ListWatch(list_node, {}, None, lambda: NodeCache("n1", policy), 1.0,
                         EventLog(io.StringIO()))  # fmt: skip
    watcher._stop = NoBackoff()
    watcher._loop(lambda: None)  # returns only once stopped: any escaping exception fails here
    assert len(calls) > 6
    assert all(peer.name != "n1" for peer in watcher._cache.peers().values())


@given(st.integers(1, 3000))
def test_a_node_with_thousands_of_addresses_has_one_peer(count: int) -> None:
    addresses = [{"type": "InternalIP", "address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"}
                 for i in range(count)]  # fmt: skip
    node = {"metadata": {"name": "n2"}, "status": {"addresses": addresses}}
    cache = caches()[0]
    cache.apply("ADDED", json.loads(json.dumps(node)))
    assert [p.address for p in cache.peers().values()] == ["10.0.0.0"]


# -- the Prometheus text `monlat matrix` and `diagnose` read ------------------------------------

EXPOSITION_LINES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['latency_between_nodes{from="a",to="b"} 0.4', "# TYPE x gauge",
                     'x{a="\\"\\\\\\n"} +Inf 123', 'x{a="b",} NaN', '{"x.y"} 1', "x 1e400"]),
)  # fmt: skip


@given(st.lists(EXPOSITION_LINES, max_size=20))
def test_any_exposition_parses_or_names_its_bad_line(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        samples = parse_exposition(text)
    except ExpositionError as err:
        assert 1 <= err.line <= text.count("\n") + 1
    else:
        assert all(isinstance(s.value, float) for s in samples)
