"""Agent configuration: parsed and validated once, then passed down as a frozen dataclass."""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from monlat.agent.sizing import EVERY_PEER, SizingSettings
from monlat.common.errors import ConfigError


class DiscoveryMode(enum.Enum):
    STATIC = "static"
    KUBERNETES = "kubernetes"  # peers are the cluster's Nodes (host network)
    PODS = "pods"  # peers are the pod-network agents' Pods, probed at their pod IPs


class SocketMode(enum.Enum):
    AUTO = "auto"
    RAW = "raw"
    DGRAM = "dgram"


class IpFamily(enum.Enum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True)
class StaticPeer:
    name: str
    address: str


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str
    protocol: str  # "grpc" or "http/protobuf"
    headers: tuple[tuple[str, str], ...]
    timeout_s: float
    insecure: bool
    # Re-read before every push: a Secret volume is updated in place when the token rotates.
    token_file: Path | None = None


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: str | None
    label_selector: str | None
    address_types: tuple[str, ...]
    ip_family: IpFamily | None
    dual_stack: bool = False
    skip_not_ready: bool = True
    skip_cordoned: bool = True
    resync_backoff_max_s: float = 30.0
    pod_namespace: str | None = None  # pods discovery only
    pod_selector: str | None = None


@dataclass(frozen=True)
class ProbeConfig:
    interval_s: float = 1.0
    timeout_s: float = 1.0
    probes_per_interval: int = 1
    payload_size: int = 56
    socket_mode: SocketMode = SocketMode.AUTO


@dataclass(frozen=True)
class PathMtuConfig:
    # Each peer's path is checked once per period (0: no checks).
    interval_s: float = 60.0
    # The IP packet size the paths should carry; None: the MTU of the interface each peer is
    # routed through.
    probe_bytes: int | None = None
    timeout_s: float = 1.0
    resolution_bytes: int = 8


@dataclass(frozen=True)
class Config:
    node_name: str
    discovery: DiscoveryMode
    static_peers: tuple[StaticPeer, ...]
    peers_file: Path | None
    kubernetes: KubernetesConfig | None
    probe: ProbeConfig
    listen: ListenAddress
    prometheus: bool
    otlp: OtlpConfig | None
    export_interval_s: float
    log_measurements: bool
    window_s: float
    shutdown_timeout_s: float
    # A DaemonSet pod that exits for want of a socket crash-loops, and its reason scrolls away:
    # with a retry period it stays up, unready, and says why until the node allows a socket.
    socket_retry_s: float = 0.0
    # Peers (max_peers, cross-zone sample) and per-pair histograms: numbers, or decided by the
    # cluster's size (monlat.agent.sizing); the default is explicit (every peer, histograms on).
    sizing: SizingSettings = EVERY_PEER
    zone_labels: bool = False
    # IPv4 and IPv6 side by side: a peer per node and family, every series labelled by family.
    dual_stack: bool = False
    # A `network` label on every series (e.g. "pod" for the pod-network DaemonSet), so that
    # two agents on one node measuring different paths stay apart.
    network_label: str | None = None
    # The events' threshold (a logging level); at DEBUG the libraries' own records show too.
    log_level: int = logging.INFO
    path_mtu: PathMtuConfig = PathMtuConfig()


LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR}  # fmt: skip


def parse_log_level(setting: str, text: str) -> int:
    try:
        return LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise ConfigError(setting, f"expected debug, info, warn or error, got {text!r}") from None


def parse_listen(setting: str, text: str) -> ListenAddress:
    """Parse `HOST:PORT`, `:PORT` or `[v6]:PORT`."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(setting, f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(setting, f"invalid port in {text!r}")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ConfigError(setting, f"invalid host in {text!r}") from None
    return ListenAddress(host, int(port_text))


def parse_ip(setting: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(setting, f"invalid IP address {text.strip()!r}") from None


_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def parse_peers(setting: str, text: str, *, dual_stack: bool = False) -> tuple[StaticPeer, ...]:
    """Parse `name=address,address,...` (a bare address names itself).

    Commas and newlines both separate entries so the same parser reads a peers file;
    `#` starts a comment. In dual-stack mode a name may be listed once per address family.
    """
    peers: list[StaticPeer] = []
    seen: set[tuple[str, int]] = set()
    families: set[tuple[str, int]] = set()
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0]
        for item in line.split(","):
            entry = item.strip()
            if not entry:
                continue
            name, sep, address = entry.partition("=")
            if not sep:
                name, address = entry, entry
            name = name.strip()
            if not _NAME.fullmatch(name):
                raise ConfigError(setting, f"invalid peer name {name!r}")
            ip = parse_ip(setting, address)
            version = ipaddress.ip_address(ip).version
            key = (name, version if dual_stack else 0)
            if key in seen:
                if dual_stack:
                    problem = f"peer {name!r} listed twice for IPv{version}"
                elif (name, version) in families:
                    problem = f"peer {name!r} listed twice"
                else:
                    problem = (
                        f"peer {name!r} listed twice (to probe IPv4 and IPv6 side by side "
                        "use --ip-family dual)"
                    )
                raise ConfigError(setting, problem)
            seen.add(key)
            families.add((name, version))
            peers.append(StaticPeer(name, ip))
    return tuple(peers)


def parse_bool(setting: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(setting, f"expected true or false, got {text!r}")


def read_peers_file(
    setting: str, path: Path, *, dual_stack: bool = False
) -> tuple[StaticPeer, ...]:
    """The peers of a file (parse_peers' format); any unreadable or undecodable file is one
    ConfigError, never an exception of its own (a stray byte in a ConfigMap)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(setting, f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:  # a NUL in the name, bytes that are not UTF-8
        raise ConfigError(setting, f"cannot read {path}: {err}") from None
    return parse_peers(setting, text, dual_stack=dual_stack)


def parse_key_values(setting: str, text: str) -> tuple[tuple[str, str], ...]:
    """Parse the OTEL_*_HEADERS / OTEL_RESOURCE_ATTRIBUTES form `k=v,k2=v2` (values URL-encoded)."""
    from urllib.parse import unquote

    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(setting, f"expected key=value, got {item.strip()!r}")
        pairs.append((unquote(key.strip()), unquote(value.strip())))
    return tuple(pairs)


def validate_otlp_endpoint(setting: str, endpoint: str) -> str:
    """An endpoint without a scheme misbehaves silently in the SDK, so insist on one."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            setting,
            f"expected a URL with scheme, like http://collector:4317, got {endpoint!r}",
        )
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(setting, f"invalid port in {endpoint!r}") from None
    return endpoint
