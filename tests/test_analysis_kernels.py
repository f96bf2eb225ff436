"""The analysis' numba helper kernels against slow references (the grant ledger's twin test is in
test_analysis_ledgers.py)."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import Counter

import numpy as np
import pytest

import analysis_reference as ref
from tracelens.analysis import _kernels as K

NAMES = {K.CAT_SHUTDOWN: "shutdown", K.CAT_LIFE: "life", K.CAT_GRANT: "grant",
         K.CAT_DECREASE: "decrease", K.CAT_HYPERCALL: "hypercall", K.CAT_IRQ: "irq", K.CAT_GUEST: "guest",
         K.CAT_LOST: "lost", K.CAT_OFFLINE: "offline"}
INTERESTING = [0x00021001 | o << 8 | n << 4 for o in range(4) for n in range(4)] + [
    0x00021002, 0x0002800A, 0x00028007, 0x00028010, 0x00028002, 0x00041001, 0x00041002, 0x0010F001, 0x0010F002,
    0x0010F003, 0x0010F005, 0x0020100D, 0x0020200E, 0x00082012, 0x00802004, 0x00802006, 0x00802008, 0x0800F000,
    0x0800F101, 0x0800FFFF, 0x0801F000, 0x0001F001, 0x0001F002, 0x0001F003, 0x00081102, 0x00028006, 0x00021003]


@pytest.mark.parametrize("seed", range(5))
def test_classify_matches_reference(seed):
    rng = random.Random(seed)
    n = 5000
    ev = np.array([rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(1 << 28) for _ in range(n)],
                  np.uint32)
    ne = np.array([rng.randrange(8) for _ in range(n)], np.uint8)
    rows, starts = K.classify(ev, ne)
    got = {}
    for c, name in NAMES.items():
        got[name] = rows[starts[c]:starts[c + 1]].tolist()
    want = {name: [] for name in NAMES.values()}
    for i, (e, k) in enumerate(zip(ev.tolist(), ne.tolist())):
        c = ref.category(e, k)
        if c:
            want[c].append(i)
    assert got == want
    assert sum(map(len, want.values())) > n // 8


@pytest.mark.parametrize("distinct", [1, 7, 3000])
def test_count_keys_matches_counter(distinct):
    rng = np.random.default_rng(distinct)
    pool = rng.integers(0, 1 << 63, size=distinct, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    keys = rng.choice(pool, size=20000)
    k, c = K.count_keys(keys)
    assert dict(zip(k.tolist(), c.tolist())) == Counter(keys.tolist())
    assert K.count_keys(np.empty(0, np.uint64))[0].size == 0


def test_epochs_of_matches_bisect():
    rng = random.Random(3)
    bounds = {d: sorted(rng.sample(range(1000), rng.randint(1, 6))) for d in (0, 3, 7, 300)}
    bdom = np.array(sorted(bounds), np.int64)
    bstart = np.zeros(len(bdom) + 1, np.int64)
    np.cumsum([len(bounds[d]) for d in bdom], out=bstart[1:])
    btsc = np.array([t for d in bdom for t in bounds[d]], np.uint64)
    doms = np.array([rng.choice([0, 1, 3, 7, 300, -1]) for _ in range(3000)], np.int64)
    tscs = np.array([rng.randrange(1100) for _ in range(3000)], np.uint64)
    got = K.epochs_of(doms, tscs, bdom, bstart, btsc)
    want = [bisect_right(bounds.get(d, []), t) for d, t in zip(doms.tolist(), tscs.tolist())]
    assert got.tolist() == want


def test_hypercall_count_by_hand():
    """grant_table_op cmd 0x1001 (continuation bits) counts as cmd 1; VMMCALL has no cmd; a SUBCALL of sched_op by
    an unknown domain (null dom); epochs from the boundaries (d3 has one at tsc 100)."""
    event = np.array([0x0020100D, 0x00082012, 0x0020200E, 0x00082012, 0x0020100D], np.uint32)
    n_extra = np.array([3, 1, 2, 1, 3], np.uint8)
    d1 = np.array([0x01100014, 29, 0x0010001D, 29, 0x01100014], np.uint32)
    d2 = np.array([0x1001, 0, 2, 0, 1], np.uint32)
    dom = np.array([0, 3, 9, 3, 0], np.uint16)
    bits = np.array([0b11011], np.uint8)  # row 2's dom is null
    tsc = np.array([10, 50, 60, 150, 200], np.uint64)
    bdom, bstart, btsc = np.array([3], np.int64), np.array([0, 1], np.int64), np.array([100], np.uint64)
    keys, counts = K.hypercall_count(np.arange(5, dtype=np.int64), event, n_extra, d1, d2, dom, bits, 0, tsc,
                                     bdom, bstart, btsc)

    def unpack(k):
        return (int(k >> 47) - 1, int(k >> 35) & 0xFFF, int(k >> 33) & 3, int(k >> 32) & 1, int(k >> 12) & 0xFFFFF,
                int(k) & 0xFFF)

    got = {unpack(int(k)): int(c) for k, c in zip(keys, counts)}
    assert got == {(0, 0, 0, 1, 20, 1): 2, (3, 0, 2, 0, 29, 0): 1, (3, 1, 2, 0, 29, 0): 1, (-1, 0, 1, 1, 29, 2): 1}


@pytest.mark.parametrize("distinct_ops", [5, 300, 9000])
def test_hypercall_count_equals_a_python_count(distinct_ops):
    """Per-chunk hash tables merged (few keys) and the fallback for chunks with more than HC_SLOTS / 2 keys (9000
    ops) both give the counts of a plain Python Counter over the same keys, built here from the documented layout."""
    rng = np.random.default_rng(distinct_ops)
    n = 40000 if distinct_ops < 1000 else 200000  # 9000 ops: > 4096 distinct keys in each of the 16 chunks
    event = rng.choice(np.array([0x0020100D, 0x0020200E, 0x00082012], np.uint32), n)
    n_extra = rng.integers(1, 4, n).astype(np.uint8)
    ops = rng.integers(0, distinct_ops, n)
    flags = rng.integers(0, 4, n) << 20
    d1 = np.where(event == 0x00082012, ops, ops | flags).astype(np.uint32)
    d2 = rng.integers(0, 1 << 16, n).astype(np.uint32)
    dom = rng.integers(0, 5, n).astype(np.uint16)
    tsc = np.sort(rng.integers(0, 1000, n)).astype(np.uint64)
    bdom, bstart, btsc = np.array([2], np.int64), np.array([0, 2], np.int64), np.array([300, 700], np.uint64)
    rows = np.sort(rng.choice(n, n // 2, replace=False)).astype(np.int64)
    keys, counts = K.hypercall_count(rows, event, n_extra, d1, d2, dom, np.empty(0, np.uint8), 0, tsc,
                                     bdom, bstart, btsc)
    want = Counter()
    for i in rows.tolist():
        d, e = int(dom[i]), int(event[i])
        ep = sum(1 for t in (300, 700) if t <= int(tsc[i])) if d == 2 else 0
        src = {0x0020100D: 0, 0x0020200E: 1}.get(e, 2)
        w1 = int(d1[i])
        has = int(src != 2 and (w1 >> 20) & 3 != 0 and int(n_extra[i]) >= 2)
        cmd = int(d2[i]) & 0xFFF if has else 0
        want[(d + 1) << 47 | ep << 35 | src << 33 | has << 32 | (w1 & 0xFFFFF) << 12 | cmd] += 1
    assert dict(zip(keys.tolist(), counts.tolist())) == dict(want)


@pytest.mark.parametrize("small", [1 << 16, 0], ids=["numpy", "kernel"])
def test_take_gathers_values_and_nulls_like_arrow(small, monkeypatch):
    import pyarrow as pa

    from tracelens.analysis import records
    from tracelens.analysis.records import _take

    monkeypatch.setattr(records, "SMALL_GATHER", small)

    rng = random.Random(5)
    vals = [None if rng.random() < 0.3 else rng.randrange(1 << 32) for _ in range(1000)]
    for typ in (pa.uint32(), pa.uint16()):
        v = [x if x is None else x & ((1 << typ.bit_width) - 1) for x in vals]
        arr = pa.array(v, typ)
        for col in (arr, arr.slice(37, 500), pa.chunked_array([arr.slice(3, 10), arr.slice(13, 400)])):
            ref_vals = col.to_pylist()
            sel = np.array(sorted(rng.sample(range(len(col)), 120)), np.int64)
            assert _take(col, sel, -7).tolist() == [(-7 if ref_vals[i] is None else ref_vals[i]) for i in sel]


@pytest.mark.parametrize("seed", range(6))
def test_dense_ids_equal_numpy_unique(seed):
    """dense_ids is np.unique(return_inverse=True) by hashing; numpy is the reference, including enough distinct
    keys to grow the table several times and negative keys (mapper -1)."""
    rng = np.random.default_rng(seed)
    distinct = [1, 3, 40, 700, 5000, 20000][seed]
    hi_pool = rng.integers(-1, 1 << 16, distinct)
    hi_pool[0] = -1  # an unknown mapper
    lo_pool = rng.integers(0, 1 << 16, distinct)
    pick = rng.integers(0, distinct, 30000)
    hi, lo = hi_pool[pick], lo_pool[pick]
    u, inv = K.dense_ids(hi, lo)
    eu, einv = np.unique(hi * 0x10000 + lo, return_inverse=True)
    assert np.array_equal(u, eu) and np.array_equal(inv, einv.ravel())
    u, inv = K.dense_ids(np.empty(0, np.int64), np.empty(0, np.int64))
    assert u.size == 0 and inv.size == 0


@pytest.mark.parametrize("seed", range(8))
def test_first_true_reads_bit_buffers_of_sliced_and_chunked_columns(seed):
    """_first_true finds the first true row from the bit buffers; the reference is a Python scan of to_pylist(),
    on columns sliced at odd bit offsets, chunked, with nulls, and with no true value."""
    import pyarrow as pa

    from tracelens.analysis.records import _first_true

    rng = random.Random(seed)
    for _ in range(40):
        chunks = []
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(0, 40)
            p = rng.choice([0.0, 0.02, 0.3])
            vals = [rng.random() < p for _ in range(n + 20)]
            if rng.random() < 0.2:
                vals = [None if rng.random() < 0.3 else v for v in vals]
            a = pa.array(vals, pa.bool_())
            off = rng.randint(0, 19)
            chunks.append(a.slice(off, n))
        col = pa.chunked_array(chunks, pa.bool_())
        flat = col.to_pylist()
        expected = next((i for i, v in enumerate(flat) if v), -1)
        assert _first_true(col) == expected, (flat, [c.offset for c in chunks])
        if len(chunks) == 1:
            assert _first_true(chunks[0]) == expected


@pytest.mark.parametrize("small", [1 << 16, 0], ids=["numpy", "kernel"])
def test_take_i64_gathers_with_nulls_as_fill(small, monkeypatch):
    """_take: values at the selected rows of a sliced column of every unsigned width, ``fill`` at nulls."""
    import pyarrow as pa

    from tracelens.analysis import records
    from tracelens.analysis.records import _take

    monkeypatch.setattr(records, "SMALL_GATHER", small)

    for dt, top in ((pa.uint8(), 255), (pa.uint16(), 65535), (pa.uint32(), 2**32 - 1), (pa.uint64(), 2**63 - 1)):
        vals = [5, None, 7, top, None, 0, 3]
        col = pa.array([None, 9] + vals, dt).slice(2)
        sel = np.array([0, 1, 3, 4, 6, 2], np.int64)
        assert _take(col, sel, -1).tolist() == [-1 if vals[i] is None else vals[i] for i in sel]
        assert _take(pa.chunked_array([col]), sel == sel, -1).size == sel.size  # a boolean mask selects too


def test_irq_tallies_by_hand():
    """HANDLED counts per irq (one past 65535 counted apart), ASSIGN/CLEAR rows kept in time order; rows not
    selected are not read."""
    event = np.array([0x00802008, 0x00802006, 0x00802008, 0x00802004, 0x00802008, 0x00802008, 0x00802006],
                     np.uint32)
    d1 = np.array([7, (0x31 << 16) | 7, 70000, (0x31 << 16) | 7, 7, 9, (0x40 << 16) | 9], np.uint32)
    rows = np.array([0, 1, 2, 3, 4, 6], np.int64)  # row 5 (HANDLED irq 9) is not an IRQ row here
    handled, big, vd1, assign = K.irq_tallies(rows, event, d1)
    assert {int(i): int(handled[i]) for i in np.flatnonzero(handled)} == {7: 2}
    assert big.tolist() == [70000]
    assert vd1.tolist() == [(0x31 << 16) | 7, (0x31 << 16) | 7, (0x40 << 16) | 9]
    assert assign.tolist() == [True, False, True]


def _resume_reference(start, domid, event, n_extra, d1, d3):
    """The documented rule, one query at a time, in plain Python."""
    first_off = False
    first_run = -1
    for i in range(start, len(event)):
        e, nx = int(event[i]), int(n_extra[i])
        r = o = -1
        if e == 0x0002800A:
            if nx >= 4:
                r = int(d3[i]) & 0xFFFF
        elif (e >> 12) == 0x21 and nx >= 1:
            if e == 0x00021002:
                r = int(d1[i]) >> 16
            elif (e & 0xFFFFFC0F) == 0x00021001:
                old, new = (e >> 8) & 3, (e >> 4) & 3
                if new == 0:
                    r = int(d1[i]) >> 16
                if old != new and 3 in (old, new):
                    o = int(d1[i]) >> 16
        if o == domid:
            first_off = True
        if r == domid:
            if first_off:
                return i, True
            if first_run < 0:
                first_run = i
    return first_run, False


@pytest.mark.parametrize("seed", range(12))
def test_find_resumes_answers_every_query_as_a_scan_per_query_would(seed):
    """The indexed search (offline transitions from the classified rows) equals a plain scan per query (several
    queries per domain, overlapping, some never answered, records of other classes in between)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    runstate = [0x00021001 | o << 8 | nw << 4 for o in range(4) for nw in range(4)]
    event = rng.choice(np.array(runstate + [0x00021002, 0x0002800A, 0x00081102, 0x0010F001], np.uint32), n)
    n_extra = rng.integers(0, 5, n).astype(np.uint8)
    doms = np.array([0, 1, 2, 7, 0x7FFF], np.uint32)
    d1 = (doms[rng.integers(0, 5, n)] << 16 | rng.integers(0, 4, n)).astype(np.uint32)
    d3 = doms[rng.integers(0, 5, n)].astype(np.uint32)
    q = int(rng.integers(0, 12))
    starts = rng.integers(0, n + 1, q).astype(np.int64)
    domids = rng.choice(np.array([1, 2, 7, 9], np.int64), q)
    cats, cstart = K.classify(event, n_extra)
    offline_rows = cats[cstart[K.CAT_OFFLINE]:cstart[K.CAT_OFFLINE + 1]]
    rows, off = K.find_resumes(starts, domids, offline_rows, event, n_extra, d1, d3)
    for k in range(q):
        assert (int(rows[k]), bool(off[k])) == _resume_reference(int(starts[k]), int(domids[k]), event, n_extra, d1, d3), k


