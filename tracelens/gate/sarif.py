"""SARIF 2.1.0 (OASIS Static Analysis Results Interchange Format, https://docs.oasis-open.org/sarif/sarif/v2.1.0/)
rendering of a :class:`~tracelens.gate.evaluate.GateResult`, shaped for GitHub code scanning uploads.

One run; ``tool.driver.rules`` declares every rule of the findings table with its help text from docs/rules.md;
each result is anchored to its capture file (``physicalLocation.artifactLocation`` relative to ``%SRCROOT%``, the
working directory, when the capture is under it) with the domain, epoch and object as a logical location;
``partialFingerprints`` carries the finding's fingerprint so GitHub tracks it across runs; allow-list, threshold and
rule-off decisions are ``suppressions`` (kind ``external``: they live in the policy file) and, with a baseline,
``baselineState`` is ``new`` or ``unchanged``. Unreadable and inconclusive captures are tool execution notifications.
The invocation records the gate's exit code; this renderer does not decide it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import quote

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "tracelensFingerprint/v1"
SRCROOT = "%SRCROOT%"


def rules_doc_path() -> Path:
    """docs/rules.md, the one text of the rules: shipped in the wheel as package data (tracelens/docs/rules.md),
    read from the source tree in a checkout or an editable install."""
    import tracelens

    pkg = Path(tracelens.__file__).resolve().parent
    shipped = pkg / "docs" / "rules.md"
    return shipped if shipped.is_file() else pkg.parent / "docs" / "rules.md"


def rule_sections(text: str) -> dict[str, str]:
    """``## TL-XXX-NNN: title`` sections of docs/rules.md: rule id -> Markdown of the section (heading excluded)."""
    out: dict[str, str] = {}
    parts = re.split(r"^## (TL-[A-Z]+-\d+):[^\n]*\n", text, flags=re.M)
    for rid, body in zip(parts[1::2], parts[2::2]):
        body = re.split(r"^(?:## |---\s*$)", body, maxsplit=1, flags=re.M)[0]
        out[rid] = body.strip()
    return out


def _plain(md: str) -> str:
    """Markdown to plain text, for ``help.text``: drop emphasis and code marks, keep link text."""
    s = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", md)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\1", s)
    return s.replace("`", "")


def rule_descriptors() -> list[dict]:
    """A reportingDescriptor per rule of the findings table, help from docs/rules.md (or, should an install lack it,
    the one-line description and a pointer to it)."""
    from tracelens.gate.policy import known_rules

    try:
        sections = rule_sections(rules_doc_path().read_text(encoding="utf-8"))
    except OSError:
        sections = {}
    out = []
    for rid, (severity, line) in known_rules().items():
        md = sections.get(rid) or f"{line}. See docs/rules.md of tracelens for what it means and why it matters."
        means = re.search(r"\*\*Means\.\*\*\s*(.+?)(?:\n\n|$)", md, flags=re.S)
        out.append({
            "id": rid,
            "name": re.sub(r"[^A-Za-z0-9]+", "", rid.title()),
            "shortDescription": {"text": line},
            "fullDescription": {"text": _plain(means.group(1)).replace("\n", " ") if means else line},
            "help": {"text": _plain(md), "markdown": md},
            "defaultConfiguration": {"level": severity},
            "properties": {"tags": ["kexec", "xen", rid.split("-")[1].lower()]},
        })
    return out


def artifact_location(path: str, cwd: str | None = None) -> dict:
    """Relative to %SRCROOT% (the working directory) when the file is under it, else an absolute file URI."""
    cwd = os.path.abspath(cwd or os.getcwd())
    ap = os.path.abspath(path)
    rel = os.path.relpath(ap, cwd)
    if not rel.startswith(os.pardir + os.sep) and rel != os.pardir and not os.path.isabs(rel):
        return {"uri": quote(Path(rel).as_posix()), "uriBaseId": SRCROOT}
    return {"uri": Path(ap).as_uri()}


