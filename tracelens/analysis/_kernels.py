"""numba kernels of the analysis (private; twin-tested against tests/analysis_reference.py).

Arrays only, in the decoder's time order. Units: record indices (callers map them to TSC cycles and offsets).
"""

from __future__ import annotations

import numpy as np

from tracelens._jit import njit


@njit(cache=True)
def grant_ledger(pair, gep, mep, is_map, n_pairs, n_gep, n_mep):
    """The grant ledger over MAP/UNMAP records (spec ../shared/spec/xentrace.md §4.1).

    pair    i64[n]  index of the record's (mapper, granter) pair
    gep     i64[n]  the granter's epoch at the record
    mep     i64[n]  the mapper's epoch at the record
    is_map  bool[n] MAP (True) or UNMAP (False)

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
    after = np.empty(n, np.int64)
    balance = np.zeros(n_pairs, np.int64)
    cur = np.zeros(n_pairs, np.int64)
    carried = np.zeros(n_pairs, np.int64)
    for i in range(n):
        p = pair[i]
        e = gep[i]
        me = mep[i]
        if e > cur[p]:
            # first record of the pair since the granter's latest boundary: the balance then was the outstanding
            # count at that boundary
            carried[p] = balance[p] if balance[p] > 0 else 0
            cur[p] = e
        if is_map[i]:
            balance[p] += 1
            maps[p, e] += 1
            m_maps[p, me] += 1
            if m_first_map[p, me] < 0:
                m_first_map[p, me] = i
        else:
            balance[p] -= 1
            unmaps[p, e] += 1
            m_unmaps[p, me] += 1
            if carried[p] > 0:
                carried[p] -= 1
                late[p, e] += 1
                if late_first[p, e] < 0:
                    late_first[p, e] = i
                late_last[p, e] = i
        if first[p, e] < 0:
            first[p, e] = i
        last[p, e] = i
        after[i] = balance[p]
    return maps, unmaps, late, first, last, late_first, late_last, m_maps, m_unmaps, m_first_map, after
