"""The one error type both halves raise for bad input."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad input, reported as one line naming the setting; the CLI exits with status 2."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem
