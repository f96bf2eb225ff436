"""numba kernels of the xentrace decoder (private; twin-tested against tests/xentrace_reference.py).

The file is viewed as little-endian u32 words (spec ../shared/spec/xentrace.md §1-2; all offsets here are word
indices, byte offset = 4 * word). Decoding runs in passes so that every output byte is written exactly once,
straight into the final Arrow buffers (page faults on fresh memory are the dominant cost on small machines):

1. :func:`walk_windows`    sequential hop from CPU_CHANGE to CPU_CHANGE (few thousand windows per GiB).
2. :func:`count_records`   per window, in parallel: record count and the first damaged record.
3. :func:`stream_pass`     per pCPU, in parallel: TSC inheritance, the merge key K (running max of the TSC along
                           the pCPU's stream), the running vCPU state machine, per (event id | n_extra << 28) counts.
4. :func:`merge_dest`      partitioned k-way merge on (K, cpu, stream position): K is replaced in place by the
                           record's output row (or -1 when it is at or after the streaming frontier).
5. :func:`decode_windows`  per window, in parallel: every column written at its output row.

Status codes returned by the kernels are mapped to messages by decode.py (the single choke point for errors).
"""

from __future__ import annotations

import numpy as np

from tracelens._jit import njit, pin_constants, prange
from tracelens.parsers.xentrace.catalog import event_id, family

# Event ids from the catalog (catalog.toml, the one source), resolved at import: numba compiles them in as constants
# (pin_constants, at the end of the module, keeps its cache in step with them).
EV_LOST = event_id("LOST_RECORDS")
EV_WRAP = event_id("TRACE_WRAP_BUFFER")
EV_CPU_CHANGE = event_id("TRACE_CPU_CHANGE")
EV_CONTINUE = event_id("SCHED_CONTINUE_RUNNING")
EV_DECREASE_RESERVATION = event_id("MEM_DECREASE_RESERVATION")
RUNSTATE_CHANGE, RUNSTATE_MASK = family("RUNSTATE_CHANGE")  # old state in bits 8-11, new state in bits 4-7
#: the first word of every window: a CPU_CHANGE record with 2 payload words (pCPU, window size) and no TSC
CPU_CHANGE_HEADER = EV_CPU_CHANGE | 2 << 28

UNKNOWN = -1  # the vCPU state is (dom << 16 | vcpu) as an int64; -1 means "not known"

# status codes
OK = 0
E_BAD_WINDOW_HEADER = 1
E_ABSURD_CPU = 2
E_BAD_SIZE = 3
E_ABSURD_SIZE = 4
E_WINDOW_PAST_EOF = 5
E_TRUNCATED_HEADER = 6
E_RECORD_CROSSES_WINDOW = 7

HASH_SLOTS = 8192  # per-pCPU open-addressing table of event ids (a capture has a few hundred distinct ids)


@njit(cache=True, nogil=True)
def _window_problem(w, p, nwords, max_cpu, max_size_bytes):
    """Status of a would-be window header at word p (OK if plausible)."""
    if p + 3 > nwords:
        return E_TRUNCATED_HEADER
    if w[p] != CPU_CHANGE_HEADER:
        return E_BAD_WINDOW_HEADER
    if w[p + 1] >= max_cpu:
        return E_ABSURD_CPU
    size = w[p + 2]
    if size % 4 != 0:
        return E_BAD_SIZE
    if size > max_size_bytes:
        return E_ABSURD_SIZE
    if p + 3 + size // 4 > nwords:
        return E_WINDOW_PAST_EOF
    return OK


