"""argparse that reports bad input as one ConfigError line naming the setting, for every
command (`monlat agent`, `matrix`, `diagnose`, `plan`): no usage dump, exit status 2."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import NoReturn

from monlat.common.errors import ConfigError

_ABOUT_ONE = re.compile(r"argument (\S+?)(?:/\S+)?: (.*)", re.DOTALL)
_CHOICE = re.compile(r"invalid choice: (.*) \(choose from (.*)\)", re.DOTALL)


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        about = _ABOUT_ONE.fullmatch(message)
        if about is None:
            raise ConfigError("arguments", message)
        setting, problem = about.groups()
        choice = _CHOICE.fullmatch(problem)
        if choice is not None:
            given, allowed = choice.groups()
            names = [name.strip().strip("'") for name in allowed.split(",")]
            expected = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
            problem = f"expected {expected}, got {given}"
        raise ConfigError(setting, problem)


def add_choice(
    parser: argparse.ArgumentParser, flag: str, choices: Sequence[str], help: str
) -> None:
    """A case-insensitive choice whose default is the first one (said in the help)."""
    parser.add_argument(
        flag, default=choices[0], type=str.lower, choices=choices,
        help=f"{help}; default {choices[0]}",
    )  # fmt: skip
