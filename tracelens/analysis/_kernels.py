"""numba kernels of the analysis (private; twin-tested against tests/analysis_reference.py).

Arrays only, in the decoder's time order. Units: record indices (callers map them to TSC cycles and offsets).
"""

from __future__ import annotations

import numpy as np

from tracelens._jit import njit, njit_norc, numba, pin_constants, prange
from tracelens.analysis import records as R
from tracelens.parsers.xentrace.catalog import SUBCLASS_ID_MASK

# Event ids (tracelens.analysis.records takes them from the catalog by name), bound here so that numba compiles them
# in as constants (pin_constants, at the end of the module, keeps its cache in step with them)
EV_SCHED_SWITCH = R.SCHED_SWITCH
EV_CONTINUE_RUNNING = R.CONTINUE_RUNNING
EV_GRANT_MAP = R.MEM_GRANT_MAP
EV_HYPERCALL_V2 = R.PV_HYPERCALL_V2
EV_HYPERCALL_SUBCALL = R.PV_HYPERCALL_SUBCALL
EV_IRQ_ASSIGN = R.HW_IRQ_ASSIGN_VECTOR
EV_IRQ_HANDLED = R.HW_IRQ_HANDLED
EV_RUNSTATE, RUNSTATE_MASK = R.RUNSTATE_CHANGE, R.RUNSTATE_MASK
SCHED_MIN = R.SCHED_MIN
TRC_GUEST = R.TRC_GUEST


@njit(cache=True)
def grant_ledger(pair, granter, mapper, tsc, is_map, n_pairs, n_gep, n_mep, bdom, bstart, btsc):
    """The grant ledger over MAP/UNMAP records (spec ../shared/spec/xentrace.md §4.1).

    pair     i[n]    index of the record's (mapper, granter) pair
    granter  i[n]    the granting domain; its epoch at the record (``gep``) comes from the boundaries in CSR form
                     (bdom, bstart, btsc; see :func:`epochs_of`)
    mapper   i[n]    the mapping domain (-1: unknown); its epoch ``mep`` likewise
    tsc      u64[n]
    is_map   bool[n] MAP (True) or UNMAP (False)

    Per (pair, granter epoch): maps, unmaps, late unmaps (an unmap while handles counted at the granter's latest
    boundary are still unreleased: the grant ref is not traced, so releases are taken oldest first), and the
    first/last record index of the pair in that epoch and of its late unmaps (-1 when none). Per (pair, mapper
    epoch): maps and unmaps and the first map's record index. ``after[i]``: the pair's maps minus unmaps just after
    record i (the outstanding count over time).
    """
    n = pair.shape[0]
    maps = np.zeros((n_pairs, n_gep), np.int64)
    unmaps = np.zeros((n_pairs, n_gep), np.int64)
    late = np.zeros((n_pairs, n_gep), np.int64)
    first = np.full((n_pairs, n_gep), -1, np.int64)
    last = np.full((n_pairs, n_gep), -1, np.int64)
    late_first = np.full((n_pairs, n_gep), -1, np.int64)
    late_last = np.full((n_pairs, n_gep), -1, np.int64)
    m_maps = np.zeros((n_pairs, n_mep), np.int64)
    m_unmaps = np.zeros((n_pairs, n_mep), np.int64)
    m_first_map = np.full((n_pairs, n_mep), -1, np.int64)
    after = np.empty(n, np.int32)
    # one implementation: the streamed analysis' step over the whole capture as one batch (the TSC copies of the
    # first/last records and the per-granter totals are not needed here)
    gts = np.zeros((n_pairs, n_gep), np.uint64)
    mts = np.zeros((n_pairs, n_mep), np.uint64)
    grant_ledger_step(pair, granter, mapper, tsc, is_map, 0, maps, unmaps, late, first, last, late_first, late_last,
                      m_maps, m_unmaps, m_first_map, gts.copy(), gts.copy(), gts.copy(), gts, mts,
                      np.zeros(n_pairs, np.int64), np.zeros(n_pairs, np.int64), np.zeros(n_pairs, np.int64),
                      _dom_slots(bdom), np.zeros(bdom.shape[0], np.int64), np.zeros(bdom.shape[0], np.int64), bstart,
                      btsc, after, np.zeros(65536, np.int64), np.empty(n, np.int64))
    return maps, unmaps, late, first, last, late_first, late_last, m_maps, m_unmaps, m_first_map, after


# record categories of :func:`classify` (0: not used by the analysis, or read in place: scheduling records are
# scanned only after a kexec shutdown, by find_resumes, so they are not listed -- they are a fifth of a capture)
CAT_SHUTDOWN = 1   # SCHED_SHUTDOWN, SHUTDOWN_CODE (>= 3 words)
CAT_LIFE = 2       # DOM0_DOM_ADD, DOM0_DOM_REM, SCHED_DOM_REM (>= 1)
CAT_GRANT = 3      # MEM_PAGE_GRANT_MAP / UNMAP (>= 1)
CAT_DECREASE = 4   # MEM_DECREASE_RESERVATION (>= 4)
CAT_HYPERCALL = 5  # PV_HYPERCALL_V2, PV_HYPERCALL_SUBCALL, HVM_VMMCALL (>= 1)
CAT_IRQ = 6        # HW_IRQ_CLEAR_VECTOR, ASSIGN_VECTOR, HANDLED (>= 1)
CAT_GUEST = 7      # TRC_GUEST class
CAT_LOST = 8       # LOST_RECORDS (any length: a short one is damage the analysis must see, not skip)
CAT_OFFLINE = 9    # runstate changes into or out of offline (state 3) (>= 1): where a kexec'd domain resumes
N_CAT = 10


def _category_table():
    """Open-addressing table of the exact event ids the analysis reads: (ids u32, category u8, minimum n_extra u8).
    TRC_GUEST (a whole class) is tested separately."""
    entries = [(R.SCHED_SHUTDOWN, CAT_SHUTDOWN, 3), (R.SCHED_SHUTDOWN_CODE, CAT_SHUTDOWN, 3),
               (R.SCHED_DOM_REM, CAT_LIFE, 1), (R.DOM0_DOM_ADD, CAT_LIFE, 1), (R.DOM0_DOM_REM, CAT_LIFE, 1),
               (R.MEM_GRANT_MAP, CAT_GRANT, 1), (R.MEM_GRANT_UNMAP, CAT_GRANT, 1),
               (R.MEM_DECREASE_RESERVATION, CAT_DECREASE, 4), (R.PV_HYPERCALL_V2, CAT_HYPERCALL, 1),
               (R.PV_HYPERCALL_SUBCALL, CAT_HYPERCALL, 1), (R.HVM_VMMCALL, CAT_HYPERCALL, 1),
               (R.HW_IRQ_CLEAR_VECTOR, CAT_IRQ, 1), (R.HW_IRQ_ASSIGN_VECTOR, CAT_IRQ, 1), (R.HW_IRQ_HANDLED, CAT_IRQ, 1),
               (R.LOST_RECORDS, CAT_LOST, 0)]
    entries += [(R.RUNSTATE_CHANGE | old << 8 | new << 4, CAT_OFFLINE, 1)
                for old in range(4) for new in range(4) if old != new and 3 in (old, new)]
    ids = np.zeros(TABLE_SLOTS, np.uint32)
    cat = np.zeros(TABLE_SLOTS, np.uint8)
    need = np.zeros(TABLE_SLOTS, np.uint8)
    for e, c, m in entries:
        j = ((e * HASH_MUL) & 0xFFFFFFFF) >> HASH_SHIFT
        if ids[j]:  # _category probes one slot only
            raise AssertionError(f"category table: 0x{e:08x} collides with 0x{int(ids[j]):08x}; change HASH_MUL")
        ids[j], cat[j], need[j] = e, c, m
    return ids, cat, need


