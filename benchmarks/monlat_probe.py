"""Run monlat's Prober alone against a list of targets and report what it did, as JSON.

    python -m benchmarks.monlat_probe --targets FILE --interval 1s --duration 10 [--records F]

The benchmark harness runs this as a child process so that its CPU time is measured alone.
`--hog-thread` adds a busy Python thread to this process (it competes for the GIL with the
event loop), the worst case for user-space timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from monlat.agent.config import ProbeConfig, SocketMode
from monlat.agent.probe.icmp import Ignored
from monlat.agent.probe.pending import Outcome, Result
from monlat.agent.probe.prober import Prober, Target
from monlat.agent.probe.sockets import open_socket
from monlat.common.durations import parse_duration


class Recorder:
    def __init__(self, records: TextIO | None, measuring: threading.Event) -> None:
        self.records = records
        self.measuring = measuring
        self.results: dict[str, int] = {}
        self.ignored = 0
        self.lags: list[float] = []

    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        if not self.measuring.is_set():
            return
        for outcome in outcomes:
            self.results[outcome.result.value] = self.results.get(outcome.result.value, 0) + 1
            if self.records is not None and outcome.result is Result.REPLY and outcome.rtt_s:
                self.records.write(f"{outcome.address} {outcome.sequence} {outcome.rtt_s:.9f}\n")

    def on_ignored(self, reason: Ignored) -> None:
        self.ignored += 1

    def on_send_lag(self, lag_s: float) -> None:
        if self.measuring.is_set():
            self.lags.append(lag_s)

    def flush(self) -> None:
        pass  # nothing is held back


def _hog(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


async def run(args: argparse.Namespace) -> dict[str, object]:
    addresses = Path(args.targets).read_text().split()
    mode = SocketMode(args.socket)
    transports = {socket.AF_INET: open_socket(socket.AF_INET, mode)}
    measuring = threading.Event()
    records = Path(args.records).open("w") if args.records else None  # noqa: SIM115
    recorder = Recorder(records, measuring)
    config = ProbeConfig(
        interval_s=parse_duration("--interval", args.interval),
        timeout_s=parse_duration("--timeout", args.timeout),
        payload_size=56,
        socket_mode=mode,
    )
    prober = Prober("bench", transports, config, recorder)  # type: ignore[arg-type]
    prober.set_targets({a: Target(a, a) for a in addresses})
    stop_hog = threading.Event()
    if args.hog_thread:
        threading.Thread(target=_hog, args=(stop_hog,), daemon=True).start()
    task = asyncio.create_task(prober.run())
    await asyncio.sleep(args.warmup)
    measuring.set()
    sent_before, kernel_before = prober.sent, prober.kernel_send_times
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.sleep(args.duration)
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # Outcomes are counted over the same window as sends: in a steady state the probes answered
    # inside it for sends before it balance those sent at its end and answered after it.
    measuring.clear()
    sent = prober.sent - sent_before
    task.cancel()
    stop_hog.set()
    if records:
        records.close()
    lags = sorted(recorder.lags) or [0.0]
    return {
        "targets": len(addresses),
        "interval_s": config.interval_s,
        "seconds": elapsed,
        "sent": sent,
        "results": recorder.results,
        "ignored": recorder.ignored,
        "cpu_s": (usage.ru_utime - usage_before.ru_utime)
        + (usage.ru_stime - usage_before.ru_stime),
        "user_s": usage.ru_utime - usage_before.ru_utime,
        "system_s": usage.ru_stime - usage_before.ru_stime,
        "kernel_send_times": prober.kernel_send_times - kernel_before,
        "send_lag_p50_s": lags[len(lags) // 2],
        "send_lag_p99_s": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        "send_lag_max_s": lags[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--timeout", default="1s")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--socket", default="raw")
    parser.add_argument("--records")
    parser.add_argument("--hog-thread", action="store_true")
    args = parser.parse_args()
    json.dump(asyncio.run(run(args)), sys.stdout)


if __name__ == "__main__":
    main()
