"""kexec safety per domain and epoch, in the spirit of the 2014 ``kexec_is_safe`` proposal (spec §8).

A guest kernel can hand over to a new kernel (soft reset, kdump) safely only if nothing outside it still depends on
its memory layout. From what stock Xen traces (spec §4.1-4.4), three operations make an epoch **unsafe**:

``balloon``
    a DECREASE_RESERVATION targeting the domain: the new kernel will believe those gfns are RAM.
``foreign_map``
    the domain itself mapped another domain's grants (it acted as a mapper; dom0 and the idle domain excepted):
    the mappings are not released by the reset.
``grant_outstanding``
    at the boundary that ends the epoch (or at the end of the capture for the open epoch of a live domain), a
    backend still had some of the domain's grants mapped: maps minus unmaps of any (mapper, this granter) > 0.
``grant_ref_active`` / ``pirq_bound``
    only for guests instrumented with the TRC_GUEST convention (docs/guest-tracepoints.md): at that same moment a
    grant ref was still granted, or a PIRQ still bound, by the guest's kernel.

The first unsafe operation (earliest TSC, cycles) and every kind's first TSC are reported. **Lost records** make a
verdict that depends on them inconclusive, never safe: the outstanding count at a TSC depends on every grant record
before it, so any LOST_RECORDS whose loss began (first_tsc) at or before the epoch's end makes a would-be-safe
verdict ``inconclusive``. Observed balloon and foreign-map records stay unsafe: they happened whatever was lost. A
visible outstanding count is kept with its bounds (:func:`grant_uncertainty`): a loss can only hide records of the
vCPUs that may have run on its pCPU during it (:func:`loss_scope`), and at most as many as it counts, so a pair
whose visible count exceeds the records its losses could hide has grants mapped for certain (``grant_outstanding``
in ``unsafe``); otherwise the kind is listed in ``possibly_unsafe`` and the verdict stays ``inconclusive``.

**Coverage** (tracelens/analysis/coverage.py): a verdict that is not ``unsafe`` rests on the absence of records; if
the capture could not hold them (the classes of ``coverage.VERDICT_NEEDS`` neither recorded nor declared), the
verdict is ``not covered``, never ``safe`` or ``inconclusive``.

dom0 is not assessed: a dom0 kexec replaces the whole host through Xen's own kexec_op.
"""

from __future__ import annotations

import numpy as np

from tracelens.analysis import _kernels as K
from tracelens.analysis import records as R
from tracelens.analysis.boundaries import Epochs
from tracelens.analysis.ledgers import GrantLedger, GuestLedger

UNSAFE_KINDS = ("balloon", "foreign_map", "grant_outstanding", "grant_ref_active", "pirq_bound")
SPECIAL_DOMIDS = 0x7FF0  # DOMID_FIRST_RESERVED: idle, IO, XEN, COW, INVALID, the xenalyze default domain...


#: a switch of vCPU on a pCPU writes runstate records (SCHED_MIN): one running->X for the vCPU leaving, one
#: X->running for the one arriving; a loss of a single record cannot have hidden a whole switch
SCOPED_LOSS_MAX = 1


def loss_scope(lost: np.ndarray, details: dict | None, coverage: dict | None = None) -> list:
    """Per loss, the one domain whose records it can have hidden, or None when it may have hidden any domain's.

    A loss hides records of whatever ran on its pCPU while it lasted. The LOST record names the vCPU current when
    it was written (d2, spec §2.5); with SCHED_MIN recorded, any other vCPU that ran in between would have been
    switched in (a runstate record, itself lost), so a loss of at most :data:`SCOPED_LOSS_MAX` record is scoped to
    the named domain. Longer losses, malformed ones and captures without runstate records are not scoped: Xen may
    have switched to any vCPU and back inside the loss."""
    sched = coverage is not None and any(s["subclass"] == "SCHED_MIN" and s["evidence"] == "records"
                                         for s in coverage.get("subclasses", ()))
    out = []
    for i in range(lost.shape[0]):
        bad = bool(details["malformed"][i]) if details is not None else False
        dom = int(details["dom"][i]) if details is not None else -1
        out.append(dom if (sched and not bad and dom >= 0 and 0 < lost[i, 3] <= SCOPED_LOSS_MAX) else None)
    return out


