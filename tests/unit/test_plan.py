"""`monlat plan`: what the defaults do for N nodes, counted with the agent's own encoders and
priced with the fleet benchmark's measured figures."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from monlat.agent.sizing import SizingSettings
from monlat.common.errors import ConfigError
from monlat.tools.plan import load_figures, make_plan, render_plan, run_plan
from monlat.tools.synthetic import ClusterShape, SyntheticAgent, cluster, prometheus_series
from tests.support.agent_process import REPO

FIGURES = {
    "measured": "test",
    "collector_limit": "1Gi",
    "collector_limit_mib": 1024,
    "collector_base_mib": 40.0,
    "collector_kib_per_point": 2.0,
    "collector_points_held": 200_000,
    "collector_points_refused": 300_000,
    "prometheus_base_mib": 50.0,
    "prometheus_kib_per_series": 1.0,
    "metrics_bytes_per_series": 120.0,
    "scrape_s_per_million_series": 30.0,
}


def test_a_ten_node_cluster_is_a_full_mesh_with_histograms() -> None:
    plan = make_plan(ClusterShape(10), SizingSettings(), 1.0, FIGURES)
    assert (plan.max_peers, plan.pair_histograms) == ("all", "true")
    assert plan.peers_per_node == 9
    assert plan.probes_per_s == 90
    # 9 pairs x (3 gauges, reply counter, 21 buckets + sum + count) and the agent's own series.
    assert plan.series_per_node > 9 * 27
    assert plan.otlp_requests_per_push == 1


def test_series_are_counted_as_the_agents_would_push_them() -> None:
    shape = ClusterShape(600, 3, zone_labels=True)
    plan = make_plan(shape, SizingSettings(), 1.0, FIGURES)
    nodes = cluster(shape)
    agents = [SyntheticAgent(name, nodes, shape) for name in list(nodes)[:30]]
    counted = sum(prometheus_series(agent.metrics_data()) for agent in agents) / len(agents)
    assert plan.series_per_node == pytest.approx(counted, rel=0.05)
    assert plan.series == round(plan.series_per_node * 600)
    # The memory and scrape figures are the measured lines, applied to the points and series.
    assert plan.collector_peak_mib == pytest.approx(40 + plan.points * 2 / 1024)
    assert plan.points < plan.series
    assert plan.scrape_s == pytest.approx(plan.series * 30e-6)


def test_five_thousand_nodes_stay_bounded_and_settings_change_it() -> None:
    default = make_plan(ClusterShape(5_000, 3), SizingSettings(), 1.0, FIGURES)
    assert default.peers_per_node == 5  # 3 in the own zone, 1 in each other zone
    assert default.pair_histograms == "false"
    assert default.series_per_node < 40
    mesh = make_plan(ClusterShape(200, 1), SizingSettings(max_peers=None), 1.0, FIGURES)
    assert mesh.peers_per_node == 199
    histograms = make_plan(
        ClusterShape(200, 1), SizingSettings(max_peers=None, pair_histograms=True), 1.0, FIGURES
    )
    assert histograms.series_per_node > mesh.series_per_node + 199 * 20


def test_the_text_warns_when_the_collector_would_be_tight() -> None:
    tight = {**FIGURES, "collector_kib_per_point": 50.0}
    text = render_plan(make_plan(ClusterShape(2_000, 3), SizingSettings(), 1.0, tight))
    assert "warning: over 75% of the collector's limit" in text
    text = render_plan(make_plan(ClusterShape(2_000, 3), SizingSettings(), 1.0, FIGURES))
    assert "warning" not in text
    assert "2,000 nodes in 3 zones" in text
    # Beyond what the benchmark saw the collector hold, the plan says so, whatever the line says.
    text = render_plan(
        make_plan(
            ClusterShape(5_000, 3, dual_stack=True),
            SizingSettings(),
            1.0,
            {**FIGURES, "collector_points_held": 150_000, "collector_points_refused": 236_000},
        )
    )
    assert "more than the 150,000 the fleet benchmark saw it hold; with 236,000 it refused" in text


def test_the_shipped_figures_come_from_the_fleet_benchmark() -> None:
    figures = load_figures()
    assert figures["command"].startswith("hatch run bench:fleet")
    assert figures["collector_kib_per_point"] > 0
    assert figures["collector_points_held"] > 100_000
    assert figures["rows"]


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["--nodes", "1"], "--nodes"),
        (["--nodes", "many"], "--nodes"),
        (["--nodes", "10", "--zones", "0"], "--zones"),
        (["--nodes", "10", "--max-peers", "x"], "--max-peers"),
        (["--nodes", "10", "--format", "yaml"], "--format"),
        (["--zones", "3"], "arguments"),
    ],
)
def test_bad_input_names_the_setting(argv: list[str], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        run_plan(argv, {}, io.StringIO())
    assert raised.value.setting == setting


def test_the_command_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monlat", "plan", "--nodes", "2000", "--zones", "3",
         "--format", "json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    plan = json.loads(out.stdout)
    assert plan["nodes"] == 2_000
    assert plan["max_peers"] == "8"  # 10 peers, 2 of them across zones
    assert plan["collector_share_of_limit"] < 0.75
    bad = subprocess.run(
        [sys.executable, "-m", "monlat", "plan", "--nodes", "0"],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "monlat: error: --nodes: expected a whole number from 2 to 20000, got '0'"
    ]
