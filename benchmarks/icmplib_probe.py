"""What a Python developer writes first: icmplib.async_multiping in a loop, as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import icmplib


async def run(addresses: list[str], duration: float) -> dict[str, object]:
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    sent = received = 0
    rtts: list[float] = []
    while time.monotonic() - started < duration:
        hosts = await icmplib.async_multiping(
            addresses, count=1, interval=0, timeout=1, concurrent_tasks=len(addresses)
        )
        for host in hosts:
            sent += host.packets_sent
            received += host.packets_received
            rtts.extend(host.rtts)
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rtts.sort()
    return {
        "seconds": elapsed,
        "sent": sent,
        "received": received,
        "cpu_s": (usage.ru_utime - usage_before.ru_utime)
        + (usage.ru_stime - usage_before.ru_stime),
        "rtt_p50_ms": rtts[len(rtts) // 2] if rtts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    addresses = Path(args.targets).read_text().split()
    json.dump(asyncio.run(run(addresses, args.duration)), sys.stdout)


if __name__ == "__main__":
    main()