@njit(cache=True, nogil=True)
def walk_windows(w, start, nwords, max_cpu, max_size_bytes, resync, stop):
    """Hop over windows from word ``start``.

    Returns (pos, end, cpu, skip_from, skip_to, skip_code, status, status_pos, next): pos/end are the word range of
    each window's records, its CPU_CHANGE header first; the walk pauses at the first window starting at or after
    word ``stop`` and ``next`` says where to resume (nwords when the file is done). Without ``resync`` the walk stops at the
    first bad header and reports it in status/status_pos; with it, the walk scans forward one word at a time to the
    next plausible header and records the skipped word range.
    """
    cap = 1024
    pos = np.empty(cap, np.int64)
    end = np.empty(cap, np.int64)
    cpu = np.empty(cap, np.int32)
    scap = 16
    s_from = np.empty(scap, np.int64)
    s_to = np.empty(scap, np.int64)
    s_code = np.empty(scap, np.int32)
    n = 0
    ns = 0
    status = OK
    status_pos = -1
    p = start
    while p < nwords and p < stop:
        code = _window_problem(w, p, nwords, max_cpu, max_size_bytes)
        if code != OK:
            if not resync:
                status = code
                status_pos = p
                break
            q = p + 1
            while q < nwords and _window_problem(w, q, nwords, max_cpu, max_size_bytes) != OK:
                q += 1
            if ns == scap:
                scap *= 2
                a = np.empty(scap, np.int64); a[:ns] = s_from[:ns]; s_from = a
                b = np.empty(scap, np.int64); b[:ns] = s_to[:ns]; s_to = b
                c = np.empty(scap, np.int32); c[:ns] = s_code[:ns]; s_code = c
            s_from[ns] = p
            s_to[ns] = q
            s_code[ns] = code
            ns += 1
            p = q
            continue
        if n == cap:
            cap *= 2
            a = np.empty(cap, np.int64); a[:n] = pos[:n]; pos = a
            b = np.empty(cap, np.int64); b[:n] = end[:n]; end = b
            c = np.empty(cap, np.int32); c[:n] = cpu[:n]; cpu = c
        size_w = w[p + 2] // 4
        pos[n] = p  # the CPU_CHANGE header is the window's first record
        end[n] = p + 3 + size_w
        cpu[n] = w[p + 1]
        n += 1
        p = p + 3 + size_w
    nxt = p if status == OK else nwords
    return pos[:n], end[:n], cpu[:n], s_from[:ns], s_to[:ns], s_code[:ns], status, status_pos, nxt


@njit(cache=True, parallel=True, nogil=True)
def count_records(w, pos, end):
    """Per window: the number of whole records and the word index of the first record that overruns the window
    end (-1 when none). Counting stops at that record."""
    nwin = pos.shape[0]
    nrec = np.zeros(nwin, np.int64)
    bad = np.full(nwin, -1, np.int64)
    for i in prange(nwin):
        p = pos[i]
        e = end[i]
        c = 0
        while p < e:
            h = np.int64(w[p])
            size = 1 + ((h >> 28) & 7) + 2 * (h >> 31)
            if p + size > e:
                bad[i] = p
                break
            p += size
            c += 1
        nrec[i] = c
    return nrec, bad


@njit(cache=True, nogil=True, inline="always")
def _header(w, p):
    """The t_rec at word p (spec §1.1): (event id, payload words, has TSC, word index of the payload)."""
    h = np.int64(w[p])
    n = (h >> 28) & 7
    has = h >> 31
    return h & 0x0FFFFFFF, n, has, p + 1 + 2 * has


# The running-vCPU rule (docs/xentrace.md "Who was running", spec §2.7 as corrected there). Every kernel that
# attributes records (stream_pass, _seek, _merge_partition, and any later one) uses exactly these two helpers, so
# they cannot drift. The per-pCPU state carried between records, windows, batches and partitions is one int64:
# (dom << 16 | vcpu) of the vCPU believed current on that pCPU, or UNKNOWN (-1).
#
# What Xen writes (xen/common/sched/core.c:sched_switch_units(), xen/common/trace.c:insert_lost_records()):
# SWITCH_INFPREV/INFNEXT, SCHED_SWITCH, the runstate change of the previous vCPU out of running and the one of the
# next vCPU into running are all written *before* context_switch(), while the previous vCPU is still `current`;
# a LOST_RECORDS record carries `current`'s dom/vcpu and is written right before the record it precedes.

