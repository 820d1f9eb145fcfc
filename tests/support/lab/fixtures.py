"""pytest support: the ``lab_factory`` fixture and the skip-or-fail policy.

Use from any test package by registering the plugin in the *root*
``tests/conftest.py``::

    pytest_plugins = ["tests.support.lab.fixtures"]

then::

    def test_something(lab_factory):
        lab = lab_factory(["n1", "n2"], links={("n1", "n2"): Link(delay_ms=3)})
        ...

Policy: when the lab cannot run here (not root, no /dev/net/tun, no ``ip``,
namespaces not permitted) the test is *skipped* with the reason, unless
``CI=true`` or ``MONLAT_REQUIRE_LAB=1`` is set, in which case it *fails*:
CI must not silently skip the network tests.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import pytest

from .lab import NO_DELAY, Lab, Link
from .netns import PREFIX


def lab_required() -> bool:
    """True when a missing lab must fail the run instead of skipping."""
    return (
        os.environ.get("CI", "").strip().lower() == "true"
        or os.environ.get("MONLAT_REQUIRE_LAB", "").strip() == "1"
    )


def skip_or_fail(reason: str) -> None:
    """Skip (developer machine) or fail (CI / MONLAT_REQUIRE_LAB=1) with ``reason``."""
    if lab_required():
        pytest.fail(
            f"required test dependency missing (CI=true or MONLAT_REQUIRE_LAB=1): {reason}",
            pytrace=False,
        )
    pytest.skip(f"test dependency missing: {reason}")


@functools.lru_cache(maxsize=1)
def lab_unavailable_reason() -> str | None:
    """Why a :class:`Lab` cannot be built on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as exc:
        return f"/dev/net/tun is not usable: {exc}"
    probe = f"{PREFIX}probe-{os.getpid()}"
    add = subprocess.run(["ip", "netns", "add", probe], check=False, capture_output=True, text=True)
    if add.returncode != 0:
        return f"cannot create network namespaces: {add.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], check=False, capture_output=True)
    return None


def require_lab() -> None:
    reason = lab_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)


def require_command(name: str, package: str) -> str:
    """Path of ``name``, else skip-or-fail (hint: ``apt-get install -y package``)."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"'{name}' not installed (apt-get install -y {package})")
    assert path is not None
    return path


class LabFactory(Protocol):
    def __call__(
        self,
        nodes: Sequence[str],
        links: Mapping[tuple[str, str], Link] | None = None,
        default: Link = ...,
        **kwargs: Any,
    ) -> Lab: ...


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Build labs with ``Lab.create`` arguments; all are closed after the test."""
    require_lab()
    labs: list[Lab] = []

    def make(
        nodes: Sequence[str],
        links: Mapping[tuple[str, str], Link] | None = None,
        default: Link = NO_DELAY,
        **kwargs: Any,
    ) -> Lab:
        lab = Lab.create(nodes, links, default, **kwargs)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:  # close every lab before reporting
            errors.append(exc)
    if errors:
        raise errors[0]
