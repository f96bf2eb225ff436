"""The findings table: one row per problem, from the boundaries, ledgers and safety rows. Checks never print.

Every rule is documented in docs/rules.md (what it means, why it matters for kexec, an example). A finding has:
``rule``, ``severity`` (error, warning, note), ``domid``, ``epoch`` (of that domain), ``object`` (what it is about,
e.g. ``mapper:d0``, ``gref:15``, ``pirq:35``), ``tsc`` (the moment the finding is about), ``first_tsc`` /
``last_tsc`` (the span of its evidence), ``message``, ``evidence`` (a dict) and ``fingerprint``: a hash of rule,
domid, epoch and object only, so it survives re-captures where TSCs, counts and offsets change.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the gate's policy reads the severities without loading the analysis
    from tracelens.analysis.boundaries import Epochs

RULES = {
    "TL-GNT-001": ("error", "grants still mapped by a backend at the kexec boundary"),
    "TL-GNT-002": ("warning", "grants of the previous kernel released after the boundary"),
    "TL-GNT-003": ("error", "the guest mapped foreign grants in an epoch that ended in a kexec"),
    "TL-BAL-001": ("error", "the guest ballooned out memory before the kexec"),
    "TL-GST-001": ("error", "a grant ref was still granted at the kexec (guest tracepoints)"),
    "TL-GST-002": ("warning", "a PIRQ was still bound at the kexec (guest tracepoints)"),
    "TL-LOST-001": ("warning", "records lost before the boundary: the kexec safety verdict is inconclusive"),
    "TL-DMP-001": ("error", "the dump shows grants still mapped by another domain"),
    "TL-DMP-002": ("warning", "the dumped kernel had PIRQs mapped that the next kernel must map again"),
    "TL-DMP-003": ("warning", "event channels pending and unmasked in the dump's shared_info"),
}
SEVERITIES = ("error", "warning", "note")
#: rank of a severity: lower is worse (the findings' order; the gate blocks when rank(level) <= rank(fail_on))
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass
class Finding:
    rule: str
    severity: str
    domid: int | None
    epoch: int | None
    object: str
    tsc: int | None
    first_tsc: int | None
    last_tsc: int | None
    message: str
    evidence: dict = field(default_factory=dict)
    fingerprint: str = ""

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.rule, self.domid, self.epoch, self.object)

    def to_dict(self) -> dict:
        return asdict(self)


def fingerprint(rule: str, domid, epoch, obj: str) -> str:
    """Stable id of a finding: sha256 of its non-volatile fields, 16 hex digits."""
    return hashlib.sha256(f"{rule}|{domid}|{epoch}|{obj}".encode()).hexdigest()[:16]


def sort_key(f: Finding) -> tuple:
    """The order of the findings table: severity (worst first), domain, epoch (unknown ones first), rule, object."""
    return (SEVERITY_RANK[f.severity], f.domid if f.domid is not None else -1, f.epoch if f.epoch is not None else -1,
            f.rule, f.object)


def _mk(rule, domid, epoch, obj, tsc, first, last, message, evidence) -> Finding:
    return Finding(rule, RULES[rule][0], domid, epoch, obj, tsc, first, last, message, evidence)


def _dname(d) -> str:
    from tracelens.analysis.records import dom_name

    return "unknown" if d is None else dom_name(d)


def _caveat(u: dict | None) -> str:
    """The uncertainty of a finding, in words."""
    if u is None:
        return ""
    n = sum(x["count"] for x in u["lost"])
    if u["lost_records_max"] is None:
        return (f"; {len(u['lost'])} loss(es) before it, at least one malformed (count unknown), could hide records "
                "that change this count")
    if u.get("certain"):
        return f"; at least {u['outstanding_min']} for certain: {n} lost record(s) before it could change it by at most {n}"
    if "outstanding_min" in u:
        return (f"; uncertain: {n} record(s) lost before it could be of this pair (between "
                f"{max(u['outstanding_min'], 0)} and {u['outstanding_max']})")
    return f"; uncertain: {n} record(s) lost before it could be of this pair"


def build_findings(ep: Epochs, grants, balloon: list[dict], guest, safety: list[dict], lost=None, lost_info=None,
                   coverage=None) -> list[Finding]:
    """Every finding of the capture, sorted by severity, domain, epoch, rule and object. Findings the visible
    records support are kept when records were lost; ``evidence.uncertainty`` says which losses could change them
    and by how much (tracelens.analysis.safety.grant_uncertainty), null when none could."""
    import numpy as np

    from tracelens.analysis.safety import grant_uncertainty, loss_scope

    out: list[Finding] = []
    lost = np.zeros((0, 4), np.int64) if lost is None else lost
    scope = loss_scope(lost, lost_info, coverage)
    bounds = {(b.domid, b.epoch): b for b in ep.boundaries}

    def unc(before, who, visible):
        return grant_uncertainty(lost, lost_info, scope, before, who, visible)

    for r in grants.rows:
        g, e, m = r["granter"], r["epoch"], r["mapper"]
        b = bounds.get((g, e))
        obj = "mapper:other" if "other_mappers" in r else f"mapper:{_dname(m)}"  # "other": a summed long tail
        if b is not None and (r["outstanding_at_boundary"] or 0) > 0:
            n = r["outstanding_at_boundary"]
            u = unc(b.tsc, m, n)
            out.append(_mk("TL-GNT-001", g, e, obj, b.tsc, r["first_tsc"], b.tsc,
                           f"{_dname(m)} still had {n} grant mapping(s) of d{g} when d{g} started its next kernel "
                           f"({b.kind} boundary at tsc {b.tsc}); the new kernel will reuse those pages{_caveat(u)}",
                           {"mapper": m, "granter": g, "outstanding": n, "boundary_kind": b.kind,
                            "boundary_tsc": b.tsc, "maps_in_epoch": r["maps"], "unmaps_in_epoch": r["unmaps"],
                            "uncertainty": u}))
        prev = bounds.get((g, e - 1))
        if r["late_unmaps"] > 0 and prev is not None:
            u = unc(prev.tsc, m, r["late_unmaps"])
            if u is not None:
                u = {k: u[k] for k in ("lost", "lost_records_max")}
            out.append(_mk("TL-GNT-002", g, e, obj, r["late_first_tsc"], r["late_first_tsc"], r["late_last_tsc"],
                           f"{_dname(m)} released {r['late_unmaps']} grant mapping(s) of d{g}'s previous kernel "
                           f"after the {prev.kind} boundary at tsc {prev.tsc}{_caveat(u)}",
                           {"mapper": m, "granter": g, "late_unmaps": r["late_unmaps"], "boundary_tsc": prev.tsc,
                            "boundary_kind": prev.kind, "uncertainty": u}))

    for r in grants.by_mapper:
        m, e = r["mapper"], r["epoch"]
        b = bounds.get((m, e)) if m is not None else None
        if b is not None and m != 0 and r["maps"] > 0:
            out.append(_mk("TL-GNT-003", m, e, "grant-maps", r["first_map_tsc"], r["first_map_tsc"], b.tsc,
                           f"d{m} mapped {r['maps']} foreign grant(s) (of {', '.join(_dname(x) for x in r['granters'])}) "
                           f"and {r['outstanding_at_boundary']} were still mapped at its {b.kind} boundary",
                           {"maps": r["maps"], "unmaps": r["unmaps"], "granters": r["granters"],
                            "outstanding_at_boundary": r["outstanding_at_boundary"], "boundary_tsc": b.tsc}))

    for r in balloon:
        b = bounds.get((r["domid"], r["epoch"]))
        if b is not None:
            out.append(_mk("TL-BAL-001", r["domid"], r["epoch"], "balloon", r["first_tsc"], r["first_tsc"], b.tsc,
                           f"d{r['domid']} gave back {r['pages']} page(s) in {r['extents']} extent(s) before its "
                           f"{b.kind} boundary; the new kernel sees them as RAM ({r['memory_op_calls']} memory_op "
                           "call(s) in the epoch; balloon-up is not traced)",
                           {k: r[k] for k in ("extents", "pages", "extents_by_order", "gfn_ranges", "memory_op_calls",
                                              "layout")} | {"boundary_tsc": b.tsc}))

    for which, rule, what in ((guest.grefs, "TL-GST-001", "ref"), (guest.pirqs, "TL-GST-002", "pirq")):
        for r in which:
            b = bounds.get((r["domid"], r["epoch"]))
            if b is None:
                continue
            u = unc(b.tsc, r["domid"], 1)
            if u is not None:  # a lost END_ACCESS / PIRQ_UNBIND of the guest itself would clear it
                u = {k: u[k] for k in ("lost", "lost_records_max")}
            if what == "ref":
                msg = (f"d{r['domid']} granted ref {r['ref']} (frame {r['frame']:#x}) to {_dname(r['grantee'])} and never "
                       f"ended it before its {b.kind} boundary")
                ev = {"ref": r["ref"], "grantee": r["grantee"], "frame": r["frame"]}
            else:
                msg = (f"d{r['domid']} bound PIRQ {r['pirq']} (irq {r['irq']}, port {r['port']}) and never unbound "
                       f"it before its {b.kind} boundary")
                ev = {k: r[k] for k in ("pirq", "irq", "kind", "gsi_or_vector", "port")}
            out.append(_mk(rule, r["domid"], r["epoch"], f"{what.replace('ref', 'gref')}:{r[what]}", b.tsc, r["tsc"],
                           b.tsc, msg + _caveat(u),
                           ev | {"granted_offset" if what == "ref" else "bound_offset": r["offset"],
                                 "boundary_tsc": b.tsc, "uncertainty": u}))

    for s in safety:
        if s["end_tsc"] is not None and s["lost"]:
            n = sum(x["count"] for x in s["lost"])
            out.append(_mk("TL-LOST-001", s["domid"], s["epoch"], "lost-records", s["end_tsc"],
                           min(x["first_tsc"] for x in s["lost"]), s["end_tsc"],
                           f"{n} record(s) lost in {len(s['lost'])} interval(s) before d{s['domid']}'s "
                           f"{s['boundary_kind']} boundary"
                           + (", some in malformed LOST_RECORDS (count unknown)"
                              if any(x.get("malformed") for x in s["lost"]) else "")
                           + f": what they hid is unknown (findings carry their uncertainty), verdict {s['verdict']}",
                           {"lost": s["lost"], "verdict": s["verdict"], "outstanding_visible": s["outstanding_grants"],
                            "possibly_unsafe": s.get("possibly_unsafe", {})}))

    out.sort(key=sort_key)
    return out