@njit(cache=True, nogil=True, inline="always")
def _record_vcpu(ev, n, w, body, state):
    """(dom, vcpu, known) of the record at ``body`` given the pCPU's state *before* it.

    The state before it, except: a LOST_RECORDS record names its own vCPU (d2: dom in bits 0-15, vcpu in 16-31);
    a runstate change *into* running is attributed to the vCPU it starts (d1: vcpu in bits 0-15, dom in 16-31),
    the one record xenalyze leaves unattributed (docs/xentrace.md says why)."""
    if ev == EV_LOST and n >= 2:
        x = np.int64(w[body + 1])
        return x & 0xFFFF, x >> 16, True
    if (ev & RUNSTATE_MASK) == RUNSTATE_CHANGE and n >= 1 and ((ev >> 4) & 0xF) == 0:
        x = np.int64(w[body])
        return x >> 16, x & 0xFFFF, True
    if state == UNKNOWN:
        return np.int64(0), np.int64(0), False
    return state >> 16, state & 0xFFFF, True


@njit(cache=True, nogil=True, inline="always")
def _state_after(ev, n, w, body, state):
    """The pCPU's state after the record at ``body``, given the state before it (the way xenalyze moves its
    ``p->current``): a runstate change into running, or CONTINUE_RUNNING, makes the vCPU it names current; a
    runstate change out of running clears the state if it names the current vCPU; LOST_RECORDS makes the vCPU of
    its payload current (UNKNOWN when the payload is missing). SCHED_SWITCH changes nothing: the previous vCPU
    runs until its runstate record."""
    if (ev & RUNSTATE_MASK) == RUNSTATE_CHANGE and n >= 1:
        d1 = np.int64(w[body])
        new = (ev >> 4) & 0xF
        old = (ev >> 8) & 0xF
        if new == 0:
            return d1
        if old == 0 and state == d1:
            return UNKNOWN
        return state
    if ev == EV_CONTINUE and n >= 1:
        return np.int64(w[body])
    if ev == EV_LOST:
        if n >= 2:
            x = np.int64(w[body + 1])
            return ((x & 0xFFFF) << 16) | (x >> 16)
        return UNKNOWN
    return state


@njit(cache=True, nogil=True, inline="always")
def _hash_count(keys, counts, row, ev):
    """Count ``ev`` in row ``row`` of an open-addressing table (``keys`` 2-D, empty slots 0xFFFFFFFF; indexing the
    row in place, not through a view). Returns (its slot, whether it was new there); slot -1 when the row is full."""
    mask = keys.shape[1] - 1
    h = (ev * 2654435761) & mask
    for _ in range(keys.shape[1]):
        k = keys[row, h]
        if k == ev:
            counts[row, h] += 1
            return h, False
        if k == 0xFFFFFFFF:
            keys[row, h] = ev
            counts[row, h] = 1
            return h, True
        h = (h + 1) & mask
    return -1, False


