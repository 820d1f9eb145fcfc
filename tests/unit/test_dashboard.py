"""deploy/grafana/monlat-dashboard.json: importable as is, laid out, and querying what exists.

- structure: uid, title, schemaVersion, a ``datasource`` variable of type prometheus that every
  panel and query uses (no data source baked in), ``network``/``family`` path variables,
  ``from``/``to`` node variables; panels with unique ids and non-overlapping gridPos on the
  24-column grid;
- one path at a time: every selector of a per-pair series filters by ``network`` and
  ``family``, every selector of an agent series by ``network``, so no panel mixes the host and
  the pod-network agents' series, or IPv4 and IPv6;
- the two matrices are tables with one instant table query and the "Grouping to matrix"
  transformation (which only takes a single query) by from x to, with cell colours;
- every query parses (``promtool check rules`` on the queries as recording rules, Grafana's
  variables replaced) and selects only metrics monlat exports or records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.unit.test_alerts import (
    AGENT_METRICS,
    EXPORTED_METRICS,
    PER_PAIR_METRICS,
    metric_names,
    recorded_metrics,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "monlat-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24

PATH_MATCHERS = {"network": 'network=~"$network"', "family": 'family=~"$family"'}
_SELECTORS = re.compile(r'(?<![\w:"])([A-Za-z_:][\w:]*)\s*(\{[^{}]*\})?')
# Grafana's parsing of a custom variable's "text : value" entries.
_CUSTOM_OPTION = re.compile(r"^\s*(.+)\s:\s(.+)$")


def load() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in all_panels(dashboard["panels"]) if panel["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """'panel <id> <refId> (<title>)' -> expr, for every query of every panel."""
    found = {}
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            found[f"panel {panel['id']} {target['refId']} ({panel['title']})"] = target["expr"]
    return found


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        var for var in dashboard["templating"]["list"] if var["name"] == name
    ]
    assert len(found) == 1, f"expected one variable {name}"
    return found[0]


def variable_selectors(dashboard: dict[str, Any]) -> dict[str, str]:
    """The series selectors of label_values(<selector>, <label>) variable queries."""
    found = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {var['name']}: expected label_values(<selector>, <label>)"
        found[f"variable {var['name']}"] = f"group({match.group(1)})"
    return found


def test_dashboard_identity() -> None:
    dashboard = load()
    assert dashboard["uid"] == "monlat-node-latency"
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("monlat")
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None, "an exported id would clash on import"
    assert "monlat" in dashboard["tags"]
    assert dashboard["time"]["from"].startswith("now-")


def test_variables() -> None:
    dashboard = load()
    names = [var["name"] for var in dashboard["templating"]["list"]]
    assert names == ["datasource", "network", "family", "from", "to"]
    datasource = variable(dashboard, "datasource")
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    for name in ("from", "to"):
        var = variable(dashboard, name)
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["multi"] is True
        assert var["includeAll"] is True
        assert var["allValue"] == ".*", "All must stay a short regex on large clusters"
    assert "$from" in variable(dashboard, "to")["query"]["query"], "to follows from"
    for name in ("from", "to"):
        query = variable(dashboard, name)["query"]["query"]
        assert all(m in query for m in PATH_MATCHERS.values()), f"{name}: nodes of one path"


def custom_options(var: dict[str, Any]) -> dict[str, str]:
    """text -> value, as Grafana reads the custom variable's query."""
    options = {}
    for entry in var["query"].split(","):
        match = _CUSTOM_OPTION.match(entry)
        assert match, f"{var['name']}: {entry!r} is not 'text : value'"
        options[match.group(1).strip()] = match.group(2).strip()
    return options


def matches(regex: str, value: str) -> bool:
    """Prometheus label regex semantics: anchored; an absent label is the empty string."""
    return re.fullmatch(f"(?:{regex})", value) is not None


def test_path_variables() -> None:
    """One path at a time, host being the series without a network label."""
    dashboard = load()
    for name in ("network", "family"):
        var = variable(dashboard, name)
        assert var["type"] == "custom", name
        # Multi-select or All would mix paths, and Grafana regex-escapes the values ("^$")
        # of multi-value variables.
        assert var["multi"] is False and var["includeAll"] is False, name
        options = custom_options(var)
        assert [(o["text"], o["value"]) for o in var["options"]] == list(options.items()), name
        first = var["options"][0]
        assert var["current"] == {**first, "selected": True}, name
    network = custom_options(variable(dashboard, "network"))
    assert list(network) == ["host", "pod"], "host first: the host agents run everywhere"
    assert matches(network["host"], "") and not matches(network["host"], "pod")
    assert matches(network["pod"], "pod") and not matches(network["pod"], "")
    family = custom_options(variable(dashboard, "family"))
    assert list(family) == ["ipv4", "ipv6"]
    for chosen, other in (("ipv4", "ipv6"), ("ipv6", "ipv4")):
        assert matches(family[chosen], chosen) and not matches(family[chosen], other)
        # Single-stack agents have no family label: shown either way, as by monlat matrix.
        assert matches(family[chosen], "")


