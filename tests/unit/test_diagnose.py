"""`monlat diagnose`: node, link, zone and coverage findings as pure functions, and the CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import pytest

from monlat.common.errors import ConfigError
from monlat.tools.diagnose.command import parse_diagnose_args, run_diagnose
from monlat.tools.diagnose.model import Diagnosis, Finding, Kind, Thresholds, diagnose
from monlat.tools.diagnose.render import render_json, render_text
from monlat.tools.matrix.model import Matrix, build_matrix
from monlat.tools.scrape import parse_exposition
from tests.unit.test_matrix import (
    PairData,
    assert_one_line_error,
    closed_port,
    exposition,
    full_mesh,
    run_monlat,
    serve_text,
)

NODES = [f"node{i}" for i in range(1, 7)]


def matrix_of(
    pairs: Mapping[tuple[str, str], PairData],
    *,
    zones: Mapping[str, str] | None = None,
    extra: str = "",
) -> Matrix:
    return build_matrix(parse_exposition(exposition(pairs, zones=zones, extra=extra)))


def kinds(diagnosis: Diagnosis) -> list[tuple[str, str]]:
    return [(f.kind.value, f.subject) for f in diagnosis.findings]


def only(diagnosis: Diagnosis, kind: Kind) -> Finding:
    (finding,) = [f for f in diagnosis.findings if f.kind is kind]
    return finding


def slow_node(nodes: list[str], bad: str, extra_ms: float = 8.0) -> dict[tuple[str, str], PairData]:
    pairs = full_mesh(nodes)
    for (src, dst), data in pairs.items():
        if bad in (src, dst):
            pairs[(src, dst)] = PairData(latency_ms=(data.latency_ms or 0) + extra_ms)
    return pairs


# --- scenarios -----------------------------------------------------------------------------------


def test_healthy_cluster_finds_nothing() -> None:
    diagnosis = diagnose(matrix_of(full_mesh(NODES)))
    assert diagnosis.findings == ()
    assert diagnosis.nodes == 6 and diagnosis.pairs == 30
    assert diagnosis.baseline_ms is not None and 0.35 < diagnosis.baseline_ms < 0.45
    text = render_text(diagnosis)
    assert text.startswith("no problems found in 6 nodes, 30 pairs, baseline 0.")


def test_small_differences_are_not_problems() -> None:
    pairs = full_mesh(NODES, base_ms=0.05)
    pairs[("node1", "node2")] = PairData(0.2)  # 4x, but only +0.15 ms
    assert diagnose(matrix_of(pairs)).findings == ()


@pytest.mark.parametrize("size", [3, 4, 6, 12])
def test_one_slow_node_is_a_node_finding_not_a_pile_of_links(size: int) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    diagnosis = diagnose(matrix_of(slow_node(nodes, "n2")))
    assert kinds(diagnosis) == [("node", "n2")]
    finding = diagnosis.findings[0]
    peers = size - 1
    assert (
        finding.summary
        == f"slow towards {peers} of {peers} peers and from {peers} of {peers} peers"
    )
    towards, from_ = finding.evidence
    assert towards.text.startswith(f"slow towards {peers} of {peers} peers: median 8.")
    assert "among the pairs without n2" in towards.text and "(x2" in towards.text
    assert {(p.src, p.dst) for p in towards.pairs} == {("n2", n) for n in nodes if n != "n2"}
    assert {(p.src, p.dst) for p in from_.pairs} == {(n, "n2") for n in nodes if n != "n2"}
    evidence = towards.pairs[0]
    assert evidence.factor is not None and evidence.factor > 15
    assert evidence.excess_ms is not None and 7.5 < evidence.excess_ms < 8.5
    # the healthy baseline leaves the bad node out
    assert diagnosis.baseline_ms is not None and diagnosis.baseline_ms < 0.5


def test_node_slow_in_one_direction_only() -> None:
    pairs = full_mesh(NODES)
    for dst in NODES[1:]:
        pairs[("node1", dst)] = PairData(5.0)
    finding = only(diagnose(matrix_of(pairs)), Kind.NODE)
    assert (finding.subject, finding.summary) == ("node1", "slow towards 5 of 5 peers")


@pytest.mark.parametrize("size", [3, 6])
def test_one_bad_link(size: int) -> None:
    nodes = [f"n{i}" for i in range(1, size + 1)]
    pairs = full_mesh(nodes)
    pairs[("n1", "n2")] = PairData(6.0)
    pairs[("n2", "n1")] = PairData(6.2)
    diagnosis = diagnose(matrix_of(pairs))
    assert kinds(diagnosis) == [("link", "n1<->n2")]
    finding = diagnosis.findings[0]
    assert finding.summary == "n1 -> n2 slow, 6.00 ms; n2 -> n1 slow, 6.20 ms"
    both, elsewhere = finding.evidence
    assert both.text == "both directions bad"
    assert [(p.src, p.dst, p.latency_ms) for p in both.pairs] == [
        ("n1", "n2", 6.0),
        ("n2", "n1", 6.2),
    ]
    assert elsewhere.text == (
        f"bad among their other pairs: n1 0 of {2 * (size - 2)}; n2 0 of {2 * (size - 2)}"
    )


def test_two_nodes_have_no_latency_baseline_but_loss_counts() -> None:
    pairs = {("a", "b"): PairData(9.0), ("b", "a"): PairData(9.0)}
    assert diagnose(matrix_of(pairs)).findings == ()  # slow compared with what?
    pairs[("a", "b")] = PairData(None, 1.0)
    assert kinds(diagnose(matrix_of(pairs))) == [("link", "a<->b")]


def test_one_way_lost_link_says_the_reverse_is_fine() -> None:
    pairs = full_mesh(NODES)
    pairs[("node3", "node5")] = PairData(None, 1.0)
    finding = only(diagnose(matrix_of(pairs)), Kind.LINK)
    assert (finding.subject, finding.summary) == ("node3<->node5", "node3 -> node5 no reply")
    assert finding.evidence[0].text == "the reverse is fine"
    text = render_text(diagnose(matrix_of(pairs)))
    assert "node3 -> node5: LOST (no reply)" in text


def test_link_beside_a_bad_node() -> None:
    pairs = slow_node(NODES, "node6")
    pairs[("node1", "node2")] = PairData(0.4, 0.2)
    diagnosis = diagnose(matrix_of(pairs))
    assert kinds(diagnosis) == [("node", "node6"), ("link", "node1<->node2")]
    link = only(diagnosis, Kind.LINK)
    assert link.summary == "node1 -> node2 loss 20%"
    assert link.evidence[1].text.endswith("(pairs with node6 left out)")


def test_lossy_node_shows_its_loss() -> None:
    pairs = full_mesh(NODES)
    for src in NODES:
        if src != "node4":
            pairs[(src, "node4")] = PairData(0.4, 0.3 if src != "node1" else 0.0)
    diagnosis = diagnose(matrix_of(pairs))
    assert kinds(diagnosis) == [("node", "node4")]
    finding = diagnosis.findings[0]
    assert finding.summary == "lossy from 4 of 5 peers"
    (loss,) = finding.evidence
    assert loss.text == "loss of 5% or more from 4 of 5 peers, median loss 30%"
    assert {p.loss_ratio for p in loss.pairs} == {0.3}
    text = render_text(diagnosis)
    assert "node2 -> node4: 0.40 ms vs 0." in text and ", loss 30%" in text


def test_unreachable_node_without_agent() -> None:
    """Everyone loses everything to node6, and node6 reports nothing: down, or filtered."""
    pairs = {pair: data for pair, data in full_mesh(NODES).items() if pair[0] != "node6"}
    for src in NODES[:5]:
        pairs[(src, "node6")] = PairData(None, 1.0)
    diagnosis = diagnose(matrix_of(pairs))
    assert kinds(diagnosis) == [("node", "node6"), ("coverage", "node6")]
    node, coverage = diagnosis.findings
    assert node.summary == "lossy from 5 of 5 peers"
    assert coverage.summary == "probes nobody"
    assert "no series from node6" in coverage.evidence[0].text


def test_zone_boundary() -> None:
    zones = {f"{z}{i}": f"zone-{z}" for z in "abc" for i in range(1, 4)}
    nodes = sorted(zones)
    pairs = full_mesh(nodes, base_ms=0.3)
    for (src, dst), data in pairs.items():
        if {zones[src], zones[dst]} == {"zone-a", "zone-b"}:
            pairs[(src, dst)] = PairData((data.latency_ms or 0) + 3.0)
    diagnosis = diagnose(matrix_of(pairs, zones=zones))
    assert kinds(diagnosis) == [("zone", "zone-a<->zone-b")]
    finding = diagnosis.findings[0]
    assert finding.summary == "cross-zone pairs slow"
    overall, a_to_b, b_to_a = finding.evidence
    assert overall.text.startswith("18 pairs with an RTT between zone-a and zone-b: median 3.")
    assert "vs the intra-zone baseline 0.3" in overall.text
    assert a_to_b.text.startswith("zone-a -> zone-b: 9 pairs, median 3.")
    assert b_to_a.text.startswith("zone-b -> zone-a: 9 pairs, median 3.")
    assert {p.src for p in a_to_b.pairs} == {"a1", "a2", "a3"}


def test_node_in_a_far_zone_is_not_a_node_problem_but_a_slow_node_there_is() -> None:
    zones = {f"{z}{i}": f"zone-{z}" for z in "ab" for i in range(1, 5)}
    nodes = sorted(zones)
    pairs = full_mesh(nodes, base_ms=0.3)
    for (src, dst), data in pairs.items():
        extra = 2.0 if zones[src] != zones[dst] else 0.0
        extra += 10.0 if "b4" in (src, dst) else 0.0
        pairs[(src, dst)] = PairData((data.latency_ms or 0) + extra)
    diagnosis = diagnose(matrix_of(pairs, zones=zones))
    assert kinds(diagnosis) == [("zone", "zone-a<->zone-b"), ("node", "b4")]


def test_lossy_zone_boundary() -> None:
    zones = {f"{z}{i}": f"zone-{z}" for z in "ab" for i in range(1, 4)}
    pairs = full_mesh(sorted(zones))
    for src, dst in pairs:
        if zones[src] != zones[dst]:
            pairs[(src, dst)] = PairData(0.4, 0.25)
    diagnosis = diagnose(matrix_of(pairs, zones=zones))
    assert kinds(diagnosis) == [("zone", "zone-a<->zone-b")]
    assert diagnosis.findings[0].summary == "cross-zone pairs lossy"
    assert diagnosis.findings[0].evidence[0].text.startswith("18 of 18 pairs between zone-a and")


def test_a_one_node_zone_is_judged_as_a_node() -> None:
    zones = {"a1": "zone-a", "a2": "zone-a", "a3": "zone-a", "c1": "zone-c"}
    diagnosis = diagnose(matrix_of(slow_node(sorted(zones), "c1"), zones=zones))
    assert kinds(diagnosis) == [("node", "c1")]
    assert diagnosis.notes == ("zone zone-c has one node: its trouble shows as the node's",)


def test_coverage_in_a_full_mesh() -> None:
    pairs = full_mesh(NODES)
    del pairs[("node5", "node2")]
    for src in NODES:
        pairs.pop((src, "node3"), None)
    diagnosis = diagnose(matrix_of(pairs))
    assert kinds(diagnosis) == [("coverage", "node2"), ("coverage", "node3")]
    node2, node3 = diagnosis.findings
    assert node2.summary == "probed by 4 of 5 agents"
    assert node2.evidence[0].text == "no pair to node2 from node5"
    assert node3.summary == "nobody probes it"


def test_coverage_in_a_partial_mesh_follows_expected_probers() -> None:
    nodes = NODES
    pairs = {
        (s, d): v
        for (s, d), v in full_mesh(nodes).items()
        if (nodes.index(d) - nodes.index(s)) % 6 in (1, 2)
    }
    expected = "".join(f'monlat_expected_probers{{to="{n}"}} 2\n' for n in nodes)
    assert diagnose(matrix_of(pairs, extra=expected)).findings == ()
    del pairs[("node1", "node2")]
    diagnosis = diagnose(matrix_of(pairs, extra=expected))
    assert kinds(diagnosis) == [("coverage", "node2")]
    assert diagnosis.findings[0].summary == "probed by 1 agents, 2 expected"


def test_single_agent_view_is_a_note_not_a_finding() -> None:
    pairs = {("me", peer): PairData(0.4) for peer in ("p1", "p2", "p3")}
    diagnosis = diagnose(matrix_of(pairs))
    assert diagnosis.findings == ()
    assert "only me reports" in diagnosis.notes[0]


def test_nothing_measured_is_a_finding() -> None:
    diagnosis = diagnose(matrix_of({}, extra='monlat_agent_info{from="lonely"} 1\n'))
    assert kinds(diagnosis) == [("coverage", "cluster")]


def test_thresholds_change_the_verdict() -> None:
    pairs = full_mesh(NODES)
    pairs[("node1", "node2")] = PairData(1.0, 0.03)  # 2.5x the baseline, 3 % loss
    assert kinds(diagnose(matrix_of(pairs))) == [("link", "node1<->node2")]
    assert diagnose(matrix_of(pairs), Thresholds(latency_factor=3.0)).findings == ()
    strict = diagnose(matrix_of(pairs), Thresholds(latency_factor=3.0, loss_threshold=0.02))
    assert only(strict, Kind.LINK).summary == "node1 -> node2 loss 3%"


# --- output --------------------------------------------------------------------------------------


def test_text_blocks_and_json_document() -> None:
    pairs = slow_node(NODES, "node6")
    pairs[("node1", "node2")] = PairData(None, 1.0)
    diagnosis = diagnose(matrix_of(pairs))
    blocks = render_text(diagnosis).rstrip("\n").split("\n\n")
    assert [b.splitlines()[0].split(":")[0] for b in blocks[:-1]] == [
        "NODE node6",
        "LINK node1<->node2",
    ]
    assert blocks[-1].startswith("2 findings (1 node, 1 link) in 6 nodes, 30 pairs, baseline 0.")
    assert "... and 2 more" not in blocks[0]  # five pairs per direction: all listed
    document = json.loads(render_json(diagnosis))
    assert document["status"] == "problems"
    assert document["thresholds"] == {
        "latency_factor": 2.0,
        "loss_threshold": 0.05,
        "min_excess_ms": 0.2,
    }
    node, link = document["findings"]
    assert (node["kind"], node["subject"]) == ("node", "node6")
    assert set(node["evidence"][0]) == {"text", "pairs"}
    first = node["evidence"][0]["pairs"][0]
    assert set(first) == {
        "from",
        "to",
        "latency_ms",
        "baseline_ms",
        "factor",
        "excess_ms",
        "loss_ratio",
    }
    assert first["from"] == "node6" and first["factor"] > 10
    assert link["evidence"][0]["pairs"][0]["latency_ms"] is None
    assert json.loads(render_json(diagnose(matrix_of(full_mesh(NODES)))))["findings"] == []


def test_long_evidence_is_cut_and_names_shortened_in_text_only() -> None:
    nodes = [f"n{i}.eu-west-1.compute.internal" for i in range(1, 21)]
    diagnosis = diagnose(matrix_of(slow_node(nodes, nodes[6])))
    text = render_text(diagnosis)
    assert "    ... and 11 more" in text
    assert text.startswith("NODE n7: slow towards 19 of 19 peers")
    assert "    n7 -> n" in text and ".compute.internal ->" not in text
    assert "without their common suffix .eu-west-1.compute.internal" in text
    document = json.loads(render_json(diagnosis))
    assert document["findings"][0]["subject"] == nodes[6]
    assert len(document["findings"][0]["evidence"][0]["pairs"]) == 19


# --- options and the command line ----------------------------------------------------------------


def test_options() -> None:
    options = parse_diagnose_args(
        ["--url", "http://c:9090", "--latency-factor", "1.5x", "--loss-threshold", "2%"], {}
    )
    assert options.url == "http://c:9090/metrics" and options.format == "text"
    assert options.thresholds == Thresholds(latency_factor=1.5, loss_threshold=0.02)
    assert parse_diagnose_args(
        ["--loss-threshold", "0.1"], {"MONLAT_URL": "http://c"}
    ).thresholds == (Thresholds(loss_threshold=0.1))


@pytest.mark.parametrize(
    ("argv", "setting", "words"),
    [
        (["--format", "yaml"], "--format", "expected text or json"),
        (["--latency-factor", "1"], "--latency-factor", "greater than 1"),
        (["--latency-factor", "fast"], "--latency-factor", "greater than 1"),
        (["--latency-factor", "nan"], "--latency-factor", "greater than 1"),
        (["--loss-threshold", "0"], "--loss-threshold", "above 0 and at most 1"),
        (["--loss-threshold", "150%"], "--loss-threshold", "above 0 and at most 1"),
        (["--loss-threshold", "some"], "--loss-threshold", "percentage"),
        (["--url", "file:///tmp/metrics"], "--url", "expected an http"),
    ],
)
def test_bad_options(argv: list[str], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_diagnose_args(["--url", "http://c", *argv], {})
    assert caught.value.setting == setting
    assert words in caught.value.problem


def test_run_diagnose_exit_status() -> None:
    with serve_text(exposition(full_mesh(NODES))) as url:
        out = io.StringIO()
        assert run_diagnose(["--url", url], {}, out) == 0
        assert out.getvalue().startswith("no problems found")
    with serve_text(exposition(slow_node(NODES, "node2"))) as url:
        out = io.StringIO()
        assert run_diagnose(["--url", url, "--format", "json"], {}, out) == 1
        assert json.loads(out.getvalue())["findings"][0]["subject"] == "node2"


def test_cli_end_to_end() -> None:
    with serve_text(exposition(full_mesh(NODES))) as url:
        healthy = run_monlat("diagnose", "--url", url)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith("no problems found in 6 nodes")
    with serve_text(exposition(slow_node(NODES, "node2"))) as url:
        sick = run_monlat("diagnose", "--url", url, "--format", "json")
    assert sick.returncode == 1, sick.stderr
    assert [f["kind"] for f in json.loads(sick.stdout)["findings"]] == ["node"]


@pytest.mark.parametrize(
    ("args", "setting", "words"),
    [
        (["--url", "gopher://h/"], "--url", "expected an http:// or https:// URL"),
        (["--url", "http://127.0.0.1:{port}/metrics"], "--url", "connection refused"),
        (["--url", "http://127.0.0.1:{port}/", "--format", "yaml"], "--format", "text or json"),
        (["--url", "http://h/", "--latency-factor", "0.9"], "--latency-factor", "greater than 1"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(args: list[str], setting: str, words: str) -> None:
    port = closed_port()
    result = run_monlat("diagnose", *(a.format(port=port) for a in args))
    assert_one_line_error(result, setting, words)


# --- MTU black holes -----------------------------------------------------------------------------


def black_holes(
    pairs: Mapping[tuple[str, str], PairData],
    holes: Mapping[tuple[str, str], int],
    zones: Mapping[str, str] | None = None,
) -> Matrix:
    """The pairs, with `holes` exported as the agents export a black-holed path."""

    def labels(src: str, dst: str) -> str:
        found = {"from": src, "to": dst, "job": "monlat", "instance": src}
        if zones is not None:
            found.update(from_zone=zones.get(src, ""), to_zone=zones.get(dst, ""))
        return ",".join(f'{key}="{value}"' for key, value in found.items())

    extra = "".join(
        f"monlat_mtu_black_hole{{{labels(*pair)}}} 1\n"
        f"monlat_path_mtu_bytes{{{labels(*pair)}}} {size}\n"
        for pair, size in holes.items()
    )
    return matrix_of(pairs, zones=zones, extra=extra)


def test_an_mtu_black_hole_on_one_link_is_named_as_such_not_as_loss() -> None:
    matrix = black_holes(full_mesh(NODES), {("node1", "node2"): 1400, ("node2", "node1"): 1400})
    diagnosis = diagnose(matrix)
    assert kinds(diagnosis) == [("mtu", "node1<->node2")]
    (finding,) = diagnosis.findings
    assert finding.summary == (
        "MTU black hole: packets over 1400 bytes vanish without an ICMP report on 2 of the 2 "
        "paths; small packets pass"
    )
    text = render_text(diagnosis)
    assert "MTU node1<->node2: MTU black hole" in text
    assert "node1 -> node2: 0." in text and "MTU black hole above 1400 bytes" in text
    document = json.loads(render_json(diagnosis))
    (pair, _) = document["findings"][0]["evidence"][0]["pairs"]
    assert pair["mtu_black_hole"] is True and pair["path_mtu_bytes"] == 1400


def test_a_node_with_a_small_mtu_is_one_node_finding() -> None:
    holes = {pair: 1450 for pair in full_mesh(NODES) if "node3" in pair}
    diagnosis = diagnose(black_holes(full_mesh(NODES), holes))
    assert kinds(diagnosis) == [("mtu", "node3")]
    assert "on 10 of node3's 10 paths" in diagnosis.findings[0].summary


def test_an_mtu_black_hole_between_zones_is_a_zone_pair_finding() -> None:
    zones = {f"{z}{i}": f"zone-{z}" for z in "abc" for i in range(1, 4)}
    pairs = full_mesh(sorted(zones), base_ms=0.3)
    holes = {
        (src, dst): 1380 for src, dst in pairs if {zones[src], zones[dst]} == {"zone-a", "zone-c"}
    }
    diagnosis = diagnose(black_holes(pairs, holes, zones))
    assert kinds(diagnosis) == [("mtu", "zone-a<->zone-c")]
    assert "on 18 of the 18 cross-zone paths" in diagnosis.findings[0].summary


def test_a_path_that_reports_its_smaller_mtu_is_no_finding() -> None:
    pairs = full_mesh(NODES)
    extra = (
        'monlat_mtu_black_hole{from="node1",to="node2"} 0\n'
        'monlat_path_mtu_bytes{from="node1",to="node2"} 1280\n'
    )
    assert diagnose(matrix_of(pairs, extra=extra)).findings == ()
