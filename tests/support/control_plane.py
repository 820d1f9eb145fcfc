"""A REAL Kubernetes control plane for tests: etcd and kube-apiserver on loopback.

The binaries come from ``scripts/build-control-plane.sh`` (built from the Go module proxy,
cached under ``${MONLAT_CACHE:-~/.cache/monlat}/control-plane/``; minutes the first time,
instant afterwards). Starting the control plane then takes a few seconds. There is no
scheduler, controller-manager or kubelet: objects (Nodes, ServiceAccounts, RBAC) are whatever
the tests create, and nothing reconciles them.

Fixtures (register the plugin with ``pytest_plugins = ["tests.support.control_plane"]``)::

    def test_something(control_plane: ControlPlane) -> None:
        control_plane.kubectl("create", "-f", "-", input=json.dumps(node_object("n1", "10.0.0.1")))
        kubeconfig = control_plane.service_account_kubeconfig("monlat", "agent")
        ...

* ``control_plane_binaries`` (session): the directory with ``kube-apiserver`` and ``etcd``,
  building them on first use; skip-or-fail (fails under CI=true) when they cannot be had.
* ``control_plane_session`` (session): one running :class:`ControlPlane` for the whole run.
* ``control_plane`` (function): that same control plane, reset after each test: the API
  server is started again if the test stopped it, and every Node is deleted. Other objects
  (namespaces, service accounts, RBAC) stay: give them names unique to the test.

:class:`ControlPlane` can also be used directly (``with ControlPlane.launch(root, bindir) as cp``)
for a private instance, e.g. in a module-scoped fixture.

Credentials: an admin bearer token (user ``monlat-admin`` in ``system:masters``, from a static
token file) in :attr:`ControlPlane.kubeconfig`; service-account tokens through
:meth:`ControlPlane.service_account_kubeconfig`. TLS: a throwaway CA signs the serving
certificate (SANs 127.0.0.1, ::1, localhost, kubernetes.default.svc...). Authorization is
Node,RBAC, so a service account can do nothing until a test grants it a role.

Environment: ``MONLAT_CONTROL_PLANE_BIN`` points at a directory with prebuilt binaries (skips the
build script); ``MONLAT_KUBECTL`` at the kubectl to use (default: ``kubectl`` on PATH, else the
one the build script made where none was installed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab.fixtures import skip_or_fail
from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane.sh"

ADMIN_USER = "monlat-admin"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"  # a setting only: no traffic goes there
_SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


class ControlPlaneError(RuntimeError):
    """The control plane did not start, or a kubectl command failed."""


# --- binaries -----------------------------------------------------------------------------


def find_control_plane_binaries() -> Path:
    """Directory holding ``kube-apiserver`` and ``etcd`` (built on first use), or skip-or-fail."""
    override = os.environ.get("MONLAT_CONTROL_PLANE_BIN", "").strip()
    if override:
        bindir = Path(override)
    else:
        if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
            skip_or_fail(
                "Go is needed to build kube-apiserver and etcd (scripts/build-control-plane.sh)"
            )
        try:
            result = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                capture_output=True, text=True, timeout=2400, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            skip_or_fail("scripts/build-control-plane.sh took longer than 40 minutes")
            raise  # unreachable: skip_or_fail raises
        if result.returncode != 0:
            skip_or_fail(f"scripts/build-control-plane.sh failed: {result.stderr[-3000:]}")
        bindir = Path(result.stdout.strip().splitlines()[-1])
    for name in ("kube-apiserver", "etcd"):
        if not os.access(bindir / name, os.X_OK):
            skip_or_fail(f"no executable {name} in {bindir}")
    return bindir


def kubectl_binary(bindir: Path | None = None) -> str:
    """``$MONLAT_KUBECTL``, else kubectl on PATH, else the one built into ``bindir``."""
    override = os.environ.get("MONLAT_KUBECTL", "").strip()
    if override:
        return override
    found = shutil.which("kubectl")
    if found:
        return found
    if bindir is not None and os.access(bindir / "kubectl", os.X_OK):
        return str(bindir / "kubectl")
    skip_or_fail("kubectl is not installed (MONLAT_BUILD_KUBECTL=1 scripts/build-control-plane.sh)")
    raise AssertionError("unreachable")


# --- small helpers ------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_pki(directory: Path, ips: Sequence[str] = ("127.0.0.1", "::1")) -> None:
    """CA, serving certificate for ``ips`` (+ localhost/kubernetes names), SA key pair (EC P-256).

    Files: ca.crt ca.key apiserver.crt apiserver.key sa.key sa.pub.
    """
    if shutil.which("openssl") is None:
        skip_or_fail("'openssl' not installed (apt-get install -y openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
        "-subj", "/CN=monlat-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr",
        "-subj", "/CN=kube-apiserver", cwd=directory,
    )  # fmt: skip
    sans = [f"IP:{ip}" for ip in dict.fromkeys(ips)] + [f"DNS:{name}" for name in _SERVING_DNS]
    (directory / "serving.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={','.join(sans)}\n"
    )
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "7", "-extfile", "serving.ext", "-out", "apiserver.crt",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key",
        cwd=directory,
    )  # fmt: skip
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for name in ("ca.key", "apiserver.key", "sa.key"):
        (directory / name).chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> Path:
    """A kubeconfig (JSON, valid YAML) with the CA inlined and a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "monlat-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "monlat-test", "user": user}}],
        "current-context": user,
        "preferences": {},
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def node_object(
    name: str,
    internal_ip: str | None = None,
    *,
    addresses: Sequence[tuple[str, str]] = (),
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node as a kubelet would register it: status.addresses carries the IPs.

    A create keeps ``status`` (the kubelet registers this way); later status changes need
    the status subresource: :meth:`ControlPlane.patch_node_status`.
    """
    all_addresses = [{"type": "Hostname", "address": name}]
    if internal_ip is not None:
        all_addresses.insert(0, {"type": "InternalIP", "address": internal_ip})
    all_addresses.extend({"type": kind, "address": address} for kind, address in addresses)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        },
        "status": {"addresses": all_addresses},
    }


def _terminate(proc: subprocess.Popen[bytes], timeout: float, graceful: bool = True) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


# --- the control plane ------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver under ``root``; see the module docstring."""

    root: Path
    bindir: Path
    kubectl_path: str
    bind_address: str = "127.0.0.1"
    extra_ips: tuple[str, ...] = ()
    extra_apiserver_args: tuple[str, ...] = ()
    ready_timeout: float = 90.0
    port: int = 0
    etcd_client_port: int = 0
    etcd_peer_port: int = 0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(24))
    startup_seconds: float = 0.0  # of the last start() until /readyz answered ok
    _etcd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _apiserver: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _sa_counter: int = field(default=0, repr=False)

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def launch(cls, root: Path, bindir: Path, **kwargs: Any) -> Iterator[ControlPlane]:
        """Start etcd and kube-apiserver (waiting for /readyz); stop both on exit."""
        instance = cls(root=root, bindir=bindir, kubectl_path=kubectl_binary(bindir), **kwargs)
        try:
            instance.boot()
            yield instance
        finally:
            instance.close()

    def boot(self) -> None:
        """Create the PKI, files and ports, start etcd, then the API server."""
        self.root.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki, ips=("127.0.0.1", "::1", self.host, *self.extra_ips))
        (self.root / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        (self.root / "tokens.csv").chmod(0o600)
        ports = iter(free_ports(3))
        self.port = self.port or next(ports)
        self.etcd_client_port = self.etcd_client_port or next(ports)
        self.etcd_peer_port = self.etcd_peer_port or next(ports)
        write_kubeconfig(self.kubeconfig, self.server, self.ca_file, self.admin_token, ADMIN_USER)
        self.start_etcd()
        self.start()

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (system:masters)."""
        return self.root / "admin.kubeconfig"

    @property
    def host(self) -> str:
        if self.bind_address in ("0.0.0.0", "::"):
            return "127.0.0.1"
        return self.bind_address

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_client_port}"

    @property
    def running(self) -> bool:
        """True while the API server process is alive (it may not be ready yet)."""
        return self._apiserver is not None and self._apiserver.poll() is None

    @property
    def apiserver_log(self) -> Path:
        return self.root / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.root / "etcd.log"

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        # setpriv --pdeathsig: the child dies with pytest even if the fixture never tears down.
        prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [*prefix, *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.root, start_new_session=True,
            )  # fmt: skip

    def start_etcd(self) -> None:
        data = self.root / "etcd-data"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = self._spawn(
            [
                str(self.bindir / "etcd"),
                "--name=monlat-test",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=monlat-test={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throwaway data: no fsync stalls under load
                "--snapshot-count=10000",
                "--log-level=warn",
            ],
            self.etcd_log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._etcd.poll() is not None:
                raise ControlPlaneError(
                    f"etcd exited with {self._etcd.returncode}:\n{_tail(self.etcd_log)}"
                )
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                    if json.loads(response.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise ControlPlaneError(f"etcd not healthy after 30 s:\n{_tail(self.etcd_log)}")

    def apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [
            str(self.bindir / "kube-apiserver"),
            f"--bind-address={self.bind_address}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--etcd-servers={self.etcd_url}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={self.root / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # A loopback address is not a valid Endpoints address: no "kubernetes" endpoints.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            # Open watches (the agents') would otherwise hold SIGTERM for the default 30 s.
            "--shutdown-watch-termination-grace-period=2s",
            "--shutdown-delay-duration=0s",
            "--v=1",
            *self.extra_apiserver_args,
        ]

    def start(self, timeout: float | None = None) -> float:
        """Start the API server (same port, same etcd data) and wait for /readyz.

        Returns the seconds it took to become ready.
        """
        if self.running:
            raise ControlPlaneError("the API server is already running")
        if self._etcd is None or self._etcd.poll() is not None:
            raise ControlPlaneError("etcd is not running")
        with self.apiserver_log.open("ab") as log:
            log.write(f"\n===== start at {time.strftime('%H:%M:%S')} =====\n".encode())
        started = time.monotonic()
        self._apiserver = self._spawn(self.apiserver_argv(), self.apiserver_log)
        self.wait_ready(timeout or self.ready_timeout)
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    def stop(self, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop the API server only (SIGTERM, or SIGKILL for ``graceful=False``); etcd stays."""
        if self._apiserver is not None:
            _terminate(self._apiserver, timeout, graceful)
            self._apiserver = None

    def restart(self) -> float:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the API server, then etcd."""
        self.stop()
        if self._etcd is not None:
            _terminate(self._etcd, 30.0)
            self._etcd = None

    # -- health ----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get_raw(self, path: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``path`` over HTTPS with the admin (or given) token: (status, body)."""
        request = urllib.request.Request(
            f"{self.server}{path}",
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )
        try:
            with urllib.request.urlopen(
                request, context=self._ssl_context(), timeout=timeout
            ) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode(errors="replace")

    def ready(self) -> bool:
        try:
            status, body = self.get_raw("/readyz", timeout=2)
        except OSError:
            return False
        return status == 200 and body.strip() == "ok"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._apiserver is None or self._apiserver.poll() is not None:
                code = None if self._apiserver is None else self._apiserver.returncode
                raise ControlPlaneError(
                    f"kube-apiserver exited ({code}):\n{_tail(self.apiserver_log)}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout:.0f} s:\n{_tail(self.apiserver_log)}"
        )

    # -- kubectl ---------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (admin kubeconfig unless ``kubeconfig``).

        With ``check`` a non-zero exit raises :class:`ControlPlaneError` carrying stderr.
        """
        config = kubeconfig or self.kubeconfig
        argv = [
            self.kubectl_path,
            f"--kubeconfig={config}",
            f"--cache-dir={self.root / 'kubectl-cache'}",
            "--request-timeout=20s",
            *args,
        ]
        env = {**os.environ, "KUBECONFIG": str(config)}
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=env,
            check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        """``kubectl ARGS -o json``, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def apply(self, *objects: dict[str, Any]) -> None:
        """``kubectl apply`` of the given objects (server-side apply, this test as manager)."""
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl(
            "apply", "--server-side", "--field-manager=monlat-tests", "-f", "-",
            input=json.dumps(items),
        )  # fmt: skip

    def create_node(
        self,
        name: str,
        internal_ip: str | None = None,
        *,
        addresses: Sequence[tuple[str, str]] = (),
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a Node with status.addresses (kept on create); returns the stored object."""
        obj = node_object(name, internal_ip, addresses=addresses, labels=labels)
        out = self.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(obj)).stdout
        return dict(json.loads(out))

    def patch_node_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch ``status`` of Node ``name`` through the status subresource."""
        out = self.kubectl(
            "patch", "node", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), "-o", "json",
        ).stdout  # fmt: skip
        return dict(json.loads(out))

    def delete_all_nodes(self) -> None:
        self.kubectl("delete", "nodes", "--all", "--wait=false", "--ignore-not-found")

    # -- service accounts ------------------------------------------------------------------

    def service_account_token(
        self, namespace: str, name: str, *, create: bool = True, duration: str = "1h"
    ) -> str:
        """A bound token for ServiceAccount ``namespace/name`` (TokenRequest API).

        With ``create`` the namespace and the service account are created when missing.
        """
        if create:
            self.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace},
                },
            )
        out = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}")
        return out.stdout.strip()

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        create: bool = True,
        duration: str = "1h",
        path: Path | None = None,
    ) -> Path:
        """A kubeconfig carrying a token of ServiceAccount ``namespace/name``, as a pod has.

        The account can do only what RBAC grants it (see :meth:`grant`).
        """
        token = self.service_account_token(namespace, name, create=create, duration=duration)
        if path is None:
            self._sa_counter += 1
            path = self.root / f"sa-{namespace}-{name}-{self._sa_counter}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        return write_kubeconfig(path, self.server, self.ca_file, token, user)

    def grant(
        self,
        namespace: str,
        name: str,
        *,
        verbs: Sequence[str] = ("get", "list", "watch"),
        resources: Sequence[str] = ("nodes",),
        role: str | None = None,
    ) -> str:
        """Bind a ClusterRole with ``verbs`` on ``resources`` to the service account.

        Returns the ClusterRole (and ClusterRoleBinding) name.
        """
        role = role or f"monlat-test-{namespace}-{name}"
        self.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], "resources": list(resources), "verbs": list(verbs)}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
        return role


