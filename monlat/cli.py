"""Command line entry point: parse, run, and turn bad input into one line and exit status 2."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from monlat.config import ConfigError
from monlat.probe.sockets import ProbeSetupError
from monlat.settings import build_parser, parse_agent_config

EXIT_USAGE = 2
EXIT_SETUP = 1


def _fail(message: str, status: int) -> int:
    print(f"monlat: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0 if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command != "agent":
        return _fail(f"unknown command {command!r} (try: monlat agent --help)", EXIT_USAGE)
    if "-h" in rest or "--help" in rest:
        build_parser().parse_args(["agent", "--help"])
        return 0
    try:
        config = parse_agent_config(rest, os.environ)
        from monlat.agent import Agent

        return asyncio.run(Agent(config).run())
    except ConfigError as err:
        return _fail(str(err), EXIT_USAGE)
    except ProbeSetupError as err:
        return _fail(str(err), EXIT_SETUP)
    except KeyboardInterrupt:
        return 130