TABLE_SLOTS, HASH_MUL, HASH_SHIFT = 1024, 0x9E3779B1, 22
TABLE_IDS, TABLE_CAT, TABLE_NEED = _category_table()


SMALL_CLASSIFY = 1 << 20  # rows below which numpy classifies (no kernel to compile or load)


def classify(event, n_extra):
    """Rows grouped by category (see :func:`_classify`); small inputs (the streamed analysis' rare records) by
    numpy, with the same single-probe lookup."""
    proto = np.empty(0, np.int32 if event.shape[0] < 2**31 else np.int64)  # the row index type
    if event.shape[0] >= SMALL_CLASSIFY:
        return _classify(event, n_extra, TABLE_IDS, TABLE_CAT, TABLE_NEED, proto)
    e = np.asarray(event, np.uint64)
    j = (((e * np.uint64(HASH_MUL)) & np.uint64(0xFFFFFFFF)) >> np.uint64(HASH_SHIFT)).astype(np.int64)
    k = np.where((TABLE_IDS[j] == event) & (n_extra >= TABLE_NEED[j]), TABLE_CAT[j], 0)
    k = np.where((k == 0) & ((e & np.uint64(SUBCLASS_ID_MASK)) == np.uint64(TRC_GUEST)), CAT_GUEST, k)
    sel = np.flatnonzero(k)
    order = np.argsort(k[sel], kind="stable")
    rows = sel[order].astype(proto.dtype)
    starts = np.zeros(N_CAT + 1, np.int64)
    np.cumsum(np.bincount(k[sel], minlength=N_CAT)[:N_CAT], out=starts[1:])
    starts[1] = 0
    return rows, starts


@njit(cache=True, inline="always")
def _category(e, nx, ids, table_cat, need):
    """Category of one record: a single probe (no entry of the table collides with another at its home slot,
    checked at import), no branch."""
    j = np.int64(((np.uint64(e) * np.uint64(HASH_MUL)) & np.uint64(0xFFFFFFFF)) >> np.uint64(HASH_SHIFT))
    k = table_cat[j] if (ids[j] == e) & (nx >= need[j]) else np.uint8(0)
    # TRC_GUEST: a whole subclass (class 0x0800, subclass nibble f)
    return CAT_GUEST if (k == 0) & ((e & SUBCLASS_ID_MASK) == TRC_GUEST) else k


@njit(cache=True, parallel=True)
def _classify(event, n_extra, ids, table_cat, need, proto):
    """Group the rows the analysis reads by category: returns (rows, starts) with the rows of category c, in time
    order, at rows[starts[c]:starts[c+1]] (category 0, everything else, is left out). One pass over the records,
    parallel over chunks: each chunk appends the (row, category) of its selected records at the start of its own
    stretch of a scratch buffer as long as the capture (only the pages written are ever backed: a sixth or so), and
    counts per category (thread-local, to avoid false sharing); then each chunk's selections are scattered to their
    category's place."""
    n = event.shape[0]
    nchunk = 32
    step = (n + nchunk - 1) // nchunk
    counts = np.zeros((nchunk, 16), np.int64)
    sel_row = np.empty(n, proto.dtype)
    sel_cat = np.empty(n, np.uint8)
    for c in prange(nchunk):
        local = np.zeros(16, np.int64)
        o = c * step
        for i in range(c * step, min(n, (c + 1) * step)):
            k = _category(event[i], n_extra[i], ids, table_cat, need)
            if k != 0:  # (category 0 is not counted: a counter bumped on every record chains the loop through memory)
                sel_row[o] = i
                sel_cat[o] = k
                o += 1
                local[k] += 1
        counts[c, :] = local
    starts = np.zeros(N_CAT + 1, np.int64)
    for k in range(1, N_CAT):
        starts[k + 1] = starts[k] + counts[:, k].sum()
    base = np.zeros((nchunk, 16), np.int64)
    for k in range(1, N_CAT):
        acc = starts[k]
        for c in range(nchunk):
            base[c, k] = acc
            acc += counts[c, k]
    rows = np.empty(starts[N_CAT], proto.dtype)
    for c in prange(nchunk):
        pos = base[c].copy()
        m = 0
        for k in range(1, N_CAT):
            m += counts[c, k]
        for q in range(c * step, c * step + m):
            k = sel_cat[q]
            rows[pos[k]] = sel_row[q]
            pos[k] += 1
    return rows, starts


@njit(cache=True)
def _dom_slots(bdom):
    """domid + 1 (0..65536) -> index into bdom, or -1."""
    slot = np.full(65538, -1, np.int64)
    for j in range(bdom.shape[0]):
        d = bdom[j]
        if -1 <= d <= 65536:
            slot[d + 1] = j
    return slot


@njit(cache=True, inline="always")
def _epoch_cursor(d, t, slot, cursor, bstart, btsc):
    """Epoch of (d, t) by moving the domain's cursor over its sorted boundary TSCs: O(1) amortised on time-ordered
    rows, and still exact when a TSC goes backwards (skew)."""
    if d < -1 or d > 65536:
        return 0
    j = slot[d + 1]
    if j < 0:
        return 0
    a, b = bstart[j], bstart[j + 1]
    c = cursor[j]
    while c < b - a and btsc[a + c] <= t:
        c += 1
    while c > 0 and btsc[a + c - 1] > t:
        c -= 1
    cursor[j] = c
    return c


@njit(cache=True)
def epochs_of(domids, tscs, bdom, bstart, btsc):
    """Epoch of each (domid, tsc): the number of the domain's boundaries with a TSC at or before tsc. Boundaries in
    CSR form: domain bdom[j] (sorted) has the sorted TSCs btsc[bstart[j]:bstart[j+1]]."""
    n = domids.shape[0]
    out = np.zeros(n, np.int64)
    slot = _dom_slots(bdom)
    cursor = np.zeros(bdom.shape[0], np.int64)
    for i in range(n):
        out[i] = _epoch_cursor(domids[i], tscs[i], slot, cursor, bstart, btsc)
    return out


@njit(cache=True, inline="always")
def _is_valid(bits, bit_off, i):
    if bits.shape[0] == 0:
        return True
    p = i + bit_off
    return ((bits[p >> 3] >> (p & 7)) & 1) == 1