@njit(cache=True, parallel=True, nogil=True)
def stream_pass(w, pos, vend, cpu_order, cpu_start, in_tsc, in_key, in_state, dom_counts, want_doms):
    """Per pCPU (``cpu_order[cpu_start[k]:cpu_start[k+1]]`` lists pCPU k's windows in file order), walking each
    window's records from ``pos`` up to ``vend`` (the window end, or where :func:`count_records` found a damaged
    record); it counts them as :func:`count_records` does (``nrec``, and ``bad``: the first record that overruns
    ``vend``, -1 when none), so a capture needs no separate counting pass.

    Computes for every window its starting inherited TSC, key K and vCPU state (``w_tsc0``, ``w_key0``, ``w_state0``). ``in_tsc``/``in_key``/``in_state`` give each pCPU's
    state at the start (carried from the previous batch). Also counts records per event id (per-pCPU hash tables)
    and, when want_doms, per attributed domain (index 65536 = unknown). Returns the per-window starts, the per-pCPU
    end states, the hash tables, a per-pCPU overflow flag and per-pCPU stats (LOST markers, records lost, min and
    max TSC).
    """
    nwin = pos.shape[0]
    ncpu = cpu_start.shape[0] - 1
    nrec = np.zeros(nwin, np.int64)
    bad = np.full(nwin, -1, np.int64)
    w_tsc0 = np.zeros(nwin, np.uint64)
    w_key0 = np.zeros(nwin, np.uint64)
    w_state0 = np.zeros(nwin, np.int64)
    out_tsc = in_tsc.copy()
    out_key = in_key.copy()
    out_state = in_state.copy()
    hkeys = np.full((ncpu, HASH_SLOTS), 0xFFFFFFFF, np.uint32)
    hcounts = np.zeros((ncpu, HASH_SLOTS), np.int64)
    overflow = np.zeros(ncpu, np.bool_)
    # per pCPU: LOST_RECORDS markers, records they report lost, smallest and largest TSC seen
    stats = np.zeros((ncpu, 4), np.uint64)
    for k in prange(ncpu):
        lost_recs = 0
        lost_n = 0
        lo = np.uint64(0xFFFFFFFFFFFFFFFF)
        hi = np.uint64(0)
        tsc = in_tsc[k]
        key = in_key[k]
        state = np.int64(in_state[k])
        for j in range(cpu_start[k], cpu_start[k + 1]):
            wi = cpu_order[j]
            w_tsc0[wi] = tsc
            w_key0[wi] = key
            w_state0[wi] = state
            p = pos[wi]
            e = vend[wi]
            count = 0
            while p < e:
                ev, n, has, body = _header(w, p)
                if body + n > e:  # the record overruns the window
                    bad[wi] = p
                    break
                count += 1
                if has:
                    tsc = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
                    if tsc > key:
                        key = tsc
                    if tsc < lo:
                        lo = tsc
                    if tsc > hi:
                        hi = tsc
                if ev == EV_LOST and n >= 1:
                    lost_recs += 1
                    lost_n += np.int64(w[body])
                if want_doms:
                    a_dom, a_vcpu, a_known = _record_vcpu(ev, n, w, body, state)
                    dom_counts[k, a_dom if a_known else 65536] += 1
                if _hash_count(hkeys, hcounts, k, ev | (n << 28))[0] < 0:
                    overflow[k] = True
                state = _state_after(ev, n, w, body, state)
                p += 1 + n + 2 * has
            nrec[wi] = count
        out_tsc[k] = tsc
        out_key[k] = key
        out_state[k] = state
        stats[k, 0] = lost_recs
        stats[k, 1] = lost_n
        stats[k, 2] = lo
        stats[k, 3] = hi
    return w_tsc0, w_key0, w_state0, out_tsc, out_key, out_state, hkeys, hcounts, overflow, stats, nrec, bad


@njit(cache=True, nogil=True)
def decrease_res_payloads(w, pos, nrec):
    """(d3, d4) of every DECREASE_RESERVATION record with 4 payload words or more, for the layout guess (two walks:
    count, then fill)."""
    cnt = 0
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            ev, n, has, body = _header(w, p)
            cnt += ev == EV_DECREASE_RESERVATION and n >= 4
            p = body + n
    d3 = np.empty(cnt, np.uint32)
    d4 = np.empty(cnt, np.uint32)
    k = 0
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            ev, n, has, body = _header(w, p)
            if ev == EV_DECREASE_RESERVATION and n >= 4:
                d3[k] = w[body + 2]
                d4[k] = w[body + 3]
                k += 1
            p = body + n
    return d3, d4


@njit(cache=True, nogil=True, inline="always")
def _head_key(w, p, kb):
    """K of the record at word p given K before it (running max of TSCs along the pCPU stream)."""
    h = np.int64(w[p])
    if h >> 31:
        t = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
        if t > kb:
            return t
    return kb


