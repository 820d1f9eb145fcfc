"""Accuracy against the wire, and cost across lab namespaces.

The prober runs in a lab node; tcpdump captures the same probes on that node's interface with
nanosecond timestamps. For every answered probe, the RTT monlat reported is compared with the
RTT on the wire (reply captured minus request captured), idle and under a CPU hog: a busy thread
inside the prober's process (it fights the event loop for the GIL) and a busy process outside.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab import Lab, Link

_PCAP_NANO = 0xA1B23C4D
_PCAP_MICRO = 0xA1B2C3D4
_LINK_OFFSETS = {1: 14, 12: 0, 101: 0, 113: 16, 276: 20}


def read_pcap(path: Path) -> list[tuple[int, bytes]]:
    """(timestamp ns, IP packet) for each captured packet."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<"
    if magic not in (_PCAP_NANO, _PCAP_MICRO):
        endian = ">"
        magic = struct.unpack_from(">I", data)[0]
    scale = 1 if magic == _PCAP_NANO else 1000
    link_type = struct.unpack_from(endian + "I", data, 20)[0]
    offset = _LINK_OFFSETS[link_type & 0xFFFF]
    packets = []
    position = 24
    while position + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack_from(endian + "IIII", data, position)
        position += 16
        packets.append(
            (
                seconds * 1_000_000_000 + fraction * scale,
                data[position + offset : position + captured],
            )
        )
        position += captured
    return packets


def wire_rtts(packets: list[tuple[int, bytes]]) -> dict[tuple[str, int], int]:
    """{(peer address, sequence): RTT ns} from echo requests and replies seen on the wire."""
    sent: dict[tuple[str, int], int] = {}
    rtts: dict[tuple[str, int], int] = {}
    for stamp, packet in packets:
        if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
            continue
        header = (packet[0] & 0x0F) * 4
        icmp_type = packet[header]
        sequence = struct.unpack_from("!H", packet, header + 6)[0]
        source = ".".join(map(str, packet[12:16]))
        destination = ".".join(map(str, packet[16:20]))
        if icmp_type == 8:
            sent[(destination, sequence)] = stamp
        elif icmp_type == 0 and (source, sequence) in sent:
            rtts[(source, sequence)] = stamp - sent[(source, sequence)]
    return rtts


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(lab: Lab, peers: list[str], seconds: float, hog: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="monlat-accuracy-"))
    targets = workdir / "targets"
    targets.write_text("\n".join(lab.address(p) for p in peers))
    pcap, records = workdir / "probes.pcap", workdir / "records"
    tcpdump = lab.popen(
        "prober",
        ["tcpdump", "-i", "lab0", "-n", "-s", "128", "-B", "8192",
         "--time-stamp-precision=nano", "-w", str(pcap), "icmp"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tcpdump.stderr is not None
    tcpdump.stderr.readline()  # "listening on lab0 ..."
    hog_process = None
    if hog:
        hog_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = lab.run(
            "prober",
            [sys.executable, "-m", "benchmarks.monlat_probe", "--targets", str(targets),
             "--interval", "20ms", "--duration", str(seconds), "--records", str(records),
             *(["--hog-thread"] if hog else [])],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            timeout=seconds + 60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        if hog_process is not None:
            hog_process.kill()
            hog_process.wait()
        time.sleep(0.2)
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.wait(10)
    on_wire = wire_rtts(read_pcap(pcap))
    errors_us: list[float] = []
    for line in records.read_text().splitlines():
        address, sequence, rtt = line.split()
        wire = on_wire.get((address, int(sequence)))
        if wire is not None:
            errors_us.append(float(rtt) * 1e6 - wire / 1e3)
    absolute = [abs(e) for e in errors_us]
    return {
        "probes_matched": len(errors_us),
        "error_p50_us": _percentile(absolute, 0.50),
        "error_p99_us": _percentile(absolute, 0.99),
        "error_max_us": max(absolute),
        "signed_error_p50_us": _percentile(errors_us, 0.50),
    }


def run(seconds: float) -> dict[str, Any]:
    peers = ["peer1", "peer2", "peer3"]
    with Lab.create(["prober", *peers], default=Link(delay_ms=0.25)) as lab:
        return {
            "idle": measure(lab, peers, seconds, hog=False),
            "cpu hog": measure(lab, peers, seconds, hog=True),
        }


def print_table(figures: dict[str, Any]) -> None:
    print("\n## Accuracy: reported RTT minus RTT on the wire (tcpdump, ns timestamps)")
    print(f"{'condition':<10} {'probes':>7} {'|err| p50':>10} {'|err| p99':>10} {'|err| max':>10}")
    for condition, row in figures.items():
        print(
            f"{condition:<10} {row['probes_matched']:>7} {row['error_p50_us']:>7.1f} us "
            f"{row['error_p99_us']:>7.1f} us {row['error_max_us']:>7.1f} us"
        )


def lab_cost(
    cost: Callable[[list[str], list[str], str, float], dict[str, Any]], seconds: float
) -> dict[str, Any]:
    peers = [f"peer{i}" for i in range(1, 31)]
    with Lab.create(["prober", *peers], default=Link(delay_ms=0.25)) as lab:
        figures = cost(
            [lab.address(p) for p in peers], lab.exec_argv("prober", []), "10ms", seconds
        )
    figures["title"] = "30 peers in lab namespaces, monlat at 3,000 probes/s"
    return figures
