"""Measure the emulator's accuracy: ping RTT minus configured RTT.

    python3 -m tests.support.lab.bench [--count 200] [--interval 0.05] [--delays 0,5,20]

For each configured one-way delay ``d`` (used on both directions, so the
configured RTT is ``2d``) it pings through the lab and prints p50/p99/max of
the measured RTT and of the overhead (measured - configured), plus the
switch's own timer lateness (deadline -> start of the TUN write).
Needs root and /dev/net/tun.
"""

from __future__ import annotations

import argparse

from .lab import Lab


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--delays", default="0,1,5,20", help="comma separated one-way delays in ms")
    ap.add_argument("--spin-us", type=float, default=200.0)
    ap.add_argument("--ipv6", action="store_true")
    ap.add_argument("--no-realtime", action="store_true", help="run the switch as SCHED_OTHER")
    args = ap.parse_args(argv)
    columns = (
        ("oneway", 7), ("cfg_rtt", 8), ("|", 1), ("rtt_min", 8), ("rtt_p50", 8), ("rtt_p99", 8),
        ("rtt_max", 8), ("|", 1), ("ovh_min", 8), ("ovh_p50", 8), ("ovh_p99", 8), ("|", 1),
        ("late_p50", 8), ("late_p99", 8), ("late_max", 8),
    )  # fmt: skip
    print(" ".join(f"{name:>{width}}" for name, width in columns) + "  (ms; lateness in us)")
    with Lab.create(["a", "b"], spin_us=args.spin_us, realtime=not args.no_realtime) as lab:
        for d in (float(x) for x in args.delays.split(",")):
            lab.set_link("a", "b", delay_ms=d, both=True)
            lab.reset_stats()
            res = lab.ping("a", "b", count=args.count, interval=args.interval, ipv6=args.ipv6)
            late = lab.stats()["lateness_us"]
            cfg = lab.expected_rtt_ms("a", "b")
            p50, p99 = res.percentile_ms(50), res.percentile_ms(99)
            rtts = f"{res.min_ms:8.3f} {p50:8.3f} {p99:8.3f} {res.max_ms:8.3f}"
            print(
                f"{d:7.2f} {cfg:8.3f} | {rtts} | "
                f"{res.min_ms - cfg:8.3f} {p50 - cfg:8.3f} {p99 - cfg:8.3f} | "
                f"{late['p50']:8.1f} {late['p99']:8.1f} {late['max']:8.1f}"
                + (f"  loss={res.loss:.1%}" if res.loss else "")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
