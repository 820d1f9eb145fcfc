"""Offline, strict validation of Kubernetes manifests against the Kubernetes OpenAPI v3 schemas.

Where the schemas come from
    The OpenAPI v3 documents that Kubernetes publishes in its source tree
    (``api/openapi-spec/v3/*.json``), taken from the ``k8s.io/kubernetes`` Go module at
    :data:`K8S_VERSION` through the Go module proxy (``go mod download``), and the
    ``ServiceMonitor`` (and the other ``monitoring.coreos.com``) CRDs from the
    ``github.com/prometheus-operator/prometheus-operator`` module at :data:`CRD_VERSION`.
    Each module zip is checked against a pinned ``h1:`` hash (computed here, independently of
    the Go tool), the needed files are extracted into
    ``${MONLAT_CACHE:-~/.cache/monlat}/k8s-openapi/`` and every later run reads only that
    cache: no network. ``python3 -m tests.support.k8s_schema fetch`` (or
    ``scripts/fetch-k8s-schemas.sh``) fills the cache ahead of time.

What is checked, for each object (picked by apiVersion/kind through the schemas'
``x-kubernetes-group-version-kind``, ``$ref`` and ``allOf`` resolved)
    - unknown fields are errors (as ``kubectl apply --validate=strict`` / kubeconform -strict),
      except under ``x-kubernetes-preserve-unknown-fields`` and free-form objects (a core
      schema ``type: object`` with no properties, such as RawExtension); in CRD schemas,
      which are structural, such an object takes no fields at all;
    - duplicate keys in a YAML mapping (the API server's strict field validation rejects them);
    - required fields, types (string, integer with int32/int64 ranges, number, boolean, object,
      array), ``additionalProperties`` maps, ``enum``, ``pattern``, min/max (length, items,
      value), ``oneOf``/``anyOf``, ``x-kubernetes-int-or-string`` and ``format: int-or-string``;
    - ``Quantity`` strings against the resource.Quantity grammar (``48MB`` is rejected,
      ``48M``/``48Mi`` pass); ``Time`` as an RFC 3339 date-time;
    - list-type ``map`` keys and ``set`` items unique (two containers with one name, two ports
      with the same containerPort/protocol);
    - ``metadata.name`` (or ``generateName``) present, as ``kubectl apply`` needs.

What is not checked
    - The published core schemas carry no ``enum``: a few well-known value sets are added
      from the API server's validation code in :data:`SUPPLEMENTARY_ENUMS` (and the container
      resource names in :data:`RESOURCE_NAME_RULES`), and no others;
    - ``x-kubernetes-validations`` (CEL rules in CRDs) are not evaluated;
    - the rest of the API server's semantic validation (name formats, cross-field rules).

A ``null`` value is treated as an absent field, as the API server's decoder does (so a
required field set to null is reported as missing).

Why this stays next to the real API server (tests/cluster, server-side dry run with strict
field validation), decided 2026-12-03: it runs in the unit tier, without root and without the
control-plane build (kube-apiserver and etcd from the Go module proxy, minutes when cold), so a
bad manifest fails in seconds (tests/unit/test_manifests.py: 57 checks, each under a second);
it names every problem of an object with its path; and it checks the prometheus-operator
objects (ServiceMonitor, PrometheusRule) against the pinned CRDs without installing them. The
API server stays the authority on everything listed under "What is not checked".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Pinned sources. Bump the version and the h1 together; the h1 is what `go mod download -json`
# prints as "Sum" (and what go.sum would record) for that module version.
K8S_MODULE = "k8s.io/kubernetes"
K8S_VERSION = "v1.32.13"
K8S_MODULE_SUM = "h1:5TGYdZ6YZqdp6h/Rp1vX/4TIoybMPdgv97LCZCtPuNQ="

CRD_MODULE = "github.com/prometheus-operator/prometheus-operator"
CRD_VERSION = "v0.85.0"
CRD_MODULE_SUM = "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

# The published OpenAPI documents list no enum values (only prose). These value sets come from
# the API server's validation (k8s.io/kubernetes/pkg/apis/core/validation and friends) at v1.32;
# "" appears where the server accepts it (the field is then defaulted or means "any").
SUPPLEMENTARY_ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("io.k8s.api.core.v1.Container", "imagePullPolicy"): ("Always", "IfNotPresent", "Never", ""),
    ("io.k8s.api.core.v1.Container", "terminationMessagePolicy"): (
        "File",
        "FallbackToLogsOnError",
        "",
    ),
    ("io.k8s.api.core.v1.ContainerPort", "protocol"): ("TCP", "UDP", "SCTP", ""),
    ("io.k8s.api.core.v1.ServicePort", "protocol"): ("TCP", "UDP", "SCTP", ""),
    ("io.k8s.api.core.v1.ServiceSpec", "type"): (
        "ClusterIP",
        "NodePort",
        "LoadBalancer",
        "ExternalName",
        "",
    ),
    ("io.k8s.api.core.v1.PodSpec", "dnsPolicy"): (
        "ClusterFirst",
        "ClusterFirstWithHostNet",
        "Default",
        "None",
        "",
    ),
    ("io.k8s.api.core.v1.PodSpec", "restartPolicy"): ("Always", "OnFailure", "Never", ""),
    ("io.k8s.api.core.v1.Toleration", "operator"): ("Exists", "Equal", ""),
    ("io.k8s.api.core.v1.Toleration", "effect"): (
        "NoSchedule",
        "PreferNoSchedule",
        "NoExecute",
        "",
    ),
    ("io.k8s.api.core.v1.SeccompProfile", "type"): ("RuntimeDefault", "Unconfined", "Localhost"),
    ("io.k8s.api.core.v1.HTTPGetAction", "scheme"): ("HTTP", "HTTPS", ""),
    ("io.k8s.api.core.v1.NodeSelectorRequirement", "operator"): (
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "Gt",
        "Lt",
    ),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", "operator"): (
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
    ),
    ("io.k8s.api.apps.v1.DaemonSetUpdateStrategy", "type"): ("RollingUpdate", "OnDelete", ""),
    ("io.k8s.api.apps.v1.DeploymentStrategy", "type"): ("RollingUpdate", "Recreate", ""),
    ("io.k8s.api.rbac.v1.Subject", "kind"): ("ServiceAccount", "User", "Group"),
}


# Names the API server accepts as container resource names (requests/limits keys): the standard
# ones, hugepages-<size>, or a domain-prefixed extended resource such as nvidia.com/gpu.
_CONTAINER_RESOURCES = re.compile(r"cpu|memory|ephemeral-storage|hugepages-.+|[^/]+\.[^/]+/[^/]+")
RESOURCE_NAME_RULES: dict[tuple[str, str], re.Pattern[str]] = {
    ("io.k8s.api.core.v1.ResourceRequirements", "requests"): _CONTAINER_RESOURCES,
    ("io.k8s.api.core.v1.ResourceRequirements", "limits"): _CONTAINER_RESOURCES,
}

# --------------------------------------------------------------------------------------------
# Fetching and caching
# --------------------------------------------------------------------------------------------


class SchemaFetchError(RuntimeError):
    """The schemas are not cached and could not be fetched."""


class GoNotFoundError(SchemaFetchError):
    """No Go toolchain to fetch the schemas with (and nothing cached)."""


@dataclass(frozen=True)
class ModuleSource:
    """Files taken from one Go module version, cached under ``cache_root()/name``."""

    name: str
    module: str
    version: str
    h1: str
    subdir: str  # folder inside the module whose files are taken
    suffix: str  # ...ending with this
    convert_crds: bool = False  # turn CRD YAML files into per-CRD JSON plus an index


K8S_SOURCE = ModuleSource(
    name=K8S_VERSION,
    module=K8S_MODULE,
    version=K8S_VERSION,
    h1=K8S_MODULE_SUM,
    subdir="api/openapi-spec/v3/",
    suffix="_openapi.json",
)
CRD_SOURCE = ModuleSource(
    name=f"crds-prometheus-operator-{CRD_VERSION}",
    module=CRD_MODULE,
    version=CRD_VERSION,
    h1=CRD_MODULE_SUM,
    subdir="example/prometheus-operator-crd/",
    suffix=".yaml",
    convert_crds=True,
)
SOURCES = (K8S_SOURCE, CRD_SOURCE)

_MARKER = "SOURCE.json"


def cache_root() -> Path:
    base = os.environ.get("MONLAT_CACHE") or str(Path.home() / ".cache" / "monlat")
    return Path(base) / "k8s-openapi"


def find_go() -> str | None:
    """The ``go`` command: PATH, then $GOROOT/bin, then the usual /usr/local/go."""
    found = shutil.which("go")
    if found:
        return found
    candidates = [Path(os.environ["GOROOT"]) / "bin" / "go"] if os.environ.get("GOROOT") else []
    candidates.append(Path("/usr/local/go/bin/go"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def module_zip_h1(zip_path: Path) -> str:
    """The Go ``h1:`` hash of a module zip (golang.org/x/mod/sumdb/dirhash.HashZip)."""
    lines = []
    with zipfile.ZipFile(zip_path) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith("/"):
                continue
            digest = hashlib.sha256(archive.read(name)).hexdigest()
            lines.append(f"{digest}  {name}\n")
    summary = "".join(lines).encode()
    return "h1:" + base64.b64encode(hashlib.sha256(summary).digest()).decode()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(dest: Path, source: ModuleSource) -> bool:
    """True when ``dest`` holds a complete, intact extraction of ``source``."""
    try:
        marker = json.loads((dest / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (marker.get("module"), marker.get("version"), marker.get("h1")) != (
        source.module,
        source.version,
        source.h1,
    ):
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    try:
        return all(_sha256(dest / name) == digest for name, digest in files.items())
    except OSError:
        return False


def _go_mod_download(go: str, source: ModuleSource, workdir: Path) -> Path:
    """Download the module zip into a private module cache under ``workdir``; its path."""
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(workdir / "modcache"),
        GOFLAGS="-mod=mod",
        GOWORK="off",
        GO111MODULE="on",
        GOTOOLCHAIN="local",
        # The zip is verified below against the pinned h1, so no checksum-database lookup.
        GONOSUMDB=source.module,
    )
    command = [go, "mod", "download", "-json", f"{source.module}@{source.version}"]
    try:
        done = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SchemaFetchError(f"{' '.join(command)}: {exc}") from exc
    try:
        info = json.loads(done.stdout)
    except ValueError:
        info = {}
    if done.returncode != 0 or info.get("Error") or not info.get("Zip"):
        detail = info.get("Error") or done.stderr.strip() or done.stdout.strip()
        raise SchemaFetchError(
            f"{' '.join(command)} failed (exit {done.returncode}): {detail}\n"
            "It needs the Go module proxy (GOPROXY) to be reachable once; later runs use the cache."
        )
    return Path(info["Zip"])


def _make_writable(tree: Path) -> None:
    """The Go module cache is read-only; let rmtree remove it."""
    for root, dirs, _files in os.walk(tree):
        for name in dirs:
            (Path(root) / name).chmod(0o755)


def _extract(zip_path: Path, source: ModuleSource, staging: Path) -> list[str]:
    prefix = f"{source.module}@{source.version}/{source.subdir}"
    names = []
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            if not member.startswith(prefix) or not member.endswith(source.suffix):
                continue
            relative = member[len(prefix) :]
            if "/" in relative:
                continue
            (staging / relative).write_bytes(archive.read(member))
            names.append(relative)
    if not names:
        raise SchemaFetchError(
            f"{source.module}@{source.version} has no {source.subdir}*{source.suffix}"
        )
    return names


def _convert_crds(staging: Path, yaml_names: list[str], source: ModuleSource) -> list[str]:
    """Per-CRD JSON (``group_plural.json``) and ``index.json``: {apiVersion: {kind: file}}."""
    index: dict[str, dict[str, str]] = {}
    written = []
    for name in sorted(yaml_names):
        path = staging / name
        for crd in yaml.load_all(path.read_text(encoding="utf-8"), Loader=ManifestLoader):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            out_name = f"{spec['group']}_{spec['names']['plural']}.json"
            versions = {
                version["name"]: version["schema"]["openAPIV3Schema"]
                for version in spec["versions"]
                if version.get("served", True) and "schema" in version
            }
            document = {
                "group": spec["group"],
                "kind": spec["names"]["kind"],
                "scope": spec.get("scope", "Namespaced"),
                "source": f"{source.module}@{source.version}/{source.subdir}{name}",
                "versions": versions,
            }
            (staging / out_name).write_text(json.dumps(document), encoding="utf-8")
            written.append(out_name)
            for version in versions:
                index.setdefault(f"{spec['group']}/{version}", {})[spec["names"]["kind"]] = out_name
        path.unlink()
    (staging / "index.json").write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
    return [*written, "index.json"]


def ensure_source(source: ModuleSource, *, log: bool = False) -> Path:
    """The cache folder of ``source``, fetching it first if it is missing or damaged."""
    dest = cache_root() / source.name
    if _cached(dest, source):
        return dest
    go = find_go()
    if go is None:
        raise GoNotFoundError(
            f"Kubernetes schemas are not cached in {dest} and no Go toolchain ('go') is installed "
            "to fetch them from the Go module proxy"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="monlat-gomod-") as tmp:
        workdir = Path(tmp)
        try:
            zip_path = _go_mod_download(go, source, workdir)
            got = module_zip_h1(zip_path)
            if got != source.h1:
                raise SchemaFetchError(
                    f"{source.module}@{source.version}: zip hash {got} != pinned {source.h1}"
                )
            zip_bytes = zip_path.stat().st_size
            staging = Path(tempfile.mkdtemp(prefix=f".{source.name}.", dir=dest.parent))
            try:
                names = _extract(zip_path, source, staging)
                if source.convert_crds:
                    names = _convert_crds(staging, names, source)
                marker = {
                    "module": source.module,
                    "version": source.version,
                    "h1": source.h1,
                    "zip_bytes": zip_bytes,
                    "fetch_seconds": round(time.monotonic() - started, 2),
                    "files": {name: _sha256(staging / name) for name in sorted(names)},
                }
                (staging / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
                if dest.exists():
                    shutil.rmtree(dest)
                try:
                    staging.rename(dest)
                except OSError:
                    if not _cached(dest, source):  # not a concurrent run that got there first
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            _make_writable(workdir)
    if log:
        print(
            f"fetched {source.module}@{source.version} ({zip_bytes / 1e6:.1f} MB zip) "
            f"in {time.monotonic() - started:.1f}s into {dest}",
            file=sys.stderr,
        )
    return dest


# --------------------------------------------------------------------------------------------
# YAML loading (as kubectl reads it) with line numbers
# --------------------------------------------------------------------------------------------

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader, but with timestamps kept as strings and ``=`` as a plain string.

    kubectl converts YAML to JSON (sigs.k8s.io/yaml), where an unquoted date stays a string;
    PyYAML would make it a datetime.
    """


