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
verdict ``inconclusive``, and suppresses the ``grant_outstanding`` conclusion (the visible count may be wrong
either way). Observed balloon and foreign-map records stay unsafe: they happened whatever was lost.

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


def domains(ep: Epochs, grants: GrantLedger, balloon: list[dict], hypercalls=(), guest=None) -> list[int]:
    """Guest domids the analysis has something about: a boundary, grants (as granter or mapper), ballooning,
    hypercalls or guest tracepoints (dom0 and reserved ids excluded)."""
    seen = {r["granter"] for r in grants.rows} | {r["mapper"] for r in grants.rows if r["mapper"] is not None}
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
                 lost: np.ndarray | None = None, guest: GuestLedger | None = None, hypercalls=()) -> list[dict]:
    """One row per (domain, epoch): the epoch's span, first unsafe operation, per-kind first TSC, the losses that
    make it inconclusive, and ``verdict`` (``safe``, ``unsafe`` or ``inconclusive``)."""
    lost = R.lost_intervals(rec) if lost is None else lost
    last_tsc = rec.last_tsc
    bal = {(r["domid"], r["epoch"]): r for r in balloon}
    fmap = {(r["mapper"], r["epoch"]): r for r in grants.by_mapper if r["mapper"] is not None}
    out_at: dict[tuple[int, int], int] = {}
    for r in grants.rows:
        v = r["outstanding_at_boundary"] if r["outstanding_at_boundary"] is not None else r["outstanding_at_end"]
        out_at[(r["granter"], r["epoch"])] = out_at.get((r["granter"], r["epoch"]), 0) + max(v or 0, 0)
    open_objects: dict[tuple[int, int], dict[str, int]] = {}
    for kind, objs in (("grant_ref_active", guest.grefs if guest else ()), ("pirq_bound", guest.pirqs if guest else ())):
        for o in objs:
            open_objects.setdefault((o["domid"], o["epoch"]), {})[kind] = 1
    rows = []
    for d in domains(ep, grants, balloon, hypercalls, guest):
        bts = ep.by_dom.get(d, np.empty(0, np.uint64))
        gone = removed_at_end(rec, ep, d)
        for e in range(bts.size + 1):
            end = int(bts[e]) if e < bts.size else None
            horizon = end if end is not None else last_tsc
            losses = lost[lost[:, 1] <= horizon] if lost.size else lost
            lossy = bool(losses.shape[0])
            unsafe: dict[str, int] = {}
            if (d, e) in bal:
                unsafe["balloon"] = bal[(d, e)]["first_tsc"]
            fm = fmap.get((d, e))
            if fm and fm["maps"] > 0:
                unsafe["foreign_map"] = fm["first_map_tsc"]
            if out_at.get((d, e), 0) > 0 and not lossy and (end is not None or not gone):
                unsafe["grant_outstanding"] = horizon
            if not lossy and (end is not None or not gone):
                for kind in open_objects.get((d, e), ()):
                    unsafe[kind] = horizon
            first = min(unsafe.items(), key=lambda kv: (kv[1], kv[0])) if unsafe else None
            rows.append({
                "domid": d, "epoch": e,
                "start_tsc": int(bts[e - 1]) if e > 0 else None, "end_tsc": end,
                "boundary_kind": ep.boundary(d, e).kind if end is not None else None,
                "first_unsafe_tsc": first[1] if first else None, "first_unsafe_kind": first[0] if first else None,
                "unsafe": unsafe,
                "outstanding_grants": out_at.get((d, e), 0),
                "lost": [{"cpu": int(c), "first_tsc": int(f), "tsc": int(t), "count": int(n)} for c, f, t, n in losses],
                "removed_at_end": gone if end is None else False,
                "verdict": "unsafe" if unsafe else ("inconclusive" if lossy else "safe"),
            })
    return rows
