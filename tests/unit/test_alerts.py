"""The Prometheus rules in deploy/prometheus: valid, unit-tested, and the PrometheusRule fresh.

- ``promtool check rules`` passes on deploy/prometheus/monlat-rules.yaml;
- ``promtool test rules`` passes on tests/alerts/*.test.yaml: synthetic series for every alert
  in the scenario it is for, and near misses where it must stay quiet;
- deploy/prometheus/prometheusrule.yaml is what ``render.py`` makes of the rules file
  (``render.py --check``) and valid against the pinned prometheus-operator CRD schema;
- every alert has a severity, a ``for``, a summary, a description and a runbook section in
  deploy/prometheus/README.md; every metric the rules read is one monlat exports or records;
- every grouping and join by from/to also keeps family and network, so the host and pod paths
  and the two IP families of a pair are never summed (tests/alerts/paths.test.yaml shows it).

Also home of the small PromQL helpers that tests/unit/test_dashboard.py shares: the metric names
monlat exports, a metric-name extractor, and a syntax check through ``promtool check rules``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from monlat.common import names as metric
from tests.support import k8s_schema
from tests.support.lab.fixtures import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "monlat-rules.yaml"
PROMETHEUS_RULE = PROMETHEUS / "prometheusrule.yaml"
RULES_README = PROMETHEUS / "README.md"
RULE_TESTS = Path(__file__).resolve().parents[1] / "alerts"

# What the agents export, under their Prometheus names (monlat.common.names, checked against a
# real exposition in tests/unit/test_names.py), histograms
# with their series suffixes: series with a (from, to) pair and so, optionally, family and
# network; and the agents' own series, which carry network but no family (one agent probes both
# families).
PER_PAIR_METRICS = metric.series_names(metric.PER_PAIR)
AGENT_METRICS = metric.series_names(metric.PER_AGENT)
EXPORTED_METRICS = PER_PAIR_METRICS | AGENT_METRICS
SEVERITIES = {"critical", "warning"}


# ---------------------------------------------------------------------------------------------
# PromQL helpers (shared with tests/unit/test_dashboard.py)
# ---------------------------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENTS = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIERS = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
)
# Grafana's interval variables become a duration, any other variable a regex (they only ever
# stand inside label matchers); "$1" in label_replace is left alone.
_GRAFANA_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{__\w+\}")
_GRAFANA_VARIABLES = re.compile(r"\$\{[A-Za-z_]\w*(?::\w+)?\}|\$[A-Za-z_]\w*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels left out)."""
    text = _STRINGS.sub('""', expr)
    text = _COMMENTS.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENTIFIERS.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def without_grafana_variables(expr: str) -> str:
    return _GRAFANA_VARIABLES.sub(".*", _GRAFANA_INTERVALS.sub("5m", expr))


def require_promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        skip_or_fail("'promtool' not installed (apt-get install -y prometheus)")
    assert path is not None
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def promql_syntax_errors(exprs: Mapping[str, str]) -> str | None:
    """None if every expression parses, else promtool's report (grouped by the mapping's keys).

    Each expression becomes a recording rule in a group named after its key, and
    ``promtool check rules`` parses them all.
    """
    groups = [
        {"name": name, "rules": [{"record": f"check:expr_{index}", "expr": expr}]}
        for index, (name, expr) in enumerate(exprs.items())
    ]
    with tempfile.TemporaryDirectory(prefix="monlat-promql-") as tmp:
        path = Path(tmp) / "exprs.rules.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
        done = run_promtool("check", "rules", str(path))
    return None if done.returncode == 0 else done.stdout + done.stderr


def recorded_metrics() -> set[str]:
    return {rule["record"] for rule in rules(load_rules()) if "record" in rule}


# ---------------------------------------------------------------------------------------------
# The rules file
# ---------------------------------------------------------------------------------------------


def load_rules() -> dict[str, Any]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def rules(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for group in document["groups"]:
        yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules(load_rules()) if "alert" in rule]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alerts()]


def rule_tests() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.test.yaml"))


def test_metric_names_extractor() -> None:
    assert metric_names('sum by (from, to) (rate(monlat_probes_total{result!="reply"}[5m]))') == {
        "monlat_probes_total"
    }
    assert metric_names(
        "histogram_quantile(0.99, sum(rate(x_bucket[$__rate_interval])) by (le)) > 1e-3"
    ) == {"x_bucket"}
    assert metric_names(
        'label_replace(a:b:c, "to", "$1", "from", "(.*)") or on (from) group_left b '
        "unless ignoring(le) c offset 5m and bool vector(0) # comment d"
    ) == {"a:b:c", "b", "c"}
    assert metric_names("max_over_time(up[1h:5m]) * 3 - Inf + NaN") == {"up"}


def test_grafana_variables_are_replaced() -> None:
    expr = 'rate(x{from=~"$from", to=~"${to}"}[$__rate_interval]) and label_replace(y, "a", "$1")'
    assert without_grafana_variables(expr) == (
        'rate(x{from=~".*", to=~".*"}[5m]) and label_replace(y, "a", "$1")'
    )


