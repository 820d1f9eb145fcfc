"""Network-namespace plumbing: naming, create/delete, stale cleanup, setns.

Namespace names are ``monlat-lab-<pid>-<lab seq>-<node>``: unique per lab
instance, and the pid tells :func:`cleanup_stale` which namespaces belong to
a process that no longer exists (a crashed earlier run).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

PREFIX = "monlat-lab-"
NETNS_DIR = "/var/run/netns"  # where iproute2 keeps named namespaces
CLONE_NEWNET = 0x40000000
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_STALE_RE = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not be built or driven."""


def ip(
    *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` and raise :class:`LabError` with its stderr on failure."""
    proc = subprocess.run(
        ["ip", *args], check=False, input=input, capture_output=True, text=True, timeout=30
    )
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip_batch(netns: str, commands: Sequence[str]) -> None:
    """Run several ``ip`` commands inside ``netns`` with one process."""
    ip("-n", netns, "-batch", "-", input="\n".join(commands) + "\n")


def netns_name(pid: int, lab_seq: int, node: str) -> str:
    return f"{PREFIX}{pid}-{lab_seq}-{node}"


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create_netns(name: str) -> None:
    ip("netns", "add", name)


def delete_netns(name: str) -> None:
    """Delete a namespace; a missing one is not an error."""
    proc = ip("netns", "delete", name, check=False)
    if proc.returncode != 0 and os.path.exists(os.path.join(NETNS_DIR, name)):
        raise LabError(f"ip netns delete {name} failed: {proc.stderr.strip()}")


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name``."""
    proc = ip("netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def kill_netns_processes(name: str, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, every process still inside namespace ``name``."""
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while True:
        pids = [p for p in netns_pids(name) if p != os.getpid()]
        if not pids:
            return
        if time.monotonic() >= deadline:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete lab namespaces whose owning process is gone (with any processes
    still running inside them); return their names."""
    removed = []
    for name in list_netns():
        m = _STALE_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                kill_netns_processes(name)
                delete_netns(name)
                removed.append(name)
            except LabError:
                pass
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def call_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a short-lived thread that has joined ``netns``.

    The namespace of a socket is fixed when it is created, so this is how the
    test process gets a socket living inside a lab node (e.g. to reach an
    agent's 127.0.0.1 listener, or to send ICMP from that node) without
    spawning a subprocess.  Only the helper thread changes namespace.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns:{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def write_sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace ``net.*`` sysctl (``key`` like ``net.ipv4.ping_group_range``)."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w", encoding="ascii") as fh:
            fh.write(value)

    call_in_netns(netns, write)


def read_sysctl(netns: str, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")

    def read() -> str:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()

    return call_in_netns(netns, read)