def _sliced_table(rng: random.Random, columns: dict, types: dict, chunks: int):
    """A pyarrow table of ``columns`` (lists, None for null) cut from a larger one at a random row offset, in 1 or
    more chunks, as a decoded capture's columns can be: one chunk is read at its bit offset, several are combined."""
    import pyarrow as pa

    pad = rng.randint(1, 13)
    n = len(next(iter(columns.values())))
    full = pa.table({k: pa.array([rng.choice(v) for _ in range(pad)] + v, types[k]) for k, v in columns.items()})
    t = full.slice(pad, n)
    cut = sorted(rng.sample(range(1, n), min(chunks - 1, n - 1))) if n > 1 else []
    parts = [t.slice(a, z - a) for a, z in zip([0, *cut], [*cut, n])]
    return pa.Table.from_batches([batch for part in parts for batch in part.to_batches()], schema=t.schema)


def _records(table):
    from tracelens.analysis.records import Records

    col = lambda name, dt: table.column(name).combine_chunks().to_numpy(zero_copy_only=False).astype(dt)  # noqa: E731
    return Records(tsc=col("tsc", np.uint64), cpu=np.zeros(table.num_rows, np.uint16), event=col("event", np.uint32),
                   n_extra=np.ones(table.num_rows, np.uint8), offset=np.zeros(table.num_rows, np.uint64), table=table)