def to_sarif_obj(result, cwd: str | None = None) -> dict:
    from tracelens import __version__

    rules = rule_descriptors()
    index = {r["id"]: i for i, r in enumerate(rules)}
    artifacts, art_index, results, notes = [], {}, [], []
    for c in result.captures:
        loc = artifact_location(c.path, cwd)
        key = json.dumps(loc, sort_keys=True)  # one artifact per file, however often or however spelt it was given
        if key not in art_index:
            art = {"location": loc, "roles": ["analysisTarget"]}
            if c.size is not None:
                art["length"] = c.size
            if c.sha256:
                art["hashes"] = {"sha-256": c.sha256}
            art_index[key] = len(artifacts)
            artifacts.append(art)
        where = [{"physicalLocation": {"artifactLocation": dict(loc, index=art_index[key])}}]
        if c.error is not None:
            notes.append({"level": "error", "message": {"text": f"capture unreadable: {c.error}"}, "locations": where})
        for reason in c.inconclusive:
            notes.append({"level": "error", "message": {"text": f"{c.path}: inconclusive, the gate fails closed: "
                                                                f"{reason}"}, "locations": where})
        for g in c.findings:
            f = g.finding
            fq = "/".join(x for x in (f"d{f.domid}" if f.domid is not None else None,
                                      f"epoch{f.epoch}" if f.epoch is not None else None, f.object) if x)
            r = {
                "ruleId": f.rule,
                "level": g.level,
                "message": {"text": f.message + "".join(f" ({n})" for n in g.notes)},
                "locations": [{
                    "physicalLocation": {"artifactLocation": dict(loc, index=art_index[key]),
                                         "region": {"startLine": 1}},
                    "logicalLocations": [{"name": str(f.object), "fullyQualifiedName": fq, "kind": "object"}],
                }],
                "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
                "properties": {"capture": c.path, "domid": f.domid, "epoch": f.epoch, "object": f.object,
                               "tsc": f.tsc, "firstTsc": f.first_tsc, "lastTsc": f.last_tsc,
                               "reportedSeverity": f.severity, "gateState": g.state, "blocking": g.blocking,
                               "evidence": f.evidence},
            }
            if f.rule in index:
                r["ruleIndex"] = index[f.rule]
            if g.baseline_state is not None:
                r["baselineState"] = g.baseline_state
            if g.suppression is not None:
                s = {"kind": "external", "status": "accepted", "justification": g.suppression.justification}
                if g.suppression.source:
                    s["properties"] = {"policyEntry": g.suppression.source, "gateKind": g.suppression.kind}
                r["suppressions"] = [s]
            results.append(r)
    for e in result.expired:
        notes.append({"level": "warning", "message": {"text": f"allow-list entry at {e.source} ({e.rule}: "
                                                              f"{e.reason}) expired on {e.expires.isoformat()}"}})
    invocation = {
        "executionSuccessful": not any(c.error is not None for c in result.captures),
        "exitCode": result.exit_code,
        "exitCodeDescription": result.status,
        "toolExecutionNotifications": notes,
    }
    run = {
        "tool": {"driver": {"name": "tracelens", "version": __version__, "semanticVersion": __version__,
                            "rules": rules}},
        "originalUriBaseIds": {SRCROOT: {"uri": Path(os.path.abspath(cwd or os.getcwd())).as_uri() + "/"}},
        "artifacts": artifacts,
        "invocations": [invocation],
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": {"failOn": result.fail_on, "policy": result.policy.path, "baseline": result.baseline_path,
                       "coverage": {c.path: c.coverage_obj() for c in result.captures}},
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def to_sarif(result, cwd: str | None = None) -> str:
    from tracelens.gate.jsonl import json_default

    return json.dumps(to_sarif_obj(result, cwd), indent=2, default=json_default) + "\n"