def _construct_str(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_str)
ManifestLoader.add_constructor("tag:yaml.org,2002:value", _construct_str)


@dataclass
class Document:
    index: int  # 1-based position in its stream
    data: Any
    node: yaml.Node | None


def load_documents(text: str) -> list[Document]:
    """Every non-empty document of a YAML stream, with its node tree (for line numbers)."""
    loader = ManifestLoader(text)
    documents = []
    try:
        position = 0
        while loader.check_node():
            node = loader.get_node()
            position += 1
            data = loader.construct_document(node)
            if data is not None:
                documents.append(Document(position, data, node))
    finally:
        loader.dispose()
    return documents


def _node_at(node: yaml.Node | None, path: Sequence[str | int]) -> yaml.Node | None:
    """The deepest node along ``path`` (the key's node for the last mapping step)."""
    for position, part in enumerate(path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    node = key if position == len(path) - 1 else value
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _duplicate_keys(node: yaml.Node, path: tuple[str | int, ...]) -> Iterator[Issue]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                yield Issue((*path, name), f'duplicate field "{name}"', key.start_mark.line + 1)
            seen.add(name)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, position))


# --------------------------------------------------------------------------------------------
# Schema registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSchema:
    """The schema of one apiVersion/kind, and where its ``$ref``s resolve."""

    schema: Mapping[str, Any]
    components: Mapping[str, Any]
    structural: bool  # a CRD schema: objects without properties take no fields
    origin: str


