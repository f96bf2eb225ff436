"""JSON Lines rendering of a :class:`~tracelens.gate.evaluate.GateResult` (``schema_version`` 1, docs/gate.md).

One JSON object per line, each with ``schema_version`` and ``type``: a ``finding`` line per finding of every
capture (suppressed and baseline findings included, with their gate state), then a ``capture`` line per capture
(its status, so that an unreadable capture, which has no findings, is not silent), then one ``gate`` line with the
exit code the policy decided. Consumers must ignore members and line types they do not know.
"""

from __future__ import annotations

import json

SCHEMA_VERSION = 1


def json_default(o):
    """Evidence values that json cannot write as they are: numpy scalars and arrays, sets, anything else as text."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    return str(o)


def finding_obj(g) -> dict:
    f = g.finding
    return {
        "schema_version": SCHEMA_VERSION, "type": "finding", "capture": g.capture,
        "rule": f.rule, "severity": g.level, "reported_severity": f.severity,
        "domid": f.domid, "epoch": f.epoch, "object": f.object, "tsc": f.tsc, "first_tsc": f.first_tsc,
        "last_tsc": f.last_tsc, "message": f.message, "evidence": f.evidence, "fingerprint": f.fingerprint,
        "state": g.state, "blocking": g.blocking, "baseline_state": g.baseline_state,
        "suppression": g.suppression.to_dict() if g.suppression else None, "notes": list(g.notes),
    }


def capture_obj(c) -> dict:
    return {
        "schema_version": SCHEMA_VERSION, "type": "capture", "capture": c.path, "kind": c.kind, "status": c.status,
        "exit_code": c.exit_code, "error": c.error, "inconclusive": list(c.inconclusive), "sha256": c.sha256,
        "records": c.records, "lost_records": c.lost_records, "findings": len(c.findings),
        "blocking": len(c.blocking), "notes": list(c.notes), "coverage": c.coverage_obj(),
    }


def gate_obj(result) -> dict:
    from tracelens import __version__

    return {
        "schema_version": SCHEMA_VERSION, "type": "gate", "tool": {"name": "tracelens", "version": __version__},
        "status": result.status, "exit_code": result.exit_code, "fail_on": result.fail_on,
        "policy": result.policy.path, "baseline": result.baseline_path, "captures": len(result.captures),
        "expired_allow_entries": [{"rule": e.rule, "source": e.source, "reason": e.reason,
                                   "expires": e.expires.isoformat()} for e in result.expired],
        "unused_allow_entries": [{"rule": e.rule, "source": e.source} for e in result.unused_allow],
        "baseline_not_seen": [e.get("fingerprint") for e in result.unused_baseline],
    }


def to_jsonl(result) -> str:
    lines = [finding_obj(g) for c in result.captures for g in c.findings]
    lines += [capture_obj(c) for c in result.captures]
    lines.append(gate_obj(result))
    return "".join(json.dumps(x, separators=(",", ":"), default=json_default) + "\n" for x in lines)
