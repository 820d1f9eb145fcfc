"""The `monlat agent` command line, whole (environment, logging, exit status), on the in-memory
ICMP network instead of sockets, so that the unit tier can run it as a process without root:

    python -m tests.support.agent_without_root 10.0.0.2=1.5,10.0.0.3=4 -- agent --peers ...
"""

from __future__ import annotations

import sys

import monlat.agent.agent
from monlat.cli import main
from tests.support.fake_network import FakeNetwork


def run(argv: list[str]) -> int:
    rtts, separator, cli_args = argv[0], argv[1], argv[2:]
    assert separator == "--", "usage: agent_without_root ADDR=MS,... -- agent ARGS"
    network = FakeNetwork(
        {address: float(ms) for address, ms in (pair.split("=") for pair in rtts.split(","))}
    )
    # Only this process: the composition root's default transports become the fake network's.
    monlat.agent.agent.open_transports = network.transports  # type: ignore[assignment]
    return main(cli_args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
