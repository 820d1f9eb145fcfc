"""monlat's probe engine against the alternatives: cost, accuracy, steady state, false loss.

    hatch run bench:run                  # everything (about 10 minutes, needs root)
    hatch run bench:run --only cost      # one section: cost, accuracy, steady, loss
    hatch run bench:run --quick          # shorter runs, for a smoke test

Prints a table per section and writes every figure to bench-results.json (--json to change).
All contenders run in the same invocation on the same targets; figures are ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import accuracy, steady
from benchmarks.targets import loopback

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_json(argv: Sequence[str]) -> dict[str, Any]:
    result = subprocess.run(argv, capture_output=True, text=True, env=child_env(), check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {result.stderr[-2000:]}")
    return dict(json.loads(result.stdout))


def children_cpu(argv: Sequence[str]) -> tuple[float, float, str]:
    """Run argv to completion; return (CPU seconds of it and its children, wall seconds, output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, result.stdout + result.stderr


def cost(addresses: list[str], prefix: list[str], interval: str, seconds: float) -> dict[str, Any]:
    """Probes per CPU-second for each contender on the same targets."""
    with tempfile.NamedTemporaryFile("w", suffix=".targets", delete=False) as handle:
        handle.write("\n".join(addresses))
        targets = handle.name
    figures: dict[str, Any] = {}

    summary = run_json([*prefix, sys.executable, "-m", "benchmarks.monlat_probe",
                        "--targets", targets, "--interval", interval,
                        "--duration", str(seconds)])  # fmt: skip
    replies = summary["results"].get("reply", 0)
    figures["monlat"] = {
        "probes": replies,
        "cpu_s": summary["cpu_s"],
        "rate_per_s": replies / summary["seconds"],
        "probes_per_cpu_s": replies / summary["cpu_s"],
        "lost": sum(summary["results"].values()) - replies,
    }

    summary = run_json([*prefix, sys.executable, "-m", "benchmarks.icmplib_probe",
                        "--targets", targets, "--duration", str(seconds)])  # fmt: skip
    figures["icmplib.async_multiping"] = {
        "probes": summary["received"],
        "cpu_s": summary["cpu_s"],
        "rate_per_s": summary["received"] / summary["seconds"],
        "probes_per_cpu_s": summary["received"] / summary["cpu_s"],
        "lost": summary["sent"] - summary["received"],
    }

    # At least 10,000 probes, so that fping's small CPU time is measured with some precision.
    rounds = max(int(seconds), -(-10_000 // len(addresses)))
    cpu, wall, output = children_cpu(
        [*prefix, "fping", "-q", "-C", str(rounds), "-p", "20", "-i", "0", "-t", "1000",
         "-f", targets]
    )  # fmt: skip
    answered = sum(
        1 for line in output.splitlines() if ":" in line for v in line.split(":")[1].split()
        if v != "-"
    )  # fmt: skip
    figures["fping"] = {
        "probes": answered,
        "cpu_s": cpu,
        "rate_per_s": answered / wall,
        "probes_per_cpu_s": answered / cpu if cpu else None,
        "lost": rounds * len(addresses) - answered,
    }

    loop_targets = addresses[: min(len(addresses), 300)]
    script = 'for a in "$@"; do ping -n -q -c 1 -W 1 "$a" >/dev/null && echo ok; done'
    cpu, wall, output = children_cpu([*prefix, "sh", "-c", script, "ping-loop", *loop_targets])
    answered = output.count("ok")
    figures["ping -c 1 loop (original)"] = {
        "probes": answered,
        "cpu_s": cpu,
        "rate_per_s": answered / wall,
        "probes_per_cpu_s": answered / cpu if cpu else None,
        "lost": len(loop_targets) - answered,
    }
    Path(targets).unlink()
    fping_rate = figures["fping"]["probes_per_cpu_s"] or 1
    icmplib_rate = figures["icmplib.async_multiping"]["probes_per_cpu_s"] or 1
    figures["monlat_vs_fping"] = figures["monlat"]["probes_per_cpu_s"] / fping_rate
    figures["monlat_vs_icmplib"] = figures["monlat"]["probes_per_cpu_s"] / icmplib_rate
    return figures


def print_cost(title: str, figures: dict[str, Any]) -> None:
    print(f"\n## Cost: {title}")
    header = f"{'contender':<28} {'probes':>8} {'CPU s':>7} {'rate/s':>8}"
    print(f"{header} {'probes/CPU-s':>13} {'lost':>6}")
    for name, row in figures.items():
        if not isinstance(row, dict):
            continue
        per_cpu = row["probes_per_cpu_s"]
        print(
            f"{name:<28} {row['probes']:>8} {row['cpu_s']:>7.2f} {row['rate_per_s']:>8.0f} "
            f"{per_cpu if per_cpu is None else f'{per_cpu:,.0f}':>13} {row['lost']:>6}"
        )
    print(
        f"monlat / fping = {figures['monlat_vs_fping']:.2f}x   "
        f"monlat / icmplib.async_multiping = {figures['monlat_vs_icmplib']:.1f}x"
    )


def false_loss(rates: Sequence[int], seconds: float) -> dict[str, Any]:
    """Probes reported lost while the peer (loopback) always answers."""
    figures: dict[str, Any] = {}
    addresses = loopback(1000)
    with tempfile.NamedTemporaryFile("w", suffix=".targets", delete=False) as handle:
        handle.write("\n".join(addresses))
        targets = handle.name
    for rate in rates:
        interval = f"{len(addresses) / rate}s"
        summary = run_json([sys.executable, "-m", "benchmarks.monlat_probe", "--targets", targets,
                            "--interval", interval, "--duration", str(seconds)])  # fmt: skip
        results = summary["results"]
        finished = sum(results.values())
        figures[str(rate)] = {
            "sent": summary["sent"],
            "replies": results.get("reply", 0),
            "lost": finished - results.get("reply", 0),
            "send_lag_p99_ms": summary["send_lag_p99_s"] * 1000,
        }
    Path(targets).unlink()
    return figures


def print_false_loss(figures: dict[str, Any]) -> None:
    print("\n## False loss (1,000 loopback peers, which always answer)")
    print(f"{'probes/s':>9} {'sent':>8} {'replies':>8} {'lost':>6} {'send lag p99':>13}")
    for rate, row in figures.items():
        print(
            f"{rate:>9} {row['sent']:>8} {row['replies']:>8} {row['lost']:>6} "
            f"{row['send_lag_p99_ms']:>10.2f} ms"
        )


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=["cost", "accuracy", "steady", "loss"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="bench-results.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks need root (raw sockets, network namespaces, tcpdump)", file=sys.stderr)
        return 2
    sections = set(args.only or ["cost", "accuracy", "steady", "loss"])
    seconds = 3.0 if args.quick else 10.0
    results: dict[str, Any] = {"machine": machine()}
    print(f"# monlat probe benchmark — {results['machine']['cpu']}, "
          f"{results['machine']['cores']} cores, Linux {results['machine']['kernel']}, "
          f"Python {results['machine']['python']}")  # fmt: skip

    if "cost" in sections:
        figures = cost(loopback(1000), [], "0.1s", seconds)
        results["cost_loopback_1000"] = figures
        print_cost("1,000 loopback addresses, monlat at 10,000 probes/s", figures)
        lab_figures = accuracy.lab_cost(cost, seconds)
        results["cost_lab"] = lab_figures
        print_cost(lab_figures.pop("title"), lab_figures)
    if "accuracy" in sections:
        figures = accuracy.run(seconds)
        results["accuracy"] = figures
        accuracy.print_table(figures)
    if "steady" in sections:
        figures = steady.run([1000, 5000], 20.0 if args.quick else 60.0, otlp_peers=[1000, 5000])
        results["steady"] = figures
        steady.print_table(figures)
    if "loss" in sections:
        figures = false_loss([1000, 5000, 10000], seconds)
        results["false_loss"] = figures
        print_false_loss(figures)

    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
