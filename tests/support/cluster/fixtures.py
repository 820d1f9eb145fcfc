"""pytest support for the lab cluster: its nodes and links, and :func:`installed`.

The ``lab_cluster`` fixture itself lives in tests/cluster/conftest.py: a package-scoped fixture
is torn down at the end of the package that defines it, and it must go before tests/lab runs.

The links have distinct RTTs (:data:`LINKS`), so every pair's figure says which path it came
from. Tests install monlat, check it and uninstall it again (:func:`installed`); the cluster
itself (nodes, DNS) is shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.lab import Link
from tests.support.waiting import wait_until

from .cluster import LabCluster

NODES = ("n1", "n2", "n3")
# One-way delays; the RTTs are 2, 4 and 6 ms.
ONE_WAY_MS = {("n1", "n2"): 1.0, ("n1", "n3"): 2.0, ("n2", "n3"): 3.0}
LINKS = {
    pair: Link(delay_ms=delay) for (a, b), delay in ONE_WAY_MS.items() for pair in ((a, b), (b, a))
}


@contextlib.contextmanager
def installed(
    cluster: LabCluster, kustomization: Path, namespace: str = "monlat"
) -> Iterator[None]:
    """``kubectl apply -k``, then ``kubectl delete -k`` and wait until nothing is left."""
    cluster.kubectl("apply", "-k", str(kustomization))
    try:
        yield
    finally:
        cluster.kubectl("delete", "-k", str(kustomization), "--wait=true", "--timeout=120s",
                        "--ignore-not-found", timeout=180, check=False)  # fmt: skip
        wait_until(
            lambda: (
                not cluster.kubectl(
                    "get",
                    "namespace,clusterrole,clusterrolebinding",
                    "-l",
                    "app.kubernetes.io/part-of=monlat",
                    "-o",
                    "name",
                ).stdout.strip()
                and cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0
            ),
            timeout=120,
            what=f"namespace {namespace} and monlat's cluster-wide objects gone after delete -k",
            interval=1,
        )
