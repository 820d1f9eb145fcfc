"""Suite-wide: the lab fixtures, and CI's rule that nothing may be skipped there."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.support.lab.fixtures",
    "tests.support.collector",
    "tests.support.control_plane",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """In CI every test must run: a skip there means a missing dependency, so it fails."""
    outcome = yield
    report = outcome.get_result()
    in_ci = os.environ.get("CI", "").lower() == "true"
    if in_ci and report.skipped and call.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"


# The tier is the folder: tests/unit runs anywhere without root in under a minute
# (`hatch run test:unit`); tests/lab needs root, namespaces or external binaries (the collector,
# Prometheus, promtool, podman); tests/cluster a real API server. Both of the latter are e2e.
_E2E_TIERS = ("lab", "cluster")
# What only those tiers may use: a unit test asking for one belongs in another folder.
_E2E_FIXTURES = {
    "lab_factory", "collector", "collector_bin", "mesh", "lab", "api", "control_plane",
    "lab_cluster",
}  # fmt: skip
_TESTS = Path(__file__).resolve().parent


def _tier(item: pytest.Item) -> str:
    return item.path.resolve().relative_to(_TESTS).parts[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        tier = _tier(item)
        if tier in _E2E_TIERS:
            item.add_marker(pytest.mark.e2e)
        elif set(getattr(item, "fixturenames", ())) & _E2E_FIXTURES:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            f"unit tests using lab or cluster fixtures (move them to tests/lab or tests/cluster): "
            f"{', '.join(misplaced)}"
        )
