"""tests/cluster: ``lab_cluster``, one real three-node cluster for this folder (a minute to boot),
and the shared API server narrowed to this folder too.

Defined here, not in a root plugin, so that package scope means this folder: the cluster's
kubelets and containerds, and the shared kube-apiserver and etcd, are gone before the
timing-sensitive tests/lab starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster.cluster import LabCluster
from tests.support.cluster.fixtures import LINKS, NODES
from tests.support.control_plane import ControlPlane, shared_control_plane


@pytest.fixture(scope="package", name="lab_cluster")
def lab_cluster_fixture() -> Iterator[LabCluster]:
    with LabCluster.launch(NODES, links=LINKS) as cluster:
        yield cluster


@pytest.fixture(scope="package", name="control_plane_session")
def control_plane_session_fixture(control_plane_binaries: Path) -> Iterator[ControlPlane]:
    with shared_control_plane(control_plane_binaries) as instance:
        yield instance
