"""Benchmark targets: loopback addresses (every 127.0.0.0/8 address answers on Linux), or
addresses behind the user-space echo responder (benchmarks/echo_responder.py)."""

from __future__ import annotations


def loopback(count: int) -> list[str]:
    """`count` distinct loopback addresses, 127.1.0.1 onwards."""
    addresses = []
    for i in range(count):
        addresses.append(f"127.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}")
    return addresses


RESPONDER_LOCAL = "198.18.0.1"
RESPONDER_PREFIX = "198.19.0.0/16"


def behind_responder(count: int) -> list[str]:
    """`count` distinct addresses of RESPONDER_PREFIX, 198.19.0.1 onwards."""
    if count > 250 * 256:
        raise ValueError("the responder's prefix holds 64,000 peers")
    return [f"198.19.{i // 250}.{1 + i % 250}" for i in range(count)]
