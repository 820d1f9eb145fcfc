"""pytest: ``lab_cluster``, one three-node cluster for tests/cluster (about a minute to boot).

The links have distinct RTTs (:data:`LINKS`), so every pair's figure says which path it came
from. Tests install monlat, check it and uninstall it again (:func:`installed`); the cluster
itself (nodes, DNS) is shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lab import Link
from tests.support.waiting import wait_until

from .cluster import LabCluster

NODES = ("n1", "n2", "n3")
# One-way delays; the RTTs are 2, 4 and 6 ms.
ONE_WAY_MS = {("n1", "n2"): 1.0, ("n1", "n3"): 2.0, ("n2", "n3"): 3.0}
LINKS = {
    pair: Link(delay_ms=delay) for (a, b), delay in ONE_WAY_MS.items() for pair in ((a, b), (b, a))
}


# Package scope: torn down when tests/cluster is done, so that its kubelets and containerds do
# not load the machine under the timing-sensitive lab tests that follow.
@pytest.fixture(scope="package", name="lab_cluster")
def lab_cluster_fixture() -> Iterator[LabCluster]:
    with LabCluster.launch(NODES, links=LINKS) as cluster:
        yield cluster


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
