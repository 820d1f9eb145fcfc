"""The Kubernetes manifests: schema-valid (offline, strict), fresh, and saying what we mean.

Every *.yaml under deploy/k8s (except kustomization files and the render template) and the
output of ``kubectl kustomize`` for the base and the net-raw overlay are validated against the
Kubernetes OpenAPI schemas pinned in tests/support/k8s_schema.py (fetched once through the Go module
proxy, then read from ${MONLAT_CACHE:-~/.cache/monlat}/k8s-openapi). The ServiceMonitor is
validated against the real prometheus-operator CRD schema, fetched the same way.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import k8s_schema
from tests.support.lab.fixtures import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
CONFIG = REPO / "deploy" / "otel-collector" / "config.yaml"
COLLECTOR_CONFIG = REPO / "deploy" / "otel-collector" / "config.yaml"
NOT_MANIFESTS = {"kustomization.yaml", "monlat.template.yaml"}
EXPECTED_MANIFESTS = {
    "rbac.yaml",
    "agents.yaml",
    "agents-net-raw.yaml",
    "monlat.yaml",
    "optional/servicemonitor.yaml",
    "pod-network/agents-pod-network.yaml",
}
POD_NETWORK = "pod-network/agents-pod-network.yaml"
KUSTOMIZATIONS = {
    "deploy/k8s": ["rbac.yaml", "agents.yaml", "monlat.yaml"],
    "deploy/overlays/net-raw": ["rbac.yaml", "agents-net-raw.yaml", "monlat.yaml"],
    "deploy/k8s/pod-network": [POD_NETWORK],
    "deploy/overlays/pod-network": ["rbac.yaml", "agents.yaml", "monlat.yaml", POD_NETWORK],
}
# Overlays that change objects on purpose: validated, but not compared with the plain files.
PATCHING_OVERLAYS = [
    "deploy/overlays/otlp-backend",
    "deploy/overlays/scale-out",
    "deploy/overlays/network-policy",
]
AGENT_VARIANTS = ["agents.yaml", "agents-net-raw.yaml"]


def manifest_files() -> list[str]:
    return sorted(
        path.relative_to(K8S).as_posix()
        for path in K8S.rglob("*.yaml")
        if path.name not in NOT_MANIFESTS
    )


def load(relative: str) -> list[dict[str, Any]]:
    return [doc.data for doc in k8s_schema.load_documents((K8S / relative).read_text())]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj.get("kind") in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
            yield f"{obj['kind']} {obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def explain(errors: list[k8s_schema.ManifestError]) -> str:
    return "\n".join(str(error) for error in errors)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry() -> k8s_schema.SchemaRegistry:
    """The pinned schemas; fetched through the Go module proxy on first use, then cached."""
    try:
        return k8s_schema.load_registry(log=True)
    except k8s_schema.GoNotFoundError as exc:
        skip_or_fail(str(exc))
        raise AssertionError("unreachable") from exc


def kustomize(directory: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        command = [kubectl, "kustomize", directory]
    elif (standalone := shutil.which("kustomize")) is not None:
        command = [standalone, "build", directory]
    else:
        skip_or_fail("neither kubectl (kubectl kustomize) nor kustomize is installed")
        raise AssertionError("unreachable")
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    return {directory: kustomize(directory) for directory in [*KUSTOMIZATIONS, *PATCHING_OVERLAYS]}


# ---------------------------------------------------------------------------------------------
# Schema validation of the real manifests
# ---------------------------------------------------------------------------------------------


def test_every_manifest_is_covered() -> None:
    found = set(manifest_files())
    assert found >= EXPECTED_MANIFESTS, f"missing manifests: {EXPECTED_MANIFESTS - found}"


@pytest.mark.parametrize("relative", manifest_files())
def test_manifest_matches_schema(relative: str, registry: k8s_schema.SchemaRegistry) -> None:
    path = K8S / relative
    errors = k8s_schema.validate_file(path, registry, source=path.relative_to(REPO).as_posix())
    assert not errors, "\n" + explain(errors)
    assert load(relative), f"{relative} holds no object"


@pytest.mark.parametrize("directory", sorted([*KUSTOMIZATIONS, *PATCHING_OVERLAYS]))
def test_kustomize_output_matches_schema(
    directory: str, rendered: dict[str, str], registry: k8s_schema.SchemaRegistry
) -> None:
    errors = k8s_schema.validate_text(
        rendered[directory], f"kubectl kustomize {directory}", registry
    )
    assert not errors, "\n" + explain(errors)


@pytest.mark.parametrize("directory", sorted(KUSTOMIZATIONS))
def test_kustomize_output_equals_the_plain_files(directory: str, rendered: dict[str, str]) -> None:
    """`kubectl apply -k` and `kubectl apply -f` of the plain files create the same objects."""

    def keyed(objects: list[Any]) -> dict[tuple[str, str, str], Any]:
        return {
            (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]): obj
            for obj in objects
        }

    from_kustomize = keyed([doc.data for doc in k8s_schema.load_documents(rendered[directory])])
    from_files = keyed([obj for name in KUSTOMIZATIONS[directory] for obj in load(name)])
    assert sorted(from_kustomize) == sorted(from_files)
    for key, obj in from_files.items():
        assert from_kustomize[key] == obj, f"{key} differs between kustomize and the plain files"


def test_generated_manifests_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(K8S / "render.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_helm_templates_are_generated_from_the_current_base() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "helm" / "render.py"), "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# What the manifests say
# ---------------------------------------------------------------------------------------------


def agent(relative: str) -> tuple[dict[str, Any], dict[str, Any]]:
    daemonset = one(load(relative), "DaemonSet", "monlat-agent")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


@pytest.mark.parametrize("relative", AGENT_VARIANTS)
def test_agent_runs_on_every_node_on_the_host_network(relative: str) -> None:
    pod, container = agent(relative)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in pod["tolerations"], "must tolerate every taint"
    node_name = env_of(container)["NODE_NAME"]
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "value" not in node_name


@pytest.mark.parametrize("relative", AGENT_VARIANTS)
def test_agent_probes(relative: str) -> None:
    _, container = agent(relative)
    port_names = {port["name"] for port in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert http["port"] in port_names, f"{probe} port {http['port']} is not a declared port"


@pytest.mark.parametrize("relative", AGENT_VARIANTS)
def test_agent_hardening(relative: str) -> None:
    pod, container = agent(relative)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault"
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_default_agent_has_no_capability_and_no_root() -> None:
    pod, container = agent("agents.yaml")
    assert "add" not in container["securityContext"]["capabilities"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert "MONLAT_SOCKET" not in env_of(container)


def test_net_raw_agent_adds_only_net_raw() -> None:
    pod, container = agent("agents-net-raw.yaml")
    assert container["securityContext"]["capabilities"]["add"] == ["NET_RAW"]
    # Without ambient capabilities a non-root process never gets NET_RAW: see components/net-raw.
    assert pod["securityContext"]["runAsUser"] == 0
    assert env_of(container)["MONLAT_SOCKET"]["value"] == "raw"


def test_every_container_is_hardened_and_pinned() -> None:
    objects = [obj for name in manifest_files() for obj in load(name)]
    checked = 0
    for owner, pod in pod_specs(objects):
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", owner
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{owner} container {container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert set(context["capabilities"].get("add", [])) <= {"NET_RAW"}, where
            image = container["image"]
            match = re.fullmatch(
                r"(?P<repo>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@sha256:[0-9a-f]{64})?", image
            )
            assert match, f"{where}: malformed image {image!r}"
            assert match["tag"] or "@sha256:" in image, f"{where}: image {image!r} has no tag"
            assert match["tag"] != "latest", f"{where}: image {image!r} uses :latest"
            checked += 1
    assert checked >= 3  # agent, agent (net-raw), collector


def test_cluster_role_reads_nodes_only() -> None:
    objects = load("rbac.yaml")
    role = one(objects, "ClusterRole", "monlat-agent")
    assert len(role["rules"]) == 1
    (rule,) = role["rules"]
    assert rule["apiGroups"] == [""]
    assert rule["resources"] == ["nodes"]
    assert sorted(rule["verbs"]) == ["get", "list", "watch"]
    assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames/nonResourceURLs"
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    binding = one(objects, "ClusterRoleBinding", "monlat-agent")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "monlat-agent",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "monlat-agent", "namespace": "monlat"}
    ]
    one(objects, "ServiceAccount", "monlat-agent")
    for relative in AGENT_VARIANTS:
        pod, _ = agent(relative)
        assert pod["serviceAccountName"] == "monlat-agent"


def test_collector_service_ports() -> None:
    objects = load("monlat.yaml")
    service = one(objects, "Service", "monlat")
    assert {port["port"] for port in service["spec"]["ports"]} == {9090, 4317, 4318}
    deployment = one(objects, "Deployment", "monlat")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        number = container_ports.get(target) if isinstance(target, str) else target
        assert number == port["port"], f"Service port {port['name']} -> {target} -> {number}"
    monitor = one(load("optional/servicemonitor.yaml"), "ServiceMonitor", "monlat")
    service_port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_port_names
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def token_mount(pod: dict[str, Any], container: dict[str, Any]) -> str:
    """Where the pod mounts the ingest Secret's token key (as a file path)."""
    volumes = {
        volume["name"]: volume["secret"]
        for volume in pod.get("volumes", [])
        if volume.get("secret", {}).get("secretName") == "monlat-ingest-token"
    }
    (name,) = volumes
    assert volumes[name]["items"] == [{"key": "token", "path": "token"}]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == name]
    assert mount["readOnly"] is True
    return f"{mount['mountPath']}/token"