@njit(cache=True, nogil=True, inline="always")
def _window_reaching(cpu_order, j0, j1, w_key0, end_key, P):
    """Index (in ``cpu_order[j0:j1]``, one pCPU's windows in file order) of the first window whose K after its last
    record reaches P (K after window j = K before window j + 1; ``end_key`` after the last); j1 when none does."""
    lo = j0
    hi = j1
    while lo < hi:
        mid = (lo + hi) >> 1
        after = w_key0[cpu_order[mid + 1]] if mid + 1 < j1 else end_key
        if after < P:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _seek(w, pos, vend, cpu_order, j0, j1, w_tsc0, w_key0, w_state0, out_key_k, P):
    """First record of one pCPU stream (windows cpu_order[j0:j1]) whose K >= P.

    Returns (j, p, tsc, kb, state, before): window list index (j1 when exhausted), word position, inherited TSC,
    K before the record, vCPU state before it, and the number of records of the stream before it."""
    j = _window_reaching(cpu_order, j0, j1, w_key0, out_key_k, P)
    if j == j1:
        return j1, np.int64(0), np.uint64(0), np.uint64(0), np.int64(0), np.int64(-1)
    wi = cpu_order[j]
    p = pos[wi]
    t = w_tsc0[wi]
    kb = w_key0[wi]
    state = np.int64(w_state0[wi])
    walked = 0
    while p < vend[wi]:
        hk = _head_key(w, p, kb)
        if hk >= P:
            break
        h = np.int64(w[p])
        n = (h >> 28) & 7
        has = h >> 31
        if has:
            t = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
        state = _state_after(h & 0x0FFFFFFF, n, w, p + 1 + 2 * has, state)
        kb = hk
        p += 1 + n + 2 * has
        walked += 1
    return j, p, t, kb, state, np.int64(walked)


@njit(cache=True, nogil=True)
def _merge_partition(w, pos, vend, win_cpu, cpu_order, cpu_start, jj, pp, tt, kb, ss, hi_pivot, bounded, o_start,
                     name_keys, name_vals, cpu, tsc, has_tsc, event, n_extra, d, offset, dom, vcpu, known, name,
                     zero_absent):
    """One time partition of :func:`merge_decode`: cursors jj/pp/tt/kb/ss per pCPU (window list index, word
    position, inherited TSC, K before, state); rows are written sequentially from ``o_start``."""
    nseg = cpu_start.shape[0] - 1
    mask = name_keys.shape[0] - 1
    hk = np.zeros(nseg, np.uint64)
    live = np.zeros(nseg, np.bool_)
    for k in range(nseg):
        if jj[k] < cpu_start[k + 1]:
            hk[k] = _head_key(w, pp[k], kb[k])
            live[k] = not (bounded and hk[k] >= hi_pivot)
    o = o_start
    while True:
        # the best and runner-up heads by (key, pCPU index); then a run from the best while it stays ahead
        # (records come in bursts per pCPU, so runs are long and this selection is rare)
        b = -1
        b2 = -1
        bk = np.uint64(0)
        bk2 = np.uint64(0)
        for k in range(nseg):
            if live[k]:
                v = hk[k]
                if b < 0 or v < bk:
                    b2 = b
                    bk2 = bk
                    b = k
                    bk = v
                elif b2 < 0 or v < bk2:
                    b2 = k
                    bk2 = v
        if b < 0:
            break
        c_id = win_cpu[cpu_order[jj[b]]]
        p = pp[b]
        t = tt[b]
        state = ss[b]
        kcur = hk[b]
        wend = vend[cpu_order[jj[b]]]
        while True:
            ev, n, has, body = _header(w, p)
            if has:
                t = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
            cpu[o] = c_id
            tsc[o] = t
            has_tsc[o] = has
            event[o] = ev
            n_extra[o] = n
            nw = 0 if ev == EV_WRAP else n
            # payload words past n are never read (the record may be the last of the file); absent slots are null
            # and are only written when the buffers are reused (fresh ones are zero already)
            for x in range(nw):
                d[x, o] = w[body + x]
            if zero_absent:
                for x in range(nw, 7):
                    d[x, o] = 0
            offset[o] = 4 * p
            a_dom, a_vcpu, a_known = _record_vcpu(ev, n, w, body, state)
            dom[o] = a_dom
            vcpu[o] = a_vcpu
            known[o] = 1 if a_known else 0
            hkey = ev | (n << 28)  # (event | n_extra << 28): the name table's key
            hh = (hkey * 2654435761) & mask
            nm = 0
            while True:
                kk = name_keys[hh]
                if kk == hkey:
                    nm = name_vals[hh]
                    break
                if kk == 0xFFFFFFFF:
                    break
                hh = (hh + 1) & mask
            name[o] = nm
            o += 1
            state = _state_after(ev, n, w, body, state)
            p += 1 + n + 2 * has
            if p >= wend:
                jj[b] += 1
                if jj[b] >= cpu_start[b + 1]:
                    live[b] = False
                    break
                wi = cpu_order[jj[b]]
                p = pos[wi]
                wend = vend[wi]
            kcur = _head_key(w, p, kcur)
            if bounded and kcur >= hi_pivot:
                live[b] = False
                break
            if b2 >= 0 and (kcur > bk2 or (kcur == bk2 and b > b2)):
                break
        pp[b] = p
        tt[b] = t
        ss[b] = state
        hk[b] = kcur