# --- fixtures ---------------------------------------------------------------------------------


# Named through ``name=`` so a test module can import them without shadowing warnings.


@pytest.fixture(scope="session", name="control_plane_binaries")
def control_plane_binaries_fixture() -> Path:
    """Directory with kube-apiserver and etcd (built on first use), or skip-or-fail."""
    return find_control_plane_binaries()


@pytest.fixture(scope="session", name="control_plane_session")
def control_plane_session_fixture(control_plane_binaries: Path) -> Iterator[ControlPlane]:
    """One control plane for the whole run; tests/cluster/conftest.py narrows it to that folder."""
    with shared_control_plane(control_plane_binaries) as instance:
        yield instance


@contextlib.contextmanager
def shared_control_plane(control_plane_binaries: Path) -> Iterator[ControlPlane]:
    """A control plane in a temporary directory, removed afterwards (unless
    MONLAT_KEEP_CONTROL_PLANE_DIR=1)."""
    root = Path(tempfile.mkdtemp(prefix="monlat-control-plane-"))
    try:
        with ControlPlane.launch(root, control_plane_binaries) as instance:
            yield instance
    finally:
        if os.environ.get("MONLAT_KEEP_CONTROL_PLANE_DIR", "") != "1":
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="control_plane")
def control_plane_fixture(control_plane_session: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane, reset after the test (API server running, no Nodes)."""
    yield control_plane_session
    if not control_plane_session.running:
        control_plane_session.start()
    control_plane_session.delete_all_nodes()