@pytest.mark.parametrize("relative", [*AGENT_VARIANTS, POD_NETWORK])
def test_every_agent_reads_the_ingest_token_the_collector_checks(relative: str) -> None:
    rbac = load("rbac.yaml")
    secret = one(rbac, "Secret", "monlat-ingest-token")
    account = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert one(rbac, "ServiceAccount", account)["automountServiceAccountToken"] is False
    bindings = by_kind(rbac, "ClusterRoleBinding") + by_kind(rbac, "RoleBinding")
    assert not [b for b in bindings for s in b["subjects"] if s["name"] == account]

    collector = one(load("monlat.yaml"), "Deployment", "monlat")["spec"]["template"]["spec"]
    (otelcol,) = collector["containers"]
    config = yaml.safe_load(CONFIG.read_text())
    default = config["extensions"]["bearertokenauth/ingest"]["filename"]
    assert default.endswith(":-" + token_mount(collector, otelcol) + "}"), default
    for protocol in ("grpc", "http"):
        receiver = config["receivers"]["otlp"]["protocols"][protocol]
        assert receiver["auth"] == {"authenticator": "bearertokenauth/ingest"}

    for _, pod in pod_specs(load(relative)):
        (agent,) = pod["containers"]
        assert env_of(agent)["MONLAT_OTLP_TOKEN_FILE"]["value"] == token_mount(pod, agent)


