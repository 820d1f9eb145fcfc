"""End to end in the lab: agents in three namespaces push OTLP to the real collector, the Debian
Prometheus server scrapes the collector, and faults are injected on the way."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcess, series
from tests.support.collector import Collector
from tests.support.lab import Lab, Link
from tests.support.lab.rtt import AGENT_TOL_MS, rtt_ok
from tests.support.prometheus_server import PrometheusServer, require

NODES = ("node1", "node2", "node3")
# Distinct one-way delays on every directed link: RTTs of 2, 4 and 7 ms per pair.
LINKS = {
    ("node1", "node2"): Link(delay_ms=0.5), ("node2", "node1"): Link(delay_ms=1.5),
    ("node1", "node3"): Link(delay_ms=1.0), ("node3", "node1"): Link(delay_ms=3.0),
    ("node2", "node3"): Link(delay_ms=2.5), ("node3", "node2"): Link(delay_ms=4.5),
}  # fmt: skip
EXPIRATION_S = 15
AGENT_PORT = 9464


@dataclass
class Mesh:
    lab: Lab
    collector: Collector
    prometheus: PrometheusServer
    agents: dict[str, AgentProcess]
    peers_files: dict[str, Path]
    start_agent: Callable[[str], AgentProcess]


@pytest.fixture
def mesh(lab_factory: Callable[..., Lab], collector_bin: str, tmp_path: Path) -> Iterator[Mesh]:
    require("promtool")
    # SCHED_FIFO for the emulator: three agents, a collector and Prometheus share two cores.
    lab = lab_factory([*NODES, "observer"], links=LINKS, default=Link(delay_ms=0.2), realtime=True)
    collector = Collector(
        collector_bin, "0.0.0.0", 4317, 4318, 9090, 13133,
        expiration=f"{EXPIRATION_S}s",
        prefix=tuple(lab.exec_argv("observer", [])),
        connect=lambda: lab.socket("observer"),
    )  # fmt: skip
    collector.start(tmp_path / "collector.log")
    prometheus = PrometheusServer(
        tmp_path, "127.0.0.1:9090", port=9091,
        prefix=tuple(lab.exec_argv("observer", [])), connect=lambda: lab.socket("observer"),
    )  # fmt: skip
    peers_files = {}
    for node in NODES:
        path = tmp_path / f"{node}.peers"
        path.write_text("".join(f"{n}={lab.address(n)}\n" for n in NODES))
        peers_files[node] = path

    def start_agent(node: str) -> AgentProcess:
        agent = AgentProcess(
            ["--node-name", node, "--peers-file", str(peers_files[node]), "--interval", "250ms",
             "--timeout", "200ms", "--exporters", "otlp,prometheus", "--export-interval", "500ms",
             "--listen", f"127.0.0.1:{AGENT_PORT}"],
            port=AGENT_PORT,
            prefix=lab.exec_argv(node, []),
            connect=lambda: lab.socket(node),
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{lab.address('observer')}:4317",
                 **collector.agent_env},
        )  # fmt: skip
        agent.wait_ready()
        return agent

    agents = {node: start_agent(node) for node in NODES}
    try:
        yield Mesh(lab, collector, prometheus, agents, peers_files, start_agent)
    finally:
        for agent in agents.values():
            if agent.proc.poll() is None:
                agent.stop()
        prometheus.stop()
        collector.stop()


def pairs(samples: list[tuple[str, dict[str, str], float]]) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for name, labels, value in samples:
        if name == "latency_between_nodes":
            key = (labels["from"], labels["to"])
            assert key not in found, f"{key} appears twice"
            found[key] = value
    return found


ALL_PAIRS = {(a, b) for a in NODES for b in NODES if a != b}


def wait_for_pairs(
    mesh: Mesh, expected: set[tuple[str, str]], timeout: float, *, accurate: bool = False
) -> dict[tuple[str, str], float]:
    """The collector's pairs once they are ``expected`` (and, if ``accurate``, every figure
    matches the emulated RTT: a gauge holds the latest one, a noisy interval passes)."""
    deadline = time.monotonic() + timeout
    found: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        found = pairs(mesh.collector.scrape())
        if set(found) == expected and (not accurate or all_accurate(mesh, found)):
            return found
        time.sleep(0.5)
    raise AssertionError(f"expected pairs {sorted(expected)}, collector has {found}")


def all_accurate(mesh: Mesh, found: Mapping[tuple[str, str], float]) -> bool:
    return all(rtt_ok(v, mesh.lab.expected_rtt_ms(a, b)) for (a, b), v in found.items())


def rss_kib(agent: AgentProcess) -> int:
    for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_matrix_through_collector_and_prometheus(mesh: Mesh) -> None:
    wait_for_pairs(mesh, ALL_PAIRS, timeout=30, accurate=True)

    text = mesh.collector.scrape_text()
    lines = [line for line in text.splitlines() if line.startswith("latency_between_nodes{")]
    assert len(lines) == 6
    for line in lines:
        assert line.startswith('latency_between_nodes{from="node'), line
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    deadline = time.monotonic() + 20
    matrix: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        result = mesh.prometheus.query("max by (from, to) (latency_between_nodes)")
        matrix = {
            (r["metric"]["from"], r["metric"]["to"]): float(r["value"][1])  # type: ignore[index]
            for r in result
        }
        if set(matrix) == ALL_PAIRS and all_accurate(mesh, matrix):
            break
        time.sleep(0.5)
    assert set(matrix) == ALL_PAIRS and all_accurate(mesh, matrix), matrix
    loss = mesh.prometheus.query(
        '1 - sum by (from, to) (monlat_probes_total{result="reply"}) '
        "/ sum by (from, to) (monlat_probes_total)"
    )
    assert len(loss) == 6 and all(float(r["value"][1]) == 0 for r in loss)  # type: ignore[index]

    for node, agent in mesh.agents.items():
        logged = [line for line in agent.stdout if line]
        assert logged
        for line in logged:
            head, value = line.rsplit(" ", 1)
            assert head.startswith(f'latency_between_nodes{{from="{node}",to="node')
            assert float(value) > 0 and len(value.split(".")[1]) == 3


def test_removed_peer_and_stopped_agent_disappear(mesh: Mesh) -> None:
    wait_for_pairs(mesh, ALL_PAIRS, timeout=30)
    mesh.peers_files["node1"].write_text(f"node2={mesh.lab.address('node2')}\n")
    started = time.monotonic()
    wait_for_pairs(mesh, ALL_PAIRS - {("node1", "node3")}, timeout=EXPIRATION_S + 10)
    assert time.monotonic() - started <= EXPIRATION_S + 10

    assert mesh.agents["node3"].stop() == 0
    started = time.monotonic()
    # node3's own rows expire; node2 still measures node3, whose kernel answers without an agent.
    remaining = {("node1", "node2"), ("node2", "node1"), ("node2", "node3")}
    wait_for_pairs(mesh, remaining, timeout=EXPIRATION_S + 10)
    assert time.monotonic() - started <= EXPIRATION_S + 10


def test_collector_down_loses_no_probing_and_queues_nothing(mesh: Mesh) -> None:
    wait_for_pairs(mesh, ALL_PAIRS, timeout=30)
    before = {node: rss_kib(agent) for node, agent in mesh.agents.items()}
    sent_before = {
        node: sum(v for n, _, v in agent.metrics() if n == "monlat_probes_total")
        for node, agent in mesh.agents.items()
    }
    mesh.collector.stop()
    peak = dict(before)
    for _ in range(10):  # 20 s: forty failed pushes at the mesh's 500 ms export interval
        time.sleep(2)
        for node, agent in mesh.agents.items():
            assert agent.proc.poll() is None, agent.stderr[-5:]
            peak[node] = max(peak[node], rss_kib(agent))
    for node, agent in mesh.agents.items():
        probes = sum(v for n, _, v in agent.metrics() if n == "monlat_probes_total")
        assert probes >= sent_before[node] + 2 * 4 * 15  # two peers, 4/s, ~20 s
        assert series(agent.metrics(), "latency_between_nodes")  # still measuring
        # Flat memory: the failed exports are dropped, not queued.
        assert peak[node] - before[node] < 10 * 1024, (node, before[node], peak[node])
    mesh.collector.start(mesh.collector.log_path or Path("/dev/null"))
    wait_for_pairs(mesh, ALL_PAIRS, timeout=30)


def test_cut_node_leaves_and_returns(mesh: Mesh) -> None:
    wait_for_pairs(mesh, ALL_PAIRS, timeout=30)
    mesh.lab.cut("node3")
    # node3's agent cannot reach the collector either, so its rows expire; the others' rows
    # towards node3 leave at once (no reply in the latest interval).
    without = {(a, b) for a, b in ALL_PAIRS if "node3" not in (a, b)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        local = {n: series(a.metrics(), "latency_between_nodes") for n, a in mesh.agents.items()}
        if "node3" not in local["node1"] and "node3" not in local["node2"]:
            break
        time.sleep(0.3)
    for node in ("node1", "node2"):
        samples = mesh.agents[node].metrics()
        assert "node3" not in series(samples, "latency_between_nodes")
        assert series(samples, "monlat_loss_ratio")["node3"] > 0
    wait_for_pairs(mesh, without, timeout=EXPIRATION_S + 10)
    mesh.lab.restore("node3")
    wait_for_pairs(mesh, ALL_PAIRS, timeout=30)
    assert all(agent.proc.poll() is None for agent in mesh.agents.values())


def test_pod_path_and_families_beside_the_host_path(mesh: Mesh) -> None:
    """A second agent on node1 and node2, labelled network=pod and dual-stack, pushes through
    the same collector: its series stand beside the host agents' and the README's PromQL gives
    the per-pair difference of the two paths."""
    lab = mesh.lab
    pod_agents = []
    for node, peer in (("node1", "node2"), ("node2", "node1")):
        peers = f"{peer}={lab.address(peer)},{peer}={lab.address6(peer)}"
        agent = AgentProcess(
            ["--node-name", node, "--peers", peers, "--ip-family", "dual",
             "--network-label", "pod", "--interval", "250ms", "--timeout", "200ms",
             "--exporters", "otlp", "--export-interval", "500ms",
             "--listen", f"127.0.0.1:{AGENT_PORT + 1}", "--log-measurements", "false"],
            port=AGENT_PORT + 1,
            prefix=lab.exec_argv(node, []),
            connect=lambda node=node: lab.socket(node),  # type: ignore[misc]
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{lab.address('observer')}:4317",
                 **mesh.collector.agent_env},
        )  # fmt: skip
        pod_agents.append(agent)
    try:
        for agent in pod_agents:
            agent.wait_ready()
        wanted = {("node1", "node2", family) for family in ("ipv4", "ipv6")} | {
            ("node2", "node1", family) for family in ("ipv4", "ipv6")
        }
        deadline = time.monotonic() + 30
        pod: dict[tuple[str, str, str], float] = {}
        while time.monotonic() < deadline:
            pod = {
                (labels["from"], labels["to"], labels["family"]): value
                for name, labels, value in mesh.collector.scrape()
                if name == "latency_between_nodes" and labels.get("network") == "pod"
            }
            if set(pod) == wanted and all(
                rtt_ok(v, lab.expected_rtt_ms(a, b)) for (a, b, _), v in pod.items()
            ):
                break
            time.sleep(0.5)
        assert set(pod) == wanted and all(
            rtt_ok(v, lab.expected_rtt_ms(a, b)) for (a, b, _), v in pod.items()
        ), pod
        # The host agents' series are untouched: one per pair, no network or family label.
        host = wait_for_pairs_without_labels(mesh)
        assert set(host) == ALL_PAIRS
        # As in deploy/k8s/README.md (the instance labels differ: match on the pair only).
        query = (
            'latency_between_nodes{network="pod",family="ipv4"} - on(from, to) group_left '
            'latency_between_nodes{network=""}'
        )
        difference: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            difference = {
                (r["metric"]["from"], r["metric"]["to"]): float(r["value"][1])  # type: ignore[index]
                for r in mesh.prometheus.query(query)
            }
            # Same emulated links on both paths: the difference is measurement noise only.
            if set(difference) == {("node1", "node2"), ("node2", "node1")} and all(
                abs(value) < AGENT_TOL_MS for value in difference.values()
            ):
                break
            time.sleep(0.5)
        assert set(difference) == {("node1", "node2"), ("node2", "node1")}, difference
        assert all(abs(value) < AGENT_TOL_MS for value in difference.values()), difference
        # The pod agents are instances of their own.
        instances = {
            labels.get("instance")
            for name, labels, _ in mesh.collector.scrape()
            if name == "monlat_agent_info"
        }
        assert {"node1", "node2", "node3", "node1/pod", "node2/pod"} <= instances
    finally:
        for agent in pod_agents:
            assert agent.stop() == 0


def wait_for_pairs_without_labels(mesh: Mesh) -> dict[tuple[str, str], float]:
    return {
        (labels["from"], labels["to"]): value
        for name, labels, value in mesh.collector.scrape()
        if name == "latency_between_nodes" and "network" not in labels and "family" not in labels
    }