@njit(cache=True, parallel=True, nogil=True)
def merge_decode(w, pos, vend, nrec, win_cpu, cpu_order, cpu_start, w_tsc0, w_key0, w_state0, out_key, pivots,
                 use_frontier, name_keys, name_vals, cpu, tsc, has_tsc, event, n_extra, d, offset, dom, vcpu, known,
                 name, pend, zero_absent):
    """Merge the pCPU streams by (K, pCPU, stream position) and decode each record straight into its output row.

    ``pivots`` (sorted, first 0) cut the key space into partitions decoded in parallel; partition p holds the
    records with pivots[p] <= K < pivots[p + 1] (the last partition is unbounded unless ``use_frontier``, in which
    case records with K >= pivots[-1] are left for the next batch and ``pend[k]`` receives pCPU k's cursor at the
    frontier: window list index, word position, inherited TSC, K before, state; window index -1 when nothing is
    pending). Rows are written sequentially, so every output page is touched by one thread, once. Returns the
    number of rows written. ``zero_absent``: write 0 into absent payload slots (buffers that are not fresh).
    """
    nseg = cpu_start.shape[0] - 1
    npart = pivots.shape[0] - 1
    # cumulative record counts of each pCPU's windows, to place partition starts
    wprefix = np.zeros(cpu_order.shape[0] + 1, np.int64)
    for j in range(cpu_order.shape[0]):
        wprefix[j + 1] = wprefix[j] + nrec[cpu_order[j]]
    nb = npart + 1 if use_frontier else npart
    cur_j = np.empty((nb, nseg), np.int64)
    cur_p = np.empty((nb, nseg), np.int64)
    cur_t = np.empty((nb, nseg), np.uint64)
    cur_kb = np.empty((nb, nseg), np.uint64)
    cur_s = np.empty((nb, nseg), np.int64)
    before = np.empty((nb, nseg), np.int64)
    for q in prange(nb * nseg):
        b = q // nseg
        k = q % nseg
        j0 = cpu_start[k]
        j1 = cpu_start[k + 1]
        if b == 0:
            wi = cpu_order[j0]
            cur_j[b, k] = j0
            cur_p[b, k] = pos[wi]
            cur_t[b, k] = w_tsc0[wi]
            cur_kb[b, k] = w_key0[wi]
            cur_s[b, k] = w_state0[wi]
            before[b, k] = 0
        else:
            j, p, t, kb, s, walked = _seek(w, pos, vend, cpu_order, j0, j1, w_tsc0, w_key0, w_state0, out_key[k], pivots[b])
            cur_j[b, k] = j
            cur_p[b, k] = p
            cur_t[b, k] = t
            cur_kb[b, k] = kb
            cur_s[b, k] = s
            before[b, k] = (wprefix[j] - wprefix[j0] + walked) if j < j1 else (wprefix[j1] - wprefix[j0])
    part_base = np.zeros(nb + 1, np.int64)
    for b in range(nb):
        s = 0
        for k in range(nseg):
            s += before[b, k]
        part_base[b] = s
    total = part_base[npart] if use_frontier else wprefix[cpu_order.shape[0]]
    if use_frontier:
        for k in range(nseg):
            if cur_j[npart, k] < cpu_start[k + 1]:
                pend[k, 0] = cur_j[npart, k]
                pend[k, 1] = cur_p[npart, k]
                pend[k, 2] = np.int64(cur_t[npart, k])
                pend[k, 3] = np.int64(cur_kb[npart, k])
                pend[k, 4] = cur_s[npart, k]
            else:
                pend[k, 0] = -1
    for part in prange(npart):
        last = part == npart - 1
        _merge_partition(w, pos, vend, win_cpu, cpu_order, cpu_start, cur_j[part].copy(), cur_p[part].copy(),
                         cur_t[part].copy(), cur_kb[part].copy(), cur_s[part].copy(), pivots[part + 1],
                         use_frontier or not last, part_base[part], name_keys, name_vals,
                         cpu, tsc, has_tsc, event, n_extra, d, offset, dom, vcpu, known, name, zero_absent)
    return total