def test_network_policy_lets_agents_and_prometheus_in_and_no_one_else() -> None:
    policies = {
        obj["metadata"]["name"]: obj["spec"]
        for obj in k8s_schema.load_documents(
            (REPO / "deploy/overlays/network-policy/networkpolicy.yaml").read_text()
        )
        for obj in [obj.data]
    }
    deployment = one(load("monlat.yaml"), "Deployment", "monlat")
    collector = policies["monlat-collector"]
    assert collector["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    allowed = [{p["port"] for p in rule["ports"]} for rule in collector["ingress"]]
    assert allowed == [
        {ports["otlp-grpc"], ports["otlp-http"]},
        {ports["metrics"], ports["telemetry"]},
    ]
    pod_agents = one(load(POD_NETWORK), "DaemonSet", "monlat-agent-pod-network")
    agent_labels = pod_agents["spec"]["template"]["metadata"]["labels"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": agent_labels[
        "app.kubernetes.io/name"]}}} in collector["ingress"][0]["from"]  # fmt: skip
    mesh = policies["monlat-agent-pod-network"]
    assert mesh["podSelector"]["matchLabels"].items() <= agent_labels.items()
    # No ports: ICMP cannot be named in a policy, and must pass between the agents.
    assert mesh["ingress"] == [{"from": [{"podSelector": mesh["podSelector"]}]}]


