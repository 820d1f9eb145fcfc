"""Steady state of a whole running agent (`monlat agent`): CPU share, resident memory and its own
send-lag histogram, with N loopback peers probed once a second; once as measured alone (pull
only), and once as deployed in Kubernetes, pushing OTLP every 15 s to the real collector.

Peers are loopback addresses (`--network loopback`), or addresses behind a user-space echo
responder on a TUN device in a network namespace of the benchmark's own (`--network tun`). On
loopback the agent's send call also runs the kernel's echo-reply path for its "peer", which in a
cluster runs on the peer; behind the responder the agent pays only its own part, as deployed.

Every peer of the file is probed (`--max-peers all`): the rows measure the cost of N peers, not
what the cluster-size defaults would pick for a cluster of N+1 nodes. Which per-pair series are
exported follows the agent's defaults for that cluster size.

    python -m benchmarks.steady --network tun --peers 5000 --otlp-peers 5000 \
        --tree /tmp/baseline --tree .

measures each row for every tree in turn (PYTHONPATH selects the tree), for before/after
comparisons in one run on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.targets import RESPONDER_LOCAL, RESPONDER_PREFIX, behind_responder, loopback
from tests.support.agent_process import http_get, parse_exposition

_TICKS = os.sysconf("SC_CLK_TCK")
_PORT = 19464
REPO = Path(__file__).resolve().parents[1]


def _user_system_seconds(pid: int, tid: int | None = None) -> tuple[float, float]:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS  # utime, stime


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    return sum(_user_system_seconds(pid, tid))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _lag_buckets() -> dict[float, float]:
    import socket

    status, body = http_get(socket.socket, "127.0.0.1", _PORT, "/metrics")
    assert status == 200
    return {
        float(labels["le"]): value
        for name, labels, value in parse_exposition(body)
        if name == "monlat_send_lag_seconds_bucket"
    }


def _p99_bound(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(smallest bucket bound holding 99% of the sends in the window, share above 10 ms)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts[float("inf")]
    bound = next(b for b, c in counts.items() if c >= 0.99 * total)
    return bound, 1 - counts.get(0.01, total) / total if total else 0.0


def measure(
    peers: int,
    seconds: float,
    otlp_endpoint: str | None = None,
    otlp_token_file: Path | None = None,
    *,
    tree: Path = REPO,
    network: str = "loopback",
    agent_args: Sequence[str] = (),
) -> dict[str, Any]:
    """With `otlp_endpoint`, the agent also pushes OTLP there every 15 s (the DaemonSet's
    setting); its /metrics is read only outside the measured window either way. With network
    "tun" the caller runs in a namespace where the echo responder answers (see `run`)."""
    addresses = behind_responder(peers) if network == "tun" else loopback(peers)
    peers_file = Path(tempfile.mkstemp(suffix=".peers")[1])
    peers_file.write_text("\n".join(addresses) + "\n")
    otlp = ["--otlp-endpoint", otlp_endpoint, "--export-interval", "15s"] if otlp_endpoint else []
    if otlp_token_file is not None:
        otlp += ["--otlp-token-file", str(otlp_token_file)]
    agent = subprocess.Popen(
        [sys.executable, "-m", "monlat", "agent", "--node-name", "bench", "--peers-file",
         str(peers_file), "--interval", "1s", "--log-measurements", "false",
         "--max-peers", "all", "--prometheus", f"127.0.0.1:{_PORT}", *otlp, *agent_args],
        # `-m` puts the working directory first on sys.path, ahead of PYTHONPATH.
        cwd=tree.resolve(), env={**os.environ, "PYTHONPATH": str(tree.resolve())},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(10)  # start-up and the first rounds
        buckets_before = _lag_buckets()
        system_before = _user_system_seconds(agent.pid)[1]
        cpu_before, started = _cpu_seconds(agent.pid), time.monotonic()
        # The main thread runs the event loop (probing); the others export.
        main_before = _cpu_seconds(agent.pid, agent.pid)
        rss_peak = 0.0
        while time.monotonic() - started < seconds:
            time.sleep(1)
            rss_peak = max(rss_peak, _rss_mib(agent.pid))
        cpu = _cpu_seconds(agent.pid) - cpu_before
        main = _cpu_seconds(agent.pid, agent.pid) - main_before
        system = _user_system_seconds(agent.pid)[1] - system_before
        elapsed = time.monotonic() - started
        p99_bound, above_10ms = _p99_bound(buckets_before, _lag_buckets())
    finally:
        agent.terminate()
        agent.wait(15)
        peers_file.unlink()
    return {
        "peers": peers,
        "otlp": otlp_endpoint is not None,
        "network": network,
        "tree": str(tree),
        "seconds": elapsed,
        "cpu_share_of_one_core": cpu / elapsed,
        "cpu_share_main_thread": main / elapsed,
        "cpu_share_other_threads": (cpu - main) / elapsed,
        # On loopback the agent's kernel also answers its own probes.
        "cpu_share_system": system / elapsed,
        "rss_peak_mib": rss_peak,
        "send_lag_p99_at_most_s": p99_bound,
        "send_lag_share_above_10ms": above_10ms,
    }


def run(
    peer_counts: Sequence[int],
    seconds: float,
    otlp_peers: Sequence[int] = (),
    trees: Sequence[Path] = (REPO,),
    network: str = "loopback",
) -> dict[str, Any]:
    """Pull-only rows for `peer_counts`, OTLP rows for `otlp_peers`; with several trees, each
    row is measured for every tree back to back (keys gain the tree's index).

    With network "tun" the rows run in a private network namespace (`unshare --net`, so
    nothing of it outlives the run): this function re-runs the benchmark there.
    """
    if network == "tun" and os.environ.get(_INSIDE) != "1":
        return _run_in_namespace(peer_counts, seconds, otlp_peers, trees)
    figures: dict[str, Any] = {}
    rows = [(n, False) for n in peer_counts] + [(n, True) for n in otlp_peers]
    with _responder() if network == "tun" else contextlib.nullcontext():
        for peers, otlp in rows:
            for index, tree in enumerate(trees):
                key = f"{peers}+otlp" if otlp else str(peers)
                if len(trees) > 1:
                    key += f"@{index}"
                figures[key] = (
                    measure_with_collector(peers, seconds, tree=tree, network=network)
                    if otlp
                    else measure(peers, seconds, tree=tree, network=network)
                )
    return figures


_INSIDE = "MONLAT_STEADY_IN_NAMESPACE"


def _run_in_namespace(
    peer_counts: Sequence[int], seconds: float, otlp_peers: Sequence[int], trees: Sequence[Path]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "steady.json"
        rows = [arg for n in peer_counts for arg in ("--peers", str(n))]
        rows += [arg for n in otlp_peers for arg in ("--otlp-peers", str(n))]
        rows += [arg for tree in trees for arg in ("--tree", str(tree.resolve()))]
        subprocess.run(
            ["unshare", "--net", "--", sys.executable, "-m", "benchmarks.steady", *rows,
             "--network", "tun", "--seconds", str(seconds), "--json", str(out), "--quiet"],
            cwd=REPO, env={**os.environ, _INSIDE: "1"}, check=True,
        )  # fmt: skip
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


@contextlib.contextmanager
def _responder() -> Iterator[None]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    responder = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("echo_responder.py")),
         "--local", RESPONDER_LOCAL, "--peers", RESPONDER_PREFIX],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert responder.stdout is not None
        if responder.stdout.readline().strip() != "ready":
            raise RuntimeError("the echo responder did not start")
        yield
    finally:
        assert responder.stdin is not None
        responder.stdin.close()
        responder.wait(10)


def measure_with_collector(
    peers: int, seconds: float, *, tree: Path = REPO, network: str = "loopback"
) -> dict[str, Any]:
    from tests.support.collector import Collector, collector_binary
    from tests.support.ports import free_ports

    grpc, http, metrics, health = free_ports(4)
    collector = Collector(collector_binary(), "127.0.0.1", grpc, http, metrics, health)
    log = Path(tempfile.mkstemp(suffix=".collector.log")[1])
    collector.start(log)
    try:
        collector.wait_healthy()
        endpoint = f"http://127.0.0.1:{grpc}"
        return measure(
            peers,
            seconds,
            otlp_endpoint=endpoint,
            otlp_token_file=collector.token_file,
            tree=tree,
            network=network,
        )
    finally:
        collector.stop()
        log.unlink()
        if collector.token_file is not None:
            collector.token_file.unlink(missing_ok=True)


def print_table(figures: dict[str, Any]) -> None:
    print("\n## Steady state: `monlat agent`, peers at 1 probe/s each, logs off")
    print(f"{'peers':>6} {'network':>8} {'export':>16} {'seconds':>8} {'CPU (1 core)':>13} "
          f"{'main thread':>12} {'kernel':>7} {'RSS peak':>9} {'lag p99 <=':>11}  "
          "tree")  # fmt: skip
    for row in figures.values():
        export = "OTLP every 15 s" if row.get("otlp") else "none (pull)"
        network = row.get("network", "loopback")
        print(
            f"{row['peers']:>6} {network:>8} {export:>16} {row['seconds']:>8.0f} "
            f"{row['cpu_share_of_one_core']:>12.1%} {row['cpu_share_main_thread']:>11.1%} "
            f"{row['cpu_share_system']:>6.1%} "
            f"{row['rss_peak_mib']:>6.1f} MiB {row['send_lag_p99_at_most_s'] * 1000:>8.1f} ms  "
            f"{row['tree']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--peers", type=int, action="append", help="a pull-only row")
    parser.add_argument("--otlp-peers", type=int, action="append", help="an OTLP row")
    parser.add_argument("--tree", type=Path, action="append", help="a monlat source tree")
    parser.add_argument("--network", choices=["loopback", "tun"], default="loopback")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    figures = run(
        args.peers or [], args.seconds, args.otlp_peers or [], args.tree or [REPO], args.network
    )
    if not args.quiet:
        print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
