"""The container images, built and run for real: hadolint on both Dockerfiles; the agent image
built with podman from the local Debian base (deploy/image.sh base); the agent container in a lab
node, read-only, in both security modes of the Kubernetes manifests, measuring the emulated RTT;
and the collector image receiving the agent container's OTLP push across the lab."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.audit_lock import canonical, pins
from tests.support.agent_process import series
from tests.support.collector import collector_binary
from tests.support.image import (
    CAP_NET_RAW,
    DOCKERFILES,
    IMAGE_SH,
    REPO,
    Container,
    build_agent,
    build_base,
    build_collector,
    caps,
    context_files,
    engine,
    hadolint,
    inspect_image,
    project_version,
    require_podman,
    running,
    ulimits,
)
from tests.support.lab import Lab, Link
from tests.support.lab.netns import NETNS_DIR
from tests.support.lab.rtt import AGENT_TOL_MS, rtt_ok, rtt_problems

PORT = 9090  # the agent's endpoint in n1
COLLECTOR_METRICS_PORT = 9090  # the collector's, in n2
COLLECTOR_HEALTH_PORT = 13133
INGEST_TOKEN = (
    "/var/run/secrets/monlat/ingest/token"  # config.yaml's default, as deploy/k8s mounts it
)
MAX_VENV_MB = 160  # what the agent image adds to its base: the venv only (~120 MB today)


# -- lint -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES.values(), ids=DOCKERFILES.keys())
def test_hadolint(dockerfile: Path) -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_sh_rejects_bad_usage() -> None:
    usage = subprocess.run(["bash", str(IMAGE_SH)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "deploy/image.sh image" in usage.stderr
    bogus = subprocess.run(
        ["bash", str(IMAGE_SH), "bogus"], capture_output=True, text=True, check=False
    )
    assert bogus.returncode == 2 and "unknown command: bogus" in bogus.stderr
    env = {**os.environ, "ENGINE": "/nonexistent/podman"}
    no_engine = subprocess.run(["bash", str(IMAGE_SH), "image"], capture_output=True, text=True,
                               env=env, check=False)  # fmt: skip
    assert no_engine.returncode == 1
    assert (
        no_engine.stderr.strip()
        == "image.sh: error: ENGINE=/nonexistent/podman is not an executable"
    )


# -- build ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Images:
    base: str
    agent: str


@pytest.fixture(scope="module")
def images() -> Images:
    """The local base (debootstrap on first use, ~1 min) and the agent image built on it."""
    require_podman()
    base = build_base()
    return Images(base, build_agent(base))


def test_base_image_is_cached(images: Images) -> None:
    started = time.monotonic()
    assert build_base() == images.base
    assert time.monotonic() - started < 30
    cache = Path(os.environ.get("MONLAT_CACHE") or Path.home() / ".cache" / "monlat") / "images"
    tag = images.base.rsplit(":", 1)[1]
    assert (cache / f"monlat-base-{tag}.tar.gz").stat().st_size > 10_000_000


def test_agent_image_config(images: Images) -> None:
    image = inspect_image(images.agent)
    config = image["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/monlat/bin/monlat"]
    assert config["Cmd"] == ["agent"]
    assert "9090/tcp" in config["ExposedPorts"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.base.name"] == images.base
    assert labels["org.opencontainers.image.title"] == "monlat"
    added = int(image["Size"]) - int(inspect_image(images.base)["Size"])  # type: ignore[call-overload]
    assert 0 < added < MAX_VENV_MB * 1_000_000, f"the image adds {added / 1e6:.0f} MB to its base"


# -- run ------------------------------------------------------------------------------------------
@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Iterator[Lab]:
    yield lab_factory(
        ["n1", "n2"],
        links={("n1", "n2"): Link(delay_ms=1.0), ("n2", "n1"): Link(delay_ms=2.5)},
    )


def netns_path(lab: Lab, node: str) -> str:
    return os.path.join(NETNS_DIR, lab.netns(node))


def ping_group_range(lab: Lab, node: str) -> str:
    proc = lab.run(node, ["sysctl", "-n", "net.ipv4.ping_group_range"], check=True)
    return " ".join(proc.stdout.split())


def hardened(lab: Lab, node: str) -> list[str]:
    """What the manifests ask of every container: read-only root (and no tmpfs podman would add),
    no privilege escalation; the node's network namespace stands for hostNetwork.

    podman's default_sysctls (containers.conf) set net.ipv4.ping_group_range=0 0 in a container's
    network namespace, which here is the node's own: the node's value is handed back so that the
    container leaves it as it is, as on a Kubernetes node with hostNetwork."""
    return ["--read-only", "--read-only-tmpfs=false", "--security-opt", "no-new-privileges",
            "--network", f"ns:{netns_path(lab, node)}",
            "--sysctl", f"net.ipv4.ping_group_range={ping_group_range(lab, node)}"]  # fmt: skip


@dataclass(frozen=True)
class Mode:
    """One security mode of the manifests (deploy/k8s/agents.yaml and agents-net-raw.yaml)."""

    options: tuple[str, ...]
    uid: int
    cap_eff: int
    kind: str


NET_RAW_VARIANT = ("--user", "0:0", "--cap-drop", "ALL", "--cap-add", "NET_RAW",
                   "--env", "MONLAT_SOCKET=raw")  # fmt: skip
MODES = {
    # The image's own user, no capability at all: the unprivileged ICMP socket.
    "nonroot-dgram": Mode(("--cap-drop", "ALL"), uid=65532, cap_eff=0, kind="dgram"),
    # The NET_RAW variant: uid 0 with only CAP_NET_RAW, raw socket forced. (A non-root user with
    # --cap-add would get it as an ambient capability from podman, which Kubernetes does not give.)
    "root-net-raw": Mode(NET_RAW_VARIANT, uid=0, cap_eff=CAP_NET_RAW, kind="raw"),
}


def start_agent(
    lab: Lab, image: str, options: list[str], name: str, extra: list[str] | None = None
) -> Container:
    peers = f"n2={lab.address('n2')}"
    args = ["agent", "--node-name", "n1", "--peers", peers, "--interval", "200ms",
            "--timeout", "500ms", "--prometheus", f"127.0.0.1:{PORT}", *(extra or [])]  # fmt: skip
    return Container(
        image, args, name=name, options=options, connect=lambda: lab.socket("n1"), port=PORT
    )


def check_process(agent: Container, mode: Mode) -> None:
    status = agent.status()
    assert status["Uid"].split() == [str(mode.uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(mode.uid)] * 4, status["Gid"]
    assert set(status["Groups"].split()) <= {str(mode.uid)}, status["Groups"]
    assert status["NoNewPrivs"] == "1"
    assert caps(status["CapEff"]) == mode.cap_eff and caps(status["CapPrm"]) == mode.cap_eff, status
    assert caps(status["CapAmb"]) == 0 and caps(status["CapBnd"]) == mode.cap_eff, status
    assert "ro" in agent.root_mount_options()


@pytest.mark.e2e
@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_agent_container_measures_across_the_lab(lab: Lab, images: Images, mode: Mode) -> None:
    lab.run("n1", ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True)
    options = [*hardened(lab, "n1"), *mode.options]
    expected = lab.expected_rtt_ms("n1", "n2")
    name = f"monlat-test-{os.getpid()}-{mode.kind}"
    with running(start_agent(lab, images.agent, options, name)) as agent:
        agent.wait_ready()
        assert ping_group_range(lab, "n1") == "0 2147483647"  # the container left it alone
        check_process(agent, mode)
        samples = agent.wait_for(
            lambda s: rtt_ok(series(s, "latency_between_nodes").get("n2", 1e9), expected),
            timeout=20,
        )
        info = [labels for name, labels, _ in samples if name == "monlat_agent_info"]
        assert info and info[0]["socket"] == mode.kind, info
        time.sleep(1.0)  # a few more intervals of log lines
        sources = {
            f"{labels['direction']}/{labels['source']}": value
            for name, labels, value in agent.metrics()
            if name == "monlat_timestamps_total"
        }
        assert agent.stop() == 0, agent.stderr
    sockets = agent.events("icmp_socket")
    assert any(f"family=ipv4 kind={mode.kind}" in line for line in sockets), agent.stderr
    prefix = 'latency_between_nodes{from="n1",to="n2"} '
    logged = [line for line in agent.stdout if line.startswith(prefix)]
    assert len(logged) >= 3, agent.stdout
    values = [float(line.rsplit(" ", 1)[1]) for line in logged]
    # For the message, should the figures be off: who was late, the emulator or us?
    late = lab.stats()["lateness_us"]
    assert not rtt_problems(values, expected, high_tol=AGENT_TOL_MS, noise_tol=AGENT_TOL_MS), (
        values, f"timestamps by source {sources}", f"emulator lateness {late}",
    )  # fmt: skip
    assert not [line for line in agent.stderr if "level=error" in line or "Traceback" in line]


@pytest.mark.e2e
def test_collector_container_serves_the_agent_containers_push(
    lab: Lab, images: Images, tmp_path: Path
) -> None:
    collector_binary()  # what the collector image packages (deploy/otel-collector/build.sh)
    collector_image = build_collector(images.base)
    config = inspect_image(collector_image)["Config"]
    assert isinstance(config, dict) and config["User"] == "65532:65532", config
    # The ingest token as the Secret volume gives it to both pods (read-only, world-readable).
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o644)
    mount = ["-v", f"{token}:{INGEST_TOKEN}:ro"]
    collector = Container(
        collector_image, [], name=f"monlat-test-{os.getpid()}-otelcol",
        options=[*hardened(lab, "n2"), "--cap-drop", "ALL", *mount],
        connect=lambda: lab.socket("n2"), port=COLLECTOR_METRICS_PORT,
    )  # fmt: skip
    otlp = ["--exporters", "otlp,prometheus", "--otlp-endpoint",
            f"http://{lab.address('n2')}:4317", "--export-interval", "1s",
            "--otlp-token-file", INGEST_TOKEN]  # fmt: skip
    expected = lab.expected_rtt_ms("n1", "n2")
    with running(collector):
        collector.wait_ready(path="/", port=COLLECTOR_HEALTH_PORT)
        assert collector.status()["Uid"].split() == ["65532"] * 4
        options = [*hardened(lab, "n1"), "--cap-drop", "ALL", *mount]
        name = f"monlat-test-{os.getpid()}-pusher"
        with running(start_agent(lab, images.agent, options, name, otlp)) as agent:
            agent.wait_ready()
            samples = collector.wait_for(
                lambda s: any(n == "latency_between_nodes" and labels.get("instance") == "n1"
                              and rtt_ok(v, expected) for n, labels, v in s),
                timeout=30,
            )  # fmt: skip
            assert agent.stop() == 0, agent.stderr
        assert collector.stop() == 0, collector.stderr
    [(labels, value)] = [(lb, v) for n, lb, v in samples if n == "latency_between_nodes"]
    assert labels["from"] == "n1" and labels["to"] == "n2" and labels["job"] == "monlat", labels
    assert rtt_ok(value, expected), (value, expected)


PRECOMPILED = """
import importlib.util, pathlib, sys
pyc = lambda p: pathlib.Path(importlib.util.cache_from_source(p))
site = pathlib.Path(next(p for p in sys.path if p.endswith("site-packages")))
sources = list(site.rglob("*.py"))
missing = [str(p) for p in sources if not pyc(p).exists()]
flags = pyc(site / "monlat" / "agent" / "agent.py").read_bytes()[4]
print(len(sources), len(missing), flags, importlib.util.find_spec("pip") is None)
print(missing[:5])
"""


def test_agent_image_is_precompiled_and_has_no_pip(images: Images) -> None:
    """Every module has its .pyc, hash-based and unchecked (valid whatever the file times), so a
    read-only container compiles nothing; pip is not in the runtime image."""
    proc = subprocess.run(
        [*engine(), "run", "--rm", "--pull=never", *ulimits(), "--read-only",
         "--read-only-tmpfs=false", "--network", "none", "--cap-drop", "ALL",
         "--entrypoint", "/opt/monlat/bin/python", images.agent, "-c", PRECOMPILED],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    counts, sample = proc.stdout.splitlines()
    sources, missing, flags, no_pip = counts.split()
    assert int(sources) > 1000 and missing == "0", sample
    assert flags == "1", "monlat/agent/agent.py's .pyc is not an unchecked hash-based one"
    assert no_pip == "True"


INSTALLED = """
import importlib.metadata as m
for d in m.distributions():
    print(d.metadata["Name"], d.version)
"""


def test_agent_image_holds_exactly_the_locked_dependencies(images: Images) -> None:
    """Every distribution in the image is monlat or a pin of requirements.lock, at its version,
    and every pin is there (the Dockerfile installs the lock with --require-hashes)."""
    proc = subprocess.run(
        [*engine(), "run", "--rm", "--pull=never", *ulimits(), "--network", "none",
         "--cap-drop", "ALL", "--entrypoint", "/opt/monlat/bin/python", images.agent,
         "-c", INSTALLED],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    installed = {canonical(name): version for name, version in
                 (line.split() for line in proc.stdout.splitlines())}  # fmt: skip
    assert installed.pop("monlat") == project_version()
    assert installed == pins((REPO / "requirements.lock").read_text())


def test_build_context_is_the_source_only(images: Images) -> None:
    """.dockerignore lets in what the wheel is built from: no caches, tests, .git or deploy/."""
    files = context_files(images.base)
    expected = {"pyproject.toml", "requirements.lock", "README.md", "monlat/cli.py",
                "monlat/agent/probe/sockets.py"}  # fmt: skip
    assert expected <= set(files)
    top = ("pyproject.toml", "requirements.lock", "README.md")
    assert not [f for f in files if not (f in top or f.startswith("monlat/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