@njit(cache=True, inline="always")
def _run_off(e, nx, w1, w3):
    """(domid put on a pCPU, domid with an offline transition) of a scheduling record, -1 when none: runstate change
    to running or CONTINUE_RUNNING (d1 >> 16), SCHED_SWITCH (next domid d3); runstate changes into or out of state 3
    (offline)."""
    r = -1
    o = -1
    if e == EV_SCHED_SWITCH:
        if nx >= 4:
            r = w3 & 0xFFFF
    elif nx >= 1:
        if e == EV_CONTINUE_RUNNING:
            r = w1 >> 16
        elif (e & RUNSTATE_MASK) == EV_RUNSTATE and ((e >> 8) & 0xF) < 4:
            old = (e >> 8) & 3
            new = (e >> 4) & 3
            if new == 0:
                r = w1 >> 16
            if old != new and (old == 3 or new == 3):
                o = w1 >> 16
    return r, o


@njit(cache=True)
def _next_run(i, n, domid, event, n_extra, d1, d3):
    """First row at or after i putting a vCPU of ``domid`` on a pCPU; -1 when none."""
    for j in range(i, n):
        e = event[j]
        if (e & SUBCLASS_ID_MASK) != SCHED_MIN and e != EV_SCHED_SWITCH:
            continue
        r, o = _run_off(e, n_extra[j], np.int64(d1[j]), np.int64(d3[j]))
        if r == domid:
            return j
    return -1


@njit(cache=True)
def find_resumes(starts, domids, offline_rows, event, n_extra, d1, d3):
    """For each query k (a kexec shutdown of domain ``domids[k]``; scan from row ``starts[k]``): the first record
    putting a vCPU of the domain on a pCPU at or after the domain's first offline transition from there (runstate
    change into or out of state 3), as (row, True); without one, (the first running record from there, False); or
    (-1, False).

    ``offline_rows`` (the CAT_OFFLINE rows, in time order: a handful per kexec) give the offline transition, so
    each answer is two short forward scans (the domain runs again soon after) instead of one scan to the end of the
    capture; only a domain that never runs again costs a scan to the end."""
    q = starts.shape[0]
    n = event.shape[0]
    res_row = np.full(q, -1, np.int64)
    res_off = np.zeros(q, np.bool_)
    for k in range(q):
        s = starts[k]
        d = domids[k]
        first_run = _next_run(s, n, d, event, n_extra, d1, d3)
        # the domain's first offline transition at or after s
        f = -1
        for t in range(np.searchsorted(offline_rows, s), offline_rows.shape[0]):
            j = offline_rows[t]
            if (np.int64(d1[j]) >> 16) == d:
                f = j
                break
        if f >= 0:
            j = _next_run(f, n, d, event, n_extra, d1, d3)
            if j >= 0:
                res_row[k] = j
                res_off[k] = True
                continue
        res_row[k] = first_run
    return res_row, res_off