def grant_uncertainty(lost: np.ndarray, details: dict | None, scope: list, before_tsc: int, mapper,
                      visible: int) -> dict | None:
    """What the losses before ``before_tsc`` do to a visible count of ``mapper``'s grant records (maps - unmaps):
    None when no loss could have hidden one of them; else ``{lost: [intervals], lost_records_max (null:
    unbounded, a malformed LOST_RECORDS), outstanding_min, outstanding_max (null when unbounded), certain}``,
    ``certain`` when even with every lost record an unmap of the pair the count stays above 0."""
    idx = [i for i in range(lost.shape[0]) if lost[i, 1] <= before_tsc
           and (scope[i] is None or (mapper is not None and scope[i] == mapper))]
    if not idx:
        return None
    bad = details is not None and any(bool(details["malformed"][i]) for i in idx)
    n = None if bad else int(sum(int(lost[i, 3]) for i in idx))
    lo = None if n is None else visible - n
    return {"lost": [lost_dict(lost, details, i) for i in idx], "lost_records_max": n,
            "outstanding_min": lo, "outstanding_max": None if n is None else visible + n,
            "certain": lo is not None and lo > 0}


def lost_dict(lost: np.ndarray, details: dict | None, i: int) -> dict:
    c, f, t, n = (int(x) for x in lost[i, :4])
    out = {"cpu": c, "first_tsc": f, "tsc": t, "count": n}
    if details is not None:
        out["malformed"] = bool(details["malformed"][i])
        out["dom"] = int(details["dom"][i]) if details["dom"][i] >= 0 else None
        out["offset"] = int(details["offset"][i])
    return out


def domains(ep: Epochs, grants: GrantLedger, balloon: list[dict], hypercalls=(), guest=None, seen=()) -> list[int]:
    """Guest domids the analysis has something about: a boundary, grants (as granter or mapper), ballooning,
    hypercalls, guest tracepoints, or a vCPU seen running (``seen``; dom0 and reserved ids excluded)."""
    seen = {int(d) for d in seen}
    seen |= {r["granter"] for r in grants.rows} | {r["mapper"] for r in grants.rows if r["mapper"] is not None}
    seen |= {r["domid"] for r in balloon} | set(ep.by_dom)
    seen |= {h["domid"] for h in hypercalls if h["domid"] is not None}
    if guest is not None:
        seen |= {d for d, _e in guest.instrumented}
    return sorted(d for d in seen if 0 < d < SPECIAL_DOMIDS)


def removed_at_end(rec: R.Records, ep: Epochs, domid: int) -> bool:
    """Destroyed (DOM0_DOM_REM / SCHED_DOM_REM) after its last boundary and not created again."""
    ev = rec.event
    life = rec.rows(K.CAT_LIFE)
    life = life[(rec.word(1, life) & 0xFFFF) == domid]
    rem = life[ev[life] != R.DOM0_DOM_ADD]
    if not rem.size:
        return False
    add = life[ev[life] == R.DOM0_DOM_ADD]
    last_b = ep.by_dom.get(domid)
    after_b = rem if last_b is None else rem[rec.tsc[rem] >= last_b[-1]]
    return bool(after_b.size) and not (add.size and add[-1] > after_b[-1])