@pytest.mark.parametrize("seed", range(8))
def test_grant_rows_match_a_row_by_row_reading(seed):
    """grant_rows against analysis_reference.grant_rows on generated captures: nulls in dom (mapper unknown) and d1
    (no payload), granters past 16 bits, columns sliced and chunked, selections of int32 and int64 rows."""
    import pyarrow as pa

    rng = random.Random(seed)
    n = rng.randint(1, 3000)
    p_null = (0.0, 0.05, 0.5)[seed % 3]
    events = [rng.choice([ref.MAP, ref.UNMAP, ref.MAP, 0x0010F003, 0x00021011]) for _ in range(n)]
    cols = {
        "event": events,
        "tsc": [rng.randrange(1 << 64) for _ in range(n)],
        "d1": [None if rng.random() < p_null else rng.choice([rng.randrange(1 << 16), rng.randrange(1 << 32)])
               for _ in range(n)],
        "dom": [None if rng.random() < p_null else rng.choice([0, 1, 7, 0x7FF0, 0x7FFF, rng.randrange(1 << 16)])
                for _ in range(n)],
    }
    table = _sliced_table(rng, cols, {"event": pa.uint32(), "tsc": pa.uint64(), "d1": pa.uint32(), "dom": pa.uint16()},
                          chunks=(1, 4)[seed % 2])
    rec = _records(table)
    sel = np.array([i for i, e in enumerate(events) if e in (ref.MAP, ref.UNMAP)],
                   rng.choice([np.int32, np.int64]))
    mapper, granter, tsc, is_map = K.grant_rows(sel, rec.event, rec.tsc, *rec.buffer("d1"), *rec.buffer("dom"))
    rows = table.to_pylist()
    want = ref.grant_rows([rows[i] for i in sel.tolist()])
    assert list(zip(mapper.tolist(), granter.tolist(), tsc.tolist(), is_map.tolist())) == want
    if p_null:
        assert any(m == -1 for m, *_ in want) or len(want) < 20


