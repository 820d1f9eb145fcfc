"""The composition root: the only module that knows every stage of the pipeline.

discovery -> prober -> results -> telemetry -> exporters, plus the HTTP endpoint and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from monlat import __version__
from monlat.agent.config import Config, DiscoveryMode
from monlat.agent.discovery import PeerMap, PeerSource, diff_peers
from monlat.agent.discovery.selection import plan_peers
from monlat.agent.discovery.static import StaticPeers
from monlat.agent.export.provider import Export, build_export
from monlat.agent.httpserver import Handler, HttpServer, Response
from monlat.agent.logs import EventLog, MeasurementLog
from monlat.agent.probe.icmp import Ignored
from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.probe.pmtu import PathMtu, Verdict
from monlat.agent.probe.pmtu_prober import PathMtuProber, PathMtuTransport
from monlat.agent.probe.prober import Prober, Target, Transport
from monlat.agent.probe.routes import InterfaceMtu
from monlat.agent.probe.sockets import IcmpSocket, PathMtuSocket, ProbeSetupError, open_socket
from monlat.agent.results import ResultStore
from monlat.agent.settings import DEFAULT_PEERS
from monlat.agent.sizing import Sizing, size_for
from monlat.agent.telemetry import PairLabels, PairSeries, Snapshots, Telemetry
from monlat.common.errors import ConfigError

# The probe loop wakes at least every 0.25 s; silence much longer than that means it is stuck.
_LIVENESS_S = 10.0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Fanout:
    """Delivers prober events to results, telemetry and the measurement log."""

    # Send lags reach the telemetry histogram in runs, at most this long after the tick that
    # measured them: the SDK's record is costly when its code is cold, as it is once per tick,
    # and cheap on the calls that follow it in a row.
    LAG_BATCH_S = 1.0

    def __init__(
        self,
        store: ResultStore,
        telemetry: Telemetry,
        log: MeasurementLog | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._log = log
        self._clock = clock
        self._lags: list[float] = []
        self._lags_since = 0.0
        # Receivers bound directly where nothing else is due: the prober calls on_ignored once
        # per stray packet, and a forwarding method would add a Python frame to each call.
        self.on_outcomes: Callable[[list[Outcome]], None] = (
            store.record_all if log is None else self._record_and_log
        )
        self.on_ignored: Callable[[Ignored], None] = telemetry.on_ignored

    def _record_and_log(self, outcomes: list[Outcome]) -> None:
        self._store.record_all(outcomes)
        if self._log is None:
            return
        for outcome in outcomes:
            if outcome.result is Result.REPLY and outcome.rtt_s is not None:
                self._log.write(outcome.peer, outcome.rtt_s)

    def on_send_lag(self, lag_s: float) -> None:
        lags = self._lags
        lags.append(lag_s)
        if len(lags) == 1:
            self._lags_since = self._clock()
        elif self._clock() - self._lags_since >= self.LAG_BATCH_S:
            self.flush()

    def flush(self) -> None:
        lags, self._lags = self._lags, []
        record = self._telemetry.on_send_lag
        for lag_s in lags:
            record(lag_s)


def open_transports(config: Config, events: EventLog) -> dict[int, IcmpSocket]:
    """IPv4 is required; IPv6 is opened when possible (a host without IPv6 is normal)."""
    transports: dict[int, IcmpSocket] = {
        socket.AF_INET: open_socket(socket.AF_INET, config.probe.socket_mode)
    }
    try:
        transports[socket.AF_INET6] = open_socket(socket.AF_INET6, config.probe.socket_mode)
    except (ProbeSetupError, OSError) as err:
        events.warning("ipv6_unavailable", error=str(err))
    for family, transport in transports.items():
        events.info(
            "icmp_socket",
            family="ipv4" if family == socket.AF_INET else "ipv6",
            kind=transport.kind,
            reason=transport.reason,
        )
    return transports


TransportFactory = Callable[[Config, EventLog], Mapping[int, Transport]]
PathMtuTransportFactory = Callable[[Config, EventLog], Mapping[int, PathMtuTransport]]


def open_path_mtu_transports(config: Config, events: EventLog) -> dict[int, PathMtuTransport]:
    """The path MTU checks' own sockets; none (and a warning) where they cannot be opened: the
    latency probes do not depend on them."""
    if config.path_mtu.interval_s <= 0:
        return {}
    families = (socket.AF_INET, socket.AF_INET6)
    opened: dict[int, PathMtuTransport] = {}
    for family in families:
        try:
            opened[family] = PathMtuSocket(family, config.probe.socket_mode)
        except (ProbeSetupError, OSError) as err:
            if family == socket.AF_INET:
                events.warning("mtu_checks_unavailable", family="ipv4", error=str(err))
    return opened


class _PathMtuReport:
    """Delivers path MTU conclusions to results and telemetry, and logs each pair's changes."""

    def __init__(self, store: ResultStore, telemetry: Telemetry, events: EventLog) -> None:
        self._store = store
        self._telemetry = telemetry
        self._events = events
        self._verdicts: dict[str, Verdict] = {}

    def __call__(self, target: Target, result: PathMtu) -> None:
        self._store.record_path_mtu(target.name, target.address, result)
        self._telemetry.on_path_mtu(result)
        if result.verdict is Verdict.INCONCLUSIVE:
            return  # the latency probes report an unreachable or lossy peer
        before = self._verdicts.get(target.name, Verdict.OK)
        self._verdicts[target.name] = result.verdict
        if result.verdict is before:
            return
        fields = {
            "peer": target.name,
            "address": target.address,
            "probe_bytes": result.probe_bytes,
            "largest_bytes": result.largest_bytes,
        }
        if result.verdict is Verdict.BLACK_HOLE:
            self._events.warning("mtu_black_hole", **fields)
        elif result.verdict is Verdict.LIMITED:
            self._events.info("path_mtu_limited", **fields)
        else:
            self._events.info("path_mtu_ok", **fields)

    def forget(self, names: set[str]) -> None:
        for name in [name for name in self._verdicts if name not in names]:
            del self._verdicts[name]


