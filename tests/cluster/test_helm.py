"""The Helm chart (deploy/helm/monlat) with helm built from helm.sh/helm/v3: lint, schema,
the same objects as the kustomize base, and `helm install` on the lab cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.test_install import assert_the_default_install_works
from tests.support.cluster.cluster import LabCluster, find_cluster_binaries
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "monlat"


@pytest.fixture(scope="module", name="helm")
def helm_fixture() -> str:
    return str(find_cluster_binaries().runtime / "helm")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def objects(text: str) -> dict[tuple[str, str], Any]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(text) if doc}


def test_the_chart_lints_strictly(helm: str) -> None:
    out = run(helm, "lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_values_render_exactly_the_kustomize_base(helm: str) -> None:
    from_helm = objects(run(helm, "template", "monlat", str(CHART)).stdout)
    from_kustomize = objects(run("kubectl", "kustomize", str(REPO / "deploy" / "k8s")).stdout)
    assert sorted(from_helm) == sorted(from_kustomize)
    for key, obj in from_kustomize.items():
        assert from_helm[key] == obj, f"{key} differs between helm template and kustomize"


def test_values_outside_the_schema_are_refused(helm: str) -> None:
    for bad in ("agent.logMeasurements=maybe", "agent.exportIntervalMillis=10", "agnet.x=1"):
        proc = run(helm, "template", "monlat", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_helm_install_passes_the_default_install_scenario(
    helm: str, lab_cluster: LabCluster, tmp_path: Path
) -> None:
    agent, _, agent_tag = lab_cluster.images.agent.rpartition(":")
    collector, _, collector_tag = lab_cluster.images.collector.rpartition(":")
    kubeconfig = f"--kubeconfig={lab_cluster.control_plane.kubeconfig}"
    run(
        helm, kubeconfig, "install", "monlat", str(CHART), "--namespace", "default",
        "--set", f"agent.image.repository={agent}", "--set", f"agent.image.tag={agent_tag}",
        "--set", f"collector.image.repository={collector}",
        "--set", f"collector.image.tag={collector_tag}",
    )  # fmt: skip
    try:
        assert_the_default_install_works(lab_cluster, tmp_path)
    finally:
        run(helm, kubeconfig, "uninstall", "monlat", "--namespace", "default", "--wait")
    wait_until(
        lambda: lab_cluster.kubectl("get", "namespace", "monlat", check=False).returncode != 0,
        timeout=120,
        what="helm uninstall removing the monlat namespace",
        interval=1,
    )
