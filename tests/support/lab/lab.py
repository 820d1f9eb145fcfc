"""The :class:`Lab`: network namespaces joined by the delay/loss switch.

Every node is a network namespace with ``lo`` up and one TUN interface
``lab0`` carrying ``198.18.0.<i+1>/24`` and ``fd00:213::<i+1>/64``.  All
``lab0`` traffic goes through one user-space switch process
(:mod:`tests.support.lab.switch`) that applies the delay and loss of the *directed*
link, so ``RTT(a, b) = d(a->b) + d(b->a)`` (+ a small emulator overhead).
The addresses only exist inside the lab's own namespaces; the switch drops
every packet whose destination is not a lab node.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import math
import os
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import netns as ns
from .netns import LabError
from .ping import PingResult, parse_ping, ping_argv
from .switchctl import SwitchProcess

IFNAME = "lab0"
IPV4_PREFIX = "198.18.0."  # RFC 2544 benchmarking range, only inside lab namespaces
IPV6_PREFIX = "fd00:213::"  # ULA, only inside lab namespaces
MAX_NODES = 250

_lab_seq = itertools.count(1)
_open_labs: set[Lab] = set()  # strong refs: close_all() at exit


@dataclass(frozen=True)
class Link:
    """Properties of one *directed* link: one-way delay, loss ratio, jitter.

    ``jitter_ms`` adds a uniform random ``[-jitter, +jitter]`` to each
    packet's delay (clamped at 0; packets may then be reordered).
    """

    delay_ms: float = 0.0
    loss: float = 0.0
    jitter_ms: float = 0.0
    # A middle hop's MTU (0: none): larger DF packets are not forwarded, and answered with an
    # ICMP "fragmentation needed" / "packet too big" only while too_big_reports holds.
    mtu: int = 0
    too_big_reports: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay_ms) and self.delay_ms >= 0):
            raise ValueError(f"delay_ms must be finite and >= 0, got {self.delay_ms!r}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within [0, 1], got {self.loss!r}")
        if not (math.isfinite(self.jitter_ms) and self.jitter_ms >= 0):
            raise ValueError(f"jitter_ms must be finite and >= 0, got {self.jitter_ms!r}")
        if self.mtu and not 68 <= self.mtu <= 65535:
            raise ValueError(f"mtu must be 0 or within [68, 65535], got {self.mtu!r}")

    def as_dict(self) -> dict[str, float]:
        return {"delay_ms": self.delay_ms, "loss": self.loss, "jitter_ms": self.jitter_ms,
                "mtu": self.mtu, "too_big_reports": self.too_big_reports}  # fmt: skip


NO_DELAY = Link()


def ipv6_supported() -> bool:
    return os.path.isdir("/proc/sys/net/ipv6")


class Lab:
    """A set of namespaces ("nodes") wired through the emulating switch.

    Build with :meth:`create` and use as a context manager; :meth:`close`
    (also run by ``__exit__`` and at interpreter exit) kills processes
    started with :meth:`popen`, stops the switch and deletes the namespaces.
    """

    def __init__(
        self, nodes: Sequence[str], default: Link, links: Mapping[tuple[str, str], Link]
    ) -> None:
        # Use Lab.create(); __init__ only records state, it builds nothing.
        self.nodes: tuple[str, ...] = tuple(nodes)
        self.default = default
        self.ipv6 = ipv6_supported()
        self._index = {n: i for i, n in enumerate(self.nodes)}
        self._links: dict[tuple[str, str], Link] = {
            (a, b): links.get((a, b), default) for a in self.nodes for b in self.nodes if a != b
        }
        self._cut: set[str] = set()
        self._seq = next(_lab_seq)
        self._netns = {n: ns.netns_name(os.getpid(), self._seq, n) for n in self.nodes}
        self._created_netns: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._switch: SwitchProcess | None = None
        self._closed = False
        self._prefixes: dict[str, list[str]] = {}

    # -- construction --------------------------------------------------------
    @classmethod
    def create(
        cls,
        nodes: Sequence[str],
        links: Mapping[tuple[str, str], Link] | None = None,
        default: Link = NO_DELAY,
        *,
        seed: int | None = None,
        spin_us: float = 200.0,
        realtime: bool = True,
        prefixes: Mapping[str, Sequence[str]] | None = None,
    ) -> Lab:
        """Build and start a lab.

        ``links`` maps *directed* ``(src, dst)`` pairs to a :class:`Link`;
        pairs not listed use ``default``.  ``seed`` makes loss/jitter
        reproducible.  ``spin_us``: the switch polls instead of sleeping that
        close to a delivery deadline (precision vs. CPU; 0 = always sleep).
        ``realtime`` runs the switch as SCHED_FIFO priority 10 when permitted
        (silently not otherwise): on a shared 2-core VM this cut the RTT p99
        overhead from ~2 ms to ~0.4 ms.  Its CPU use is small for probe
        traffic (<= spin_us of polling per delivered packet) and the kernel's
        RT throttling bounds it under floods.  ``prefixes`` gives nodes routed networks (a
        Kubernetes node's pod CIDR): the switch carries packets for them to that node, and each
        other node routes them over ``lab0``.
        """
        nodes = list(nodes)
        if not nodes:
            raise ValueError("a lab needs at least one node")
        if len(nodes) > MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"duplicate node names in {nodes}")
        for n in nodes:
            if not ns.NODE_NAME_RE.match(n):
                raise ValueError(f"bad node name {n!r} (letters, digits, '_.-', max 63)")
        links = dict(links or {})
        for a, b in links:
            if a not in nodes or b not in nodes or a == b:
                raise ValueError(f"bad link ({a!r}, {b!r}) for nodes {nodes}")
        prefixes = {node: list(networks) for node, networks in (prefixes or {}).items()}
        for node in prefixes:
            if node not in nodes:
                raise ValueError(f"prefixes for unknown node {node!r}")
        lab = cls(nodes, default, links)
        lab._prefixes = prefixes
        try:
            lab._start(seed, spin_us, realtime)
        except BaseException:
            lab.close()
            raise
        return lab

    def _start(self, seed: int | None, spin_us: float, realtime: bool) -> None:
        ns.cleanup_stale()
        config = {
            "nodes": {
                n: {
                    "ifname": "mlt%d",
                    "addrs": self._addrs(n),
                    "prefixes": self._prefixes.get(n, []),
                }
                for n in self.nodes
            },
            "default": self.default.as_dict(),
            "links": [
                {"src": a, "dst": b, **link.as_dict()} for (a, b), link in self._links.items()
            ],
            "seed": seed,
            "spin_us": spin_us,
            "realtime": realtime,
        }
        _open_labs.add(self)
        self._switch = SwitchProcess(config)
        for node in self.nodes:
            self._setup_node(node, self._switch.ifnames[node])

    def _addrs(self, node: str) -> list[str]:
        addrs = [self.address(node)]
        if self.ipv6:
            addrs.append(self.address6(node))
        return addrs

    def _setup_node(self, node: str, tun: str) -> None:
        netns = self._netns[node]
        ns.create_netns(netns)
        self._created_netns.append(netns)
        # move and rename in one step: inside the namespace it is always lab0
        ns.ip("link", "set", "dev", tun, "netns", netns, "name", IFNAME)
        cmds = [f"addr add {self.address(node)}/24 dev {IFNAME}"]
        if self.ipv6:
            ns.write_sysctl(netns, f"net.ipv6.conf.{IFNAME}.disable_ipv6", "0")
            cmds += [
                # no link-local address: no DAD/RS/MLD chatter through the switch
                f"link set dev {IFNAME} addrgenmode none",
                f"addr add {self.address6(node)}/64 dev {IFNAME} nodad",
            ]
        cmds += [f"link set dev {IFNAME} up", "link set dev lo up"]
        cmds += [
            f"route add {network} dev {IFNAME}"
            for other, networks in self._prefixes.items()
            if other != node
            for network in networks
        ]
        ns.ip_batch(netns, cmds)
        # Let unprivileged ICMP echo sockets (SOCK_DGRAM/IPPROTO_ICMP) work for all groups.
        ns.write_sysctl(netns, "net.ipv4.ping_group_range", "0 2147483647")

    # -- context management -------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tear everything down; idempotent, and tries every step."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in self._procs:
            _stop_process(proc)
        if self._switch is not None:
            try:
                self._switch.stop()
            except Exception as exc:  # pragma: no cover - defensive
                errors.append(f"switch: {exc}")
        for netns in self._created_netns:
            try:
                ns.kill_netns_processes(netns)  # e.g. started via exec_argv() directly
                ns.delete_netns(netns)
            except Exception as exc:
                errors.append(str(exc))
        _open_labs.discard(self)
        if errors:
            raise LabError("lab teardown incomplete: " + "; ".join(errors))

    # -- addressing and exec ----------------------------------------------------
    def _check(self, *nodes: str) -> None:
        for n in nodes:
            if n not in self._index:
                raise KeyError(f"unknown lab node {n!r}; nodes are {list(self.nodes)}")

    def address(self, node: str) -> str:
        """The node's IPv4 address on ``lab0``."""
        self._check(node)
        return f"{IPV4_PREFIX}{self._index[node] + 1}"

    def address6(self, node: str) -> str:
        """The node's IPv6 address on ``lab0`` (LabError if the kernel has no IPv6)."""
        self._check(node)
        if not self.ipv6:
            raise LabError("IPv6 is not available in this kernel")
        return f"{IPV6_PREFIX}{self._index[node] + 1:x}"

    def node_of(self, address: str) -> str:
        """Reverse lookup: which node owns ``address`` (v4 or v6)."""
        for n in self.nodes:
            if address == self.address(n) or (self.ipv6 and address == self.address6(n)):
                return n
        raise KeyError(address)

    def netns(self, node: str) -> str:
        self._check(node)
        return self._netns[node]

    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.netns(node), *argv]

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``node``; it is killed at :meth:`close`."""
        self._require_open()
        proc: subprocess.Popen[Any] = subprocess.Popen(self.exec_argv(node, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def run(
        self, node: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` inside ``node`` (text output captured, 60 s timeout by default)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("check", False)
        return subprocess.run(self.exec_argv(node, argv), **kwargs)  # noqa: PLW1510 (check defaults False)

    def socket(
        self,
        node: str,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket created inside ``node``'s namespace (usable from this process)."""
        self._require_open()
        return ns.call_in_netns(self.netns(node), lambda: socket.socket(family, type, proto))

    def ping(
        self,
        src: str,
        dst: str,
        *,
        count: int = 5,
        interval: float = 0.2,
        ipv6: bool = False,
        timeout_s: float = 2.0,
    ) -> PingResult:
        """Run iputils ``ping`` from ``src`` to ``dst``'s lab address."""
        target = self.address6(dst) if ipv6 else self.address(dst)
        argv = ping_argv(target, count=count, interval=interval, timeout_s=timeout_s, ipv6=ipv6)
        proc = self.run(src, argv, timeout=count * interval + timeout_s + 30)
        result = parse_ping(proc.stdout)
        if result.transmitted == 0:
            raise LabError(f"ping failed (rc={proc.returncode}): {proc.stdout}{proc.stderr}")
        return result

    # -- emulation control -----------------------------------------------------
    def link(self, src: str, dst: str) -> Link:
        """The configured properties of directed link ``src -> dst``."""
        self._check(src, dst)
        return self._links[(src, dst)]

    def set_link(
        self,
        src: str,
        dst: str,
        *,
        delay_ms: float | None = None,
        loss: float | None = None,
        jitter_ms: float | None = None,
        mtu: int | None = None,
        too_big_reports: bool | None = None,
        both: bool = False,
    ) -> None:
        """Change ``src -> dst`` (and ``dst -> src`` if ``both``); unset fields are kept.

        Takes effect for packets entering the switch after this returns;
        packets already in flight keep their old delay.
        """
        self._check(src, dst)
        if src == dst:
            raise ValueError("a link needs two different nodes")
        pairs = [(src, dst), (dst, src)] if both else [(src, dst)]
        changes = {
            k: v
            for k, v in (
                ("delay_ms", delay_ms),
                ("loss", loss),
                ("jitter_ms", jitter_ms),
                ("mtu", mtu),
                ("too_big_reports", too_big_reports),
            )
            if v is not None
        }
        for pair in pairs:
            new = replace(self._links[pair], **changes)  # validates
            self._control("set_link", src=pair[0], dst=pair[1], **new.as_dict())
            self._links[pair] = new

    def cut(self, node: str) -> None:
        """Drop everything to and from ``node`` (link settings are kept)."""
        self._set_node(node, up=False)

    def restore(self, node: str) -> None:
        """Undo :meth:`cut`."""
        self._set_node(node, up=True)

    def is_cut(self, node: str) -> bool:
        self._check(node)
        return node in self._cut

    def _set_node(self, node: str, *, up: bool) -> None:
        self._check(node)
        self._control("set_node", node=node, up=up)
        (self._cut.discard if up else self._cut.add)(node)

    def expected_rtt_ms(self, a: str, b: str) -> float:
        """Configured ``d(a->b) + d(b->a)`` (loss and cuts are not considered)."""
        self._check(a, b)
        if a == b:
            return 0.0
        return self._links[(a, b)].delay_ms + self._links[(b, a)].delay_ms

    def stats(self) -> dict[str, Any]:
        """Switch counters since start / :meth:`reset_stats`.

        ``links["a>b"]``: ``forwarded``, ``lost``, ``down_drops`` and
        ``echo_requests`` (ICMP/ICMPv6 echo requests that entered a->b: who
        probed whom); ``unknown_dst``, ``malformed``, ``write_errors``; and
        ``lateness_us`` p50/p99/max of deliveries vs. their deadline.
        """
        stats: dict[str, Any] = self._control("stats")["stats"]
        return stats

    def reset_stats(self) -> None:
        self._control("reset_stats")

    def switch_alive(self) -> bool:
        return self._switch is not None and self._switch.alive()

    def _control(self, op: str, **fields: Any) -> dict[str, Any]:
        self._require_open()
        assert self._switch is not None
        return self._switch.request(op, **fields)

    def _require_open(self) -> None:
        if self._closed:
            raise LabError("lab is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Lab #{self._seq} {state} nodes={list(self.nodes)}>"


def _stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def close_all(labs: Iterable[Lab] | None = None) -> None:
    """Close every lab still open in this process (also runs at exit)."""
    for lab in list(labs if labs is not None else _open_labs):
        with contextlib.suppress(Exception):
            lab.close()


atexit.register(close_all)