@njit(cache=True)
def count_keys(keys):
    """Distinct u64 keys and their counts, by open addressing (no sort of the input). Output order is arbitrary."""
    cap = 4096
    table = np.zeros(cap, np.uint64)
    used = np.zeros(cap, np.bool_)
    cnt = np.zeros(cap, np.int64)
    n_used = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        h = (k * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
        j = np.int64(h) & (cap - 1)
        while used[j] and table[j] != k:
            j = (j + 1) & (cap - 1)
        if not used[j]:
            used[j] = True
            table[j] = k
            n_used += 1
            if 2 * n_used > cap:  # grow and rehash
                ocap, otable, oused, ocnt = cap, table, used, cnt
                cap *= 4
                table = np.zeros(cap, np.uint64)
                used = np.zeros(cap, np.bool_)
                cnt = np.zeros(cap, np.int64)
                for q in range(ocap):
                    if oused[q]:
                        hh = (otable[q] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
                        jj = np.int64(hh) & (cap - 1)
                        while used[jj]:
                            jj = (jj + 1) & (cap - 1)
                        used[jj] = True
                        table[jj] = otable[q]
                        cnt[jj] = ocnt[q]
                j = np.int64(h) & (cap - 1)
                while table[j] != k or not used[j]:
                    j = (j + 1) & (cap - 1)
        cnt[j] += 1
    out_k = np.empty(n_used, np.uint64)
    out_c = np.empty(n_used, np.int64)
    o = 0
    for j in range(cap):
        if used[j]:
            out_k[o] = table[j]
            out_c[o] = cnt[j]
            o += 1
    return out_k, out_c


@njit(cache=True, inline="always")
def _hypercall_key(i, event, n_extra, d1, d2, dom, dom_bits, dom_bit_off, tsc, slot, cursor, bstart, btsc):
    d = np.int64(dom[i]) if _is_valid(dom_bits, dom_bit_off, i) else np.int64(-1)
    ep = min(_epoch_cursor(d, tsc[i], slot, cursor, bstart, btsc), 0xFFF)
    e = event[i]
    src = 0 if e == EV_HYPERCALL_V2 else (1 if e == EV_HYPERCALL_SUBCALL else 2)
    w1 = np.int64(d1[i])
    has = 0
    cmd = 0
    if src != 2 and ((w1 >> 20) & 3) != 0 and n_extra[i] >= 2:
        has = 1
        cmd = np.int64(d2[i]) & 0xFFF
    k = np.uint64(d + 1)
    k = (k << np.uint64(12)) | np.uint64(ep)
    k = (k << np.uint64(2)) | np.uint64(src)
    k = (k << np.uint64(1)) | np.uint64(has)
    k = (k << np.uint64(20)) | np.uint64(w1 & 0xFFFFF)
    return (k << np.uint64(12)) | np.uint64(cmd)


HC_SLOTS = 1 << 13  # per-chunk table of hypercall_count; a chunk with more than half as many keys falls back


@njit(cache=True, parallel=True)
def hypercall_count(rows, event, n_extra, d1, d2, dom, dom_bits, dom_bit_off, tsc, bdom, bstart, btsc):
    """Hypercall counts per key, in one pass over the hypercall rows reading the columns' buffers directly (dom null
    -> -1 through its validity bitmap; epochs as in :func:`epochs_of`). One u64 key per record: dom+1 (17 bits) |
    epoch (12, saturating) | source (2: 0 PV_HYPERCALL_V2, 1 SUBCALL, 2 VMMCALL) | has_cmd (1) | op (20) | cmd (12).
    PV records carry op in d1 bits 0-19 and argument flags in bits 20-31; when A0 is recorded the cmd is d2 (low 12
    bits: GNTTABOP_CMD_MASK; other recorded commands are small).

    Parallel chunks (each with its own epoch cursors) count into their own small hash tables, which are then
    merged; no per-record key array is built. A chunk that sees more than HC_SLOTS / 2 distinct keys (a capture
    with random payloads) makes the whole count fall back to keys + :func:`count_keys`. Returns (distinct keys,
    counts)."""
    m = rows.shape[0]
    slot = _dom_slots(bdom)
    nchunk = 16
    step = (m + nchunk - 1) // nchunk
    tkeys = np.zeros((nchunk, HC_SLOTS), np.uint64)
    tused = np.zeros((nchunk, HC_SLOTS), np.bool_)
    tcnt = np.zeros((nchunk, HC_SLOTS), np.int64)
    full = np.zeros(nchunk, np.bool_)
    for c in prange(nchunk):
        cursor = np.zeros(bdom.shape[0], np.int64)
        nused = 0
        for q in range(c * step, min(m, (c + 1) * step)):
            k = _hypercall_key(rows[q], event, n_extra, d1, d2, dom, dom_bits, dom_bit_off, tsc, slot, cursor,
                               bstart, btsc)
            j = np.int64((k * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(51))  # 13 bits
            while tused[c, j] and tkeys[c, j] != k:
                j = (j + 1) & (HC_SLOTS - 1)
            if not tused[c, j]:
                if 2 * (nused + 1) > HC_SLOTS:
                    full[c] = True
                    break
                tused[c, j] = True
                tkeys[c, j] = k
                nused += 1
            tcnt[c, j] += 1
    if full.any():
        keys = np.empty(m, np.uint64)
        cursor = np.zeros(bdom.shape[0], np.int64)
        for q in range(m):
            keys[q] = _hypercall_key(rows[q], event, n_extra, d1, d2, dom, dom_bits, dom_bit_off, tsc, slot, cursor,
                                     bstart, btsc)
        return count_keys(keys)
    # merge the chunk tables: their used slots, repeated per chunk, counted with their counts
    total = 0
    for c in range(nchunk):
        for j in range(HC_SLOTS):
            if tused[c, j]:
                total += 1
    allk = np.empty(total, np.uint64)
    allc = np.empty(total, np.int64)
    o = 0
    for c in range(nchunk):
        for j in range(HC_SLOTS):
            if tused[c, j]:
                allk[o] = tkeys[c, j]
                allc[o] = tcnt[c, j]
                o += 1
    order = np.argsort(allk)
    nd = 0
    for r in range(total):
        if r == 0 or allk[order[r]] != allk[order[r - 1]]:
            nd += 1
    out_k = np.empty(nd, np.uint64)
    out_c = np.zeros(nd, np.int64)
    u = -1
    for r in range(total):
        if r == 0 or allk[order[r]] != allk[order[r - 1]]:
            u += 1
            out_k[u] = allk[order[r]]
        out_c[u] += allc[order[r]]
    return out_k, out_c


@njit(cache=True)
def take_i64(vals, bits, bit_off, sel, fill):
    """vals[sel] as i64, ``fill`` where the validity bitmap ``bits`` (empty: no nulls; bit ``bit_off`` is row 0)
    marks a null."""
    m = sel.shape[0]
    out = np.empty(m, np.int64)
    for q in range(m):
        i = sel[q]
        if _is_valid(bits, bit_off, i):
            out[q] = np.int64(vals[i + bit_off])
        else:
            out[q] = fill
    return out


@njit(cache=True)
def dense_ids(hi, lo):
    """``np.unique(keys, return_inverse=True)`` of the i64 keys ``hi * 0x10000 + lo`` (e.g. mapper and granter)
    when they have few distinct values, by hashing in one pass instead of sorting and without building the keys:
    (sorted distinct keys, i32 index of each key among them)."""
    n = hi.shape[0]
    cap = 1024
    table = np.zeros(cap, np.int64)
    tid = np.full(cap, -1, np.int64)
    uniq = np.empty(16, np.int64)
    nu = 0
    ids = np.empty(n, np.int32)
    for i in range(n):
        k = np.int64(hi[i]) * 0x10000 + np.int64(lo[i])
        j = np.int64((np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & (cap - 1)
        while tid[j] >= 0 and table[j] != k:
            j = (j + 1) & (cap - 1)
        if tid[j] < 0:
            if nu == uniq.shape[0]:
                grown = np.empty(2 * nu, np.int64)
                grown[:nu] = uniq[:nu]
                uniq = grown
            uniq[nu] = k
            table[j] = k
            tid[j] = nu
            nu += 1
            if 2 * nu > cap:  # grow and rehash
                cap *= 4
                table = np.zeros(cap, np.int64)
                tid = np.full(cap, -1, np.int64)
                for u in range(nu):
                    jj = np.int64((np.uint64(uniq[u]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & (cap - 1)
                    while tid[jj] >= 0:
                        jj = (jj + 1) & (cap - 1)
                    table[jj] = uniq[u]
                    tid[jj] = u
                j = np.int64((np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & (cap - 1)
                while table[j] != k or tid[j] < 0:
                    j = (j + 1) & (cap - 1)
        ids[i] = np.int32(tid[j])
    order = np.argsort(uniq[:nu])
    rank = np.empty(nu, np.int64)
    for r in range(nu):
        rank[order[r]] = r
    for i in range(n):
        ids[i] = np.int32(rank[ids[i]])
    return uniq[:nu][order], ids


@njit(cache=True, parallel=True)
def grant_rows(sel, event, tsc, d1, d1_bits, d1_off, dom, dom_bits, dom_off):
    """The columns the grant ledger reads, gathered for its rows in one parallel pass: mapper (i32, the running
    domain, -1 when unknown), granter (i32, d1 & 0xffff, 0 when absent), tsc, and MAP (True) / UNMAP."""
    m = sel.shape[0]
    mapper = np.empty(m, np.int32)
    granter = np.empty(m, np.int32)
    t = np.empty(m, np.uint64)
    is_map = np.empty(m, np.bool_)
    for q in prange(m):
        i = sel[q]
        mapper[q] = np.int32(dom[i]) if _is_valid(dom_bits, dom_off, i) else np.int32(-1)
        granter[q] = np.int32(np.int64(d1[i]) & 0xFFFF) if _is_valid(d1_bits, d1_off, i) else np.int32(0)
        t[q] = tsc[i]
        is_map[q] = event[i] == EV_GRANT_MAP
    return mapper, granter, t, is_map


@njit(cache=True)
def irq_tallies(rows, event, d1):
    """One pass over the IRQ rows (HW_IRQ_ASSIGN_VECTOR / CLEAR_VECTOR / HANDLED, all with d1): IRQ_HANDLED counts
    per irq below 65536 (``handled``), the irqs of the others (``handled_big``), and the ASSIGN/CLEAR rows' d1 and
    kind in time order (``vec_d1``, ``vec_assign``)."""
    m = rows.shape[0]
    handled = np.zeros(65536, np.int64)
    n_big = 0
    n_vec = 0
    q0 = m  # the first row that is not an in-range IRQ_HANDLED: the second pass starts there (usually none)
    for q in range(m):
        i = rows[q]
        if event[i] == EV_IRQ_HANDLED and d1[i] < 65536:
            handled[d1[i]] += 1
        else:
            if event[i] == EV_IRQ_HANDLED:
                n_big += 1
            else:
                n_vec += 1
            if q0 == m:
                q0 = q
    handled_big = np.empty(n_big, np.int64)
    vec_d1 = np.empty(n_vec, np.int64)
    vec_assign = np.empty(n_vec, np.bool_)
    b = 0
    v = 0
    for q in range(q0, m):
        i = rows[q]
        if event[i] == EV_IRQ_HANDLED:
            if d1[i] >= 65536:
                handled_big[b] = d1[i]
                b += 1
        else:
            vec_d1[v] = d1[i]
            vec_assign[v] = event[i] == EV_IRQ_ASSIGN
            v += 1
    return handled, handled_big, vec_d1, vec_assign


# -- the streamed analysis (tracelens/analysis/stream.py) ----------------------------------------------------------
# Two passes over the capture's windows, chunk by chunk, never building the record table:
#   pass 1 (:func:`stream_select`, parallel over pCPUs): per-pCPU state (inherited TSC, merge key K, running vCPU)
#          carried across chunks; the state at the start of every window is kept (a few thousand windows a GiB), the
#          rare records the analysis reads are copied out whole, IRQ deliveries tallied;
#   pass 2 (:func:`stream_grants_hypercalls`, parallel over windows, from the states of pass 1): grant MAP/UNMAP
#          rows (merged into time order by the driver) and hypercall counts, with epochs now that the boundaries
#          are known.
# A record's place in time order is (K, pCPU, position in its pCPU's stream), as in the decoder's merge.

from tracelens.parsers.xentrace import _kernels as XK  # noqa: E402
from tracelens.parsers.xentrace._kernels import (  # noqa: E402
    EV_LOST, UNKNOWN, _hash_count, _head_key, _header, _record_vcpu, _state_after, _window_reaching)

ROW_WORDS = 7


@njit(cache=True, nogil=True, inline="always")
def _hc_key(ev, n, w, body, d, ep):
    """The hypercall count key of :func:`_hypercall_key`, from a record's words."""
    src = 0 if ev == EV_HYPERCALL_V2 else (1 if ev == EV_HYPERCALL_SUBCALL else 2)
    w1 = np.int64(w[body])
    has = 0
    cmd = 0
    if src != 2 and ((w1 >> 20) & 3) != 0 and n >= 2:
        has = 1
        cmd = np.int64(w[body + 1]) & 0xFFF
    k = np.uint64(d + 1)
    k = (k << np.uint64(12)) | np.uint64(min(ep, 0xFFF))
    k = (k << np.uint64(2)) | np.uint64(src)
    k = (k << np.uint64(1)) | np.uint64(has)
    k = (k << np.uint64(20)) | np.uint64(w1 & 0xFFFFF)
    return (k << np.uint64(12)) | np.uint64(cmd)


@njit(cache=True, nogil=True)
def _hc_add(keys, used, cnt, nkeys, t, k, limit):
    """Count u64 key ``k`` in thread ``t``'s open-addressing table (``nkeys[t]`` keys so far); False when the table
    already holds ``limit`` keys and ``k`` is not one of them."""
    size = keys.shape[1]
    j = np.int64((k * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & (size - 1)
    while used[t, j] and keys[t, j] != k:
        j = (j + 1) & (size - 1)
    if not used[t, j]:
        if nkeys[t] >= limit:
            return False
        used[t, j] = True
        keys[t, j] = k
        nkeys[t] += 1
    cnt[t, j] += 1
    return True


STATE_FLAG = 256  # in stream_select's per-key kinds: the record can move the pCPU's state


@njit(cache=True, nogil=True, inline="always")
def _kind(ev, n, ids, table_cat, need):
    """A record key's kind for :func:`stream_select`: its category (:func:`_category`), with STATE_FLAG when
    :func:`_state_after` can change the pCPU's state on it (a runstate change or CONTINUE_RUNNING with a payload,
    LOST_RECORDS); every other record leaves the state as it is."""
    c = np.int64(_category(ev, n, ids, table_cat, need))
    if ((ev & RUNSTATE_MASK) == EV_RUNSTATE and n >= 1) or (ev == EV_CONTINUE_RUNNING and n >= 1) or ev == EV_LOST:
        c |= STATE_FLAG
    return c


@njit(cache=True, nogil=True, inline="always")
def _attribution(ev, n, w, body, state):
    """(dom, vcpu) of a record, -1 when unknown: the decoder's rule (``_record_vcpu``, docs/xentrace.md)."""
    d, v, known = _record_vcpu(ev, n, w, body, state)
    if not known:
        return np.int64(-1), np.int64(-1)
    return np.int64(d), np.int64(v)


@njit_norc(cache=True, parallel=True, nogil=True)
def stream_select(w, pos, vend, win_global, cpu_order, cpu_start, st_tsc, st_key, st_state, st_first, st_stats,
                  w_tsc0, w_key0, w_state0, w_grants, w_nrec, w_bad, ids, table_cat, need, cap_start, o_key, o_tsc,
                  o_off, o_cpu, o_ev, o_n, o_has, o_d, o_dom, o_vcpu, o_count, handled, hkeys, hcounts, hoverflow,
                  hcat, dom_counts, want_doms, dom_seen, big_keys, big_used, big_cnt, big_n, big_limit, big_other,
                  fuse_grants, fuse_hc, gcap_start, gk_key, gk_tsc, gk_mapper, gk_granter, gk_map, g_count, hc_keys,
                  hc_used, hc_cnt, hc_n, hc_limit, hc_full, w_hlo, w_hhi, seg_pos0, seg_wshift):
    """Pass 1 over one chunk of windows. ``cpu_order[cpu_start[k]:cpu_start[k+1]]`` lists pCPU k's windows of the
    chunk in file order (k is the pCPU number); ``win_global`` maps a chunk window to its index
    in the capture. Per pCPU, ``st_*`` carry the state across chunks (updated in place): TSC, K, vCPU state, first
    timed TSC, and stats (records, LOST_RECORDS markers, records lost, smallest and largest TSC, timed records,
    malformed LOST_RECORDS: fewer than 4 words or a count of 0). ``dom_seen[thread, dom]`` is set for every domain a
    record makes current on a pCPU (:func:`_state_after`; tracelens.analysis.records.seen_domains is its twin).
    Every window's starting TSC, K and state go to ``w_tsc0``/``w_key0``/``w_state0``, its record count to
    ``w_nrec``, its grant record count to ``w_grants``, and the word position of a record that overruns it (the
    walk of that window stops there) to ``w_bad`` (-1 when none).

    Records whose analysis category is not 0 (``table_cat``; see :func:`_category`) are copied to pCPU k's stretch
    of the ``o_*`` rows starting at ``cap_start[k]`` (``o_count[k]`` counts them even past the stretch's end
    ``cap_start[k+1]``: the caller then runs the chunk again with room for all), except grant MAP/UNMAP and
    hypercall records (pass 2) and IRQ_HANDLED, tallied per irq: below 65536 in ``handled[thread, irq]``, others
    (no real irq number; random payloads) in per-thread tables of at most ``big_limit`` irqs, the rest summed in
    ``big_other[thread]``.
    (event | n_extra << 28) are counted per thread in ``hkeys``/``hcounts`` (``hoverflow[thread]`` when full) and,
    with ``want_doms``, records per attributed domain in ``dom_counts[thread, dom]`` (65536: unknown).

    One probe per record serves both the count and the record's kind: ``hcat[thread, slot]`` holds the category
    of the key in that slot, plus STATE_FLAG when the record can move the pCPU's state (:func:`_state_after`),
    computed when the key first enters the table (15 % of the kernel's time against a second probe per record).

    For the analysis of a whole capture (tracelens.analysis.stream, "Pass 2's work in pass 1"): with
    ``fuse_grants``, grant MAP/UNMAP rows are also written to pCPU k's stretch of the ``gk_*`` rows from
    ``gcap_start[k]`` (K, TSC, mapper, granter, MAP or not; ``g_count[k]`` counts them even past the stretch);
    with ``fuse_hc``, hypercalls are counted per thread under the key of :func:`_hc_key` with the window's
    *segment* in the epoch's place: its word offset from ``seg_pos0`` shifted right by ``seg_wshift`` (the epochs
    are not known yet; the driver gives each segment's counts their epoch afterwards, from the windows' smallest
    and largest hypercall TSC in ``w_hlo``/``w_hhi``).
    ``hc_full[thread]`` is set when a key does not fit (the driver then counts the chunk's hypercalls in pass 2)."""
    ncpu = cpu_start.shape[0] - 1
    for k in prange(ncpu):
        j0 = cpu_start[k]
        j1 = cpu_start[k + 1]
        if j0 == j1:
            o_count[k] = 0
            continue
        tid = numba.get_thread_id()
        tsc = st_tsc[k]
        key = st_key[k]
        state = np.int64(st_state[k])
        first = st_first[k]
        nrec = st_stats[k, 0]
        lost_recs = st_stats[k, 1]
        lost_n = st_stats[k, 2]
        lo = st_stats[k, 3]
        hi = st_stats[k, 4]
        timed = st_stats[k, 5]
        bad_lost = st_stats[k, 6]
        o = cap_start[k]
        cap_end = cap_start[k + 1]
        go = gcap_start[k]
        gcap_end = gcap_start[k + 1]
        for j in range(j0, j1):
            wi = cpu_order[j]
            g = win_global[wi]
            w_tsc0[g] = tsc
            w_key0[g] = key
            w_state0[g] = state
            p = pos[wi]
            e = vend[wi]
            ngrant = 0
            nwin = 0
            w_bad[g] = -1
            seg = (p - seg_pos0) >> seg_wshift
            hlo = np.uint64(0xFFFFFFFFFFFFFFFF)
            hhi = np.uint64(0)
            while p < e:
                ev, n, has, body = _header(w, p)
                if body + n > e:
                    w_bad[g] = p
                    break
                nrec += 1
                nwin += 1
                if has:
                    tsc = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
                    if tsc > key:
                        key = tsc
                    if tsc < lo:
                        lo = tsc
                    if tsc > hi:
                        hi = tsc
                    if timed == 0:
                        first = tsc
                    timed += 1
                if ev == EV_LOST:
                    lost_recs += 1
                    if n >= 1:
                        lost_n += np.uint64(w[body])
                    if n < 4 or w[body] == 0:
                        bad_lost += 1
                slot, new = _hash_count(hkeys, hcounts, tid, ev | (n << 28))
                if slot < 0:  # the table is full (random event ids)
                    hoverflow[tid] = True
                    c = _kind(ev, n, ids, table_cat, need)
                elif new:
                    c = _kind(ev, n, ids, table_cat, need)
                    hcat[tid, slot] = c
                else:
                    c = hcat[tid, slot]
                moves = c & STATE_FLAG
                c = c & (STATE_FLAG - 1)
                if want_doms or c != 0:  # (one inlined copy of the attribution: a tenth of the compile time)
                    dm, vc = _attribution(ev, n, w, body, state)
                else:
                    dm = vc = np.int64(-1)
                if want_doms:
                    dom_counts[tid, dm if dm >= 0 else 65536] += 1
                if c == CAT_GRANT:
                    ngrant += 1
                    if fuse_grants:
                        if go < gcap_end:
                            gk_key[go] = key
                            gk_tsc[go] = tsc
                            gk_mapper[go] = dm
                            gk_granter[go] = w[body] & 0xFFFF
                            gk_map[go] = ev == EV_GRANT_MAP
                        go += 1
                elif c == CAT_HYPERCALL:
                    if fuse_hc:
                        if seg > 0xFFF or not _hc_add(hc_keys, hc_used, hc_cnt, hc_n, tid,
                                                      _hc_key(ev, n, w, body, dm, seg), hc_limit):
                            hc_full[tid] = True
                        if tsc < hlo:
                            hlo = tsc
                        if tsc > hhi:
                            hhi = tsc
                elif c == CAT_IRQ and ev == EV_IRQ_HANDLED:
                    if w[body] < 65536:
                        handled[tid, w[body]] += 1
                    elif not _hc_add(big_keys, big_used, big_cnt, big_n, tid, np.uint64(w[body]), big_limit):
                        big_other[tid] += 1
                elif c != 0:
                    if o < cap_end:
                        o_key[o] = key
                        o_tsc[o] = tsc
                        o_off[o] = 4 * p
                        o_cpu[o] = k
                        o_ev[o] = ev
                        o_n[o] = n
                        o_has[o] = has
                        for x in range(ROW_WORDS):
                            o_d[o, x] = w[body + x] if x < n else 0
                        o_dom[o] = dm
                        o_vcpu[o] = vc
                    o += 1
                if moves:
                    nstate = _state_after(ev, n, w, body, state)
                    if nstate != state and nstate != UNKNOWN:
                        dom_seen[tid, nstate >> 16] = 1
                    state = nstate
                p = body + n
            w_grants[g] = ngrant
            w_nrec[g] = nwin
            w_hlo[g] = hlo
            w_hhi[g] = hhi
        o_count[k] = o - cap_start[k]
        g_count[k] = go - gcap_start[k]
        st_tsc[k] = tsc
        st_key[k] = key
        st_state[k] = state
        st_first[k] = first
        st_stats[k, 0] = nrec
        st_stats[k, 1] = lost_recs
        st_stats[k, 2] = lost_n
        st_stats[k, 3] = lo
        st_stats[k, 4] = hi
        st_stats[k, 5] = timed
        st_stats[k, 6] = bad_lost


@njit(cache=True, nogil=True)
def first_run_after(w, pos, vend, win_cpu_idx, cpu_order, cpu_start, w_tsc0, w_key0, w_state0, end_key, domid,
                    p_key, p_cpu, p_off, inclusive):
    """The first record in time order after position (``p_key``, ``p_cpu``, ``p_off`` bytes) -- at or after it
    with ``inclusive`` -- that puts a vCPU of ``domid`` on a pCPU (see :func:`_run_off`). Walks the pCPU streams
    merged from there (``cpu_order[cpu_start[k]:cpu_start[k+1]]``: pCPU k's windows of the whole capture in file
    order, their starting states from pass 1, ``end_key[k]`` its K after its last record) and stops at the first
    match: a domain runs again soon after its shutdown, so the walk is short.

    Returns (found, pCPU, word position, K, TSC, has_tsc, dom, vcpu) with dom/vcpu the record's attribution (-1
    when unknown)."""
    ncpu = cpu_start.shape[0] - 1
    # the pCPUs with windows from p_key on, each at its first such window
    act = np.empty(ncpu, np.int64)
    na = 0
    for k in range(ncpu):
        if cpu_start[k + 1] > cpu_start[k]:
            act[na] = k
            na += 1
    jj = np.full(na, -1, np.int64)
    pp = np.zeros(na, np.int64)
    tt = np.zeros(na, np.uint64)
    kb = np.zeros(na, np.uint64)
    ss = np.zeros(na, np.int64)
    hk = np.zeros(na, np.uint64)
    for a in range(na):
        k = act[a]
        j0 = cpu_start[k]
        j1 = cpu_start[k + 1]
        lo = _window_reaching(cpu_order, j0, j1, w_key0, end_key[k], p_key)
        if lo == j1:
            continue
        wi = cpu_order[lo]
        jj[a] = lo
        pp[a] = pos[wi]
        tt[a] = w_tsc0[wi]
        kb[a] = w_key0[wi]
        ss[a] = w_state0[wi]
        hk[a] = _head_key(w, pp[a], kb[a])
    while True:
        # the best head by (K, pCPU) and the runner-up; then a run on the best while it stays ahead
        b = -1
        b2 = -1
        for a in range(na):
            if jj[a] < 0:
                continue
            if b < 0 or hk[a] < hk[b]:
                b2 = b
                b = a
            elif b2 < 0 or hk[a] < hk[b2]:
                b2 = a
        if b < 0:
            return (False, np.int64(-1), np.int64(-1), np.uint64(0), np.uint64(0), np.int64(0), np.int64(-1),
                    np.int64(-1))
        k = act[b]
        while True:
            p = pp[b]
            bk = hk[b]
            ev, n, has, body = _header(w, p)
            if has:
                tt[b] = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
            after = bk > p_key or (bk == p_key and (k > p_cpu or (k == p_cpu and (4 * p > p_off or (
                inclusive and 4 * p == p_off)))))
            if after:
                w1 = np.int64(w[body]) if n >= 1 else np.int64(0)
                w3 = np.int64(w[body + 2]) if n >= 3 else np.int64(0)
                r, _o = _run_off(ev, n, w1, w3)
                if r == domid:
                    dm, vc = _attribution(ev, n, w, body, ss[b])
                    return True, np.int64(k), p, bk, tt[b], np.int64(has), dm, vc
            ss[b] = _state_after(ev, n, w, body, ss[b])
            kb[b] = bk
            p = body + n
            wi = cpu_order[jj[b]]
            if p >= vend[wi]:
                jj[b] += 1
                if jj[b] >= cpu_start[k + 1]:
                    jj[b] = -1
                    break
                p = pos[cpu_order[jj[b]]]
            pp[b] = p
            hk[b] = _head_key(w, p, kb[b])
            if b2 >= 0 and (hk[b] > hk[b2] or (hk[b] == hk[b2] and k > act[b2])):
                break


@njit_norc(cache=True, nogil=True)
def run_candidates(w, pos, vend, delta, wcpu, w_tsc0, w_key0, w_state0, q_dom, q_key, q_cpu, q_off, q_incl, b_found,
                   b_key, b_cpu, b_off, b_tsc, b_has, b_dom, b_vcpu, b_ev, b_n, b_d):
    """:func:`first_run_after` for windows that arrive one batch at a time (``tracelens watch``): for each query
    (domain ``q_dom``, position ``q_key``/``q_cpu``/``q_off`` bytes, ``q_incl``), the earliest record in time order
    (K, pCPU, byte offset) of these windows after the position -- at or after it with ``q_incl`` -- that puts a
    vCPU of the domain on a pCPU, kept in ``b_*`` when it comes before the one found so far (``b_found``). The
    earliest over every batch is what the merged walk of first_run_after finds first, whatever order the windows
    arrive in. Window ``wi`` is pCPU ``wcpu[wi]``'s, starts from its pass-1 state, and its word p is at byte
    4 * (p + delta[wi]) of the capture. ``b_d`` receives the record's payload words (ROW_WORDS)."""
    nq = q_dom.shape[0]
    for wi in range(pos.shape[0]):
        k = wcpu[wi]
        tsc = w_tsc0[wi]
        kb = w_key0[wi]
        state = np.int64(w_state0[wi])
        p = pos[wi]
        e = vend[wi]
        while p < e:
            ev, n, has, body = _header(w, p)
            hk = _head_key(w, p, kb)
            if has:
                tsc = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
            if (ev & SUBCLASS_ID_MASK) == SCHED_MIN or ev == EV_SCHED_SWITCH:
                w1 = np.int64(w[body]) if n >= 1 else np.int64(0)
                w3 = np.int64(w[body + 2]) if n >= 3 else np.int64(0)
                r, _o = _run_off(ev, n, w1, w3)
                if r >= 0:
                    off = 4 * (p + delta[wi])
                    for q in range(nq):
                        if q_dom[q] != r:
                            continue
                        qk = q_key[q]
                        after = hk > qk or (hk == qk and (k > q_cpu[q] or (k == q_cpu[q] and (
                            off > q_off[q] or (q_incl[q] and off == q_off[q])))))
                        if not after:
                            continue
                        if b_found[q]:
                            bk = b_key[q]
                            if hk > bk or (hk == bk and (k > b_cpu[q] or (k == b_cpu[q] and off >= b_off[q]))):
                                continue
                        dm, vc = _attribution(ev, n, w, body, state)
                        b_found[q] = True
                        b_key[q] = hk
                        b_cpu[q] = k
                        b_off[q] = off
                        b_tsc[q] = tsc
                        b_has[q] = has
                        b_dom[q] = dm
                        b_vcpu[q] = vc
                        b_ev[q] = ev
                        b_n[q] = n
                        for x in range(ROW_WORDS):
                            b_d[q, x] = w[body + x] if x < n else 0
            state = _state_after(ev, n, w, body, state)
            kb = hk
            p = body + n


@njit_norc(cache=True, parallel=True, nogil=True)
def stream_grants_hypercalls(w, pos, vend, win_global, win_cpu_idx, w_tsc0, w_key0, w_state0, g_start, bstart, btsc,
                             slot, cursors, ids, table_cat, need, g_key, g_tsc, g_cpu, g_off, g_mapper, g_granter,
                             g_map, hc_keys, hc_used, hc_cnt, hc_n, fold_keys, fold_used, fold_cnt, fold_n, limit,
                             dropped, dom_mask):
    """Pass 2 over one chunk of windows, in parallel over windows (each starts from its state of pass 1).

    Grant MAP/UNMAP records are written to rows ``g_start[wi]`` on (K, TSC, pCPU index, byte offset, mapper -- the
    running domain, -1 when unknown --, granter d1 & 0xffff, MAP or not); the caller merges them into time order.
    Hypercall records are counted per thread under the key of :func:`_hypercall_key` (epochs from the boundaries
    in CSR form). A thread's table holds at most ``limit`` keys: the counts of further keys go to a second table
    keyed by (domain, epoch) alone, and past that to ``dropped`` (only captures with random payloads get there).
    ``slot`` is :func:`_dom_slots` of the boundaries' domains; ``cursors[thread]`` is scratch for a window's epoch
    cursors (one per boundary domain). Only the hypercalls of domains with ``dom_mask[domid + 1]`` set are counted
    (index 0: unattributed)."""
    for wi in prange(pos.shape[0]):
        t = numba.get_thread_id()
        g = win_global[wi]
        tsc = w_tsc0[g]
        key = w_key0[g]
        state = np.int64(w_state0[g])
        cursor = cursors[t]
        for j in range(cursor.shape[0]):
            cursor[j] = 0
        o = g_start[wi]
        p = pos[wi]
        e = vend[wi]
        while p < e:
            ev, n, has, body = _header(w, p)
            if has:
                tsc = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
                if tsc > key:
                    key = tsc
            c = _category(ev, n, ids, table_cat, need)
            if c == CAT_GRANT:
                dm, _vc = _attribution(ev, n, w, body, state)
                g_key[o] = key
                g_tsc[o] = tsc
                g_cpu[o] = win_cpu_idx[wi]
                g_off[o] = 4 * p
                g_mapper[o] = dm
                g_granter[o] = np.int64(w[body]) & 0xFFFF
                g_map[o] = ev == EV_GRANT_MAP
                o += 1
            elif c == CAT_HYPERCALL:
                dm, _vc = _attribution(ev, n, w, body, state)
                if dom_mask[dm + 1]:
                    ep = _epoch_cursor(dm, tsc, slot, cursor, bstart, btsc)
                    k = _hc_key(ev, n, w, body, dm, ep)
                    if not _hc_add(hc_keys, hc_used, hc_cnt, hc_n, t, k, limit):
                        fk = (np.uint64(dm + 1) << np.uint64(12)) | np.uint64(min(ep, 0xFFF))
                        if not _hc_add(fold_keys, fold_used, fold_cnt, fold_n, t, fk, limit):
                            dropped[t] += 1
            state = _state_after(ev, n, w, body, state)
            p = body + n


@njit_norc(cache=True, nogil=True)
def grant_ledger_step(pair, granter, mapper, tsc, is_map, base, maps, unmaps, late, first, last, late_first,
                      late_last, m_maps, m_unmaps, m_first_map, first_t, last_t, late_first_t, late_last_t,
                      m_first_map_t, balance, cur, carried, slot, gcur, mcur, bstart, btsc, after, g_total, after_g):
    """:func:`grant_ledger` over one time-ordered batch of grant rows, with its state carried in the arrays (per
    pair: balance, current granter epoch, carried handles; epoch cursors). Record indices are global (``base`` +
    row); the TSCs of the first/last records are kept beside them (``*_t``), since no global TSC array exists.
    The arrays are sized for every pair seen so far and every epoch. ``g_total[granter]`` carries each granter's
    maps minus unmaps over all mappers; ``after_g[r]`` receives it just after row r (the timeline's line)."""
    n = pair.shape[0]
    for r in range(n):
        i = base + r
        p = pair[r]
        t = tsc[r]
        e = _epoch_cursor(np.int64(granter[r]), t, slot, gcur, bstart, btsc)
        me = _epoch_cursor(np.int64(mapper[r]), t, slot, mcur, bstart, btsc)
        if e > cur[p]:
            carried[p] = balance[p] if balance[p] > 0 else 0
            cur[p] = e
        if is_map[r]:
            balance[p] += 1
            maps[p, e] += 1
            m_maps[p, me] += 1
            if m_first_map[p, me] < 0:
                m_first_map[p, me] = i
                m_first_map_t[p, me] = t
        else:
            balance[p] -= 1
            unmaps[p, e] += 1
            m_unmaps[p, me] += 1
            if carried[p] > 0:
                carried[p] -= 1
                late[p, e] += 1
                if late_first[p, e] < 0:
                    late_first[p, e] = i
                    late_first_t[p, e] = t
                late_last[p, e] = i
                late_last_t[p, e] = t
        if first[p, e] < 0:
            first[p, e] = i
            first_t[p, e] = t
        last[p, e] = i
        last_t[p, e] = t
        after[r] = np.int32(balance[p])
        gi = np.int64(granter[r]) & 0xFFFF
        g_total[gi] += 1 if is_map[r] else -1
        after_g[r] = g_total[gi]


@njit(cache=True)
def fold_pairs(group, ngroups, maps, unmaps, late, m_maps, m_unmaps, first, last, late_first, late_last, m_first_map,
               first_t, last_t, late_first_t, late_last_t, m_first_map_t):
    """The grant ledger's per-(pair, epoch) arrays summed into ``ngroups`` rows (pair p into row ``group[p]``):
    counts added, first records the earliest (smallest index), last ones the latest, with their TSCs. For the long
    tail of captures with very many pairs (the report keeps the busiest pairs and one row per granter for the rest).
    Returns the five count arrays, the five index arrays and the five TSC arrays, in that order."""
    n, ne = maps.shape
    c = np.zeros((5, ngroups, ne), np.int64)
    ix = np.full((5, ngroups, ne), -1, np.int64)
    ts = np.zeros((5, ngroups, ne), np.uint64)
    for p in range(n):
        g = group[p]
        for e in range(ne):
            c[0, g, e] += maps[p, e]
            c[1, g, e] += unmaps[p, e]
            c[2, g, e] += late[p, e]
            c[3, g, e] += m_maps[p, e]
            c[4, g, e] += m_unmaps[p, e]
            for k in range(5):
                if k == 0:
                    i, t, earliest = first[p, e], first_t[p, e], True
                elif k == 1:
                    i, t, earliest = last[p, e], last_t[p, e], False
                elif k == 2:
                    i, t, earliest = late_first[p, e], late_first_t[p, e], True
                elif k == 3:
                    i, t, earliest = late_last[p, e], late_last_t[p, e], False
                else:
                    i, t, earliest = m_first_map[p, e], m_first_map_t[p, e], True
                if i < 0:
                    continue
                cur = ix[k, g, e]
                if cur < 0 or (earliest and i < cur) or (not earliest and i > cur):
                    ix[k, g, e] = i
                    ts[k, g, e] = t
    return c, ix, ts


# the decoder's helpers that these kernels inline compile in the decoder's constants too
pin_constants(globals(), vars(XK))
