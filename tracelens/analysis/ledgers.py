"""Resource ledgers per domain and epoch: grants, balloon, hypercalls, host IRQ vectors, guest tracepoints.

Spec ../shared/spec/xentrace.md: §4.1 (grant and balloon records), §4.2 (IRQ vectors), §4.4 (hypercall records),
§4.5 and docs/guest-tracepoints.md (TRC_GUEST). Every function takes the capture's :class:`Records` and its
:class:`Epochs` and returns plain rows (lists of dicts) that the findings, the reports and the JSON contract share.
TSCs are in cycles. No Python loop runs over records: the grant ledger is a numba kernel, the rest is numpy.

What stock Xen does not trace limits what a ledger can say:

* grants: MAP/UNMAP carry only the granter (d1); the mapper is the domain running on that pCPU (decoder ``dom``).
  No grant ref, so pairing is by counts per (mapper, granter). Implicit releases (a mapper or granter dying) are
  not traced.
* balloon: DECREASE_RESERVATION only; balloon-up shows only as memory_op (12) hypercalls.
* PIRQ / event channels: no events; only hypercall counts by op (PV guests also record the grant_table_op,
  sched_op and vcpu_op sub-command), host vector ASSIGN/CLEAR (irq and vector packed in d1) and IRQ deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracelens.analysis import _kernels as K
from tracelens.analysis import records as R
from tracelens.analysis.boundaries import Epochs
from tracelens.parsers.xentrace.catalog import SUBOP_TABLES, load_catalog

# hypercall and sub-command names: the catalog's tables (public/xen.h and the sub-op headers)
_CATALOG = load_catalog()
HYPERCALL_NAMES = _CATALOG.tables["hypercalls"]
HYPERCALL_NUMBERS = {name: op for op, name in HYPERCALL_NAMES.items()}
SUBOP_NAMES = {HYPERCALL_NUMBERS[call]: _CATALOG.tables[table] for call, table in SUBOP_TABLES.items()}
MEMORY_OP = HYPERCALL_NUMBERS["memory_op"]  # balloon-up (increase_reservation, populate_physmap) shows only as these

# TRC_GUEST convention (docs/guest-tracepoints.md)
GT_HELLO, GT_GRANT_ACCESS, GT_END_ACCESS, GT_PIRQ_BIND, GT_PIRQ_UNBIND = 0x100, 0x101, 0x102, 0x103, 0x104
GT_BALLOON_OUT, GT_BALLOON_IN, GT_KEXEC_LOAD, GT_KEXEC_EXEC, GT_SHARED_INFO, GT_VCPU_INFO = (
    0x105, 0x106, 0x107, 0x108, 0x109, 0x10A)
GT_MAGIC = 0x544C4754
GT_NAMES = {GT_HELLO: "hello", GT_GRANT_ACCESS: "grant_access", GT_END_ACCESS: "end_access", GT_PIRQ_BIND: "pirq_bind",
            GT_PIRQ_UNBIND: "pirq_unbind", GT_BALLOON_OUT: "balloon_out", GT_BALLOON_IN: "balloon_in",
            GT_KEXEC_LOAD: "kexec_load", GT_KEXEC_EXEC: "kexec_exec", GT_SHARED_INFO: "shared_info",
            GT_VCPU_INFO: "vcpu_info"}


def _dom_or_none(x: int):
    return None if x < 0 else int(x)


# -- grants ------------------------------------------------------------------------------------------------------
@dataclass
class GrantLedger:
    """``rows``: one per (mapper, granter, granter epoch) for every pair seen, over all epochs of the granter.
    ``by_mapper``: one per (mapper, mapper epoch) with maps by that mapper. ``series``: per MAP/UNMAP record in time
    order, its tsc, mapper, granter, the pair's outstanding count after it, and delta (+1 map, -1 unmap), for
    timelines."""

    rows: list[dict] = field(default_factory=list)
    by_mapper: list[dict] = field(default_factory=list)
    series: dict = field(default_factory=dict)
    unattributed: int = 0
    series_stride: int = 1  # 1: every record; k: a streamed capture's series keeps every k-th grant record


def grant_ledger(rec: R.Records, ep: Epochs) -> GrantLedger:
    sel = rec.rows(K.CAT_GRANT)
    mapper, granter, tsc, is_map = K.grant_rows(sel, rec.event, rec.tsc, *rec.buffer("d1"), *rec.buffer("dom"))
    out = GrantLedger(unattributed=int((mapper < 0).sum()))
    if sel.size == 0:
        out.series = empty_series()
        return out
    pairs, pair = K.dense_ids(mapper, granter)  # key mapper * 0x10000 + granter: mapper -1 stays distinct
    p_mapper = np.floor_divide(pairs, 0x10000)
    p_granter = pairs - p_mapper * 0x10000
    # a domain's epochs are 0..its boundary count
    n_gep = 1 + max((ep.count(int(g)) for g in np.unique(p_granter)), default=0)
    n_mep = 1 + max((ep.count(int(m)) for m in np.unique(p_mapper) if m >= 0), default=0)
    (maps, unmaps, late, first, last, late_first, late_last,
     m_maps, m_unmaps, m_first_map, after) = K.grant_ledger(pair, granter, mapper, tsc, is_map, len(pairs), n_gep,
                                                            n_mep, *ep.csr())

    def t(idx):
        return np.where(idx >= 0, tsc[np.maximum(idx, 0)], 0)

    grant_ledger_rows(out, ep, pairs, maps, unmaps, late, (first, t(first)), (last, t(last)),
                      (late_first, t(late_first)), (late_last, t(late_last)), m_maps, m_unmaps,
                      (m_first_map, t(m_first_map)))
    out.series = {"tsc": tsc, "mapper": mapper, "granter": granter, "outstanding": after,
                  "delta": np.where(is_map, np.int8(1), np.int8(-1)),
                  "granter_outstanding": granter_running_total(granter, is_map)}
    return out


def empty_series() -> dict:
    return {"tsc": np.empty(0, np.uint64), "mapper": np.empty(0, np.int64), "granter": np.empty(0, np.int64),
            "outstanding": np.empty(0, np.int64), "delta": np.empty(0, np.int8),
            "granter_outstanding": np.empty(0, np.int64)}


def granter_running_total(granter: np.ndarray, is_map: np.ndarray) -> np.ndarray:
    """Per record, the granter's maps minus unmaps over all mappers just after it (the line a timeline draws)."""
    delta = np.where(is_map, 1, -1).astype(np.int64)
    out = np.empty(granter.shape[0], np.int64)
    g = np.asarray(granter, np.int64)
    for d in np.unique(g).tolist():
        m = g == d
        out[m] = np.cumsum(delta[m])
    return out