# Pod Security Standards as the built-in PodSecurity admission enforces them ("latest"): only the
# checks that bear on these manifests, not the whole plugin (k8s.io/pod-security-admission).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
# The "safe" sysctls baseline allows (and every kubelet accepts without --allowed-unsafe-sysctls).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def pod_security_violations(pod: dict[str, Any], level: str) -> list[str]:
    if level == "privileged":
        return []
    assert level in ("baseline", "restricted"), level
    found = [f"host namespaces ({flag}=true)" for flag in HOST_NAMESPACES if pod.get(flag)]
    pod_context = pod.get("securityContext") or {}
    found += [f"hostPath volume {v['name']}" for v in pod.get("volumes", []) if "hostPath" in v]
    found += [
        f"unsafe sysctl {sysctl['name']}"
        for sysctl in pod_context.get("sysctls", [])
        if sysctl["name"] not in SAFE_SYSCTLS
    ]
    for container in pod.get("initContainers", []) + pod["containers"]:
        name = container["name"]
        context = container.get("securityContext") or {}
        for port in container.get("ports", []):
            # The API server defaults hostPort to containerPort on a hostNetwork pod.
            default = port["containerPort"] if pod.get("hostNetwork") else 0
            if port.get("hostPort") or default:
                found.append(f"hostPort (container {name} uses {port.get('hostPort') or default})")
        if context.get("privileged"):
            found.append(f"privileged (container {name})")
        capabilities = context.get("capabilities") or {}
        allowed = BASELINE_CAPABILITIES if level == "baseline" else {"NET_BIND_SERVICE"}
        if extra := sorted(set(capabilities.get("add", [])) - allowed):
            found.append(f"non-default capabilities (container {name} adds {extra})")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp == "Unconfined":
            found.append(f"seccompProfile Unconfined (container {name})")
        if level == "restricted":
            if context.get("allowPrivilegeEscalation") is not False:
                found.append(f"allowPrivilegeEscalation != false (container {name})")
            if "ALL" not in capabilities.get("drop", []):
                found.append(f"unrestricted capabilities (container {name} must drop ALL)")
            if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
                found.append(f"runAsNonRoot != true (container {name})")
            if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
                found.append(f"runAsUser=0 (container {name})")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                found.append(f"seccompProfile not set (container {name})")
    return found


def test_pod_security_checker() -> None:
    full, container = agent("agents.yaml")
    pod = {"containers": [container], "securityContext": full["securityContext"]}
    assert pod_security_violations(pod, "restricted") == []
    assert pod_security_violations({**pod, "hostNetwork": True}, "baseline") == [
        "host namespaces (hostNetwork=true)",
        "hostPort (container agent uses 9464)",
    ]
    assert pod_security_violations({**pod, "hostNetwork": True}, "privileged") == []


@pytest.mark.parametrize("relative", [*AGENT_VARIANTS, "monlat.yaml", POD_NETWORK])
def test_pods_are_admitted_by_the_namespace_pod_security_level(relative: str) -> None:
    """The PodSecurity admission of namespace monlat must let our own pods in."""
    namespace = one(load("rbac.yaml"), "Namespace", "monlat")
    level = namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce")
    for owner, pod in pod_specs(load(relative)):
        violations = pod_security_violations(pod, level or "privileged")
        assert not violations, (
            f"{relative}: {owner} violates PodSecurity {level!r} enforced on namespace monlat "
            f"(rbac.yaml), so its pods would be refused: {'; '.join(violations)}"
        )


def test_collector_config_map_is_the_tested_config() -> None:
    objects = load("monlat.yaml")
    config_map = one(objects, "ConfigMap", "monlat-otelcol")
    expected = COLLECTOR_CONFIG.read_text(encoding="utf-8")
    assert config_map["data"]["config.yaml"] == expected
    template = one(objects, "Deployment", "monlat")["spec"]["template"]
    digest = hashlib.sha256(expected.encode()).hexdigest()
    assert template["metadata"]["annotations"]["monlat.dev/config-sha256"] == digest


# ---------------------------------------------------------------------------------------------
# The validator itself: it must catch what kubectl --validate=strict would refuse
# ---------------------------------------------------------------------------------------------

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
  namespace: demo-ns
  labels: {app: demo}
