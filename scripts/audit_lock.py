"""Audit the image's locked dependencies (requirements.lock) for known vulnerabilities.

pip-audit first. Where it cannot audit a pin (an index that serves no per-release JSON, as a
registry mirror may not), PyPI's project JSON still lists the vulnerabilities of the latest
release, so a pin that is the latest release is audited from there; a pin behind the latest is
reported as not audited (refresh the lock: `hatch run lock:refresh`), and fails with --strict.
Exit status 1 when any pin has a known vulnerability.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def pins(lock_text: str) -> dict[str, str]:
    return {canonical(name): version for name, version in PIN.findall(lock_text)}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Audit:
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # "name==version" -> ids
    by_pip_audit: list[str] = field(default_factory=list)
    by_index: list[str] = field(default_factory=list)
    not_audited: dict[str, str] = field(default_factory=dict)  # "name==version" -> why


def judge(
    locked: Mapping[str, str],
    pip_audit_report: Mapping[str, object],
    project_json: Callable[[str], Mapping[str, object] | None],
) -> Audit:
    """The decision, pure: pip-audit's JSON report, then the index's data for what it skipped."""
    audit = Audit()
    reported = {canonical(str(d["name"])): d for d in pip_audit_report["dependencies"]}  # type: ignore[attr-defined]
    for name, version in sorted(locked.items()):
        pin = f"{name}=={version}"
        entry = reported.get(name)
        if entry is not None and "skip_reason" not in entry:
            audit.by_pip_audit.append(pin)
            ids = [str(v["id"]) for v in entry.get("vulns", [])]
            if ids:
                audit.vulnerable[pin] = ids
            continue
        project = project_json(name)
        if project is None:
            audit.not_audited[pin] = "the index has no JSON for it"
            continue
        latest = str(project["info"]["version"])  # type: ignore[index]
        if latest != version:
            audit.not_audited[pin] = f"the index audits only its latest release, {latest}"
            continue
        audit.by_index.append(pin)
        vulns = project.get("vulnerabilities") or []
        ids = [str(v["id"]) for v in vulns if not v.get("withdrawn")]  # type: ignore[union-attr]
        if ids:
            audit.vulnerable[pin] = ids
    return audit


def fetch_project_json(index: str) -> Callable[[str], Mapping[str, object] | None]:
    def fetch(name: str) -> Mapping[str, object] | None:
        try:
            with urllib.request.urlopen(f"{index}/pypi/{name}/json", timeout=30) as response:
                data: Mapping[str, object] = json.load(response)
                return data
        except OSError:
            return None

    return fetch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path("requirements.lock"))
    parser.add_argument("--index", default="https://pypi.org")
    parser.add_argument("--strict", action="store_true", help="fail on a pin not audited")
    args = parser.parse_args(argv)
    locked = pins(args.lock.read_text())
    run = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-r", str(args.lock), "--disable-pip", "--no-deps",
         "--format", "json", "--progress-spinner", "off"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"audit: pip-audit gave no report (exit {run.returncode}): {run.stderr.strip()}")
        report = {"dependencies": []}
    audit = judge(locked, report, fetch_project_json(args.index))
    for pin, ids in audit.vulnerable.items():
        print(f"audit: VULNERABLE {pin}: {', '.join(ids)}")
    for pin, why in audit.not_audited.items():
        print(f"audit: not audited {pin}: {why}")
    print(
        f"audit: {len(locked)} pins, {len(audit.by_pip_audit)} audited by pip-audit, "
        f"{len(audit.by_index)} from the index's latest-release data, "
        f"{len(audit.not_audited)} not audited, {len(audit.vulnerable)} vulnerable"
    )
    if audit.vulnerable or (args.strict and audit.not_audited):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
