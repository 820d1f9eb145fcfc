"""Suite-wide: the lab fixtures, and CI's rule that nothing may be skipped there."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

pytest_plugins = ["tests.lab.fixtures", "tests.collector", "tests.control_plane"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """In CI every test must run: a skip there means a missing dependency, so it fails."""
    outcome = yield
    report = outcome.get_result()
    in_ci = os.environ.get("CI", "").lower() == "true"
    if in_ci and report.skipped and call.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"


# Tests that need root, namespaces or external binaries; `hatch run test:unit` leaves them out.
_E2E_FIXTURES = {"lab_factory", "collector", "collector_bin", "mesh", "lab", "api", "control_plane"}
_E2E_MODULES = {"test_agent_local", "test_agent_kubernetes", "test_otlp_export", "test_image"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        module = item.path.stem
        if fixtures & _E2E_FIXTURES or module in _E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