spec:
  replicas: 2
  selector:
    matchLabels: {app: demo}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 25%, maxSurge: 1}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: web
          image: example.org/web:1.2.3
          ports:
            - {name: http, containerPort: 8080}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 1, memory: 1.5Gi}
          securityContext:
            readOnlyRootFilesystem: true
"""


def check(registry: k8s_schema.SchemaRegistry, text: str) -> list[k8s_schema.ManifestError]:
    return k8s_schema.validate_text(text, "unit.yaml", registry)


def only(errors: list[k8s_schema.ManifestError]) -> k8s_schema.ManifestError:
    assert len(errors) == 1, "\n" + explain(errors)
    return errors[0]


def test_valid_deployment_passes(registry: k8s_schema.SchemaRegistry) -> None:
    assert check(registry, DEPLOYMENT) == []


def test_unknown_field_is_an_error(registry: k8s_schema.SchemaRegistry) -> None:
    text = DEPLOYMENT.replace("          securityContext:", "          securityContxt:")
    error = only(check(registry, text))
    assert error.path == "spec.template.spec.containers[0].securityContxt"
    assert 'unknown field "securityContxt"' in error.message
    assert (error.source, error.kind, error.name) == ("unit.yaml", "Deployment", "demo-ns/demo")
    assert error.line == text.splitlines().index("          securityContxt:") + 1
    assert str(error).startswith(f"unit.yaml:{error.line}: Deployment demo-ns/demo (document 1): ")
    assert "spec.template.spec.containers[0].securityContxt" in str(error)


def test_unknown_top_level_and_nested_fields(registry: k8s_schema.SchemaRegistry) -> None:
    text = DEPLOYMENT.replace("  replicas: 2", "  replica: 2").replace(
        "metadata:\n  name: demo", "metadata:\n  nmae: x\n  name: demo"
    )
    assert {error.path for error in check(registry, text)} == {"spec.replica", "metadata.nmae"}


def test_wrong_type_is_an_error(registry: k8s_schema.SchemaRegistry) -> None:
    error = only(check(registry, DEPLOYMENT.replace("replicas: 2", 'replicas: "one"')))
    assert error.path == "spec.replicas"
    assert error.message == 'expected integer, got string "one"'
    # A quoted number is a string too, as the API server sees it.
    assert (
        only(check(registry, DEPLOYMENT.replace("replicas: 2", 'replicas: "2"'))).path
        == "spec.replicas"
    )
    # ...and a number where a string is due (a label value) is an error.
    error = only(
        check(registry, DEPLOYMENT.replace("labels: {app: demo}\nspec", "labels: {app: 1}\nspec"))
    )
    assert error.path == "metadata.labels.app"


def test_missing_required_field_is_an_error(registry: k8s_schema.SchemaRegistry) -> None:
    error = only(
        check(
            registry,
            DEPLOYMENT.replace("        - name: web\n          image:", "        - image:"),
        )
    )
    assert error.path == "spec.template.spec.containers[0].name"
    assert error.message == 'missing required field "name"'
    error = only(
        check(registry, DEPLOYMENT.replace("  selector:\n    matchLabels: {app: demo}\n", ""))
    )
    assert error.path == "spec.selector"


def test_unknown_kind_and_api_version(registry: k8s_schema.SchemaRegistry) -> None:
    error = only(check(registry, DEPLOYMENT.replace("kind: Deployment", "kind: Deploymnet")))
    assert error.path == "kind"
    assert 'unknown kind "Deploymnet" for apiVersion "apps/v1"' in error.message
    assert "Deployment" in error.message  # lists what exists
    error = only(check(registry, DEPLOYMENT.replace("apps/v1", "apps/v1beta2")))
    assert 'unknown apiVersion "apps/v1beta2"' in error.message
    error = only(check(registry, "apiVersion: v1\nmetadata: {name: x}\n"))
    assert error.path == "kind"


def test_int_or_string(registry: k8s_schema.SchemaRegistry) -> None:
    for good in ("maxUnavailable: 0", "maxUnavailable: 10%", 'maxUnavailable: "3"'):
        assert check(registry, DEPLOYMENT.replace("maxUnavailable: 25%", good)) == [], good
    for bad in ("maxUnavailable: true", "maxUnavailable: 1.5", "maxUnavailable: [1]"):
        error = only(check(registry, DEPLOYMENT.replace("maxUnavailable: 25%", bad)))
        assert error.path == "spec.strategy.rollingUpdate.maxUnavailable", bad


def test_quantities(registry: k8s_schema.SchemaRegistry) -> None:
    for good in ("memory: 48M", "memory: 128974848", "memory: 1e3", "memory: 0.5Gi"):
        assert check(registry, DEPLOYMENT.replace("memory: 64Mi", good)) == [], good
    for bad in ("memory: 48MB", "memory: 64 Mi", "memory: lots", "memory: true"):
        error = only(check(registry, DEPLOYMENT.replace("memory: 64Mi", bad)))
        assert error.path == "spec.template.spec.containers[0].resources.requests.memory", bad


def test_enums_ranges_and_duplicates(registry: k8s_schema.SchemaRegistry) -> None:
    error = only(check(registry, DEPLOYMENT.replace("type: RollingUpdate", "type: Rolling")))
    assert error.path == "spec.strategy.type"
    port = "- {name: http, containerPort: 8080}"
    error = only(check(registry, DEPLOYMENT.replace("8080", "4294967296")))
    assert "int32" in error.message
    doubled = DEPLOYMENT.replace(port, f"{port}\n            - {{name: alt, containerPort: 8080}}")
    error = only(check(registry, doubled))
    assert error.path == "spec.template.spec.containers[0].ports[1]"
    assert "duplicate entry" in error.message
    # A different protocol is another entry of the same list-map.
    assert (
        check(
            registry,
            doubled.replace("alt, containerPort: 8080", "alt, containerPort: 8080, protocol: UDP"),
        )
        == []
    )
    error = only(
        check(registry, DEPLOYMENT.replace("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"))
    )
    assert error.path == "spec.replicas" and "duplicate field" in error.message


def test_container_resource_names(registry: k8s_schema.SchemaRegistry) -> None:
    error = only(
        check(registry, DEPLOYMENT.replace("requests: {cpu: 100m", "requests: {cpus: 100m"))
    )
    assert error.path == "spec.template.spec.containers[0].resources.requests.cpus"
    extended = DEPLOYMENT.replace("limits: {cpu: 1", "limits: {nvidia.com/gpu: 1, cpu: 1")
    assert check(registry, extended) == []


def test_null_is_an_absent_field(registry: k8s_schema.SchemaRegistry) -> None:
    assert check(registry, DEPLOYMENT.replace("  replicas: 2", "  replicas: null")) == []
    error = only(check(registry, DEPLOYMENT.replace("        - name: web", "        - name: null")))
    assert error.message == 'missing required field "name"'


def test_every_document_of_a_stream(registry: k8s_schema.SchemaRegistry) -> None:
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {n: 1}\n"
    stream = f"---\n# comment only\n---\n{DEPLOYMENT}---\n{config_map}"
    error = only(check(registry, stream))
    assert (error.kind, error.name, error.document, error.path) == ("ConfigMap", "c", 3, "data.n")
    error = only(check(registry, "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"))
    assert error.path == "metadata.name"


SERVICE_MONITOR = """\
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: m, namespace: n}
spec:
  selector: {matchLabels: {app: demo}}
  endpoints:
    - {port: metrics, interval: 15s, path: /metrics, scheme: http}
