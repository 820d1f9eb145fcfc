"""Smoke tests of the real control plane fixture (tests/support/control_plane.py): etcd and
kube-apiserver built from the Go module proxy by scripts/build-control-plane.sh."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.control_plane import ControlPlane, ControlPlaneError, node_object


def test_readyz_and_version(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = control_plane.kubectl_json("version")["serverVersion"]
    assert (version["major"], version["minor"]) == ("1", "32")
    # Started within seconds (the binaries are built before the clock starts).
    assert control_plane.startup_seconds < 30, control_plane.startup_seconds


def test_node_status_kept_on_create_and_changed_only_through_subresource(
    control_plane: ControlPlane,
) -> None:
    created = control_plane.create_node("cp-n1", "10.0.0.1", labels={"monlat/test": "x"})
    assert created["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "Hostname", "address": "cp-n1"},
    ]

    # A patch of the main resource ignores status, as for every resource with a status subresource.
    ignored = {"status": {"addresses": [{"type": "InternalIP", "address": "10.9.9.9"}]}}
    control_plane.kubectl("patch", "node", "cp-n1", "--type=merge", "-p", json.dumps(ignored))
    stored = control_plane.kubectl_json("get", "node", "cp-n1")
    assert stored["status"]["addresses"][0]["address"] == "10.0.0.1"

    patched = control_plane.patch_node_status(
        "cp-n1", {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}
    )
    assert patched["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.2"}]
    listed = control_plane.kubectl_json("get", "nodes", "-l", "monlat/test=x")["items"]
    assert [node["metadata"]["name"] for node in listed] == ["cp-n1"]

    # kubectl apply of a new Node keeps its status as well.
    control_plane.apply(node_object("cp-n2", "10.0.0.3"))
    applied = control_plane.kubectl_json("get", "node", "cp-n2")
    assert applied["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.0.0.3"}


def test_service_account_needs_an_rbac_grant(control_plane: ControlPlane) -> None:
    control_plane.create_node("cp-sa-n1", "10.0.1.1")
    kubeconfig = control_plane.service_account_kubeconfig("cp-smoke", "agent")

    denied = control_plane.kubectl("get", "nodes", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    assert "system:serviceaccount:cp-smoke:agent" in denied.stderr

    control_plane.grant("cp-smoke", "agent", verbs=["get", "list", "watch"], resources=["nodes"])
    deadline = time.monotonic() + 10  # the RBAC authorizer's informer sees the binding shortly
    while True:
        result = control_plane.kubectl(
            "get", "nodes", "-o", "name", kubeconfig=kubeconfig, check=False
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["node/cp-sa-n1"]

    # The agent's own client (the kubernetes package over Python's ssl) accepts the kubeconfig.
    kubernetes = pytest.importorskip("kubernetes")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    with kubernetes.client.ApiClient(configuration) as api:
        nodes = kubernetes.client.CoreV1Api(api).list_node()
        assert [node.metadata.name for node in nodes.items] == ["cp-sa-n1"]
        with pytest.raises(kubernetes.client.ApiException) as forbidden:
            kubernetes.client.CoreV1Api(api).list_namespaced_pod("default")
        assert forbidden.value.status == 403


def test_stop_and_start_keep_port_and_data(control_plane: ControlPlane) -> None:
    control_plane.create_node("cp-outage", "10.0.2.1")
    kubeconfig = control_plane.service_account_kubeconfig("cp-outage", "agent")
    control_plane.grant("cp-outage", "agent")
    server, port = control_plane.server, control_plane.port

    control_plane.stop()
    assert not control_plane.running
    assert not control_plane.ready()
    with pytest.raises(ControlPlaneError):
        control_plane.kubectl("get", "nodes", "--request-timeout=2s", timeout=20)

    seconds = control_plane.start()
    assert seconds < 30
    assert (control_plane.server, control_plane.port) == (server, port)
    assert control_plane.kubectl_json("get", "node", "cp-outage")["status"]["addresses"][0] == {
        "type": "InternalIP",
        "address": "10.0.2.1",
    }
    # A token issued before the outage is still valid: same signing key, same etcd data.
    names = control_plane.kubectl("get", "nodes", "-o", "name", kubeconfig=kubeconfig).stdout
    assert "node/cp-outage" in names.split()

    # An abrupt stop (SIGKILL) loses nothing either.
    control_plane.stop(graceful=False)
    control_plane.start()
    assert control_plane.kubectl("get", "node", "cp-outage", "-o", "name").stdout.strip() == (
        "node/cp-outage"
    )


def test_nodes_are_reset_between_tests(control_plane: ControlPlane) -> None:
    """The function-scoped fixture deleted the previous tests' Nodes (run after them)."""
    assert control_plane.kubectl_json("get", "nodes")["items"] == []