def kexec_safety(rec: R.Records, ep: Epochs, grants: GrantLedger, balloon: list[dict],
                 lost: np.ndarray | None = None, guest: GuestLedger | None = None, hypercalls=(),
                 coverage: dict | None = None, lost_info: dict | None = None, seen=()) -> list[dict]:
    """One row per (domain, epoch): the epoch's span, first unsafe operation, per-kind first TSC, the losses that
    make it inconclusive, the classes it lacks, and ``verdict`` (``safe``, ``unsafe``, ``inconclusive`` or
    ``not covered``)."""
    lost = R.lost_intervals(rec) if lost is None else lost
    scope = loss_scope(lost, lost_info, coverage)
    uncovered = list(coverage["uncovered"]) if coverage is not None else []
    last_tsc = rec.last_tsc
    bal = {(r["domid"], r["epoch"]): r for r in balloon}
    fmap = {(r["mapper"], r["epoch"]): r for r in grants.by_mapper if r["mapper"] is not None}
    out_at: dict[tuple[int, int], int] = {}
    certain: dict[tuple[int, int], bool] = {}
    for r in grants.rows:
        v = r["outstanding_at_boundary"] if r["outstanding_at_boundary"] is not None else r["outstanding_at_end"]
        out_at[(r["granter"], r["epoch"])] = out_at.get((r["granter"], r["epoch"]), 0) + max(v or 0, 0)
        if (v or 0) > 0:
            b = ep.boundary(r["granter"], r["epoch"]) if r["outstanding_at_boundary"] is not None else None
            u = grant_uncertainty(lost, lost_info, scope, b.tsc if b is not None else last_tsc, r["mapper"], v)
            key = (r["granter"], r["epoch"])
            certain[key] = certain.get(key, False) or u is None or u["certain"]
    open_objects: dict[tuple[int, int], dict[str, int]] = {}
    for kind, objs in (("grant_ref_active", guest.grefs if guest else ()), ("pirq_bound", guest.pirqs if guest else ())):
        for o in objs:
            open_objects.setdefault((o["domid"], o["epoch"]), {})[kind] = 1
    rows = []
    for d in domains(ep, grants, balloon, hypercalls, guest, seen):
        bts = ep.by_dom.get(d, np.empty(0, np.uint64))
        gone = removed_at_end(rec, ep, d)
        for e in range(bts.size + 1):
            end = int(bts[e]) if e < bts.size else None
            horizon = end if end is not None else last_tsc
            losses = lost[lost[:, 1] <= horizon] if lost.size else lost
            lossy = bool(losses.shape[0])
            unsafe: dict[str, int] = {}
            possibly: dict[str, int] = {}
            if (d, e) in bal:
                unsafe["balloon"] = bal[(d, e)]["first_tsc"]
            fm = fmap.get((d, e))
            if fm and fm["maps"] > 0:
                unsafe["foreign_map"] = fm["first_map_tsc"]
            if out_at.get((d, e), 0) > 0 and (end is not None or not gone):
                if not lossy or certain.get((d, e), False):
                    unsafe["grant_outstanding"] = horizon
                else:
                    possibly["grant_outstanding"] = horizon
            if end is not None or not gone:
                for kind in open_objects.get((d, e), ()):
                    (possibly if lossy else unsafe)[kind] = horizon
            first = min(unsafe.items(), key=lambda kv: (kv[1], kv[0])) if unsafe else None
            if unsafe:
                verdict = "unsafe"
            elif uncovered:
                verdict = "not covered"
            else:
                verdict = "inconclusive" if lossy else "safe"
            rows.append({
                "domid": d, "epoch": e,
                "start_tsc": int(bts[e - 1]) if e > 0 else None, "end_tsc": end,
                "boundary_kind": ep.boundary(d, e).kind if end is not None else None,
                "first_unsafe_tsc": first[1] if first else None, "first_unsafe_kind": first[0] if first else None,
                "unsafe": unsafe,
                "outstanding_grants": out_at.get((d, e), 0),
                "lost": [lost_dict(lost, lost_info, i) for i in np.flatnonzero(lost[:, 1] <= horizon).tolist()]
                if lost.size else [],
                "removed_at_end": gone if end is None else False,
                "possibly_unsafe": possibly,
                "not_covered": uncovered if not unsafe else [],
                "verdict": verdict,
            })
    return rows