class SchemaRegistry:
    """apiVersion/kind -> schema, from the cached OpenAPI documents and CRDs (loaded lazily)."""

    def __init__(self, openapi_dir: Path, crd_dirs: Sequence[Path] = ()) -> None:
        self.openapi_dir = openapi_dir
        self.crd_dirs = list(crd_dirs)
        self.k8s_version = openapi_dir.name
        self._documents: dict[str, dict[str, Any] | None] = {}
        self._gvks: dict[str, dict[str, str]] = {}
        self._validators: dict[tuple[int, bool], SchemaValidator] = {}
        self._crd_index: dict[str, dict[str, Path]] = {}
        for crd_dir in self.crd_dirs:
            index = json.loads((crd_dir / "index.json").read_text(encoding="utf-8"))
            for api_version, kinds in index.items():
                for kind, name in kinds.items():
                    self._crd_index.setdefault(api_version, {})[kind] = crd_dir / name

    @staticmethod
    def _file_name(api_version: str) -> str:
        if "/" not in api_version:
            return f"api__{api_version}_openapi.json"
        group, version = api_version.split("/", 1)
        return f"apis__{group}__{version}_openapi.json"

    def _document(self, api_version: str) -> dict[str, Any] | None:
        if api_version not in self._documents:
            path = self.openapi_dir / self._file_name(api_version)
            if "/" in api_version.split("/", 1)[-1] or not path.is_file():
                self._documents[api_version] = None
            else:
                self._documents[api_version] = json.loads(path.read_text(encoding="utf-8"))
        return self._documents[api_version]

    def _gvk_index(self, api_version: str) -> dict[str, str]:
        if api_version not in self._gvks:
            document = self._document(api_version)
            schemas = document.get("components", {}).get("schemas", {}) if document else {}
            group, _, version = api_version.rpartition("/")
            index: dict[str, str] = {}
            for name, schema in schemas.items():
                for gvk in schema.get("x-kubernetes-group-version-kind", ()):
                    if gvk.get("group", "") == group and gvk.get("version") == version:
                        index.setdefault(gvk["kind"], name)
            self._gvks[api_version] = index
        return self._gvks[api_version]

    def kinds(self, api_version: str) -> list[str]:
        return sorted({*self._gvk_index(api_version), *self._crd_index.get(api_version, {})})

    def api_versions(self) -> list[str]:
        names = [p.name for p in self.openapi_dir.glob("api*__*_openapi.json")]
        versions = []
        for name in names:
            parts = name.removesuffix("_openapi.json").split("__")
            versions.append(parts[1] if parts[0] == "api" else f"{parts[1]}/{parts[2]}")
        return sorted({*versions, *self._crd_index})

    def lookup(self, api_version: str, kind: str) -> ObjectSchema | None:
        name = self._gvk_index(api_version).get(kind)
        if name is not None:
            document = self._document(api_version)
            assert document is not None
            components = document["components"]["schemas"]
            return ObjectSchema(
                components[name], components, False, f"Kubernetes {self.k8s_version} {name}"
            )
        crd_path = self._crd_index.get(api_version, {}).get(kind)
        if crd_path is None:
            return None
        crd = json.loads(crd_path.read_text(encoding="utf-8"))
        schema = dict(crd["versions"][api_version.rpartition("/")[2]])
        properties = dict(schema.get("properties", {}))
        # The API server validates a custom resource's metadata as ObjectMeta.
        properties["metadata"] = {"$ref": f"#/components/schemas/{OBJECT_META}"}
        schema["properties"] = properties
        core = self._document("v1")
        components = core["components"]["schemas"] if core else {}
        return ObjectSchema(schema, components, True, f"CRD {crd['source']}")

    def validator(self, found: ObjectSchema) -> SchemaValidator:
        """One validator per component set, so resolved ``$ref``s are shared between objects."""
        key = (id(found.components), found.structural)
        if key not in self._validators:
            self._validators[key] = SchemaValidator(found.components, structural=found.structural)
        return self._validators[key]


