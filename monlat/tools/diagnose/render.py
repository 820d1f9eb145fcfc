"""The diagnosis as text for people and JSON for scripts."""

from __future__ import annotations

import json

from monlat.tools.diagnose.model import Diagnosis, PairEvidence, ratio_text
from monlat.tools.matrix.render import format_ms, format_percent

MAX_LISTED_PAIRS = 8  # per observation in text output; json lists every pair


# --- output --------------------------------------------------------------------------------------


def pair_line(evidence: PairEvidence) -> str:
    text = f"{evidence.src} -> {evidence.dst}: "
    loss = evidence.loss_ratio
    if evidence.latency_ms is None:
        text += "LOST (no reply)" if loss is not None and loss >= 1.0 else "no RTT"
    else:
        text += f"{format_ms(evidence.latency_ms)} ms"
        if evidence.baseline_ms is not None:
            text += (
                f" vs {format_ms(evidence.baseline_ms)} ms "
                f"({ratio_text(evidence.latency_ms, evidence.baseline_ms)})"
            )
    if (loss is not None and 0 < loss < 1.0) or (loss == 1.0 and evidence.latency_ms is not None):
        text += f", loss {format_percent(loss)}"
    if evidence.mtu_black_hole and evidence.path_mtu_bytes is not None:
        text += f", MTU black hole above {int(evidence.path_mtu_bytes)} bytes"
    return text


def render_text(diagnosis: Diagnosis) -> str:
    blocks: list[str] = []
    for finding in diagnosis.findings:
        lines = [f"{finding.kind.name} {finding.subject}: {finding.summary}"]
        for observation in finding.evidence:
            lines.append(f"  {observation.text}")
            lines.extend(f"    {pair_line(p)}" for p in observation.pairs[:MAX_LISTED_PAIRS])
            if len(observation.pairs) > MAX_LISTED_PAIRS:
                lines.append(f"    ... and {len(observation.pairs) - MAX_LISTED_PAIRS} more")
        blocks.append("\n".join(lines))
    blocks.extend(f"note: {note}" for note in diagnosis.notes)
    suffix = diagnosis.common_suffix
    if suffix and diagnosis.findings:
        blocks = [block.replace(suffix, "") for block in blocks]
        blocks.append(f"note: node names are shown without their common suffix {suffix}")
    blocks.append(_footer(diagnosis))
    return "\n\n".join(blocks) + "\n"


def _footer(diagnosis: Diagnosis) -> str:
    t = diagnosis.thresholds
    baseline = (
        f", baseline {format_ms(diagnosis.baseline_ms)} ms"
        if diagnosis.baseline_ms is not None
        else ""
    )
    scope = f"{diagnosis.nodes} nodes, {diagnosis.pairs} pairs{baseline}"
    limits = (
        f"slow: x{t.latency_factor:g} and +{t.min_excess_ms:g} ms over the baseline; "
        f"lossy: {format_percent(t.loss_threshold)} or more"
    )
    if not diagnosis.findings:
        return f"no problems found in {scope} ({limits})"
    counts: dict[str, int] = {}
    for finding in diagnosis.findings:
        counts[finding.kind.value] = counts.get(finding.kind.value, 0) + 1
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    plural = "s" if len(diagnosis.findings) > 1 else ""
    return f"{len(diagnosis.findings)} finding{plural} ({kinds}) in {scope} ({limits})"


def _pair_json(evidence: PairEvidence) -> dict[str, object]:
    return {
        "from": evidence.src,
        "to": evidence.dst,
        "latency_ms": evidence.latency_ms,
        "baseline_ms": evidence.baseline_ms,
        "factor": None if evidence.factor is None else round(evidence.factor, 3),
        "excess_ms": None if evidence.excess_ms is None else round(evidence.excess_ms, 6),
        "loss_ratio": evidence.loss_ratio,
        **(
            {"mtu_black_hole": True, "path_mtu_bytes": evidence.path_mtu_bytes}
            if evidence.mtu_black_hole
            else {}
        ),
    }


def render_json(diagnosis: Diagnosis) -> str:
    t = diagnosis.thresholds
    document = {
        "status": "problems" if diagnosis.findings else "ok",
        "nodes": diagnosis.nodes,
        "pairs": diagnosis.pairs,
        "baseline_ms": diagnosis.baseline_ms,
        "thresholds": {
            "latency_factor": t.latency_factor,
            "loss_threshold": t.loss_threshold,
            "min_excess_ms": t.min_excess_ms,
        },
        "notes": list(diagnosis.notes),
        "findings": [
            {
                "kind": finding.kind.value,
                "subject": finding.subject,
                "summary": finding.summary,
                "evidence": [
                    {"text": o.text, "pairs": [_pair_json(p) for p in o.pairs]}
                    for o in finding.evidence
                ],
            }
            for finding in diagnosis.findings
        ],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"
