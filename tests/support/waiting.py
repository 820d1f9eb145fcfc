"""The one way tests wait: poll a condition until it holds or a deadline passes, and say what
was awaited when it did not. Waiting on the condition itself, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str = "condition",
    *,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """The first truthy value of `condition()`; AssertionError naming `what` after `timeout`.
    Exceptions listed in `ignore` (a server not listening yet) count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts: it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    try:
        return wait_until(lambda: process_gone(pid), timeout, f"pid {pid} to exit", interval=0.02)
    except AssertionError:
        return False


async def until(condition: Callable[[], Awaitable[object]], timeout: float, what: str) -> None:
    """wait_until for a test running on the event loop (the awaited condition, polled)."""
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g}s: {what}") from None
