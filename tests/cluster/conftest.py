"""tests/cluster: ``lab_cluster``, one real three-node cluster for this folder (a minute to boot).

Defined here, not in a root plugin, so that package scope means this folder: the cluster's
kubelets and containerds are gone before the timing-sensitive tests/lab starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster.cluster import LabCluster
from tests.support.cluster.fixtures import LINKS, NODES


@pytest.fixture(scope="package", name="lab_cluster")
def lab_cluster_fixture() -> Iterator[LabCluster]:
    with LabCluster.launch(NODES, links=LINKS) as cluster:
        yield cluster