"""


def test_custom_resource_against_its_crd(registry: k8s_schema.SchemaRegistry) -> None:
    assert check(registry, SERVICE_MONITOR) == []
    errors = check(registry, SERVICE_MONITOR.replace("scheme: http", "scheme: htp, intervall: 1s"))
    assert {(e.path, e.message.split(":")[0]) for e in errors} == {
        ("spec.endpoints[0].scheme", 'unsupported value "htp"'),
        ("spec.endpoints[0].intervall", 'unknown field "intervall"'),
    }
    error = only(check(registry, SERVICE_MONITOR.replace("interval: 15s", "interval: 15")))
    assert error.path == "spec.endpoints[0].interval"
    error = only(
        check(registry, SERVICE_MONITOR.replace("namespace: n", "namespace: n, labelz: {}"))
    )
    assert error.path == "metadata.labelz"  # metadata is ObjectMeta, as the API server checks it
    error = only(
        check(registry, SERVICE_MONITOR.replace("kind: ServiceMonitor", "kind: ServiceMonitors"))
    )
    assert "ServiceMonitor" in error.message


def test_cache_is_used_offline(
    registry: k8s_schema.SchemaRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once cached, loading needs no Go and no network."""
    monkeypatch.setattr(k8s_schema, "find_go", lambda: None)
    again = k8s_schema.load_registry()
    assert again.openapi_dir == registry.openapi_dir
    assert again.openapi_dir == k8s_schema.cache_root() / k8s_schema.K8S_VERSION
    assert (again.openapi_dir / "apis__apps__v1_openapi.json").is_file()