def make_source(config: Config, events: EventLog) -> PeerSource:
    if config.discovery is DiscoveryMode.STATIC:
        return StaticPeers(
            config.static_peers,
            config.node_name,
            peers_file=config.peers_file,
            events=events,
            dual_stack=config.dual_stack,
        )
    from monlat.agent.discovery.kubernetes import KubernetesNodes, KubernetesPods, load_api_client

    assert config.kubernetes is not None
    api_client = load_api_client(config.kubernetes)
    if config.discovery is DiscoveryMode.PODS:
        return KubernetesPods(api_client, config.kubernetes, config.node_name, events)
    return KubernetesNodes(api_client, config.kubernetes, config.node_name, events)


@dataclass(frozen=True)
class _Pipeline:
    """The stages one agent runs, as built by `Agent._build`."""

    source: PeerSource
    transports: Mapping[int, Transport]
    store: ResultStore
    labels: PairLabels
    series: PairSeries
    export: Export
    telemetry: Telemetry
    log: MeasurementLog | None
    prober: Prober
    path_mtu: PathMtuProber | None
    path_mtu_transports: Mapping[int, PathMtuTransport]
    path_mtu_report: _PathMtuReport


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr,
        transports: TransportFactory | None = None,
        path_mtu_transports: PathMtuTransportFactory | None = None,
        route_libraries: bool = True,
    ) -> None:
        self._config = config
        # The libraries' records go to `stderr` while `run` runs; the command line routes them
        # for the whole process instead (the SDK still logs from exit hooks after `run`).
        self._route_libraries = route_libraries
        # The ICMP sockets by default; tests without root inject an in-memory network.
        self._open_transports = transports or open_transports
        # Injected transports are an in-memory network: no real sockets beside them unless
        # the test injects its own for the MTU checks too.
        self._open_path_mtu_transports: PathMtuTransportFactory = path_mtu_transports or (
            open_path_mtu_transports if transports is None else (lambda _config, _events: {})
        )
        self._events = EventLog(stderr, config.log_level)
        self._stdout = stdout
        self._peers: PeerMap = {}
        self._published = False
        self._sizing: Sizing | None = None
        self._stop = asyncio.Event()

    async def run(self) -> int:
        routed = self._events.libraries() if self._route_libraries else contextlib.nullcontext()
        with routed:
            if self._config.socket_retry_s > 0:
                transports = await self._await_transports()
                if transports is None:
                    self._events.info("stopped")
                    return 0
                opened = transports
                self._open_transports = lambda _config, _events: opened
            return await self._serve(self._build())

    async def _await_transports(self) -> Mapping[int, Transport] | None:
        """Open the sockets, retrying while stay-up mode waits for the node to allow them.

        Meanwhile /healthz answers ok (a restart cannot help) and /readyz 503 with the reason,
        and the reason is logged at every attempt; None when stopped before a socket opened.
        """
        config = self._config
        reason = "opening ICMP sockets"

        async def healthz() -> Response:
            return Response(200, b"ok (not probing, see /readyz)\n")

        async def readyz() -> Response:
            return Response(503, f"cannot probe: {reason}\n".encode())

        http: HttpServer | None = None
        self._install_signals()
        try:
            while True:
                try:
                    return self._open_transports(config, self._events)
                except ProbeSetupError as err:
                    reason = str(err)
                self._events.error(
                    "icmp_socket_unavailable",
                    error=reason,
                    retry_in=f"{config.socket_retry_s:g}s",
                    fix="grant CAP_NET_RAW (deploy/overlays/net-raw) or widen the node's "
                    "net.ipv4.ping_group_range",
                )
                if http is None:
                    http = await self._listen({"/healthz": healthz, "/readyz": readyz})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), config.socket_retry_s)
                if self._stop.is_set():
                    return None
        finally:
            if http is not None:
                await http.close()

    def _build(self) -> _Pipeline:
        """Every stage, wired: discovery -> prober -> results -> telemetry -> exporters."""
        config = self._config
        source = make_source(config, self._events)
        transports = self._open_transports(config, self._events)
        store = ResultStore(
            window_s=config.window_s,
            interval_s=config.probe.interval_s,
            timeout_s=config.probe.timeout_s,
            probes_per_interval=config.probe.probes_per_interval,
            clock=time.monotonic,
        )
        snapshots = Snapshots(store)
        labels = PairLabels(
            config.node_name,
            zones=config.zone_labels,
            families=config.dual_stack,
            network=config.network_label,
        )
        series = PairSeries(snapshots, labels)
        export = build_export(config, __version__, series, self._events)
        telemetry = Telemetry(
            # No meter version: the collector would see an upgraded agent as a colliding source.
            export.provider.get_meter("monlat"),
            snapshots,
            labels,
            socket_kind=transports[socket.AF_INET].kind,
            version=__version__,
        )
        log = (
            MeasurementLog(self._stdout, config.node_name, network=config.network_label)
            if config.log_measurements
            else None
        )
        prober = Prober(
            config.node_name, dict(transports), config.probe, _Fanout(store, telemetry, log)
        )
        telemetry.timestamps = lambda: (
            (("send", "kernel"), prober.kernel_send_times),
            (("send", "user"), prober.user_send_times),
            (("receive", "kernel"), prober.kernel_receive_times),
            (("receive", "user"), prober.user_receive_times),
        )
        mtu_transports = self._open_path_mtu_transports(config, self._events)
        report = _PathMtuReport(store, telemetry, self._events)
        path_mtu = (
            PathMtuProber(
                mtu_transports,
                config.path_mtu,
                small_payload=config.probe.payload_size,
                probe_size=InterfaceMtu().for_address,
                listener=report,
            )
            if mtu_transports
            else None
        )
        return _Pipeline(source, transports, store, labels, series, export, telemetry, log,
                         prober, path_mtu, mtu_transports, report)  # fmt: skip

    async def _serve(self, pipeline: _Pipeline) -> int:
        """Listen, probe and discover until stopped or a task fails; then flush and close."""
        config = self._config
        source = pipeline.source

        def ready() -> tuple[bool, str]:
            if not self._published:
                return False, "waiting for peers"
            return source.ready()

        http = await self._listen(self._routes(pipeline.export, pipeline.prober, ready))
        self._install_signals()
        self._events.info(
            "started",
            node=config.node_name,
            version=__version__,
            discovery=config.discovery.value,
            exporters=",".join(self._exporter_names()) or "none",
            listen=str(config.listen),
            interval=f"{config.probe.interval_s}s",
        )
        if config.discovery is DiscoveryMode.STATIC and config.static_peers == DEFAULT_PEERS:
            self._events.warning("no_peers_configured", probing="localhost=127.0.0.1")
        tasks = [
            asyncio.create_task(pipeline.prober.run(), name="prober"),
            *(
                [asyncio.create_task(pipeline.path_mtu.run(), name="path-mtu")]
                if pipeline.path_mtu is not None
                else []
            ),
            asyncio.create_task(
                source.run(lambda peers: self._publish(pipeline, peers)), name="discovery"
            ),
        ]
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        failure = next((t for t in done if t is not stop_wait and t.exception()), None)
        for task in [*tasks, stop_wait]:
            task.cancel()
        await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
        await http.close()
        await self._flush(pipeline.export)
        for transport in pipeline.transports.values():
            transport.close()
        for mtu_transport in pipeline.path_mtu_transports.values():
            mtu_transport.close()
        if pipeline.log is not None:
            pipeline.log.flush()
        if failure is not None:
            exc = failure.exception()
            self._events.error("stopped", task=failure.get_name(), error=repr(exc))
            return 1
        self._events.info("stopped")
        return 0

    async def _listen(self, routes: dict[str, Handler]) -> HttpServer:
        """The HTTP listener, bound now: a port in use is a setting's error, not a traceback."""
        config = self._config
        http = HttpServer(routes)
        try:
            await http.start(config.listen)
        except OSError as err:
            setting = "--prometheus" if config.prometheus else "--listen"
            raise ConfigError(
                setting, f"cannot listen on {config.listen}: {err.strerror}"
            ) from None
        return http

    def _publish(self, pipeline: _Pipeline, peers: PeerMap) -> None:
        """Discovery's new peer set: size the mesh for it, choose peers, re-label, re-target."""
        config = self._config
        own_zone = pipeline.source.own_zone
        zones = {peer.name: peer.zone for peer in peers.values()}
        zone_count = len({*zones.values(), own_zone} - {None}) or 1
        nodes = len(zones.keys() | {config.node_name})
        sizing = size_for(nodes, zone_count, config.sizing, families=2 if config.dual_stack else 1)
        if sizing != self._sizing:
            self._events.info("sizing", nodes=nodes, zones=zone_count, **sizing.describe())
            self._sizing = sizing
        plan = plan_peers(
            config.node_name,
            zones,
            own_zone=own_zone,
            max_peers=sizing.max_peers,
            cross_zone=sizing.cross_zone_peers,
        )
        pipeline.labels.update(peers, own_zone)
        pipeline.series.histograms = sizing.pair_histograms
        pipeline.store.count_histograms(sizing.pair_histograms)
        chosen = {key: peer for key, peer in peers.items() if peer.name in plan.peers}
        first = not self._published
        self._apply_peers(chosen, pipeline)
        pipeline.telemetry.expected_probers = plan.expected_probers
        if first:
            # What start-up built (modules, the SDK, a window per peer) lives as long as the
            # agent: out of the collector's sight, so that full collections walk only what
            # came later (at 5,000 peers they were ~1 % of a core). Start-up's garbage is
            # collected first, not kept for ever.
            gc.collect()
            gc.freeze()

    def request_stop(self) -> None:
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self._events.info("signal", name=signal.Signals(signum).name, action="shutdown")
        self._stop.set()

    def _exporter_names(self) -> list[str]:
        names = ["prometheus"] if self._config.prometheus else []
        if self._config.otlp is not None:
            names.append(f"otlp({self._config.otlp.protocol} {self._config.otlp.endpoint})")
        return names

    def _apply_peers(self, peers: PeerMap, pipeline: _Pipeline) -> None:
        prober, store = pipeline.prober, pipeline.store
        changes = diff_peers(self._peers, peers)
        for peer in changes.added:
            self._events.info("peer_added", peer=peer.key, address=peer.address)
        for peer in changes.removed:
            self._events.info("peer_removed", peer=peer.key, address=peer.address)
        for old, new in changes.changed:
            self._events.info("peer_changed", peer=new.key, old=old.address, address=new.address)
        self._peers = dict(peers)
        targets: Mapping[str, Target] = {
            key: Target(key, peer.address) for key, peer in peers.items()
        }
        unreachable = [t.name for t in targets.values() if t.family not in prober.families]
        for name in unreachable:
            self._events.warning("peer_skipped", peer=name, reason="no socket for its family")
        prober.set_targets(targets)
        if pipeline.path_mtu is not None:
            pipeline.path_mtu.set_targets(targets)
        pipeline.path_mtu_report.forget(set(targets))
        store.set_peers(
            (t.name, t.address) for t in targets.values() if t.family in prober.families
        )
        self._published = True

    def _routes(
        self, export: Export, prober: Prober, ready: Callable[[], tuple[bool, str]]
    ) -> dict[str, Handler]:
        def loop_ok() -> bool:
            return time.monotonic() - prober.last_wake < _LIVENESS_S

        async def healthz() -> Response:
            if loop_ok():
                return Response(200, b"ok\n")
            return Response(503, b"probe loop stalled\n")

        async def readyz() -> Response:
            is_ready, reason = ready()
            if not loop_ok():
                is_ready, reason = False, "probe loop stalled"
            return Response(200 if is_ready else 503, f"{reason}\n".encode())

        routes: dict[str, Handler] = {"/healthz": healthz, "/readyz": readyz}
        if export.registry is not None:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            registry = export.registry

            async def metrics() -> Response:
                body = await asyncio.get_running_loop().run_in_executor(
                    None, generate_latest, registry
                )
                return Response(200, body, CONTENT_TYPE_LATEST)

            routes["/metrics"] = metrics
        return routes

    async def _flush(self, export: Export) -> None:
        """Final export within the shutdown bound; an unreachable collector must not hang us."""
        timeout = self._config.shutdown_timeout_s
        loop = asyncio.get_running_loop()
        started = time.monotonic()

        done: asyncio.Future[None] = loop.create_future()

        def shutdown() -> None:
            try:
                export.provider.shutdown(timeout_millis=timeout * 1000)
            finally:
                loop.call_soon_threadsafe(_resolve, done)

        # A daemon thread, not the default executor: asyncio.run() would wait for a stuck export.
        threading.Thread(target=shutdown, name="monlat-flush", daemon=True).start()
        try:
            await asyncio.wait_for(done, timeout + 0.5)
            self._events.info("flushed", seconds=round(time.monotonic() - started, 3))
        except TimeoutError:
            self._events.warning("flush_timeout", seconds=timeout)
