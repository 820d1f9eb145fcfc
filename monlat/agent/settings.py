"""Turn command-line flags and environment variables into a validated `Config`.

Every setting has a flag and an environment variable; the flag wins. Parsing is pure (argv and
environ in, Config out) so that every bad-input case is tested without starting anything.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monlat.agent.config import (
    Config,
    DiscoveryMode,
    IpFamily,
    KubernetesConfig,
    OtlpConfig,
    PathMtuConfig,
    ProbeConfig,
    SocketMode,
    StaticPeer,
    parse_bool,
    parse_key_values,
    parse_listen,
    parse_log_level,
    parse_peers,
    read_peers_file,
    validate_otlp_endpoint,
)
from monlat.agent.discovery import family_of
from monlat.agent.export.token import AUTHORIZATION, TokenError, read_token
from monlat.agent.sizing import AUTO, Auto, SizingSettings
from monlat.common.arguments import ArgumentParser
from monlat.common.durations import parse_duration
from monlat.common.errors import ConfigError

DEFAULT_LISTEN = "0.0.0.0:9090"
# With no peers configured the agent probes this machine's loopback, so that a first run shows
# measurements at once; the start-up log says so.
DEFAULT_PEERS = (StaticPeer("localhost", "127.0.0.1"),)
ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname")
DEFAULT_POD_SELECTOR = "app.kubernetes.io/name=monlat-agent-pod-network"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _duration(setting: str, text: str) -> float:
    return parse_duration(setting, text)


def _duration_or_off(setting: str, text: str) -> float:
    """A duration, or 0 (any unit) for off."""
    if text.strip().rstrip("smh").strip() in ("0", "0.0"):
        return 0.0
    return parse_duration(setting, text)


def _milliseconds(setting: str, text: str) -> float:
    """A duration whose bare numbers are milliseconds (the OpenTelemetry variables' unit)."""
    return parse_duration(setting, text, default_unit="ms")


def _whole(low: int, high: int) -> Callable[[str, str], int]:
    def parse(setting: str, text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise ConfigError(
                setting, f"expected a whole number from {low} to {high}, got {text!r}"
            )
        return int(text)

    return parse


def _socket_mode(setting: str, text: str) -> SocketMode:
    try:
        return SocketMode(text.lower())
    except ValueError:
        raise ConfigError(setting, f"expected auto, raw or dgram, got {text!r}") from None


def _mtu_probe_size(setting: str, text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    return _whole(68, 65535)(setting, text.strip())


def _text(setting: str, text: str) -> str:
    return text


@dataclass(frozen=True)
class _Flag:
    """One setting: its flag, environment variable, help, the text it has when neither is
    given (`--help` shows it), and how that text becomes a value."""

    flag: str
    env: str | None
    help: str
    default: str | None = None
    parse: Callable[[str, str], Any] = _text
    metavar: str = "VALUE"

    @property
    def help_text(self) -> str:
        default = f"; default {self.default}" if self.default else ""
        return self.help + default + (f" [env {self.env}]" if self.env else "")


# Where a default depends on other settings (discovery, pods), `help` says so and the code that
# decides it sits with the setting's parser below.
AGENT_FLAGS = (
    _Flag("--node-name", "NODE_NAME", "this node's name (the `from` label); default: host name"),
    _Flag("--discovery", "MONLAT_DISCOVERY", "static, kubernetes (Nodes) or pods (pod-network "
          "agents' Pods); default: kubernetes in a pod"),
    _Flag("--peers", "MONLAT_PEERS", "static peers: name=address,name=address,..."),
    _Flag("--peers-file", "MONLAT_PEERS_FILE", "file of static peers, one name=address per line"),
    _Flag("--kubeconfig", "KUBECONFIG", "kubeconfig to use outside a pod"),
    _Flag("--node-selector", "MONLAT_NODE_SELECTOR", "label selector limiting the watched Nodes"),
    _Flag("--pod-selector", "MONLAT_POD_SELECTOR", "pods discovery: label selector of the "
          "agents' Pods", DEFAULT_POD_SELECTOR),
    _Flag("--pod-namespace", "POD_NAMESPACE", "pods discovery: namespace of the agents' Pods; "
          "default: this pod's namespace"),
    _Flag("--network-label", "MONLAT_NETWORK_LABEL", "add network=VALUE to every series (the "
          "path measured); default pod with pods discovery, none otherwise"),
    _Flag("--address-types", "MONLAT_ADDRESS_TYPES", "Node address types in order of "
          "preference", "InternalIP,ExternalIP"),
    _Flag("--ip-family", "MONLAT_IP_FAMILY", "ipv4 or ipv6 (preferred node address), any "
          "(first address), or dual (both, side by side, every series labelled "
          "family=ipv4|ipv6)", "ipv4"),
    _Flag("--skip-not-ready", "MONLAT_SKIP_NOT_READY", "leave NotReady nodes out", "true",
          parse_bool),
    _Flag("--skip-cordoned", "MONLAT_SKIP_CORDONED", "leave cordoned nodes out (and report "
          "not-ready when cordoned)", "true", parse_bool),
    _Flag("--max-peers", "MONLAT_MAX_PEERS", "probe K peers (all: every peer), chosen so that "
          "every node is probed by K others; auto: every peer up to 100 nodes, 10 above",
          AUTO, metavar="K"),
    _Flag("--cross-zone-peers", "MONLAT_CROSS_ZONE_PEERS", "probe every peer in the own zone "
          "(or --max-peers of them) and N in each other zone (off: no zone rule); auto: 1 "
          "where peers are limited and Nodes have zones", AUTO, metavar="N"),
    _Flag("--pair-histograms", "MONLAT_PAIR_HISTOGRAMS", "export the per-pair RTT histogram "
          "(true, false); auto: while the cluster has at most 1,000 pairs", AUTO),
    _Flag("--zone-labels", "MONLAT_ZONE_LABELS", "add from_zone/to_zone "
          "(topology.kubernetes.io/zone)", "false", parse_bool),
    _Flag("--interval", "MONLAT_INTERVAL", "time between probes to one peer", "1s", _duration),
    _Flag("--timeout", "MONLAT_TIMEOUT", "a probe without reply after this is lost", "1s",
          _duration),
    _Flag("--count", "MONLAT_COUNT", "probes per peer per interval", "1", _whole(1, 100), "N"),
    _Flag("--payload-size", "MONLAT_PAYLOAD_SIZE", "ICMP payload bytes", "56",
          _whole(16, 1400), "BYTES"),
    _Flag("--socket", "MONLAT_SOCKET", "ICMP socket kind: auto, raw or dgram", "auto",
          _socket_mode),
    _Flag("--mtu-check-interval", "MONLAT_MTU_CHECK_INTERVAL", "check each peer's path for "
          "an MTU black hole once per this period, with one Don't-Fragment probe of the probe "
          "size (0: never)", "60s", _duration_or_off),
    _Flag("--mtu-probe-size", "MONLAT_MTU_PROBE_SIZE", "the IP packet size the paths should "
          "carry (68 to 65535); auto: the MTU of the interface each peer is routed through",
          "auto", _mtu_probe_size, "BYTES"),
    _Flag("--listen", "MONLAT_LISTEN", "HTTP listener for health", DEFAULT_LISTEN),
    _Flag("--prometheus", None, "serve Prometheus metrics on HOST:PORT (implies the prometheus "
          "exporter)", metavar="HOST:PORT"),
    _Flag("--exporters", "OTEL_METRICS_EXPORTER", "prometheus, otlp, both (comma) or none"),
    _Flag("--otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP endpoint URL", metavar="URL"),
    _Flag("--otlp-token-file", "MONLAT_OTLP_TOKEN_FILE", "file whose first word is the bearer "
          "token shown to the collector; re-read before every push", metavar="PATH"),
    _Flag("--export-interval", "OTEL_METRIC_EXPORT_INTERVAL", "OTLP push period", "15s",
          _milliseconds),
    _Flag("--log-measurements", "MONLAT_LOG_MEASUREMENTS", "print one latency_between_nodes "
          "line per reply", "true", parse_bool),
    _Flag("--log-level", "MONLAT_LOG_LEVEL", "events from this level up: debug, info, warn or "
          "error (at debug the libraries' own records too)", "info", parse_log_level),
    _Flag("--window", "MONLAT_WINDOW", "window for loss ratio and jitter", "60s", _duration),
    _Flag("--shutdown-timeout", "MONLAT_SHUTDOWN_TIMEOUT", "bound on the final flush", "5s",
          _duration),
    _Flag("--socket-retry", "MONLAT_SOCKET_RETRY", "when no ICMP socket can be opened, stay up "
          "(healthy, not ready, saying why) and try again this often; 0: exit at once", "0s",
          _duration_or_off),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="monlat", description="Node-to-node ICMP latency monitor.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    agent = commands.add_parser("agent", help="measure latency to peers and export metrics")
    for spec in AGENT_FLAGS:
        agent.add_argument(spec.flag, metavar=spec.metavar, help=spec.help_text)
    return parser


class _Settings:
    """Looks up one setting: flag first, then environment variable, then default."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self._args = args
        self._environ = environ
        self._by_flag = {spec.flag: spec for spec in AGENT_FLAGS}

    def get(self, flag: str) -> tuple[str, str] | None:
        """Return (setting name for messages, raw text), or None when unset."""
        spec = self._by_flag[flag]
        value = getattr(self._args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            return flag, str(value)
        if spec.env and self._environ.get(spec.env, "").strip():
            return spec.env, self._environ[spec.env].strip()
        return None

    def text(self, flag: str, default: str | None = None) -> tuple[str, str]:
        """(setting, text), the table's default (or `default`) when the setting is not given."""
        fallback = self._by_flag[flag].default if default is None else default
        return self.get(flag) or (flag, fallback or "")

    def value(self, flag: str) -> Any:
        """The setting parsed by its row's parser (the default's text when not given)."""
        return self._by_flag[flag].parse(*self.text(flag))

    def env(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None


def parse_agent_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Parse `monlat agent ...` arguments; raises ConfigError on any bad input."""
    args = build_parser().parse_args(["agent", *argv])
    settings = _Settings(args, environ)

    discovery = _discovery_mode(settings, environ)
    node_name = _node_name(settings, discovery)
    family, dual_stack = _ip_family(settings)
    static_peers: tuple[StaticPeer, ...] = ()
    peers_file: Path | None = None
    kubernetes: KubernetesConfig | None = None
    if discovery is DiscoveryMode.STATIC:
        static_peers, peers_file = _static_peers(settings, dual_stack)
    else:
        kubernetes = _kubernetes_config(settings, environ, discovery, family, dual_stack)

    probe = _probe_config(settings)
    exporters = _exporters(settings, discovery)
    prometheus_listen = settings.get("--prometheus")
    listen_setting, listen_text = prometheus_listen or settings.text("--listen")
    listen = parse_listen(listen_setting, listen_text)

    export_interval: float = settings.value("--export-interval")

    otlp = _otlp_config(settings) if "otlp" in exporters else None
    window: float = settings.value("--window")
    if window < probe.interval_s:
        raise ConfigError(settings.text("--window")[0], "must be at least one interval")
    zone_labels: bool = settings.value("--zone-labels")
    sizing = parse_sizing(settings.text)
    if discovery is not DiscoveryMode.KUBERNETES:
        # Zones come from the Nodes' topology label; neither static peers nor Pods carry it.
        cross_found = settings.get("--cross-zone-peers")
        if zone_labels:
            raise ConfigError(
                settings.text("--zone-labels")[0],
                "needs --discovery kubernetes (zones come from the Node labels)",
            )
        if cross_found and isinstance(sizing.cross_zone_peers, int):
            raise ConfigError(
                cross_found[0], "needs --discovery kubernetes (zones come from the Node labels)"
            )

    return Config(
        node_name=node_name,
        discovery=discovery,
        static_peers=static_peers,
        peers_file=peers_file,
        kubernetes=kubernetes,
        probe=probe,
        listen=listen,
        prometheus="prometheus" in exporters,
        otlp=otlp,
        export_interval_s=export_interval,
        log_measurements=settings.value("--log-measurements"),
        log_level=settings.value("--log-level"),
        path_mtu=_path_mtu_config(settings, probe),
        window_s=window,
        shutdown_timeout_s=settings.value("--shutdown-timeout"),
        socket_retry_s=settings.value("--socket-retry"),
        sizing=sizing,
        zone_labels=zone_labels,
        dual_stack=dual_stack,
        network_label=_network_label(settings, discovery),
    )


_HEADER_NAME = re.compile(r"[0-9a-z_.-]+")  # gRPC metadata keys; HTTP takes these as well
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: what both transports send


def otlp_headers(setting: str, text: str) -> tuple[tuple[str, str], ...]:
    """`k=v,…` as request headers: checked here, since gRPC would refuse a bad one at every
    export (or requests raise), long after start-up."""
    headers = tuple((key.lower(), value) for key, value in parse_key_values(setting, text))
    for key, value in headers:
        if not _HEADER_NAME.fullmatch(key) or key.endswith("-bin"):
            raise ConfigError(setting, f"invalid header name {key!r} (letters, digits, _ . -)")
        if not _HEADER_VALUE.fullmatch(value):
            raise ConfigError(setting, f"header {key!r}: value must be printable ASCII")
    return headers


def parse_sizing(text_of: Callable[[str, str], tuple[str, str]]) -> SizingSettings:
    """--max-peers auto|all|K, --cross-zone-peers auto|off|C, --pair-histograms auto|true|false.

    `text_of(flag, default)` gives (setting name for messages, raw text); shared by the agent
    and `monlat plan`, so both accept the same values."""

    def count(flag: str, none_word: str) -> int | Auto | None:
        setting, text = text_of(flag, AUTO)
        lowered = text.strip().lower()
        if lowered == AUTO:
            return AUTO
        if lowered == none_word:
            return None
        if not lowered.isdigit() or not 1 <= int(lowered) <= 100_000:
            raise ConfigError(
                setting,
                f"expected auto, {none_word} or a whole number from 1 to 100000, got {text!r}",
            )
        return int(lowered)

    hist_setting, hist_text = text_of("--pair-histograms", AUTO)
    histograms: bool | Auto = (
        AUTO if hist_text.strip().lower() == AUTO else parse_bool(hist_setting, hist_text)
    )
    return SizingSettings(
        max_peers=count("--max-peers", "all"),
        cross_zone_peers=count("--cross-zone-peers", "off"),
        pair_histograms=histograms,
    )


def _network_label(settings: _Settings, discovery: DiscoveryMode) -> str | None:
    default = "pod" if discovery is DiscoveryMode.PODS else ""
    setting, text = settings.text("--network-label", default)
    if not text or text.lower() == "none":
        return None
    if not _LABEL_VALUE.fullmatch(text):
        raise ConfigError(setting, f"invalid label value {text!r} (letters, digits, . _ -)")
    return text


def _ip_family(settings: _Settings) -> tuple[IpFamily | None, bool]:
    """(preferred family or None for any, dual-stack)."""
    setting, text = settings.text("--ip-family")
    lowered = text.lower()
    if lowered == "dual":
        return None, True
    if lowered == "any":
        return None, False
    try:
        return IpFamily(lowered), False
    except ValueError:
        raise ConfigError(setting, f"expected ipv4, ipv6, any or dual, got {text!r}") from None


def _discovery_mode(settings: _Settings, environ: Mapping[str, str]) -> DiscoveryMode:
    found = settings.get("--discovery")
    if found is None:
        in_pod = bool(environ.get("KUBERNETES_SERVICE_HOST"))
        has_static = settings.get("--peers") or settings.get("--peers-file")
        return DiscoveryMode.KUBERNETES if in_pod and not has_static else DiscoveryMode.STATIC
    setting, text = found
    try:
        return DiscoveryMode(text.lower())
    except ValueError:
        raise ConfigError(setting, f"expected static, kubernetes or pods, got {text!r}") from None


def _node_name(settings: _Settings, discovery: DiscoveryMode) -> str:
    found = settings.get("--node-name")
    if found is None:
        if discovery is not DiscoveryMode.STATIC:
            raise ConfigError(
                "--node-name",
                "required with Kubernetes discovery (set NODE_NAME from spec.nodeName)",
            )
        return socket.gethostname()
    setting, text = found
    if not text or any(ch in text for ch in '"\\\n{}= '):
        raise ConfigError(setting, f"invalid node name {text!r}")
    return text


def _static_peers(
    settings: _Settings, dual_stack: bool
) -> tuple[tuple[StaticPeer, ...], Path | None]:
    """Peers from --peers, and the peers file (read here only to validate it at start-up)."""
    found = settings.get("--peers")
    peers = parse_peers(*found, dual_stack=dual_stack) if found else ()
    file_found = settings.get("--peers-file")
    if not file_found:
        return peers or DEFAULT_PEERS, None
    setting, path = file_found

    def identities(listed: tuple[StaticPeer, ...]) -> set[tuple[str, str]]:
        return {(p.name, family_of(p.address) if dual_stack else "") for p in listed}

    in_file = identities(read_peers_file(setting, Path(path), dual_stack=dual_stack))
    twice = sorted(name for name, _ in in_file & identities(peers))
    if twice:
        raise ConfigError(setting, f"peer {twice[0]!r} is also given by --peers")
    return peers, Path(path)


def _pod_namespace(settings: _Settings) -> str:
    found = settings.get("--pod-namespace")
    if found is None:
        try:
            text = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if not text:
            raise ConfigError(
                "--pod-namespace",
                "required outside a pod with pods discovery (set POD_NAMESPACE from "
                "metadata.namespace)",
            )
        found = (str(SERVICE_ACCOUNT_NAMESPACE), text)
    setting, text = found
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise ConfigError(setting, f"invalid namespace {text!r}")
    return text


def _kubernetes_config(
    settings: _Settings,
    environ: Mapping[str, str],
    discovery: DiscoveryMode,
    family: IpFamily | None,
    dual_stack: bool,
) -> KubernetesConfig:
    kubeconfig: str | None = None
    found = settings.get("--kubeconfig")
    if found:
        setting, path = found
        first = path.split(os.pathsep)[0]
        if not Path(first).is_file():
            raise ConfigError(setting, f"kubeconfig {first} not found")
        kubeconfig = first
    elif not environ.get("KUBERNETES_SERVICE_HOST"):
        default = Path(environ.get("HOME", "/root")) / ".kube" / "config"
        if not default.is_file():
            raise ConfigError(
                "--kubeconfig",
                "not running in a pod and no kubeconfig given (and ~/.kube/config is missing)",
            )
        kubeconfig = str(default)

    types_setting, types_text = settings.text("--address-types")
    types = tuple(t.strip() for t in types_text.split(",") if t.strip())
    unknown = [t for t in types if t not in ADDRESS_TYPES]
    if unknown or not types:
        raise ConfigError(
            types_setting, f"unknown address type {unknown[0] if unknown else types_text!r}"
        )

    selector = settings.get("--node-selector")
    pod_namespace: str | None = None
    pod_selector: str | None = None
    if discovery is DiscoveryMode.PODS:
        pod_namespace = _pod_namespace(settings)
        pod_selector = settings.text("--pod-selector")[1]
    return KubernetesConfig(
        pod_namespace=pod_namespace,
        pod_selector=pod_selector,
        kubeconfig=kubeconfig,
        label_selector=selector[1] if selector else None,
        address_types=types,
        ip_family=family,
        dual_stack=dual_stack,
        skip_not_ready=settings.value("--skip-not-ready"),
        skip_cordoned=settings.value("--skip-cordoned"),
    )


def _probe_config(settings: _Settings) -> ProbeConfig:
    interval: float = settings.value("--interval")
    if interval < 0.01:
        raise ConfigError(settings.text("--interval")[0], "must be at least 10ms")
    timeout: float = settings.value("--timeout")
    if timeout > 60:
        raise ConfigError(settings.text("--timeout")[0], "must be at most 60s")
    return ProbeConfig(
        interval_s=interval,
        timeout_s=timeout,
        probes_per_interval=settings.value("--count"),
        payload_size=settings.value("--payload-size"),
        socket_mode=settings.value("--socket"),
    )


def _path_mtu_config(settings: _Settings, probe: ProbeConfig) -> PathMtuConfig:
    interval: float = settings.value("--mtu-check-interval")
    if 0 < interval < 1:
        raise ConfigError(settings.text("--mtu-check-interval")[0], "must be 0 or at least 1s")
    size: int | None = settings.value("--mtu-probe-size")
    if size is not None and size <= probe.payload_size + 48:
        raise ConfigError(
            settings.text("--mtu-probe-size")[0],
            f"must be larger than the latency probes ({probe.payload_size} payload bytes and "
            "their headers)",
        )
    return PathMtuConfig(interval_s=interval, probe_bytes=size, timeout_s=probe.timeout_s)


def _exporters(settings: _Settings, discovery: DiscoveryMode) -> frozenset[str]:
    found = settings.get("--exporters")
    chosen: set[str] = set()
    if found:
        setting, text = found
        for name in (part.strip().lower() for part in text.split(",")):
            if name not in ("prometheus", "otlp", "none"):
                raise ConfigError(setting, f"unknown exporter {name!r} (prometheus, otlp, none)")
            if name != "none":
                chosen.add(name)
    else:
        chosen.add("prometheus" if discovery is DiscoveryMode.STATIC else "otlp")
    if settings.get("--prometheus"):
        chosen.add("prometheus")
    if settings.get("--otlp-endpoint"):
        chosen.add("otlp")
    return frozenset(chosen)


def _otlp_config(settings: _Settings) -> OtlpConfig:
    protocol = (
        settings.env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or settings.env("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL", f"expected grpc or http/protobuf, got {protocol!r}"
        )
    specific = settings.env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    flag = settings.get("--otlp-endpoint")
    if specific and not (flag and flag[0] == "--otlp-endpoint"):
        endpoint = validate_otlp_endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", specific)
    else:
        default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
        setting, text = flag or ("--otlp-endpoint", default)
        endpoint = validate_otlp_endpoint(setting, text)
        if protocol == "http/protobuf":
            # The generic endpoint is a base URL; the signal path is appended (OTLP spec).
            endpoint = endpoint.rstrip("/") + "/v1/metrics"

    headers_text = settings.env("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or settings.env(
        "OTEL_EXPORTER_OTLP_HEADERS"
    )
    headers = otlp_headers(
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS"
        if settings.env("OTEL_EXPORTER_OTLP_METRICS_HEADERS")
        else "OTEL_EXPORTER_OTLP_HEADERS",
        headers_text or "",
    )
    timeout_text = settings.env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT") or settings.env(
        "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    # The spec gives this in milliseconds (the Python SDK reads seconds); follow the spec.
    timeout = parse_duration(
        "OTEL_EXPORTER_OTLP_TIMEOUT", timeout_text or "10000", default_unit="ms"
    )
    insecure_text = settings.env("OTEL_EXPORTER_OTLP_INSECURE")
    insecure = (
        parse_bool("OTEL_EXPORTER_OTLP_INSECURE", insecure_text)
        if insecure_text
        else endpoint.startswith("http://")
    )
    _check_tls_files(settings)
    return OtlpConfig(
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        timeout_s=timeout,
        insecure=insecure,
        token_file=_token_file(settings, headers),
    )


_CERTIFICATE_SETTINGS = (
    "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
)


def _check_tls_files(settings: _Settings) -> None:
    """The SDK reads these itself at the first export and, on a missing file, logs and falls
    back to the system's roots; an agent that cannot trust its collector should not start."""
    for name in _CERTIFICATE_SETTINGS:
        text = settings.env(name)
        if not text:
            continue
        try:
            with open(text, "rb") as file:
                file.read(1)
        except OSError as error:
            raise ConfigError(name, f"cannot read {text}: {error.strerror}") from None


def _token_file(settings: _Settings, headers: tuple[tuple[str, str], ...]) -> Path | None:
    given = settings.get("--otlp-token-file")
    if given is None or not given[1]:
        return None
    setting, text = given
    if any(key == AUTHORIZATION for key, _ in headers):
        raise ConfigError(setting, "an authorization header is set as well; give one of them")
    path = Path(text)
    try:
        read_token(path)
    except TokenError as error:
        # Read now so a wrong mount is one line at start, not a refused push per interval.
        raise ConfigError(setting, f"{text}: {error}") from None
    return path
