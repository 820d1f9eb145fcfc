"""Make the lab fixtures available to tests/lab itself.

Other test packages should register ``pytest_plugins = ["tests.lab.fixtures"]``
in the root tests/conftest.py instead (pytest allows pytest_plugins only there).
"""

from .fixtures import lab_factory  # noqa: F401  (fixture re-export)