def grant_ledger_rows(out: GrantLedger, ep: Epochs, pairs, maps, unmaps, late, first, last, late_first, late_last,
                      m_maps, m_unmaps, m_first_map, other: dict | None = None) -> None:
    """The ledger's rows from the kernel's per-(pair, epoch) arrays (pairs sorted by key mapper * 0x10000 +
    granter; a record reference is (record index array, its TSC array), index -1 when none). Shared by the
    in-memory and the streamed analysis, so both give the same rows. A pair whose mapper is -2 sums, for its
    granter, the pairs a streamed report does not list one by one (``other``: granter -> how many); its rows have
    mapper None and ``other_mappers``."""
    p_mapper = np.floor_divide(pairs, 0x10000)
    p_granter = pairs - p_mapper * 0x10000

    def t(ref, p, e):
        idx, ts = ref
        return None if idx[p, e] < 0 else int(ts[p, e])

    cums = np.cumsum(maps - unmaps, axis=1)
    nbs = {int(g): ep.count(int(g)) for g in np.unique(p_granter)}
    for p in range(len(pairs)):
        m, g = int(p_mapper[p]), int(p_granter[p])
        nb = nbs[g]
        cum = cums[p]
        for e in range(nb + 1):
            out.rows.append({
                "mapper": _dom_or_none(m), "granter": g, "epoch": e,
                "maps": int(maps[p, e]), "unmaps": int(unmaps[p, e]), "late_unmaps": int(late[p, e]),
                "outstanding_at_boundary": int(cum[e]) if e < nb else None,
                "outstanding_at_end": int(cum[-1]) if e == nb else None,
                "first_tsc": t(first, p, e), "last_tsc": t(last, p, e),
                "late_first_tsc": t(late_first, p, e), "late_last_tsc": t(late_last, p, e),
            })
            if m == -2:
                out.rows[-1]["other_mappers"] = (other or {}).get(g, 0)
    # pairs grouped by mapper with one sort (pairs are sorted by key = mapper * 0x10000 + granter already)
    mappers, starts = np.unique(p_mapper, return_index=True)
    bounds = np.append(starts, len(p_mapper))
    fidx, fts = m_first_map
    for k, m in enumerate(mappers.tolist()):
        ps = np.arange(bounds[k], bounds[k + 1])
        nb = ep.count(m) if m >= 0 else 0
        mm, mu = m_maps[ps].sum(axis=0), m_unmaps[ps].sum(axis=0)
        cum = np.cumsum(mm - mu)
        for e in range(nb + 1):
            firsts = [(int(fidx[q, e]), int(fts[q, e])) for q in ps if fidx[q, e] >= 0]
            granters = sorted(int(p_granter[q]) for q in ps if m_maps[q, e] or m_unmaps[q, e])
            out.by_mapper.append({
                "mapper": _dom_or_none(m), "epoch": e, "maps": int(mm[e]), "unmaps": int(mu[e]),
                "first_map_tsc": min(firsts)[1] if firsts else None,
                "outstanding_at_boundary": int(cum[e]) if e < nb else None,
                "outstanding_at_end": int(cum[-1]) if e == nb else None, "granters": granters,
            })