def test_no_go_and_no_cache_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONLAT_CACHE", str(tmp_path))
    monkeypatch.setattr(k8s_schema, "find_go", lambda: None)
    with pytest.raises(k8s_schema.GoNotFoundError, match="no Go toolchain"):
        k8s_schema.ensure_source(k8s_schema.K8S_SOURCE)


def test_damaged_cache_is_refetched_not_trusted(
    tmp_path: Path, registry: k8s_schema.SchemaRegistry
) -> None:
    (crd_dir,) = registry.crd_dirs
    copy = tmp_path / crd_dir.name
    shutil.copytree(crd_dir, copy)
    assert k8s_schema._cached(copy, k8s_schema.CRD_SOURCE)
    with (copy / "index.json").open("a") as handle:
        handle.write(" ")
    assert not k8s_schema._cached(copy, k8s_schema.CRD_SOURCE)


def test_format_path() -> None:
    assert k8s_schema.format_path(()) == "(root)"
    assert k8s_schema.format_path(("spec", "containers", 0, "name")) == "spec.containers[0].name"
    assert k8s_schema.format_path(("metadata", "labels", "app.kubernetes.io/name")) == (
        'metadata.labels["app.kubernetes.io/name"]'
    )


# ---------------------------------------------------------------------------------------------
# The pod-network agents
# ---------------------------------------------------------------------------------------------


def test_pod_network_agent_needs_no_capability_and_passes_restricted() -> None:
    objects = load(POD_NETWORK)
    daemonset = one(objects, "DaemonSet", "monlat-agent-pod-network")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not pod.get("hostNetwork") and pod.get("dnsPolicy", "ClusterFirst") == "ClusterFirst"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod_security_violations(pod, "restricted") == []
    # The safe sysctl opens the unprivileged ICMP socket to the agent's own group.
    (sysctl,) = pod["securityContext"]["sysctls"]
    low, high = (int(v) for v in sysctl["value"].split())
    assert sysctl["name"] == "net.ipv4.ping_group_range"
    assert low <= pod["securityContext"]["runAsGroup"] <= high
    env = env_of(container)
    assert env["MONLAT_DISCOVERY"]["value"] == "pods"
    assert env["MONLAT_SOCKET"]["value"] == "dgram"
    assert env["MONLAT_NETWORK_LABEL"]["value"] == "pod"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # The selector finds exactly these pods, and not the host-network agents.
    key, _, value = env["MONLAT_POD_SELECTOR"]["value"].partition("=")
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert labels[key] == value
    host_labels = one(load("agents.yaml"), "DaemonSet", "monlat-agent")["spec"]["template"]
    assert host_labels["metadata"]["labels"].get(key) != value
    assert pod["serviceAccountName"] == "monlat-agent-pod-network"


def test_pod_network_role_reads_pods_in_its_namespace_only() -> None:
    objects = load(POD_NETWORK)
    role = one(objects, "Role", "monlat-agent-pod-network")
    assert role["metadata"]["namespace"] == "monlat"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    binding = one(objects, "RoleBinding", "monlat-agent-pod-network")
    assert binding["roleRef"]["name"] == "monlat-agent-pod-network"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "monlat-agent-pod-network", "namespace": "monlat"}
    ]