def load_registry(*, log: bool = False) -> SchemaRegistry:
    """Fetch (first use only) and open the pinned Kubernetes schemas and CRDs."""
    openapi_dir = ensure_source(K8S_SOURCE, log=log)
    crd_dir = ensure_source(CRD_SOURCE, log=log)
    return SchemaRegistry(openapi_dir, [crd_dir])


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    path: tuple[str | int, ...]
    message: str
    line: int | None = None


def format_path(path: Sequence[str | int]) -> str:
    """``spec.template.spec.containers[0].name``; odd keys as ``labels["app.kubernetes.io/x"]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "(root)"


@dataclass(frozen=True)
class ManifestError:
    source: str
    document: int
    kind: str
    name: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        what = f"{self.kind} {self.name} (document {self.document})"
        return f"{where}: {what}: {self.path}: {self.message}"


_QUANTITY = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_REFS = "x-monlat-refs"
_EMBEDDED_FIELDS = ("apiVersion", "kind", "metadata")
_NO_SCHEMA: Mapping[str, Any] = {}
_JSON_TYPES = {
    "object": "object",
    "array": "array",
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _matches_type(value: Any, wanted: str) -> bool:
    if wanted == "integer":
        return _is_int(value)
    if wanted == "number":
        return _is_int(value) or isinstance(value, float)
    return _type_name(value) == wanted


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class SchemaValidator:
    """Validates a decoded value against an OpenAPI v3 schema, collecting every issue."""

    def __init__(self, components: Mapping[str, Any], *, structural: bool = False) -> None:
        self.components = components
        self.structural = structural
        # id(schema) -> (schema, merged); the schema is kept so that its id stays unique.
        self._effective: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}

    # -- schema resolution --------------------------------------------------------------------

    def effective(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """``schema`` with its ``$ref`` and ``allOf`` merged in (``x-monlat-refs``: the refs)."""
        key = id(schema)
        cached = self._effective.get(key)
        if cached is not None and cached[0] is schema:
            return cached[1]
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        merged[_REFS] = ()
        parts: list[dict[str, Any]] = []
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            target = self.components.get(name)
            if target is None:
                raise KeyError(f"unresolvable $ref {ref}")
            resolved = dict(self.effective(target))
            resolved[_REFS] = (*resolved[_REFS], name)
            parts.append(resolved)
        parts.extend(self.effective(sub) for sub in schema.get("allOf", ()))
        for part in parts:
            self._merge(merged, part)
        self._effective[key] = (schema, merged)
        return merged

    @staticmethod
    def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
        for key, value in other.items():
            if key == "properties":
                properties = dict(into.get("properties", {}))
                for name, sub in value.items():
                    properties[name] = (
                        {"allOf": [properties[name], sub]} if name in properties else sub
                    )
                into["properties"] = properties
            elif key == "required":
                into["required"] = [*into.get("required", ()), *value]
            elif key == _REFS:
                into[_REFS] = (*into.get(_REFS, ()), *value)
            elif key == "description":
                continue
            else:
                into.setdefault(key, value)

    # -- validation ---------------------------------------------------------------------------

    def validate(self, value: Any, schema: Mapping[str, Any]) -> list[Issue]:
        issues: list[Issue] = []
        self._check(value, schema, (), issues)
        return issues

    def _check(
        self,
        value: Any,
        schema: Mapping[str, Any],
        path: tuple[str | int, ...],
        issues: list[Issue],
    ) -> None:
        if value is None:  # the API server decodes null as "not set"
            return
        eff = self.effective(schema)
        refs = eff[_REFS]
        if QUANTITY in refs:
            self._check_quantity(value, path, issues)
            return
        if eff.get("x-kubernetes-int-or-string") or eff.get("format") == "int-or-string":
            if not (_is_int(value) or isinstance(value, str)):
                issues.append(
                    Issue(
                        path,
                        f"expected an integer or a string, got {_type_name(value)} {_short(value)}",
                    )
                )
                return
            self._check_scalar(value, eff, path, issues)
            return
        for combinator in ("oneOf", "anyOf"):
            if combinator in eff and not self._check_branches(value, eff, combinator, path, issues):
                return
        wanted = eff.get("type")
        if wanted is None:
            wanted = "object" if "properties" in eff or "additionalProperties" in eff else None
        if wanted is None:
            self._check_scalar(value, eff, path, issues)
            return  # no type: anything (e.g. apiextensions JSON)
        if wanted not in _JSON_TYPES:
            raise ValueError(f"unsupported schema type {wanted!r} at {format_path(path)}")
        if not _matches_type(value, wanted):
            issues.append(
                Issue(path, f"expected {wanted}, got {_type_name(value)} {_short(value)}")
            )
            return
        if wanted == "object":
            self._check_object(value, eff, path, issues)
        elif wanted == "array":
            self._check_array(value, eff, path, issues)
        else:
            self._check_scalar(value, eff, path, issues)

    def _check_branches(
        self,
        value: Any,
        eff: Mapping[str, Any],
        combinator: str,
        path: tuple[str | int, ...],
        issues: list[Issue],
    ) -> bool:
        results = [self.validate(value, branch) for branch in eff[combinator]]
        passed = sum(1 for result in results if not result)
        if passed >= 1 and (combinator == "anyOf" or passed == 1):
            return True
        if passed > 1:
            issues.append(
                Issue(path, f"matches {passed} of the oneOf alternatives, not exactly one")
            )
            return False
        reasons = "; ".join(
            f"{format_path(first.path) if first.path else 'value'}: {first.message}"
            for first in (result[0] for result in results)
        )
        issues.append(Issue(path, f"matches none of the {combinator} alternatives ({reasons})"))
        return False

    def _check_quantity(self, value: Any, path: tuple[str | int, ...], issues: list[Issue]) -> None:
        if _is_int(value) or isinstance(value, float):
            return
        if not isinstance(value, str):
            issues.append(
                Issue(path, f"expected a quantity (string or number), got {_type_name(value)}")
            )
        elif not _QUANTITY.fullmatch(value):
            issues.append(
                Issue(path, f"{_short(value)} is not a valid quantity (e.g. 100m, 1.5, 64Mi, 1G)")
            )

    def _check_object(
        self,
        value: dict[Any, Any],
        eff: Mapping[str, Any],
        path: tuple[str | int, ...],
        issues: list[Issue],
    ) -> None:
        properties: Mapping[str, Any] = eff.get("properties", {})
        additional = eff.get("additionalProperties")
        preserve = bool(eff.get("x-kubernetes-preserve-unknown-fields"))
        free_form = not properties and additional is None and not self.structural
        owner = eff[_REFS][-1] if eff[_REFS] else None
        # An embedded resource (CRDs) implicitly takes apiVersion, kind and metadata.
        implicit = _EMBEDDED_FIELDS if eff.get("x-kubernetes-embedded-resource") else ()
        for key, item in value.items():
            where = (*path, key if isinstance(key, str) else str(key))
            if not isinstance(key, str):
                issues.append(Issue(where, f"field names must be strings, got {_type_name(key)}"))
                continue
            if key in properties:
                self._check(item, properties[key], where, issues)
                allowed = SUPPLEMENTARY_ENUMS.get((owner, key)) if owner else None
                if allowed is not None and item is not None and item not in allowed:
                    shown = ", ".join(repr(v) for v in allowed if v)
                    issues.append(
                        Issue(where, f"unsupported value {_short(item)}: expected one of {shown}")
                    )
                names = RESOURCE_NAME_RULES.get((owner, key)) if owner else None
                if names is not None and isinstance(item, dict):
                    for name in item:
                        if not (isinstance(name, str) and names.fullmatch(name)):
                            message = f"unknown resource name {_short(name)} (cpu, memory, ...)"
                            issues.append(Issue((*where, str(name)), message))
            elif isinstance(additional, dict):
                self._check(item, additional, where, issues)
            elif additional is True or preserve or free_form or key in implicit:
                continue
            else:
                issues.append(Issue(where, f'unknown field "{key}"'))
        for name in dict.fromkeys(eff.get("required", ())):
            if value.get(name) is None:
                issues.append(Issue((*path, name), f'missing required field "{name}"'))
        if "minProperties" in eff and len(value) < eff["minProperties"]:
            issues.append(Issue(path, f"needs at least {eff['minProperties']} fields"))
        if "maxProperties" in eff and len(value) > eff["maxProperties"]:
            issues.append(Issue(path, f"takes at most {eff['maxProperties']} fields"))

    def _check_array(
        self,
        value: list[Any],
        eff: Mapping[str, Any],
        path: tuple[str | int, ...],
        issues: list[Issue],
    ) -> None:
        items = eff.get("items")
        if isinstance(items, dict):
            for position, item in enumerate(value):
                self._check(item, items, (*path, position), issues)
        if "minItems" in eff and len(value) < eff["minItems"]:
            issues.append(Issue(path, f"needs at least {eff['minItems']} items, has {len(value)}"))
        if "maxItems" in eff and len(value) > eff["maxItems"]:
            issues.append(Issue(path, f"takes at most {eff['maxItems']} items, has {len(value)}"))
        list_type = eff.get("x-kubernetes-list-type")
        if list_type == "map" and isinstance(items, dict):
            keys = eff.get("x-kubernetes-list-map-keys", ())
            key_schemas = self.effective(items).get("properties", {})
            seen: dict[str, int] = {}
            for position, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                identity = tuple(
                    item.get(k)
                    if item.get(k) is not None
                    else self.effective(key_schemas.get(k, _NO_SCHEMA)).get("default")
                    for k in keys
                )
                token = json.dumps(identity, sort_keys=True, default=str)
                if token in seen:
                    shown = ", ".join(
                        f"{k}={_short(v)}" for k, v in zip(keys, identity, strict=True)
                    )
                    issues.append(
                        Issue(
                            (*path, position),
                            f"duplicate entry ({shown}) already at [{seen[token]}]",
                        )
                    )
                else:
                    seen[token] = position
        elif list_type == "set" or eff.get("uniqueItems"):
            seen_values: list[Any] = []
            for position, item in enumerate(value):
                if item in seen_values:
                    issues.append(
                        Issue((*path, position), f"duplicate item {_short(item)} in a set")
                    )
                else:
                    seen_values.append(item)

    def _check_scalar(
        self,
        value: Any,
        eff: Mapping[str, Any],
        path: tuple[str | int, ...],
        issues: list[Issue],
    ) -> None:
        if "enum" in eff and value not in eff["enum"]:
            shown = ", ".join(_short(v) for v in eff["enum"])
            issues.append(
                Issue(path, f"unsupported value {_short(value)}: expected one of {shown}")
            )
        fmt = eff.get("format")
        if _is_int(value) and fmt in _INT_RANGES:
            low, high = _INT_RANGES[fmt]
            if not low <= value <= high:
                issues.append(Issue(path, f"{value} does not fit in {fmt}"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_bounds(value, eff, path, issues)
        if isinstance(value, str):
            if fmt == "date-time" and not _DATE_TIME.fullmatch(value):
                issues.append(Issue(path, f"{_short(value)} is not an RFC 3339 date-time"))
            if "pattern" in eff and not re.search(eff["pattern"], value):
                issues.append(Issue(path, f"{_short(value)} does not match {eff['pattern']}"))
            if "minLength" in eff and len(value) < eff["minLength"]:
                issues.append(Issue(path, f"shorter than {eff['minLength']} characters"))
            if "maxLength" in eff and len(value) > eff["maxLength"]:
                issues.append(Issue(path, f"longer than {eff['maxLength']} characters"))

    @staticmethod
    def _check_bounds(
        value: float,
        eff: Mapping[str, Any],
        path: tuple[str | int, ...],
        issues: list[Issue],
    ) -> None:
        if "minimum" in eff:
            low = eff["minimum"]
            if value < low or (eff.get("exclusiveMinimum") is True and value == low):
                issues.append(Issue(path, f"{value} is below the minimum {low}"))
        if "maximum" in eff:
            high = eff["maximum"]
            if value > high or (eff.get("exclusiveMaximum") is True and value == high):
                issues.append(Issue(path, f"{value} is above the maximum {high}"))


def validate_object(obj: Any, registry: SchemaRegistry) -> list[Issue]:
    """Every issue of one decoded manifest object, paths relative to the object."""
    if not isinstance(obj, dict):
        return [Issue((), f"a manifest must be a mapping, got {_type_name(obj)}")]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        return [Issue(("apiVersion",), 'missing or invalid "apiVersion"')]
    if not isinstance(kind, str) or not kind:
        return [Issue(("kind",), 'missing or invalid "kind"')]
    found = registry.lookup(api_version, kind)
    if found is None:
        known = registry.kinds(api_version)
        if known:
            message = (
                f'unknown kind "{kind}" for apiVersion "{api_version}" '
                f"(Kubernetes {registry.k8s_version} has: {', '.join(known)})"
            )
        else:
            message = (
                f'unknown apiVersion "{api_version}" (kind "{kind}"): not in Kubernetes '
                f"{registry.k8s_version} nor in the CRDs loaded"
            )
        return [Issue(("kind",), message)]
    issues = registry.validator(found).validate(obj, found.schema)
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not (metadata.get("name") or metadata.get("generateName")):
        issues.append(
            Issue(("metadata", "name"), 'missing "metadata.name" (kubectl apply needs it)')
        )
    return issues


def _describe(obj: Any) -> tuple[str, str]:
    if not isinstance(obj, dict):
        return "?", "?"
    kind = str(obj.get("kind") or "?")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    name = str(metadata.get("name") or metadata.get("generateName") or "?")
    if metadata.get("namespace"):
        name = f"{metadata['namespace']}/{name}"
    return kind, name


def validate_documents(
    documents: Sequence[Document], source: str, registry: SchemaRegistry
) -> list[ManifestError]:
    errors = []
    for document in documents:
        kind, name = _describe(document.data)
        issues = validate_object(document.data, registry)
        if document.node is not None:
            issues.extend(_duplicate_keys(document.node, ()))
        for issue in issues:
            line = issue.line
            if line is None and document.node is not None:
                node = _node_at(document.node, issue.path)
                line = node.start_mark.line + 1 if node is not None else None
            errors.append(
                ManifestError(
                    source, document.index, kind, name, format_path(issue.path), issue.message, line
                )
            )
    return errors


def validate_text(text: str, source: str, registry: SchemaRegistry) -> list[ManifestError]:
    """Validate every object of a YAML stream; ``source`` names it in the errors."""
    try:
        documents = load_documents(text)
    except yaml.YAMLError as exc:
        return [ManifestError(source, 0, "?", "?", "(root)", f"invalid YAML: {exc}")]
    return validate_documents(documents, source, registry)


def validate_file(
    path: Path, registry: SchemaRegistry, *, source: str | None = None
) -> list[ManifestError]:
    return validate_text(path.read_text(encoding="utf-8"), source or str(path), registry)


def main(argv: Sequence[str]) -> int:
    """``fetch``: fill the cache. ``validate FILE...``: validate manifests (``-`` for stdin)."""
    if not argv or argv[0] not in ("fetch", "validate"):
        print(
            "usage: python3 -m tests.support.k8s_schema fetch | validate FILE...", file=sys.stderr
        )
        return 2
    try:
        registry = load_registry(log=True)
    except SchemaFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if argv[0] == "fetch":
        print(registry.openapi_dir)
        for crd_dir in registry.crd_dirs:
            print(crd_dir)
        return 0
    errors: list[ManifestError] = []
    for name in argv[1:]:
        if name == "-":
            errors += validate_text(sys.stdin.read(), "<stdin>", registry)
        else:
            errors += validate_file(Path(name), registry)
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
