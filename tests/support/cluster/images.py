"""The lab cluster's images, built with podman from this repository, saved for containerd.

No registry is reachable, so every image a pod runs is built here: the pod sandbox (``pause.c``,
static), CoreDNS (the binary of ``scripts/build-cluster-runtime.sh``), and monlat's agent and
collector images (``deploy/image.sh`` on the local Debian base, as the image tests build them).
Each is saved once per image id as a docker archive, which ``ctr images import`` reads with its
full name, and imported into every node's containerd.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import image as images

HERE = Path(__file__).resolve().parent
LAB_REGISTRY = "localhost/monlat-lab"
PAUSE_IMAGE = f"{LAB_REGISTRY}/pause:3.10"


@dataclass(frozen=True)
class LabImages:
    """Image references (as pods name them) and the archives containerd imports."""

    pause: str
    coredns: str
    agent: str
    collector: str
    archives: tuple[Path, ...]


def _build_scratch(ref: str, binary: Path, entrypoint: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / entrypoint).write_bytes(binary.read_bytes())
        (context / entrypoint).chmod(0o755)
        (context / "Containerfile").write_text(
            f'FROM scratch\nCOPY {entrypoint} /{entrypoint}\nENTRYPOINT ["/{entrypoint}"]\n'
        )
        images.podman("build", "--pull=never", "-t", ref, str(context), timeout=300)
    return ref


def _pause_binary(cache: Path) -> Path:
    out = cache / "pause"
    source = HERE / "pause.c"
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["gcc", "-static", "-O2", "-o", str(out), str(source)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"gcc pause.c failed: {proc.stderr}"
    return out


def save(ref: str, cache: Path) -> Path:
    """``ref`` as a docker archive, kept per image id (a rebuilt image gets a new file)."""
    image_id = images.image_id(ref)
    assert image_id, f"no image {ref}"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{ref.replace('/', '_').replace(':', '_')}-{image_id[:12]}.tar"
    if not archive.exists():
        for stale in cache.glob(f"{ref.replace('/', '_').replace(':', '_')}-*.tar"):
            stale.unlink()
        partial = archive.with_suffix(".partial")
        images.podman("save", "--format", "docker-archive", "-o", str(partial), ref, timeout=600)
        partial.rename(archive)
    return archive


def build_lab_images(runtime_bin: Path, cache: Path) -> LabImages:
    """Build (or reuse) every image the lab cluster runs; skip-or-fail without podman."""
    images.require_podman()
    cache.mkdir(parents=True, exist_ok=True)
    pause = _build_scratch(PAUSE_IMAGE, _pause_binary(cache), "pause")
    coredns = _build_scratch(f"{LAB_REGISTRY}/coredns:lab", runtime_bin / "coredns", "coredns")
    base = images.build_base()
    agent = images.build_agent(base)
    collector = images.build_collector(base)
    refs = (pause, coredns, agent, collector)
    return LabImages(
        pause=pause,
        coredns=coredns,
        agent=agent,
        collector=collector,
        archives=tuple(save(ref, cache) for ref in refs),
    )