def selectors(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, its matchers or "") for every monlat series an expression selects."""
    for match in _SELECTORS.finditer(expr):
        name, matchers = match.groups()
        if name in PER_PAIR_METRICS or name in AGENT_METRICS or ":" in name:
            yield name, matchers or ""


def test_selectors_extractor() -> None:
    found = list(
        selectors(
            'sum by (from) (rate(monlat_probes_total{a="b"}[5m])) unless on (from) '
            'monlat_agent_info or label_replace(pair:x:y{c=~"d"}, "from", "$1", "to", "(.*)")'
        )
    )
    assert found == [
        ("monlat_probes_total", '{a="b"}'),
        ("monlat_agent_info", ""),
        ("pair:x:y", '{c=~"d"}'),
    ]


def test_every_query_keeps_one_path() -> None:
    """Per-pair series filter by network and family, agent series by network."""
    dashboard = load()
    exprs = {**queries(dashboard)}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs[f"variable {var['name']}"] = var["query"]["query"]
    seen: set[str] = set()
    for name, expr in exprs.items():
        for metric, matchers in selectors(expr):
            seen.add(metric)
            if metric in AGENT_METRICS or metric.startswith("agent:"):
                required = [PATH_MATCHERS["network"]]
            else:
                required = list(PATH_MATCHERS.values())
            missing = [m for m in required if m not in matchers]
            assert not missing, f"{name}: {metric} without {missing}"
    assert seen & PER_PAIR_METRICS and seen & AGENT_METRICS, "the check above checked nothing"


def test_no_data_source_is_baked_in() -> None:
    """Importable as is: every data source reference is the variable (or Grafana's own)."""

    def references(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for item in node:
                yield from references(item)

    dashboard = load()
    assert "__inputs" not in dashboard
    for reference in references(dashboard["panels"]):
        assert reference == DATASOURCE
    for reference in references(dashboard["annotations"]):
        assert reference == {"type": "grafana", "uid": "-- Grafana --"}


def test_panels_have_unique_ids_and_a_place() -> None:
    dashboard = load()
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(panel_id, int) for panel_id in ids)
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = [panel["title"] for panel in panels]
    assert len(titles) == len(set(titles)), "duplicate panel titles"
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"}, panel["title"]
        assert all(isinstance(grid[key], int) for key in grid), panel["title"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] >= 1 and grid["h"] >= 1
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, f"{panel['title']}: wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


def test_panels_query_the_variable_data_source() -> None:
    for panel in query_panels(load()):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refId"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def matrices(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        panel["title"]: panel
        for panel in query_panels(dashboard)
        if any(t["id"] == "groupingToMatrix" for t in panel.get("transformations", []))
    }


def test_latency_and_loss_matrices() -> None:
    found = matrices(load())
    metrics = {title: metric_names(panel["targets"][0]["expr"]) for title, panel in found.items()}
    assert any("latency_between_nodes" in names for names in metrics.values()), metrics
    assert any("monlat_loss_ratio" in names for names in metrics.values()), metrics
    for title, panel in found.items():
        assert panel["type"] == "table", title
        # Grouping to matrix passes several frames through untouched: one query only.
        (target,) = panel["targets"]
        assert target["instant"] is True and target["range"] is False, title
        assert target["format"] == "table", title
        (transformation,) = panel["transformations"]
        assert transformation["options"]["rowField"] == "from", title
        assert transformation["options"]["columnField"] == "to", title
        assert transformation["options"]["valueField"] == "Value", title
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["custom"]["cellOptions"]["type"] == "color-background", title
        steps = defaults["thresholds"]["steps"]
        assert steps[0]["value"] is None
        values = [step["value"] for step in steps[1:]]
        assert values == sorted(values) and len(values) >= 2, title
        # The matrix's first column is named "<rowField>\<columnField>": not colour-coded.
        (row_header,) = [
            override
            for override in panel["fieldConfig"]["overrides"]
            if override["matcher"] == {"id": "byName", "options": "from\\to"}
        ]
        assert {"id": "custom.cellOptions", "value": {"type": "auto"}} in row_header["properties"]


def test_latency_matrix_shows_pairs_without_reply() -> None:
    """latency_between_nodes is absent for a silent pair: the matrix fills it in as -1."""
    (panel,) = [
        p for p in matrices(load()).values() if p["fieldConfig"]["defaults"]["unit"] == "ms"
    ]
    assert "monlat_probes_total" in metric_names(panel["targets"][0]["expr"])
    texts = [
        mapping["options"]["result"]["text"]
        for mapping in panel["fieldConfig"]["defaults"]["mappings"]
        if mapping["type"] == "range" and mapping["options"]["from"] == -1
    ]
    assert texts == ["no reply"]


def test_required_views_exist() -> None:
    dashboard = load()
    by_type: dict[str, set[str]] = {}
    for panel in query_panels(dashboard):
        names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
        by_type.setdefault(panel["type"], set()).update(names)
    assert {"latency_between_nodes", "monlat_probes_total", "monlat_rtt_seconds_bucket"} <= (
        by_type["timeseries"]
    )
    assert "monlat_rtt_seconds_bucket" in by_type["heatmap"]
    every = set().union(*by_type.values())
    agent_health = {
        "monlat_peers",
        "monlat_send_lag_seconds_bucket",
        "monlat_ignored_packets_total",
        "monlat_agent_info",
    }
    assert agent_health <= every
    exprs = "\n".join(queries(dashboard).values())
    assert "histogram_quantile(0.99" in exprs and "histogram_quantile(0.5" in exprs


def test_queries_use_known_metrics() -> None:
    known = EXPORTED_METRICS | recorded_metrics()
    dashboard = load()
    for name, expr in {**queries(dashboard), **variable_selectors(dashboard)}.items():
        names = metric_names(expr)
        assert names, f"{name}: selects no metric"
        assert names <= known, f"{name}: unknown metrics {sorted(names - known)}"
