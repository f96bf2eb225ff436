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

from tracelens._jit import njit, prange

CPU_CHANGE_HEADER = 0x2001F003
EV_LOST = 0x0001F001
EV_WRAP = 0x0001F002
EV_CPU_CHANGE = 0x0001F003
EV_CONTINUE = 0x00021002
EV_SWITCH = 0x0002800A

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


@njit(cache=True)
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


@njit(cache=True)
def walk_windows(w, start, nwords, max_cpu, max_size_bytes, resync):
    """Hop over windows from word ``start``.

    Returns (pos, end, cpu, skip_from, skip_to, skip_code, status, status_pos): pos/end are the word range of each
    window's records, its CPU_CHANGE header first. Without ``resync`` the walk stops at the
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
    while p < nwords:
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
    return pos[:n], end[:n], cpu[:n], s_from[:ns], s_to[:ns], s_code[:ns], status, status_pos


@njit(cache=True, parallel=True)
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


@njit(cache=True, inline="always")
def _state_after(ev, n, w, body, state):
    """The running-vCPU state machine (spec §2.7, documented in docs/xentrace.md)."""
    if (ev & 0x0FFFF00F) == 0x00021001 and n >= 1:
        d1 = np.int64(w[body])
        new = (ev >> 4) & 0xF
        old = (ev >> 8) & 0xF
        packed = ((d1 >> 16) << 16) | (d1 & 0xFFFF)
        if new == 0:
            return packed
        if old == 0 and state == packed:
            return UNKNOWN
        return state
    if ev == EV_CONTINUE and n >= 1:
        d1 = np.int64(w[body])
        return ((d1 >> 16) << 16) | (d1 & 0xFFFF)
    if ev == EV_SWITCH and n >= 4:
        return ((np.int64(w[body + 2]) & 0xFFFF) << 16) | (np.int64(w[body + 3]) & 0xFFFF)
    if ev == EV_LOST:
        return UNKNOWN
    return state


@njit(cache=True, inline="always")
def _hash_add(keys, counts, ev):
    """Count ``ev`` in an open-addressing table; returns False when the table is full."""
    mask = keys.shape[0] - 1
    h = (ev * 2654435761) & mask
    for _ in range(keys.shape[0]):
        k = keys[h]
        if k == ev:
            counts[h] += 1
            return True
        if k == 0xFFFFFFFF:
            keys[h] = ev
            counts[h] = 1
            return True
        h = (h + 1) & mask
    return False


@njit(cache=True, parallel=True)
def stream_pass(w, pos, end, nrec, cpu_order, cpu_start, stream_base, win_cpu, in_tsc, in_key, in_state,
                keys_out, want_keys, dom_counts, want_doms):
    """Per pCPU (``cpu_order[cpu_start[k]:cpu_start[k+1]]`` lists pCPU k's windows in file order).

    Fills ``keys_out[stream_base[w] + i]`` with K (when want_keys), and for every window its starting inherited TSC,
    key and vCPU state (``w_tsc0``, ``w_key0``, ``w_state0``). ``in_tsc``/``in_key``/``in_state`` give each pCPU's
    state at the start (carried from the previous batch). Also counts records per event id (per-pCPU hash tables)
    and, when want_doms, per attributed domain (index 32768 = unknown). Returns the per-window starts, the per-pCPU
    end states, the hash tables and a per-pCPU overflow flag.
    """
    nwin = pos.shape[0]
    ncpu = cpu_start.shape[0] - 1
    w_tsc0 = np.zeros(nwin, np.uint64)
    w_key0 = np.zeros(nwin, np.uint64)
    w_state0 = np.zeros(nwin, np.int64)
    out_tsc = in_tsc.copy()
    out_key = in_key.copy()
    out_state = in_state.copy()
    hkeys = np.full((ncpu, HASH_SLOTS), 0xFFFFFFFF, np.uint32)
    hcounts = np.zeros((ncpu, HASH_SLOTS), np.int64)
    overflow = np.zeros(ncpu, np.bool_)
    for k in prange(ncpu):
        tsc = in_tsc[k]
        key = in_key[k]
        state = np.int64(in_state[k])
        for j in range(cpu_start[k], cpu_start[k + 1]):
            wi = cpu_order[j]
            w_tsc0[wi] = tsc
            w_key0[wi] = key
            w_state0[wi] = state
            p = pos[wi]
            base = stream_base[wi]
            for i in range(nrec[wi]):
                h = np.int64(w[p])
                ev = h & 0x0FFFFFFF
                n = (h >> 28) & 7
                has = h >> 31
                body = p + 1 + 2 * has
                if has:
                    tsc = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
                    if tsc > key:
                        key = tsc
                if want_keys:
                    keys_out[base + i] = key
                if want_doms:
                    if ev == EV_LOST and n >= 2:
                        dom_counts[k, np.int64(w[body + 1]) & 0x7FFF] += 1
                    elif state == UNKNOWN:
                        dom_counts[k, 32768] += 1
                    else:
                        dom_counts[k, (state >> 16) & 0x7FFF] += 1
                if not _hash_add(hkeys[k], hcounts[k], h & 0x7FFFFFFF):
                    overflow[k] = True
                state = _state_after(ev, n, w, body, state)
                p += 1 + n + 2 * has
        out_tsc[k] = tsc
        out_key[k] = key
        out_state[k] = state
    return w_tsc0, w_key0, w_state0, out_tsc, out_key, out_state, hkeys, hcounts, overflow


@njit(cache=True)
def _lower_bound(a, lo, hi, x):
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, parallel=True)
def merge_dest(keys, seg_start, pivots, use_frontier, out_base):
    """k-way merge of the pCPU segments of ``keys`` (each non-decreasing) by (K, segment, position).

    ``keys[seg_start[c]:seg_start[c+1]]`` is pCPU-segment c. On return ``keys`` holds, for every record, its output
    row (as int64 bits) counted from ``out_base``, or -1 for records with K >= the last pivot when ``use_frontier``
    (the streaming frontier). ``pivots`` (sorted, first 0) cut the key space into partitions merged in parallel.
    Returns the number of rows.
    """
    nseg = seg_start.shape[0] - 1
    npart = pivots.shape[0] - 1
    bounds = np.empty((npart + 1, nseg), np.int64)
    for c in range(nseg):
        for p in range(npart + 1):
            if p == 0:
                bounds[p, c] = seg_start[c]
            elif p == npart and not use_frontier:
                bounds[p, c] = seg_start[c + 1]
            else:
                bounds[p, c] = _lower_bound(keys, seg_start[c], seg_start[c + 1], pivots[p])
    part_base = np.zeros(npart + 1, np.int64)
    for p in range(npart):
        s = 0
        for c in range(nseg):
            s += bounds[p + 1, c] - bounds[p, c]
        part_base[p + 1] = part_base[p] + s
    total = part_base[npart]
    dest = keys.view(np.int64)
    for p in prange(npart):
        head = bounds[p].copy()
        stop = bounds[p + 1]
        o = out_base + part_base[p]
        while True:
            # best and second-best heads by (key, segment)
            b = -1
            b2 = -1
            for c in range(nseg):
                if head[c] < stop[c]:
                    if b == -1 or keys[head[c]] < keys[head[b]]:
                        b2 = b
                        b = c
                    elif b2 == -1 or keys[head[c]] < keys[head[b2]]:
                        b2 = c
            if b == -1:
                break
            if b2 == -1:
                for i in range(head[b], stop[b]):
                    dest[i] = o
                    o += 1
                head[b] = stop[b]
                continue
            lim = keys[head[b2]]
            i = head[b]
            e = stop[b]
            # segment b runs while its key is below the runner-up's, or equal to it and b is the lower pCPU
            if b < b2:
                while i < e and keys[i] <= lim:
                    dest[i] = o
                    o += 1
                    i += 1
            else:
                while i < e and keys[i] < lim:
                    dest[i] = o
                    o += 1
                    i += 1
            head[b] = i
    # records at or past the frontier are left for the next batch
    for c in prange(nseg):
        for i in range(bounds[npart, c], seg_start[c + 1]):
            dest[i] = -1
    return total


@njit(cache=True, parallel=True)
def decode_windows(w, pos, nrec, win_cpu, stream_base, dest, w_tsc0, w_key0, w_state0, name_keys, name_vals,
                   cpu, tsc, has_tsc, event, n_extra, d, offset, dom, vcpu, known, name, byte_base,
                   pend_pos, pend_tsc, pend_key, pend_state):
    """Write every emitted record's columns at its output row. ``d`` is (7, rows) u32; ``dom``/``vcpu`` use 0xFFFF
    for unknown. For a window with records left for the next batch, ``pend_*`` receive the word position, inherited
    TSC and state of its first pending record (pend_pos -1 when the window was fully emitted). ``known`` is 1
    where dom/vcpu are known."""
    nwin = pos.shape[0]
    mask = name_keys.shape[0] - 1
    for wi in prange(nwin):
        p = pos[wi]
        t = w_tsc0[wi]
        key = w_key0[wi]
        state = np.int64(w_state0[wi])
        base = stream_base[wi]
        c = win_cpu[wi]
        pend_pos[wi] = -1
        for i in range(nrec[wi]):
            r = dest[base + i]
            if r < 0:
                pend_pos[wi] = p
                pend_tsc[wi] = t
                pend_key[wi] = key
                pend_state[wi] = state
                break
            h = np.int64(w[p])
            ev = h & 0x0FFFFFFF
            n = (h >> 28) & 7
            has = h >> 31
            body = p + 1 + 2 * has
            if has:
                t = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
                if t > key:
                    key = t
            cpu[r] = c
            tsc[r] = t
            has_tsc[r] = has
            event[r] = ev
            n_extra[r] = n
            if ev == EV_WRAP:
                for j in range(7):
                    d[j, r] = 0
            else:
                for j in range(7):
                    d[j, r] = w[body + j] if j < n else 0
            offset[r] = byte_base + 4 * p
            if ev == EV_LOST and n >= 2:
                dom[r] = np.int64(w[body + 1]) & 0xFFFF
                vcpu[r] = np.int64(w[body + 1]) >> 16
                known[r] = 1
            elif state == UNKNOWN:
                dom[r] = 0
                vcpu[r] = 0
                known[r] = 0
            else:
                dom[r] = state >> 16
                vcpu[r] = state & 0xFFFF
                known[r] = 1
            hk = h & 0x7FFFFFFF
            hh = (hk * 2654435761) & mask
            nm = 0  # index 0 of the dictionary is the fallback name
            for _ in range(mask + 1):
                k = name_keys[hh]
                if k == hk:
                    nm = name_vals[hh]
                    break
                if k == 0xFFFFFFFF:
                    break
                hh = (hh + 1) & mask
            name[r] = nm
            state = _state_after(ev, n, w, body, state)
            p += 1 + n + 2 * has


@njit(cache=True)
def decrease_res_payloads(w, pos, nrec):
    """(d3, d4) of every 4-word DECREASE_RESERVATION record, for the layout guess."""
    cnt = 0
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            h = np.int64(w[p])
            if (h & 0x7FFFFFFF) == (0x0010F005 | (4 << 28)):
                cnt += 1
            p += 1 + ((h >> 28) & 7) + 2 * (h >> 31)
    d3 = np.empty(cnt, np.uint32)
    d4 = np.empty(cnt, np.uint32)
    k = 0
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            h = np.int64(w[p])
            if (h & 0x7FFFFFFF) == (0x0010F005 | (4 << 28)):
                body = p + 1 + 2 * (h >> 31)
                d3[k] = w[body + 2]
                d4[k] = w[body + 3]
                k += 1
            p += 1 + ((h >> 28) & 7) + 2 * (h >> 31)
    return d3, d4


@njit(cache=True)
def lost_summary(w, pos, nrec):
    """(number of LOST_RECORDS records, sum of their lost-record counts)."""
    recs = 0
    lost = 0
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            h = np.int64(w[p])
            n = (h >> 28) & 7
            has = h >> 31
            if (h & 0x0FFFFFFF) == EV_LOST and n >= 1:
                recs += 1
                lost += np.int64(w[p + 1 + 2 * has])
            p += 1 + n + 2 * has
    return recs, lost


@njit(cache=True)
def tsc_span(w, pos, nrec):
    """Smallest and largest TSC of the records that carry one (-1, -1 when none does)."""
    lo = np.uint64(0xFFFFFFFFFFFFFFFF)
    hi = np.uint64(0)
    seen = False
    for wi in range(pos.shape[0]):
        p = pos[wi]
        for i in range(nrec[wi]):
            h = np.int64(w[p])
            if h >> 31:
                t = np.uint64(w[p + 1]) | (np.uint64(w[p + 2]) << np.uint64(32))
                seen = True
                if t < lo:
                    lo = t
                if t > hi:
                    hi = t
            p += 1 + ((h >> 28) & 7) + 2 * (h >> 31)
    if not seen:
        return -1, -1
    return np.int64(lo), np.int64(hi)