# SPREAD[k]: byte j set to 1 for j < k (payload words present in a row with k words)
SPREAD = np.array([sum(1 << (8 * j) for j in range(k)) for k in range(8)], np.uint64)


@njit(cache=True, parallel=True, nogil=True)
def validity_bitmaps(n_extra, event, has_tsc, known, n, spread, out):
    """Arrow bitmaps (LSB first) for ``n`` decoded rows, 8 rows per output byte: out[0..6] the validity of d1..d7
    (payload word j is present where n_extra > j, except in WRAP records, whose payload is stale ring bytes),
    out[7] has_tsc, out[8] known (dom/vcpu validity). One 64-bit accumulator holds bytes 0..7 of a group of 8 rows
    (``spread`` is SPREAD)."""
    for i in prange((n + 7) // 8):
        r0 = 8 * i
        hi = min(8, n - r0)
        acc = np.uint64(0)
        kn = np.uint64(0)
        for bit in range(hi):
            r = r0 + bit
            nw = 0 if event[r] == EV_WRAP else np.int64(n_extra[r]) & 7
            v = spread[nw] | (np.uint64(has_tsc[r] != 0) << np.uint64(56))
            acc |= v << np.uint64(bit)
            kn |= np.uint64(known[r] != 0) << np.uint64(bit)
        for j in range(8):
            out[j, i] = np.uint8((acc >> np.uint64(8 * j)) & np.uint64(0xFF))
        out[8, i] = np.uint8(kn)


@njit(cache=True, nogil=True)
def exact_id_counts(w, pos, nrec, cap):
    """Exact counts per (event | n_extra << 28) in a growing table, for captures whose per-pCPU tables overflowed.
    Stops with status 1 once more than ``cap`` distinct keys are seen (memory stays bounded)."""
    size = 1 << 14
    keys = np.full(size, 0xFFFFFFFF, np.uint32)
    counts = np.zeros(size, np.int64)
    used = 0
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            h = np.int64(w[p])
            hk = h & 0x7FFFFFFF
            mask = size - 1
            slot = (hk * 2654435761) & mask
            while keys[slot] != 0xFFFFFFFF and keys[slot] != hk:
                slot = (slot + 1) & mask
            if keys[slot] == hk:
                counts[slot] += 1
            else:
                keys[slot] = hk
                counts[slot] = 1
                used += 1
                if used > cap:
                    return keys, counts, 1
                if 2 * used > size:  # grow and rehash
                    nk = np.full(2 * size, 0xFFFFFFFF, np.uint32)
                    nc = np.zeros(2 * size, np.int64)
                    nmask = 2 * size - 1
                    for q in range(size):
                        if keys[q] != 0xFFFFFFFF:
                            s2 = (np.int64(keys[q]) * 2654435761) & nmask
                            while nk[s2] != 0xFFFFFFFF:
                                s2 = (s2 + 1) & nmask
                            nk[s2] = keys[q]
                            nc[s2] = counts[q]
                    keys = nk
                    counts = nc
                    size *= 2
            p += 1 + ((h >> 28) & 7) + 2 * (h >> 31)
    return keys, counts, 0


pin_constants(globals())
