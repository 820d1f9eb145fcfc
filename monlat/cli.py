"""Command line entry point: parse, run, and turn bad input into one line and exit status 2
(a logfmt event from `agent`, `monlat: error: …` from the operator commands)."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Sequence

from monlat.agent.logs import EventLog, route_libraries
from monlat.agent.probe.sockets import ProbeSetupError
from monlat.agent.settings import build_parser, parse_agent_config
from monlat.common.errors import ConfigError

EXIT_USAGE = 2
EXIT_SETUP = 1
OPERATOR_COMMANDS = ("matrix", "diagnose", "plan")
OPERATOR_HELP = """
operator commands (read an agent's or the collector's metrics URL):
  matrix              show the node-to-node latency matrix (monlat matrix --help)
  diagnose            find slow or lossy nodes, links and zone boundaries (exit 1 when found)
  plan                what the defaults do for a cluster of N nodes (monlat plan --help)
"""


def _fail(message: str, status: int) -> int:
    print(f"monlat: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        build_parser().print_help()
        print(OPERATOR_HELP, end="")
        return 0 if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command in OPERATOR_COMMANDS:
        return _operator_command(command, rest)
    if command != "agent":
        return _fail(
            f"unknown command {command!r} (try: monlat agent|matrix|diagnose|plan --help)",
            EXIT_USAGE,
        )
    if "-h" in rest or "--help" in rest:
        build_parser().parse_args(["agent", "--help"])
        return 0
    return _agent_command(rest)


def _agent_command(rest: list[str]) -> int:
    """Every line the agent writes to stderr is logfmt, its start-up errors included."""
    events = EventLog(sys.stderr)
    # gRPC's C core writes its own unformatted lines to stderr (a failed TLS handshake, at
    # INFO); the exporter's logged record carries the same detail. GRPC_VERBOSITY=info brings
    # them back for debugging gRPC itself.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        config = parse_agent_config(rest, os.environ)
        from monlat.agent.agent import Agent

        # For the process's lifetime: the SDK logs from its exit hooks too.
        route_libraries(sys.stderr, config.log_level)
        return asyncio.run(Agent(config, route_libraries=False).run())
    except ConfigError as err:
        events.error("config_error", setting=err.setting, error=err.problem)
        return EXIT_USAGE
    except ProbeSetupError as err:
        events.error("icmp_socket_unavailable", error=str(err))
        return EXIT_SETUP
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a defect: still one line, the traceback a field of it
        events.error("crashed", error=repr(err), traceback="".join(traceback.format_exception(err)))
        return EXIT_SETUP


def _operator_command(command: str, rest: list[str]) -> int:
    """`matrix` and `diagnose`: bad input or an unreachable URL is one line and exit status 2."""
    try:
        if command == "matrix":
            from monlat.tools.matrix.command import run_matrix

            return run_matrix(rest, os.environ, sys.stdout)
        if command == "plan":
            from monlat.tools.plan import run_plan

            return run_plan(rest, os.environ, sys.stdout)
        from monlat.tools.diagnose.command import run_diagnose

        return run_diagnose(rest, os.environ, sys.stdout)
    except ConfigError as err:
        return _fail(str(err), EXIT_USAGE)
    except KeyboardInterrupt:
        return 0 if command == "matrix" else 130
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and do not fail on the final flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
