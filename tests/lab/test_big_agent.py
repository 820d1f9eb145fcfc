"""An agent with 5,000 dual-stack peers and zone labels: its push is split into requests under
the collector receiver's 4 MiB limit, and every series arrives."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from monlat.agent.sizing import SizingSettings
from monlat.tools.plan import make_plan
from monlat.tools.synthetic import ClusterShape
from tests.support.agent_process import AgentProcess, parse_exposition
from tests.support.api_relay import ApiRelay
from tests.support.collector import Collector, shipped_deployment
from tests.support.fake_apiserver import FakeApiServer
from tests.support.lab.lab import Lab
from tests.support.ports import free_ports

PEERS = 5_000
ZONE = "topology.kubernetes.io/zone"
EVERY_SERIES = ["--max-peers", "all", "--cross-zone-peers", "off", "--pair-histograms", "true"]


def v4(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def v6(i: int) -> str:
    return f"fd00:5::{i + 1:x}"


@pytest.mark.timeout(300)
def test_five_thousand_dual_stack_peers_reach_the_collector_whole(
    lab_factory: Callable[..., Lab], collector_bin: str, tmp_path: Path
) -> None:
    # Whole, one push of this agent would be over the receiver's limit: the split is needed.
    plan = make_plan(
        ClusterShape(PEERS + 1, 3, dual_stack=True, zone_labels=True),
        SizingSettings(max_peers=None, cross_zone_peers=None, pair_histograms=True),
        1.0,
        {"measured": "", "collector_limit": "", "collector_limit_mib": 1, **dict.fromkeys(
            ("collector_base_mib", "collector_kib_per_point", "prometheus_base_mib",
             "prometheus_kib_per_series", "metrics_bytes_per_series",
             "scrape_s_per_million_series"), 0.0), "collector_points_held": 0},
    )  # fmt: skip
    assert plan.otlp_bytes_per_push > 4 * 2**20, plan.otlp_bytes_per_push
    # `monlat plan` counts the split the agent below makes.
    assert plan.peers_per_node == 2 * PEERS and plan.otlp_requests_per_push >= 10

    lab = lab_factory(["big"])
    # Loopback answers every 127/8 address by itself; the IPv6 peers live on lo as well.
    addresses = "".join(f"address add {v6(i)}/128 dev lo\n" for i in range(PEERS))
    lab.run("big", ["ip", "-6", "-batch", "-"], input=addresses, check=True)

    server = FakeApiServer()
    server.start()
    relay = ApiRelay(("127.0.0.1", server.port))
    grpc, http, metrics, health, api_port, agent_port = free_ports(6)
    in_node = lab.exec_argv("big", [])
    collector = Collector(
        collector_bin, "127.0.0.1", grpc, http, metrics, health,
        prefix=tuple(in_node), connect=lambda: lab.socket("big"),
        # As the Deployment runs it: 10,000 pairs with histograms are ~270,000 series.
        extra_env=shipped_deployment()["env"],
    )  # fmt: skip
    agent: AgentProcess | None = None
    try:
        with server.batch():
            server.add_node("big", "127.0.0.1", labels={ZONE: "zone-a"})
            for i in range(PEERS):
                server.add_node(
                    f"node-{i:04d}",
                    labels={ZONE: f"zone-{'abc'[i % 3]}"},
                    addresses=[
                        {"type": "InternalIP", "address": v4(i)},
                        {"type": "InternalIP", "address": v6(i)},
                    ],
                )
        relay.listen(lab.socket("big"), ("127.0.0.1", api_port), name="big")
        kubeconfig = tmp_path / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        config = json.loads(kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{api_port}"
        kubeconfig.write_text(json.dumps(config))
        collector.start(tmp_path / "collector.log")
        agent = AgentProcess(
            ["--discovery", "kubernetes", "--node-name", "big", "--kubeconfig", str(kubeconfig),
             "--ip-family", "dual", "--zone-labels", "true", *EVERY_SERIES,
             "--interval", "2s", "--log-measurements", "false", "--exporters", "otlp",
             "--otlp-endpoint", f"http://127.0.0.1:{grpc}", "--export-interval", "5s",
             "--listen", f"127.0.0.1:{agent_port}"],
            port=agent_port, prefix=in_node, connect=lambda: lab.socket("big"),
            env=collector.agent_env,
        )  # fmt: skip

        def arrived() -> list[tuple[str, dict[str, str], float]] | None:
            samples = collector.scrape()
            latency = [lab for name, lab, _ in samples if name == "latency_between_nodes"]
            histograms = [lab for name, lab, _ in samples if name == "monlat_rtt_seconds_count"]
            return samples if len(latency) == len(histograms) == 2 * PEERS else None

        deadline = time.monotonic() + 120
        samples = None
        while samples is None and time.monotonic() < deadline:
            samples = arrived()
            if samples is None:
                time.sleep(2)
        assert samples is not None, (agent.stderr[-5:], collector.log())
        latency = [lab for name, lab, _ in samples if name == "latency_between_nodes"]
        assert {(lab["to"], lab["family"]) for lab in latency} == {
            (f"node-{i:04d}", family) for i in range(PEERS) for family in ("ipv4", "ipv6")
        }
        assert {lab["from_zone"] for lab in latency} == {"zone-a"}
        assert {lab["to_zone"] for lab in latency} == {"zone-a", "zone-b", "zone-c"}
        assert "larger than max" not in collector.log()
        assert not [line for line in agent.stderr if "Failed to export" in line]
        stopping = time.monotonic()
        assert agent.stop(timeout=60) == 0, agent.stderr[-5:]
        print(f"\nstopped in {time.monotonic() - stopping:.1f} s: {agent.stderr[-3:]}")
    finally:
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()
        collector.stop()
        relay.close()
        server.stop()


def test_the_exposition_parser_keeps_up_with_a_collector() -> None:
    # The harness reads the collector's ~30 MB answer above; chunks are joined in linear time.
    from tests.support.agent_process import _dechunk

    chunks = b"".join(b"%x\r\n%s\r\n" % (6, b"a 1.0\n") for _ in range(50_000)) + b"0\r\n\r\n"
    started = time.monotonic()
    body = _dechunk(chunks)
    assert time.monotonic() - started < 2
    assert len(parse_exposition(body.decode())) == 50_000