def test_unit_tests_exist() -> None:
    assert {path.name for path in rule_tests()} >= {
        "loss.test.yaml",
        "latency.test.yaml",
        "agents.test.yaml",
        "paths.test.yaml",
    }


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a unit test where it fires and one where it must stay quiet."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in rule_tests():
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule_files"] == ["../../deploy/prometheus/monlat-rules.yaml"], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(alert_names())
    assert fires <= names, f"tests for unknown alerts: {sorted(fires - names)}"
    assert quiet <= names, f"tests for unknown alerts: {sorted(quiet - names)}"
    assert names - fires == set(), "alerts never seen firing in tests/alerts"
    assert names - quiet == set(), "alerts never checked quiet in tests/alerts"


def test_alerts_are_complete() -> None:
    names = alert_names()
    assert len(names) == len(set(names)), "duplicate alert names"
    assert {
        "MonlatNodeUnreachable",
        "MonlatPairPacketLoss",
        "MonlatLatencyAboveBaseline",
        "MonlatAgentDown",
        "MonlatAgentOverloaded",
    } <= set(names)
    readme = RULES_README.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (Monlat\w+)$", readme, re.MULTILINE))
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"Monlat[A-Z][A-Za-z]+", name), name
        assert rule.get("for"), f"{name}: no 'for'"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, name
        assert "$labels" in annotations["summary"] or name == "MonlatMetricsAbsent", name
        anchor = f"deploy/prometheus/README.md#{name.lower()}"
        assert annotations["runbook"].endswith(anchor), f"{name}: runbook must point to {anchor}"
        assert name in headings, f"{name}: no '### {name}' section in {RULES_README.name}"


def test_recording_rules_follow_the_naming_convention() -> None:
    recorded = [rule["record"] for rule in rules(load_rules()) if "record" in rule]
    assert len(recorded) == len(set(recorded)), "a series recorded twice"
    for name in recorded:
        assert re.fullmatch(r"(pair|target|agent):monlat_\w+:\w+", name), name


def test_rules_read_only_monlat_metrics() -> None:
    known = EXPORTED_METRICS | recorded_metrics()
    for rule in rules(load_rules()):
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown {unknown}"


_GROUPINGS = re.compile(r"\b(by|on)\s*\(([^()]*)\)")
# Where the rules deliberately look across paths. The known-agent set counts a node as still
# probed over any path (an evicted pod-network agent is not probed over the pod network any
# more, yet it is missing); an agent is (from, network), its series have no family; and a
# node-level loss on any path explains an agent's silence (a NotReady node is still probed,
# and lost, by the pod-network agents only).
ACROSS_PATHS = {
    ("agent:monlat_agent_info:known", "by (to)"),
    ("agent:monlat_agent_info:known", "on (from)"),
    ("MonlatAgentDown", "on (from, network)"),
    ("MonlatAgentDown", "on (from)"),
}


def test_groupings_keep_the_paths_apart() -> None:
    found = set()
    for rule in rules(load_rules()):
        name = rule.get("alert") or rule.get("record")
        for keyword, labels in _GROUPINGS.findall(rule["expr"]):
            names = {label.strip() for label in labels.split(",")}
            clause = f"{keyword} ({', '.join(label.strip() for label in labels.split(','))})"
            if not names & {"from", "to"} or {"family", "network"} <= names:
                continue
            found.add((name, clause))
            assert (name, clause) in ACROSS_PATHS, f"{name}: {clause} mixes paths"
    assert found == ACROSS_PATHS, "an exception above no longer applies"


def test_exported_metrics_match_the_readme() -> None:
    """The list above is README.md's metrics table (histograms with their suffixes)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `([a-z_]+)` \| (?:gauge|counter|histogram) \|", readme, re.M))
    suffixes = re.compile(r"_(?:bucket|sum|count)$")
    assert {suffixes.sub("", name) for name in EXPORTED_METRICS} == table


# ---------------------------------------------------------------------------------------------
# The PrometheusRule
# ---------------------------------------------------------------------------------------------


def test_prometheusrule_is_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(PROMETHEUS / "render.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_prometheusrule_carries_the_rules() -> None:
    (rule,) = list(yaml.safe_load_all(PROMETHEUS_RULE.read_text(encoding="utf-8")))
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == "monlat"
    assert rule["metadata"]["namespace"] == "monlat"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "monlat"
    assert rule["spec"] == load_rules()
    assert PROMETHEUS_RULE.read_text(encoding="utf-8").startswith("# GENERATED")


@pytest.fixture(scope="module")
def schemas() -> k8s_schema.SchemaRegistry:
    try:
        return k8s_schema.load_registry(log=True)
    except k8s_schema.SchemaFetchError as exc:
        skip_or_fail(str(exc))
        raise AssertionError("unreachable") from exc


def test_prometheusrule_matches_the_crd_schema(schemas: k8s_schema.SchemaRegistry) -> None:
    errors = k8s_schema.validate_file(
        PROMETHEUS_RULE, schemas, source=PROMETHEUS_RULE.relative_to(REPO).as_posix()
    )
    assert errors == [], "\n".join(str(error) for error in errors)