@pytest.mark.parametrize("seed", range(8))
def test_irq_tallies_match_a_row_by_row_count(seed):
    """irq_tallies against analysis_reference.irq_tallies on generated captures: deliveries to irqs below and past
    65535 (counted densely and listed apart), ASSIGN/CLEAR with vector and irq packed in d1, rows of other
    records (and IRQ rows left out of the selection) never read."""
    rng = random.Random(100 + seed)
    n = rng.randint(0, 4000)
    irqs = [rng.randrange(64) for _ in range(8)] + [rng.randrange(1 << 16) for _ in range(4)] + [65535, 65536]
    event, d1 = [], []
    for _ in range(n):
        e = rng.choice([ref.IRQ_HANDLED] * 4 + [ref.IRQ_ASSIGN_VECTOR, ref.IRQ_CLEAR_VECTOR, 0x00802001, 0x0010F001])
        event.append(e)
        if e == ref.IRQ_HANDLED:
            d1.append(rng.choice(irqs) if rng.random() < 0.97 else rng.randrange(1 << 32))
        else:
            d1.append(rng.randrange(0x20, 0x100) << 16 | rng.choice(irqs) & 0xFFFF)
    event_a, d1_a = np.array(event, np.uint32), np.array(d1, np.uint32)
    irq_rows = [i for i, e in enumerate(event) if e in (ref.IRQ_HANDLED, ref.IRQ_ASSIGN_VECTOR, ref.IRQ_CLEAR_VECTOR)]
    chosen = [i for i in irq_rows if rng.random() < 0.9]  # the analysis' selection: the rest must not count
    handled, big, vd1, assign = K.irq_tallies(np.array(chosen, np.int64), event_a, d1_a)
    want_handled, want_vectors = ref.irq_tallies([{"event": event[i], "d1": d1[i]} for i in chosen])
    got = {int(i): int(handled[i]) for i in np.flatnonzero(handled)}
    assert all(b >= 65536 for b in big.tolist())
    for b in big.tolist():
        got[b] = got.get(b, 0) + 1
    assert got == want_handled
    assert big.tolist() == [d1[i] for i in chosen if event[i] == ref.IRQ_HANDLED and d1[i] >= 65536]  # time order
    assert list(zip(vd1.tolist(), assign.tolist())) == want_vectors
