"""The rules and the dashboard's queries through Debian's promtool: the rules file checks, the
promtool unit tests in tests/alerts pass, and every dashboard query parses as PromQL.

Lab tier because promtool is an external binary; the checks that need nothing but Python live
in tests/unit/test_alerts.py and tests/unit/test_dashboard.py.
"""

from __future__ import annotations

import pytest

from tests.unit.test_alerts import (
    REPO,
    RULE_TESTS,
    RULES,
    promql_syntax_errors,
    rule_tests,
    run_promtool,
    without_grafana_variables,
)
from tests.unit.test_dashboard import load, queries, variable_selectors


def test_rules_file_passes_promtool_check() -> None:
    done = run_promtool("check", "rules", str(RULES.relative_to(REPO)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("test_file", [path.name for path in rule_tests()])
def test_promtool_unit_tests(test_file: str) -> None:
    done = run_promtool("test", "rules", str((RULE_TESTS / test_file).relative_to(REPO)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_queries_parse() -> None:
    dashboard = load()
    exprs = {
        name: without_grafana_variables(expr)
        for name, expr in {**queries(dashboard), **variable_selectors(dashboard)}.items()
    }
    errors = promql_syntax_errors(exprs)
    assert errors is None, errors


def test_syntax_check_catches_errors() -> None:
    """The check above is not vacuous."""
    errors = promql_syntax_errors({"good": "up", "bad": "sum by (from (up)"})
    assert errors is not None and "bad" in errors
