"""Benchmark targets: loopback addresses (every 127.0.0.0/8 address answers on Linux)."""

from __future__ import annotations


def loopback(count: int) -> list[str]:
    """`count` distinct loopback addresses, 127.1.0.1 onwards."""
    addresses = []
    for i in range(count):
        addresses.append(f"127.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}")
    return addresses