# -- balloon -----------------------------------------------------------------------------------------------------
def balloon_layout(rec: R.Records, xen_version: tuple[int, int] | None = None):
    """The catalog's DECREASE_RESERVATION payload layout for the capture, as (label, layout): the label is the
    layout's release condition, ">=4.18" (d3 = domid, d4 = order) or "<4.18" (d3 = domid | order << 16, d4 stale).
    The release is the given one, else the decoder's layout guess, else the guess from the records' payloads
    (catalog.guess_decrease_reservation, the decoder's rule 3)."""
    from tracelens.parsers.xentrace.catalog import guess_decrease_reservation

    v = xen_version or rec.layout_version
    if v is None:
        sel = rec.rows(K.CAT_DECREASE)
        if sel.size:
            v = guess_decrease_reservation(rec.word(3, sel), rec.word(4, sel)).version
    _name, layout = load_catalog().layout(R.MEM_DECREASE_RESERVATION, 4, tuple(v) if v else None)
    return layout.xen, layout


def _merge_ranges(start: np.ndarray, end: np.ndarray) -> list[tuple[int, int]]:
    """Union of [start, end) gfn ranges, vectorised."""
    o = np.argsort(start, kind="stable")
    s, e = start[o], end[o]
    reach = np.maximum.accumulate(e)
    new = np.ones(s.size, bool)
    new[1:] = s[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    ends = np.append(idx[1:], s.size) - 1
    return [(int(s[a]), int(reach[b])) for a, b in zip(idx, ends)]


def _decreases(rec: R.Records, xen_version=None):
    """(layout label, rows, gfn, target domid, order) of the DECREASE_RESERVATION records, in time order, read through
    the catalog's layout of the release (:func:`balloon_layout`)."""
    label, layout = balloon_layout(rec, xen_version)
    sel = rec.rows(K.CAT_DECREASE)
    words = [rec.word(j, sel) for j in (1, 2, 3, 4)]
    gfn = layout.column("gfn", words)
    domid = layout.column("domid", words) & 0xFFFF
    return label, sel, gfn, domid, np.minimum(layout.column("order", words), 62)


def balloon_series(rec: R.Records, ep: Epochs, xen_version=None) -> dict:
    """Per DECREASE_RESERVATION record, in time order: ``tsc`` (u64 cycles), ``domid`` (the target, i64),
    ``epoch`` (of the target, i64) and ``pages`` (4 KiB pages it gave back, 2^order, i64): what timelines draw as
    pages ballooned out so far in each epoch. Summed per (domid, epoch) it gives the ledger's ``pages``."""
    _label, sel, _gfn, domid, order = _decreases(rec, xen_version)
    tsc = np.asarray(rec.tsc[sel], np.uint64)
    return {"tsc": tsc, "domid": np.asarray(domid, np.int64), "epoch": ep.of(domid, tsc).astype(np.int64),
            "pages": np.left_shift(np.int64(1), order.astype(np.int64))}


def balloon_ledger(rec: R.Records, ep: Epochs, xen_version=None, hypercalls: list[dict] | None = None) -> list[dict]:
    """One row per (target domain, epoch) with DECREASE_RESERVATION records: extents, pages (4 KiB), pages by order,
    merged gfn ranges [first, end), first/last TSC, and the memory_op hypercall count of that domain and epoch
    (the only trace of balloon-up)."""
    label, sel, gfn, domid, order = _decreases(rec, xen_version)
    tsc = rec.tsc[sel]
    epoch = ep.of(domid, tsc)
    memops: dict[tuple, int] = {}
    for h in hypercalls or ():
        if h["op"] == MEMORY_OP and h["domid"] is not None:
            memops[(h["domid"], h["epoch"])] = memops.get((h["domid"], h["epoch"]), 0) + h["count"]
    rows = []
    if sel.size:
        keys, inv = np.unique(np.stack([domid, epoch], axis=1), axis=0, return_inverse=True)
        inv = inv.ravel()
        for k in range(len(keys)):  # one pass per (domain, epoch) group
            g = np.flatnonzero(inv == k)
            pages = np.left_shift(np.int64(1), order[g])
            by_order = {str(int(o)): int(c) for o, c in zip(*np.unique(order[g], return_counts=True))}
            d, e = int(keys[k, 0]), int(keys[k, 1])
            rows.append({"domid": d, "epoch": e, "extents": int(g.size), "pages": int(pages.sum()),
                         "extents_by_order": by_order, "gfn_ranges": _merge_ranges(gfn[g], gfn[g] + pages),
                         "first_tsc": int(tsc[g].min()), "last_tsc": int(tsc[g].max()),
                         "memory_op_calls": memops.get((d, e), 0), "layout": label})
    return rows


# -- hypercalls --------------------------------------------------------------------------------------------------


def hypercall_counts(rec: R.Records, ep: Epochs) -> list[dict]:
    """Hypercalls per (domain, epoch, source, op, cmd): ``pv`` from PV_HYPERCALL_V2 (op = d1 bits 0-19; cmd = the
    first recorded argument A0 where Xen records it -- grant_table_op masked with GNTTABOP_CMD_MASK 0xfff, sched_op,
    vcpu_op), ``pv-multicall`` from HYPERCALL_SUBCALL, ``hvm`` from VMMCALL (op = eax, no arguments). The domain is
    the one running on the pCPU (None when unknown). Ops are the low 20 bits (all Xen hypercall numbers fit; a
    Viridian call code in eax may not), epochs beyond 4095 are counted in 4095."""
    sel = rec.rows(K.CAT_HYPERCALL)
    if not sel.size:
        return []
    d1, _, _ = rec.buffer("d1")
    d2, _, _ = rec.buffer("d2")  # read only where n_extra >= 2
    dom, bits, off = rec.buffer("dom")
    ukeys, counts = K.hypercall_count(sel, rec.event, rec.n_extra, d1, d2, dom, bits, off, rec.tsc, *ep.csr())
    return hypercall_rows(ukeys, counts)


def hypercall_rows(ukeys: np.ndarray, counts: np.ndarray) -> list[dict]:
    """Rows from the distinct keys of :func:`K.hypercall_count` and their counts, sorted by key."""
    o = np.argsort(ukeys)
    u, counts = ukeys[o], counts[o]
    c = (u & np.uint64(0xFFF)).astype(np.int64)
    o = ((u >> np.uint64(12)) & np.uint64(0xFFFFF)).astype(np.int64)
    hc = ((u >> np.uint64(32)) & np.uint64(1)).astype(bool)
    sr = ((u >> np.uint64(33)) & np.uint64(3)).astype(np.int64)
    ep_ = ((u >> np.uint64(35)) & np.uint64(0xFFF)).astype(np.int64)
    dm = (u >> np.uint64(47)).astype(np.int64) - 1
    keys = np.stack([dm, ep_, sr, o, np.where(hc, c, -1)], axis=1)
    names = ("pv", "pv-multicall", "hvm")
    rows = []
    for (d, e, s, o, c), n in zip(keys.tolist(), counts.tolist()):
        row = {"domid": _dom_or_none(d), "epoch": e, "source": names[s], "op": o,
               "op_name": HYPERCALL_NAMES.get(o, f"op_{o}"), "cmd": None if c < 0 else c, "count": n}
        if c >= 0:
            row["cmd_name"] = SUBOP_NAMES.get(o, {}).get(c, str(c))
        rows.append(row)
    return rows


# -- host IRQ vectors --------------------------------------------------------------------------------------------
def vector_ledger(rec: R.Records, handled_counts: np.ndarray | None = None, handled_big: dict | None = None,
                  handled_other: int = 0) -> list[dict]:
    """Per Xen irq: ASSIGN_VECTOR and CLEAR_VECTOR counts (irq = d1 bits 0-15, vector = bits 16-31, spec §4.2),
    the last vector seen, whether a vector is still assigned at the end, and IRQ_HANDLED deliveries."""
    d1, _, _ = rec.buffer("d1")  # every IRQ row has d1 (classify requires n_extra >= 1)
    h_small, h_big, vd1, assign = K.irq_tallies(rec.rows(K.CAT_IRQ), rec.event, d1)
    if handled_counts is not None:  # deliveries tallied while streaming (their rows were not kept)
        h_small = h_small + handled_counts
    virq = vd1 & 0xFFFF
    vec = vd1 >> 16

    def counts(x):
        u, c = np.unique(x, return_counts=True)
        return dict(zip(u.tolist(), c.tolist()))

    assigns, clears = counts(virq[assign]), counts(virq[~assign])
    small = np.flatnonzero(h_small)
    handled = dict(zip(small.tolist(), h_small[small].tolist()))
    handled.update(counts(h_big))
    for irq, c in (handled_big or {}).items():
        handled[irq] = handled.get(irq, 0) + c
    hirq = np.array(sorted(handled), np.int64)
    last_of = {}
    if virq.size:  # the last ASSIGN/CLEAR record of each irq: first occurrence in reversed order
        u, first_rev = np.unique(virq[::-1], return_index=True)
        last_of = dict(zip(u.tolist(), (virq.size - 1 - first_rev).tolist()))
    rows = []
    for irq in np.union1d(virq, hirq).tolist():
        j = last_of.get(irq)
        rows.append({"irq": irq, "assigns": assigns.get(irq, 0), "clears": clears.get(irq, 0),
                     "last_vector": int(vec[j]) if j is not None else None,
                     "assigned_at_end": bool(j is not None and assign[j]),
                     "handled": handled.get(irq, 0)})
    if handled_other:  # deliveries to more distinct out-of-range irqs than the streamed analysis tallies one by one
        rows.append({"irq": None, "assigns": 0, "clears": 0, "last_vector": None, "assigned_at_end": False,
                     "handled": int(handled_other), "other_irqs": True})
    return rows


# -- guest tracepoints -------------------------------------------------------------------------------------------
@dataclass
class GuestLedger:
    """``instrumented``: (domid, epoch) pairs whose kernel announced the convention (HELLO). ``grefs`` / ``pirqs``:
    objects still granted / bound at the end of each instrumented epoch (rows with the last GRANT/BIND record's
    payload). ``events``: tracepoint counts per (domid, epoch, name)."""

    instrumented: set = field(default_factory=set)
    grefs: list[dict] = field(default_factory=list)
    pirqs: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)


def _open_objects(idx, key_obj, is_open, domid, epoch, tsc, rec, fields):
    """Objects whose last record (per domid, epoch, object) opens them."""
    if not idx.size:
        return []
    keys = np.stack([domid, epoch, key_obj], axis=1)
    # last record of each key: unique over the reversed order
    rev = keys[::-1]
    _, first_rev = np.unique(rev, axis=0, return_index=True)
    last = idx.size - 1 - first_rev
    rows = []
    for j in np.sort(last).tolist():
        if is_open[j]:
            i = idx[j]
            row = {"domid": int(domid[j]), "epoch": int(epoch[j]), "tsc": int(tsc[j]), "offset": int(rec.offset[i])}
            for k, name in enumerate(fields):
                row[name] = rec.at(i, k + 1)
            rows.append(row)
    return rows


def guest_ledger(rec: R.Records, ep: Epochs) -> GuestLedger:
    gsel = rec.rows(K.CAT_GUEST)
    domid = rec.dom_at(gsel)
    gsel, domid = gsel[domid >= 0], domid[domid >= 0]
    out = GuestLedger()
    if not gsel.size:
        return out
    n = rec.event[gsel].astype(np.int64) & 0xFFF
    epoch = ep.of(domid, rec.tsc[gsel])
    hello = (n == GT_HELLO) & (rec.word(1, gsel) == GT_MAGIC)
    # a tracepoint counts from the first HELLO of its domain's epoch on
    key = domid * (1 << 32) + epoch
    hk, hfirst = np.unique(key[hello], return_index=True)
    if not hk.size:
        return out
    hpos = np.flatnonzero(hello)[hfirst]  # position of each (domid, epoch)'s first HELLO
    pos = np.minimum(np.searchsorted(hk, key), hk.size - 1)
    after_hello = (hk[pos] == key) & (np.arange(key.size) >= hpos[pos])
    out.instrumented = {(int(k >> 32), int(k & 0xFFFFFFFF)) for k in hk.tolist()}
    live = after_hello & np.isin(n, list(GT_NAMES))
    tsc = rec.tsc[gsel]
    for which, (open_ev, close_ev, fields) in {
        "grefs": (GT_GRANT_ACCESS, GT_END_ACCESS, ("ref", "grantee", "frame")),
        "pirqs": (GT_PIRQ_BIND, GT_PIRQ_UNBIND, ("pirq", "irq", "kind", "gsi_or_vector", "port")),
    }.items():
        m = np.flatnonzero(live & ((n == open_ev) | (n == close_ev)))
        rows = _open_objects(gsel[m], rec.word(1, gsel[m]), n[m] == open_ev, domid[m], epoch[m],
                             tsc[m], rec, fields)
        setattr(out, which, rows)
    m = np.flatnonzero(live)
    if m.size:
        keys, counts = np.unique(np.stack([domid[m], epoch[m], n[m]], axis=1), axis=0, return_counts=True)
        out.events = [{"domid": d, "epoch": e, "event": GT_NAMES[x], "count": c}
                      for (d, e, x), c in zip(keys.tolist(), counts.tolist())]
    return out
