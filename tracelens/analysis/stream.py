"""The analysis of a capture as a stream: bounded memory, no record table (what ``tracelens analyze`` and
``tracelens gate`` run; docs/analysis.md, "How the analysis streams").

The in-memory analysis (:func:`tracelens.analysis.analyze.analyze_table`) reads a decoded table; this module gives the
same :class:`~tracelens.analysis.analyze.Analysis` while only ever holding a chunk of the file and what the analysis
keeps. Two passes over the capture's windows (spec ../shared/spec/xentrace.md §1-2), chunk by chunk, in file
order, each chunk mapped in before and released after:

1. **Select** (:func:`_kernels.stream_select`, parallel over pCPUs): walks every record with the decoder's per-pCPU
   state (inherited TSC, merge key K, running vCPU) carried across chunks, and keeps the state at the start of every
   window (a few thousand windows a GiB). It copies out the rare records the analysis reads whole (shutdowns,
   domain life cycle, offline transitions, lost records, DECREASE_RESERVATION, TRC_GUEST, IRQ vector changes), and
   tallies IRQ deliveries and record ids.
2. Boundaries need look-ahead: a kexec'd domain's boundary is where it *runs again*. After pass 1 the shutdowns are
   known; for each, :func:`_kernels.first_run_after` walks the pCPU streams merged from the shutdown (and from the
   domain's first offline transition after it) to the first record that puts the domain on a pCPU, starting from
   the window states of pass 1: a short walk, since a reset domain runs again soon. Those records join the rare
   ones, and :func:`tracelens.analysis.boundaries.find_boundaries` runs on that small table unchanged.
3. **Grants and hypercalls**, now that the epochs are known: hypercalls are counted per (domain, epoch, source,
   op, cmd); grant MAP/UNMAP rows are merged into time order one chunk at a time -- a row is final once its K is
   below the smallest starting K of every window still to come -- and fed to the grant ledger, whose state (per
   pair: balance, carried handles, epoch cursors) is explicit (:func:`_kernels.grant_ledger_step`).

**Pass 2's work in pass 1.** Neither grant rows nor hypercall counts need the epochs to be *collected*, only to be
*counted*, so pass 1 collects them as it walks (:class:`_Fused`): each chunk's grant rows are kept (K, TSC,
mapper, granter, MAP or not: 23 bytes a row, up to ``StreamOptions.keep_bytes``), and hypercalls are counted per
(domain, *segment*, source, op, cmd), a segment being ``segment_bytes`` of the file, with each window's smallest
and largest hypercall TSC. Once the boundaries are known, a segment's counts for a domain take the epoch of that
smallest TSC, unless one of the domain's boundaries falls between the smallest and largest
(:func:`_resolve_tallies`): a boundary cuts only a segment or two. Pass 2
(:func:`_kernels.stream_grants_hypercalls`, parallel over windows, each from its state of pass 1) then walks only
those segments, for those domains, and the chunks whose rows or counts did not fit pass 1's budgets (KEEP_BYTES,
TALLY_LIMIT, a full hash table); it feeds the kept rows to the ledger from memory. Everything a budget leaves out
is read again, so the budgets bound memory without changing a result.

The rest of the analysis (balloon, guest tracepoints, lost records, IRQ vectors, safety, findings) runs unchanged on
the small table of rare records. A record's place in time order is the decoder's: (K, pCPU, position in its
stream), so every result equals the in-memory analysis's (tests/test_stream_analysis.py checks it with chunks
small enough that state crosses many chunk edges).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from tracelens.analysis import ledgers as L
from tracelens.analysis import records as R

CHUNK_BYTES = 64 << 20
HYPERCALL_KEY_LIMIT = 1 << 16  # distinct hypercall keys per thread before the rest are summed per domain and epoch
SERIES_LIMIT = 1 << 20  # grant records kept exactly in the timeline series; past that, every k-th (k doubling)
IRQ_LIMIT = 4096  # distinct irqs past 65535 (no real irq) counted per thread; the rest are summed
PAIR_LIMIT = 1 << 17  # (mapper, granter) pairs tracked by the grant ledger; later pairs are summed per granter
OTHER_MAPPER = -2  # the mapper of a granter's row that sums the pairs not reported one by one
KEEP_BYTES = 64 << 20  # grant rows pass 1 keeps for pass 2 (23 bytes a row); past that, pass 2 reads them again
SEGMENT_BYTES = 4 << 20  # pass 1 counts hypercalls per segment of this many bytes of the file, epochs given after
TALLY_LIMIT = 1 << 22  # hypercall counts pass 1 keeps (keys x segments); past that, pass 2 counts them
WALK_BYTES = 16 << 20  # how much of the file pass 2 maps in at a time
_GRANT_KEPT = (("key", np.uint64), ("tsc", np.uint64), ("mapper", np.int32), ("granter", np.uint16),
               ("map", np.bool_))
_KEPT_ROW_BYTES = sum(np.dtype(dt).itemsize for _, dt in _GRANT_KEPT)  # 23
# the grant rows pass 2's kernel writes (and live mode's)
_GRANT_ROWS = (("key", np.uint64), ("tsc", np.uint64), ("cpu", np.int64), ("off", np.int64), ("mapper", np.int64),
               ("granter", np.int64), ("map", np.bool_))
_EVERY_DOMAIN = np.ones(65537, np.uint8)  # pass 2's domain mask (index domid + 1) counting every domain's hypercalls


@dataclass
class StreamOptions:
    """``chunk_bytes``: how much of the file each pass maps at a time; ``top``: report rows kept per table for
    captures with very many distinct grant pairs or hypercall keys (the rest summed per domain and epoch)."""

    chunk_bytes: int = CHUNK_BYTES
    top: int = 10_000
    series_limit: int = SERIES_LIMIT
    keep_bytes: int = KEEP_BYTES
    segment_bytes: int = SEGMENT_BYTES


@dataclass
class _Pass1:
    w_tsc0: np.ndarray
    w_key0: np.ndarray
    w_state0: np.ndarray
    w_grants: np.ndarray
    end_key: np.ndarray
    records: int
    first_tsc: int
    last_tsc: int
    ids: dict
    handled: np.ndarray
    rows: dict = field(default_factory=dict)
    min_tsc: int | None = None  # smallest TSC of any record (tracelens info), None when no record has one
    cpus: list = field(default_factory=list)
    lost: tuple = (0, 0)  # LOST_RECORDS markers, records they report lost
    fused: _Fused | None = None  # pass 2's work done in pass 1 (analysis only)
    dom_counts: np.ndarray | None = None
    handled_big: dict = field(default_factory=dict)  # IRQ_HANDLED of irqs past 65535, per irq
    handled_other: int = 0  # ... of the irqs past IRQ_LIMIT distinct ones
    bad_lost: int = 0  # malformed LOST_RECORDS markers (fewer than 4 words, or a count of 0)
    seen: np.ndarray | None = None  # domids some record made current on a pCPU (records.seen_domains)


@dataclass
class _Fused:
    """What pass 1 did of pass 2's work, per chunk of pass 1 (``spans``: first window, windows): the chunk's grant
    rows (``grants``: columns of _GRANT_KEPT and ``cpu``/``count``, the rows' pCPUs run by run; None when they did
    not fit KEEP_BYTES) and its hypercall counts with each window's segment in the epoch's place (``tallies``:
    keys and counts; None when they did not fit); ``hlo``/``hhi``: each window's smallest and largest hypercall
    TSC."""

    spans: list
    grants: list
    tallies: list
    hlo: np.ndarray
    hhi: np.ndarray
    seg_wshift: int


_ROW_FIELDS = (("key", np.uint64), ("tsc", np.uint64), ("off", np.int64), ("cpu", np.int64), ("ev", np.uint32),
               ("n", np.uint8), ("has", np.uint8), ("dom", np.int64), ("vcpu", np.int64))


def _alloc_rows(n: int, zero: bool = True) -> dict:
    """Columns for ``n`` rare records; ``zero=False`` for a kernel that writes every field of the rows it keeps."""
    new = np.zeros if zero else np.empty
    out = {name: new(n, dt) for name, dt in _ROW_FIELDS}
    out["d"] = new((n, 7), np.uint32)
    return out


def _chunks(sc, chunk_bytes):
    from tracelens.parsers.xentrace.decode import _chunks as chunks

    return chunks(sc.pos, sc.end, chunk_bytes, mm=sc.mm)


def _nthreads() -> int:
    from tracelens._jit import numba

    return int(numba.config.NUMBA_NUM_THREADS)


class _Damaged(Exception):
    """The fast walk met damage: the capture is scanned first (decode.scan applies the tolerance or raises)."""


class _Select:
    """Pass 1's state across chunks (per pCPU id, up to decode.MAX_CPU) and what it keeps."""

    def __init__(self, opts: StreamOptions, size: int, progress, select: bool = True, want_doms: bool = False,
                 fuse: bool = False):
        from tracelens.analysis import _kernels as K
        from tracelens.parsers.xentrace._kernels import UNKNOWN
        from tracelens.parsers.xentrace.decode import MAX_CPU

        self.opts, self.size, self.progress = opts, size, progress
        self.ncpu = ncpu = MAX_CPU
        nth = _nthreads()
        self.st_tsc = np.zeros(ncpu, np.uint64)
        self.st_key = np.zeros(ncpu, np.uint64)
        self.st_state = np.full(ncpu, UNKNOWN, np.int64)
        self.st_first = np.full(ncpu, np.iinfo(np.uint64).max, np.uint64)
        self.st_stats = np.zeros((ncpu, 7), np.uint64)
        self.st_stats[:, 3] = np.iinfo(np.uint64).max
        self.handled = np.zeros(65536, np.int64)
        self.c_handled = np.zeros((nth, 65536), np.int64)
        self.hkeys = np.full((nth, 8192), 0xFFFFFFFF, np.uint32)
        self.hcounts = np.zeros((nth, 8192), np.int64)
        self.hoverflow = np.zeros(nth, np.bool_)
        self.hcat = np.zeros((nth, 8192), np.int64)  # each key's kind (stream_select), beside hkeys
        self.parts: list[dict] = []
        self.windows: list[tuple] = []  # per chunk: (w_tsc0, w_key0, w_state0, w_grants, w_nrec)
        # tracelens info keeps only DECREASE_RESERVATION records (for the layout guess)
        self.table_cat = K.TABLE_CAT if select else np.where(K.TABLE_CAT == K.CAT_DECREASE, K.TABLE_CAT, 0).astype(
            K.TABLE_CAT.dtype)
        self.want_doms = want_doms
        self.dom_counts = np.zeros((nth, 65537) if want_doms else (1, 1), np.int64)
        # IRQ_HANDLED of irqs past 65535: per-thread tables of up to IRQ_LIMIT irqs, then one sum
        self.big = (np.zeros((nth, 2 * IRQ_LIMIT), np.uint64), np.zeros((nth, 2 * IRQ_LIMIT), np.bool_),
                    np.zeros((nth, 2 * IRQ_LIMIT), np.int64), np.zeros(nth, np.int64), IRQ_LIMIT,
                    np.zeros(nth, np.int64))
        self.dom_seen = np.zeros((nth, 65536), np.uint8)
        # pass 2's work in pass 1 (see the module docstring)
        self.fuse = self.fuse_grants = self.fuse_hc = fuse and select
        seg = int(opts.segment_bytes)
        if seg < 4 or seg & (seg - 1):
            raise ValueError(f"segment_bytes must be a power of two of at least 4, not {seg}")
        self.seg_wshift = seg.bit_length() - 3  # log2(segment bytes) - 2: in words
        size = 1 << 17 if self.fuse_hc else 2
        self.fhc = (np.zeros((nth, size), np.uint64), np.zeros((nth, size), np.bool_), np.zeros((nth, size), np.int64),
                    np.zeros(nth, np.int64))
        self.hc_limit = min(HYPERCALL_KEY_LIMIT, size // 2, TALLY_LIMIT)
        self.hc_full = np.zeros(nth, np.bool_)
        self.stage = {name: np.empty(0, dt) for name, dt in _GRANT_KEPT}
        self.kept_bytes = self.tally_entries = 0
        self.spans: list[tuple[int, int]] = []
        self.f_grants: list = []
        self.f_tallies: list = []
        self.hwin: list = []
        self.nwin = 0

    def _stage(self, n: int) -> dict:
        """Staging rows for a chunk's grant rows (reused: their pages are faulted in once)."""
        if self.stage["key"].shape[0] < n:
            self.stage = {name: np.empty(max(n, 2 * self.stage["key"].shape[0]), dt) for name, dt in _GRANT_KEPT}
        return self.stage

    def chunk(self, words, pos, vend, cpu) -> np.ndarray:
        """Run pass 1 over consecutive windows (word ranges pos..vend of pCPUs ``cpu``); returns each window's
        overrun position (-1: none)."""
        from tracelens._jit import join_beside
        from tracelens.analysis import _kernels as K

        join_beside("select")  # on a first run, stream_select compiled in another process meanwhile (_jit.first_run)
        ncpu = self.ncpu
        nw = pos.shape[0]
        order = np.argsort(cpu, kind="stable").astype(np.int64)
        counts = np.bincount(cpu, minlength=ncpu)
        cpu_start = np.zeros(ncpu + 1, np.int64)
        np.cumsum(counts, out=cpu_start[1:])
        words_per = np.bincount(cpu, weights=(vend - pos), minlength=ncpu).astype(np.int64)
        room = np.where(counts > 0, words_per // 64 + 16, 0)  # rare records: far fewer than one in 64 words
        saved = (self.st_tsc.copy(), self.st_key.copy(), self.st_state.copy(), self.st_first.copy(),
                 self.st_stats.copy(), self.hkeys.copy(), self.hcounts.copy(), self.hoverflow.copy(),
                 self.dom_counts.copy(), *(x.copy() for x in self.big if isinstance(x, np.ndarray)))
        wa = (np.zeros(nw, np.uint64), np.zeros(nw, np.uint64), np.zeros(nw, np.int64), np.zeros(nw, np.int64),
              np.zeros(nw, np.int64))
        w_bad = np.full(nw, -1, np.int64)
        hw = (np.empty(nw, np.uint64), np.empty(nw, np.uint64))
        # grant rows: room for one in 8 words (a grant record has 2 to 4); a pCPU with more is read again in pass 2
        groom = np.where(counts > 0, words_per // 8 + 16, 0) if self.fuse_grants else np.zeros(ncpu, np.int64)
        gcap_start = np.zeros(ncpu + 1, np.int64)
        np.cumsum(groom, out=gcap_start[1:])
        gk = self._stage(int(gcap_start[-1]))
        g_count = np.zeros(ncpu, np.int64)
        while True:
            if self.fuse_hc:
                for x in self.fhc[1:]:
                    x.fill(0)
                self.hc_full[:] = False
            cap_start = np.zeros(ncpu + 1, np.int64)
            np.cumsum(room, out=cap_start[1:])
            rows = _alloc_rows(int(cap_start[-1]), zero=False)  # stream_select writes every field of a row
            count = np.zeros(ncpu, np.int64)
            self.c_handled[:] = 0
            K.stream_select(words, pos, vend, np.arange(nw, dtype=np.int64), order, cpu_start, self.st_tsc,
                            self.st_key, self.st_state, self.st_first, self.st_stats, *wa[:4], wa[4], w_bad,
                            K.TABLE_IDS, self.table_cat, K.TABLE_NEED, cap_start, rows["key"], rows["tsc"],
                            rows["off"], rows["cpu"], rows["ev"], rows["n"], rows["has"], rows["d"], rows["dom"],
                            rows["vcpu"], count, self.c_handled, self.hkeys, self.hcounts, self.hoverflow, self.hcat,
                            self.dom_counts, self.want_doms, self.dom_seen, *self.big,
                            self.fuse_grants, self.fuse_hc, gcap_start, gk["key"], gk["tsc"], gk["mapper"],
                            gk["granter"], gk["map"], g_count, *self.fhc, self.hc_limit, self.hc_full, *hw,
                            int(pos[0]) if nw else 0, self.seg_wshift)
            if (count <= room).all():
                break
            # a pCPU had more rare records than room for them: run the chunk again from the same state
            self.st_tsc[:], self.st_key[:], self.st_state[:], self.st_first[:], self.st_stats[:] = saved[:5]
            self.hkeys[:], self.hcounts[:], self.hoverflow[:], self.dom_counts[:] = saved[5:9]
            for x, y in zip((self.big[0], self.big[1], self.big[2], self.big[3], self.big[5]), saved[9:]):
                x[:] = y
            room = np.maximum(room, count)
        self.handled += self.c_handled.sum(axis=0)
        used = np.flatnonzero(count)
        if used.size:
            keep = np.concatenate([np.arange(cap_start[k], cap_start[k] + count[k]) for k in used.tolist()])
            self.parts.append({name: arr[keep] for name, arr in rows.items()})
        self.windows.append(wa)
        if self.fuse:  # (every chunk: pass 2 goes by these spans, whether or not anything was kept)
            self._keep(nw, gk, gcap_start, g_count, groom, hw)
        return w_bad

    def _keep(self, nw, gk, gcap_start, g_count, groom, hw) -> None:
        """Keep what this chunk's pass 1 did of pass 2's work, within KEEP_BYTES and TALLY_LIMIT; once either
        does not fit, the rest of the capture leaves that work to pass 2."""
        self.spans.append((self.nwin, nw))
        self.nwin += nw
        self.hwin.append(hw)
        grants = None
        if self.fuse_grants:
            m = int(g_count.sum())
            if self.kept_bytes + m * _KEPT_ROW_BYTES > self.opts.keep_bytes:
                self.fuse_grants = False  # the budget is spent: pass 2 reads the rest again
            elif (g_count <= groom).all():  # (else a pCPU had more than room: pass 2 reads this chunk again)
                used = np.flatnonzero(g_count)
                grants = {name: np.concatenate([gk[name][gcap_start[k]:gcap_start[k] + g_count[k]] for k in used])
                          if used.size else np.empty(0, dt) for name, dt in _GRANT_KEPT}
                grants["cpu"], grants["count"] = used, g_count[used]
                self.kept_bytes += m * _KEPT_ROW_BYTES
        self.f_grants.append(grants)
        tally = None
        if self.fuse_hc:
            used = self.fhc[1]
            n = int(self.fhc[3].sum())
            if not self.hc_full.any() and self.tally_entries + n <= TALLY_LIMIT:
                tally = (self.fhc[0][used], self.fhc[2][used])
                self.tally_entries += n
            else:
                self.fuse_hc = False
        self.f_tallies.append(tally)

    def table_ids(self) -> dict:
        """(event id, n_extra) -> records, from the per-thread tables (exact unless ``hoverflow``)."""
        from tracelens.parsers.xentrace.decode import _id_counts

        return _id_counts(self.hkeys, self.hcounts)

    def big_irqs(self) -> dict:
        """IRQ_HANDLED per irq past 65535, summed over the per-thread tables."""
        big: dict[int, int] = {}
        for t in range(self.big[0].shape[0]):
            used = self.big[1][t]
            for k, c in zip(self.big[0][t][used].tolist(), self.big[2][t][used].tolist()):
                big[k] = big.get(k, 0) + c
        return big

    def finish(self, sc) -> _Pass1:
        wa = [np.concatenate([x[i] for x in self.windows]) if self.windows else np.zeros(0, np.int64)
              for i in range(5)]
        sc.nrec = wa[4]
        rows = {name: np.concatenate([p[name] for p in self.parts]) if self.parts else _alloc_rows(0)[name]
                for name in _alloc_rows(0)}
        if self.hoverflow.any():
            from tracelens.parsers.xentrace.decode import _exact_ids, _release

            ids = _exact_ids(sc.words, sc.pos, sc.nrec, sc.path)
            _release(sc.mm, sc.size)
        else:
            ids = self.table_ids()
        st = self.st_stats
        timed = st[:, 5] > 0
        big = self.big_irqs()
        return _Pass1(wa[0].astype(np.uint64), wa[1].astype(np.uint64), wa[2], wa[3], self.st_key.copy(),
                      int(st[:, 0].sum()), int(self.st_first[timed].min()) if timed.any() else 0,
                      int(st[:, 4].max()), ids, self.handled, rows,
                      min_tsc=int(st[timed, 3].min()) if timed.any() else None,
                      cpus=sorted(set(sc.cpu.tolist())), lost=(int(st[:, 1].sum()), int(st[:, 2].sum())),
                      dom_counts=self.dom_counts.sum(axis=0) if self.want_doms else None,
                      handled_big=big, handled_other=int(self.big[5].sum()),
                      bad_lost=int(st[:, 6].sum()), seen=np.flatnonzero(self.dom_seen.any(axis=0)),
                      fused=self._fused())

    def _fused(self) -> _Fused | None:
        if not self.spans:
            return None
        return _Fused(self.spans, self.f_grants, self.f_tallies, np.concatenate([h[0] for h in self.hwin]),
                      np.concatenate([h[1] for h in self.hwin]), self.seg_wshift)


def _pass1_fast(path, opts: StreamOptions, progress, **select):
    """Pass 1 walking the windows as it goes (one mapping of each chunk): for undamaged captures. Raises
    :class:`_Damaged` at the first sign of damage."""
    from tracelens.parsers.xentrace import _kernels as XK
    from tracelens.parsers.xentrace import decode as D

    path, size, mm, w = D._open(path)
    nwords = w.shape[0]
    if nwords < 3 or int(w[0]) != XK.CPU_CHANGE_HEADER or size % 4:
        raise _Damaged
    sel = _Select(opts, size, progress, **select)
    step = max(1, opts.chunk_bytes // 4)
    parts = []
    p = 0
    while p < nwords:
        D._populate(mm, p * 4, p * 4 + opts.chunk_bytes + (1 << 20))
        r = XK.walk_windows(w, p, nwords, D.MAX_CPU, D.MAX_WINDOW_BYTES, False, p + step)
        pos, end, cpu, status, nxt = r[0], r[1], r[2].astype(np.int64), r[6], r[8]
        if status != XK.OK or not pos.size:
            raise _Damaged
        stop = int(end[-1]) * 4
        D._populate(mm, p * 4 + opts.chunk_bytes + (1 << 20), stop)
        bad = sel.chunk(w, pos, end, cpu)
        if (bad >= 0).any():
            raise _Damaged
        D._release(mm, stop)
        parts.append((pos, end, cpu))
        p = nxt
        if progress is not None:
            progress(p * 4, size)
    pos, end, cpu = (np.concatenate([x[i] for x in parts]) for i in range(3))
    sc = D._Scan(path, size, mm, w, pos, end, cpu, None, end, [], False)
    return sc, sel.finish(sc)


def _pass1(path, tolerance: str, opts: StreamOptions, progress, **select):
    """(the capture's windows, pass 1's results). Damaged captures are scanned first, with the tolerance."""
    from tracelens.parsers.xentrace import decode as D

    if tolerance not in D.TOLERANCES:
        D.scan(path, tolerance)  # the usage error
    try:
        return _pass1_fast(path, opts, progress, **select)
    except _Damaged:
        return _pass1_scanned(path, tolerance, opts, progress, **select)


def _pass1_scanned(path, tolerance: str, opts: StreamOptions, progress, **select):
    from tracelens.parsers.xentrace import decode as D

    sc = D.scan(path, tolerance, populate=False)
    sel = _Select(opts, sc.size, progress, **select)
    cpu = sc.cpu.astype(np.int64)
    for a, b in _chunks(sc, opts.chunk_bytes):
        sel.chunk(sc.words, sc.pos[a:b], sc.vend[a:b], cpu[a:b])
        if progress is not None:
            progress(int(sc.end[b - 1]) * 4, sc.size)
    nrec = sc.nrec
    p1 = sel.finish(sc)
    sc.nrec = nrec
    return sc, p1


def _sorted_rows(rows: dict) -> dict:
    order = np.lexsort((rows["off"], rows["cpu"], rows["key"]))
    return {name: arr[order] for name, arr in rows.items()}


def _table(rows: dict, meta: dict):
    """The rare records as a table with the decoder's columns (what the in-memory analysis reads)."""
    import pyarrow as pa

    cols = {
        "cpu": pa.array(rows["cpu"].astype(np.uint16)),
        "tsc": pa.array(rows["tsc"]),
        "has_tsc": pa.array(rows["has"].astype(bool)),
        "event": pa.array(rows["ev"]),
        "n_extra": pa.array(rows["n"]),
    }
    for j in range(7):
        cols[f"d{j + 1}"] = pa.array(rows["d"][:, j], mask=rows["n"] <= j)
    cols["offset"] = pa.array(rows["off"].astype(np.uint64))
    unknown = rows["dom"] < 0
    cols["dom"] = pa.array(np.where(unknown, 0, rows["dom"]).astype(np.uint16), mask=unknown)
    cols["vcpu"] = pa.array(np.where(unknown, 0, rows["vcpu"]).astype(np.uint16), mask=unknown)
    table = pa.table(cols)
    return table.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})


class StreamRecords(R.Records):
    """The rare records of a streamed capture: :class:`Records` whose length and TSC span are the whole
    capture's."""

    total: int = 0
    span: tuple = (0, 0)

    def __len__(self) -> int:
        return self.total

    @property
    def first_tsc(self) -> int:
        return self.span[0]

    @property
    def last_tsc(self) -> int:
        return self.span[1]


def _records(rows, meta, p1: _Pass1) -> StreamRecords:
    from tracelens.analysis._kernels import classify

    table = _table(rows, meta)
    rec = StreamRecords(tsc=rows["tsc"], cpu=rows["cpu"].astype(np.uint16), event=rows["ev"],
                        n_extra=rows["n"], offset=rows["off"].astype(np.uint64), table=table,
                        meta={k: json.loads(json.dumps(v)) for k, v in meta.items()})
    rec._rows, rec._starts = classify(rec.event, rec.n_extra)
    rec.total = p1.records
    rec.span = (p1.first_tsc, p1.last_tsc)
    return rec


def _resume_candidates(sc, p1: _Pass1, rec: StreamRecords, rows: dict) -> dict | None:
    """For every kexec shutdown, the first record putting its domain on a pCPU after it, and after the domain's
    first offline transition from there (what find_resumes looks for), as extra rows."""
    from tracelens.analysis import _kernels as K
    from tracelens.analysis.boundaries import first_offline, kexec_shutdowns

    kexecs = kexec_shutdowns(rec)
    if not kexecs:
        return None
    cidx = sc.cpu.astype(np.int64)
    ncpu = p1.end_key.shape[0]
    order = np.argsort(cidx, kind="stable").astype(np.int64)
    cpu_start = np.zeros(ncpu + 1, np.int64)
    np.cumsum(np.bincount(cidx, minlength=ncpu), out=cpu_start[1:])
    queries = set()
    for i, domid, _vcpu, _reason, _eff in kexecs:
        queries.add((i, domid, False))
        f = first_offline(rec, i + 1, domid)
        if f >= 0:
            queries.add((f, domid, True))
    found = {}
    for i, domid, inclusive in sorted(queries):
        ok, k, p, key, tsc, has, dom, vcpu = K.first_run_after(
            sc.words, sc.pos, sc.vend, cidx, order, cpu_start, p1.w_tsc0, p1.w_key0, p1.w_state0, p1.end_key,
            domid, np.uint64(rows["key"][i]), int(rows["cpu"][i]), int(rows["off"][i]), inclusive)
        if ok:
            found[(int(k), int(p))] = (int(key), int(tsc), int(has), int(dom), int(vcpu))
    from tracelens.parsers.xentrace.decode import _release

    _release(sc.mm, sc.size)
    if not found:
        return None
    extra = _alloc_rows(len(found))
    for r, ((k, p), (key, tsc, has, dom, vcpu)) in enumerate(sorted(found.items())):
        h = int(sc.words[p])
        n = (h >> 28) & 7
        body = p + 1 + 2 * (h >> 31)
        extra["key"][r], extra["tsc"][r], extra["off"][r], extra["cpu"][r] = key, tsc, 4 * p, k
        extra["ev"][r], extra["n"][r], extra["has"][r] = h & 0x0FFFFFFF, n, has
        extra["d"][r, :n] = sc.words[body:body + n]
        extra["dom"][r], extra["vcpu"][r] = dom, vcpu
    return extra


@dataclass
class _GrantState:
    """The grant ledger's state between batches (see :func:`_kernels.grant_ledger_step`)."""

    n_ep: int
    pair_id: dict = field(default_factory=dict)
    keys: list = field(default_factory=list)
    cap: int = 0
    arrays: dict = field(default_factory=dict)
    base: int = 0
    unattributed: int = 0
    series: list = field(default_factory=list)
    series_n: int = 0
    stride: int = 1
    granter_total: np.ndarray = field(default_factory=lambda: np.zeros(65536, np.int64))
    known: tuple | None = None  # pair_id as sorted (keys, ids) arrays (_known_pairs), rebuilt when pairs are added

    _EPOCH = ("maps", "unmaps", "late", "m_maps", "m_unmaps")
    _INDEX = ("first", "last", "late_first", "late_last", "m_first_map")
    _TSC = ("first_t", "last_t", "late_first_t", "late_last_t", "m_first_map_t")
    _PAIR = ("balance", "cur", "carried")

    def grow(self, need: int) -> None:
        if need <= self.cap:
            return
        cap = max(64, self.cap * 2, need)
        new = {}
        for name in self._EPOCH:
            new[name] = np.zeros((cap, self.n_ep), np.int64)
        for name in self._INDEX:
            new[name] = np.full((cap, self.n_ep), -1, np.int64)
        for name in self._TSC:
            new[name] = np.zeros((cap, self.n_ep), np.uint64)
        for name in self._PAIR:
            new[name] = np.zeros(cap, np.int64)
        for name, arr in self.arrays.items():
            new[name][: self.cap] = arr
        self.arrays = new
        self.cap = cap


def _known_pairs(gs: _GrantState, keys: np.ndarray) -> np.ndarray | None:
    """The pair id of every row when all its (mapper, granter) pairs are known already (the usual case: a capture
    has a handful), by a binary search in the sorted known keys instead of a sort of the batch; else None. Keys
    folded into a granter's "other" row past PAIR_LIMIT are not in ``pair_id`` under their own key, so a batch
    holding one takes the general path."""
    if gs.known is None:
        k = np.fromiter(gs.pair_id.keys(), np.int64, len(gs.pair_id))
        order = np.argsort(k)
        gs.known = (k[order], np.fromiter(gs.pair_id.values(), np.int32, len(gs.pair_id))[order])
    known, ids = gs.known
    if not known.size:
        return None
    at = np.searchsorted(known, keys)
    np.minimum(at, known.size - 1, out=at)
    if not np.array_equal(known[at], keys):
        return None
    return ids[at]


def _feed_grants(gs: _GrantState, batch: dict, csr, cursors, series_limit: int) -> None:
    from tracelens.analysis import _kernels as K

    n = batch["tsc"].shape[0]
    if not n:
        return
    mapper = batch["mapper"].astype(np.int32)
    granter = batch["granter"].astype(np.int32)
    is_map = batch["map"]
    keys = mapper.astype(np.int64) * 0x10000 + granter
    pair = _known_pairs(gs, keys)
    if pair is None:  # a pair not seen before: ids for the batch's new pairs, in key order
        u, inv = np.unique(keys, return_inverse=True)
        ids = np.empty(u.size, np.int32)
        for j, k in enumerate(u.tolist()):
            pid = gs.pair_id.get(k)
            if pid is None:
                if len(gs.keys) >= PAIR_LIMIT:  # past the limit, a new pair's records go to its granter's "other" row
                    k = OTHER_MAPPER * 0x10000 + (k & 0xFFFF)
                    pid = gs.pair_id.get(k)
                if pid is None:
                    pid = gs.pair_id[k] = len(gs.keys)
                    gs.keys.append(k)
            ids[j] = pid
        pair = ids[inv.ravel()]
        gs.known = None
    gs.grow(len(gs.keys))
    a = gs.arrays
    after = np.empty(n, np.int32)
    after_g = np.empty(n, np.int64)
    slot, gcur, mcur = cursors
    K.grant_ledger_step(pair, granter, mapper, batch["tsc"], is_map, gs.base, a["maps"], a["unmaps"], a["late"],
                        a["first"], a["last"], a["late_first"], a["late_last"], a["m_maps"], a["m_unmaps"],
                        a["m_first_map"], a["first_t"], a["last_t"], a["late_first_t"], a["late_last_t"],
                        a["m_first_map_t"], a["balance"], a["cur"], a["carried"], slot, gcur, mcur, csr[1], csr[2],
                        after, gs.granter_total, after_g)
    gs.base += n
    gs.unattributed += int((mapper < 0).sum())
    # the timeline series: exact up to series_limit records, then every stride-th record (stride doubling)
    first = (-(gs.base - n)) % gs.stride  # the first row of the batch whose global index is a multiple of stride
    pick = slice(first, None, gs.stride)
    part = {"tsc": batch["tsc"][pick].copy(), "mapper": mapper[pick].astype(np.int64),
            "granter": granter[pick].astype(np.int64), "outstanding": after[pick].copy(),
            "delta": np.where(is_map[pick], np.int8(1), np.int8(-1)), "granter_outstanding": after_g[pick].copy()}
    gs.series.append(part)
    gs.series_n += part["tsc"].shape[0]
    while gs.series_n > series_limit:
        merged = {k: np.concatenate([p[k] for p in gs.series]) for k in part}
        # keep the records whose global index is a multiple of the doubled stride
        keep = slice(None, None, 2)
        gs.stride *= 2
        merged = {k: v[keep] for k, v in merged.items()}
        gs.series = [merged]
        gs.series_n = merged["tsc"].shape[0]


def _resolve_tallies(sc, fz: _Fused, csr) -> tuple[list, list, dict]:
    """Pass 1's hypercall counts with their epochs: a segment's counts for a domain take the epoch of the segment's
    smallest hypercall TSC when none of the domain's boundaries falls between its smallest and largest; the others
    are left to pass 2. Returns (keys, counts, {chunk: [(windows, domids), ...]}: what pass 2 counts again)."""
    bdom, bstart, btsc = csr
    keys, counts, again = [], [], {}
    clear = ~np.uint64(0xFFF << 35)
    for c, tally in enumerate(fz.tallies):
        if tally is None or not tally[0].size:
            continue
        k, cnt = tally
        a, nw = fz.spans[c]
        wseg = (sc.pos[a:a + nw] - sc.pos[a]) >> fz.seg_wshift
        starts = np.flatnonzero(np.concatenate([[True], wseg[1:] != wseg[:-1]]))
        seg_ids = wseg[starts]
        lo = np.minimum.reduceat(fz.hlo[a:a + nw], starts)
        hi = np.maximum.reduceat(fz.hhi[a:a + nw], starts)
        dom = (k >> np.uint64(47)).astype(np.int64) - 1
        si = np.searchsorted(seg_ids, ((k >> np.uint64(35)) & np.uint64(0xFFF)).astype(np.int64))
        ep = np.zeros(k.size, np.int64)
        bad = np.zeros(k.size, np.bool_)
        for j, d in enumerate(bdom.tolist()):
            sel = np.flatnonzero(dom == d)
            if not sel.size:
                continue
            b = btsc[bstart[j]:bstart[j + 1]]
            e_lo = np.searchsorted(b, lo[si[sel]], side="right")
            ep[sel] = e_lo
            bad[sel] = e_lo != np.searchsorted(b, hi[si[sel]], side="right")
        if bad.any():
            todo = again.setdefault(c, [])
            for q in np.unique(si[bad]).tolist():
                windows = a + np.flatnonzero(wseg == seg_ids[q])
                todo.append((windows, np.unique(dom[bad & (si == q)])))
        ok = ~bad
        keys.append((k[ok] & clear) | (np.minimum(ep[ok], 0xFFF).astype(np.uint64) << np.uint64(35)))
        counts.append(cnt[ok])
    return keys, counts, again


def _pass2(sc, p1: _Pass1, ep, opts: StreamOptions, progress, want_grants: bool, want_hc: bool):
    """Grants and hypercalls, now that the epochs are known: what pass 1 kept of them (``p1.fused``), and a walk of
    the chunks (or segments) it could not keep them for."""
    from tracelens.analysis import _kernels as K
    from tracelens.parsers.xentrace import decode as D

    cidx = sc.cpu.astype(np.int64)

    nth = _nthreads()
    csr = ep.csr()
    slot = K._dom_slots(csr[0])
    cursors = (slot, np.zeros(csr[0].shape[0], np.int64), np.zeros(csr[0].shape[0], np.int64))
    scratch = np.zeros((nth, max(1, csr[0].shape[0])), np.int64)  # each thread's epoch cursors in pass 2's kernel
    n_ep = 1 + max((ep.count(d) for d in ep.by_dom), default=0)
    gs = _GrantState(n_ep)
    size = 1 << 17
    limit = min(HYPERCALL_KEY_LIMIT, size // 2)
    hc = (np.zeros((nth, size), np.uint64), np.zeros((nth, size), np.bool_), np.zeros((nth, size), np.int64),
          np.zeros(nth, np.int64))
    fold = (np.zeros((nth, size), np.uint64), np.zeros((nth, size), np.bool_), np.zeros((nth, size), np.int64),
            np.zeros(nth, np.int64))
    dropped = np.zeros(nth, np.int64)
    nwin = len(sc.pos)
    # the smallest starting K of the windows from index i on: grant rows below it are final
    sufmin = np.minimum.accumulate(p1.w_key0[::-1])[::-1] if nwin else p1.w_key0
    pending = None
    fz = p1.fused
    spans = fz.spans if fz is not None else [(a, b - a) for a, b in D._chunks(sc.pos, sc.end, opts.chunk_bytes)]
    tkeys, tcounts, again = _resolve_tallies(sc, fz, csr) if fz is not None and want_hc else ([], [], {})
    mask = np.zeros(65537, np.uint8)

    def walk(windows, g_start, g, cat, dom_mask):
        """Pass 2's kernel over consecutive windows, WALK_BYTES of the file at a time, each stretch mapped in before
        and released after (pass 2 then holds less of the file than pass 1's chunks)."""
        at = sc.pos[windows] * 4
        i = 0
        while i < windows.size:
            j = max(i + 1, int(np.searchsorted(at, at[i] + WALK_BYTES, side="left")))
            w = windows[i:j]
            first, last = int(at[i]), int(sc.end[w[-1]]) * 4
            D._populate(sc.mm, first, last)
            K.stream_grants_hypercalls(sc.words, sc.pos[w], sc.vend[w], w, cidx[w], p1.w_tsc0, p1.w_key0, p1.w_state0,
                                       g_start[i:j], csr[1], csr[2], slot, scratch, K.TABLE_IDS, cat, K.TABLE_NEED,
                                       g["key"], g["tsc"], g["cpu"], g["off"], g["mapper"], g["granter"], g["map"], *hc,
                                       *fold, limit, dropped, dom_mask)
            D._release(sc.mm, last)
            i = j

    for c, (a, nw) in enumerate(spans):
        b = a + nw
        kept = fz.grants[c] if fz is not None and want_grants else None
        walk_g = want_grants and kept is None
        walk_h = want_hc and (fz is None or fz.tallies[c] is None)
        g = None
        if walk_g or walk_h:
            g_start = np.zeros(b - a + 1, np.int64)
            if walk_g:
                np.cumsum(p1.w_grants[a:b], out=g_start[1:])
            g = {name: np.empty(int(g_start[-1]), dt) for name, dt in _GRANT_ROWS}
            walk(np.arange(a, b, dtype=np.int64), g_start[:-1], g, _category_table(K, walk_g, walk_h), _EVERY_DOMAIN)
        for windows, doms in again.get(c, ()):  # segments whose counts pass 1 could not give an epoch
            mask[doms + 1] = 1
            none = {name: np.empty(0, dt) for name, dt in _GRANT_ROWS}
            walk(windows, np.zeros(windows.size, np.int64), none, _category_table(K, False, True), mask)
            mask[doms + 1] = 0
        if want_grants:
            if kept is not None:
                g = {"key": kept["key"], "tsc": kept["tsc"], "cpu": np.repeat(kept["cpu"], kept["count"]),
                     "mapper": kept["mapper"], "granter": kept["granter"], "map": kept["map"]}
                fz.grants[c] = None  # fed once: release it as we go
            else:
                del g["off"]  # the order within a pCPU is the rows' order (see _time_order)
            if pending is not None and pending["key"].size:
                g = {k: np.concatenate([pending[k], g[k]]) for k in g}
            order = _time_order(g["key"], g["cpu"])
            g = {k: v[order] for k, v in g.items()}
            cut = g["key"].size if b >= nwin else int(np.searchsorted(g["key"], sufmin[b], side="left"))
            _feed_grants(gs, {k: v[:cut] for k, v in g.items()}, csr, cursors, opts.series_limit)
            pending = {k: v[cut:] for k, v in g.items()}
        if progress is not None:
            progress(int(sc.end[b - 1]) * 4, sc.size)
    keys = list(tkeys)
    counts = list(tcounts)
    for t in range(nth):
        used = hc[1][t]
        keys.append(hc[0][t][used])
        counts.append(hc[2][t][used])
    fkeys, fcounts = [], []
    for t in range(nth):
        used = fold[1][t]
        fkeys.append(fold[0][t][used])
        fcounts.append(fold[2][t][used])
    return gs, _sum_keys(keys, counts), _sum_keys(fkeys, fcounts), int(dropped.sum())


_CATS: dict = {}


def _category_table(K, grants: bool, hypercalls: bool) -> np.ndarray:
    """The category table with or without grant and hypercall records (what pass 2 walks for)."""
    got = _CATS.get((grants, hypercalls))
    if got is None:
        got = K.TABLE_CAT.copy()
        if not grants:
            got[got == K.CAT_GRANT] = 0
        if not hypercalls:
            got[got == K.CAT_HYPERCALL] = 0
        got = _CATS[(grants, hypercalls)] = got
    return got


def _time_order(key, cpu):
    """The permutation putting grant rows in time order, (K, pCPU, position in the pCPU's stream): what
    ``np.lexsort((off, cpu, key))`` gives, since the rows of one pCPU come in stream order already (windows in file
    order, pending rows first): one stable sort by K when no K is shared by two pCPUs (the usual case), else two
    (the pCPU, then K); a tenth of lexsort's cost or less."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    tie = np.flatnonzero(k[1:] == k[:-1])
    if not tie.size or np.array_equal(cpu[order[tie]], cpu[order[tie + 1]]):
        return order  # no K shared across pCPUs: K and the rows' order decide alone
    by_cpu = np.argsort(cpu, kind="stable")
    return by_cpu[np.argsort(key[by_cpu], kind="stable")]


def _sum_keys(keys, counts):
    k = np.concatenate(keys) if keys else np.empty(0, np.uint64)
    c = np.concatenate(counts) if counts else np.empty(0, np.int64)
    if not k.size:
        return k, c
    u, inv = np.unique(k, return_inverse=True)
    return u, np.bincount(inv.ravel(), weights=c, minlength=u.size).astype(np.int64)


def _grant_ledger(gs: _GrantState, ep, top: int) -> L.GrantLedger:
    """The ledger's rows; with more than ``top`` pairs, the busiest ``top`` (maps and unmaps) are kept and the rest
    summed into one row per granter (mapper null, ``other_mappers``: how many pairs it sums)."""
    from tracelens.analysis import _kernels as K

    out = L.GrantLedger(unattributed=gs.unattributed)
    if not gs.keys:
        out.series = L.empty_series()
        return out
    keys = np.asarray(gs.keys, np.int64)
    a = {k: v[: len(keys)] for k, v in gs.arrays.items()}
    folded = {}
    if len(keys) > top or (keys // 0x10000 == OTHER_MAPPER).any():
        busy = a["maps"].sum(axis=1) + a["unmaps"].sum(axis=1)
        order = np.argsort(-busy, kind="stable")
        keep = np.zeros(len(keys), bool)
        keep[order[:top]] = True
        keep &= keys // 0x10000 != OTHER_MAPPER
        granter = keys & 0xFFFF
        out_keys = np.concatenate([keys[keep], np.unique(OTHER_MAPPER * 0x10000 + granter[~keep])])
        slot = {int(k): i for i, k in enumerate(out_keys.tolist())}
        group = np.array([slot[int(k)] if keep[p] else slot[OTHER_MAPPER * 0x10000 + int(granter[p])]
                          for p, k in enumerate(keys.tolist())], np.int64)
        for p in np.flatnonzero(~keep).tolist():
            g = int(granter[p])
            folded[g] = folded.get(g, 0) + (1 if keys[p] // 0x10000 != OTHER_MAPPER else 0)
        c, ix, ts = K.fold_pairs(group, len(out_keys), a["maps"], a["unmaps"], a["late"], a["m_maps"],
                                 a["m_unmaps"], a["first"], a["last"], a["late_first"], a["late_last"],
                                 a["m_first_map"], a["first_t"], a["last_t"], a["late_first_t"], a["late_last_t"],
                                 a["m_first_map_t"])
        a = {"maps": c[0], "unmaps": c[1], "late": c[2], "m_maps": c[3], "m_unmaps": c[4],
             "first": ix[0], "last": ix[1], "late_first": ix[2], "late_last": ix[3], "m_first_map": ix[4],
             "first_t": ts[0], "last_t": ts[1], "late_first_t": ts[2], "late_last_t": ts[3], "m_first_map_t": ts[4]}
        keys = out_keys
    order = np.argsort(keys)
    a = {k: v[order] for k, v in a.items()}
    L.grant_ledger_rows(out, ep, keys[order], a["maps"], a["unmaps"], a["late"], (a["first"], a["first_t"]),
                        (a["last"], a["last_t"]), (a["late_first"], a["late_first_t"]),
                        (a["late_last"], a["late_last_t"]), a["m_maps"], a["m_unmaps"],
                        (a["m_first_map"], a["m_first_map_t"]), other=folded)
    out.series = {k: np.concatenate([p[k] for p in gs.series]) for k in gs.series[0]} if gs.series else L.empty_series()
    out.series_stride = gs.stride
    return out


def _hypercalls(keys, counts, fkeys, fcounts, dropped, top: int) -> list[dict]:
    """Hypercall rows; past ``top`` distinct keys, the least counted are summed into one row per domain and epoch
    (``source`` "other"), with the counts that did not fit the per-thread tables."""
    if keys.size <= top and not fkeys.size and not dropped:
        return L.hypercall_rows(keys, counts)
    o = np.argsort(-counts, kind="stable")
    head, tail = o[:top], o[top:]
    rows = L.hypercall_rows(keys[head], counts[head])
    other: dict[tuple, list[int]] = {}
    for k, c in zip(keys[tail].tolist(), counts[tail].tolist()):
        d, e = (k >> 47) - 1, (k >> 35) & 0xFFF
        acc = other.setdefault((d, e), [0, 0])
        acc[0] += c
        acc[1] += 1
    for k, c in zip(fkeys.tolist(), fcounts.tolist()):
        d, e = (k >> 12) - 1, k & 0xFFF
        acc = other.setdefault((d, e), [0, 0])
        acc[0] += c
        acc[1] += 1
    for (d, e), (c, nk) in sorted(other.items()):
        rows.append({"domid": None if d < 0 else d, "epoch": e, "source": "other", "op": None,
                     "op_name": "(other)", "cmd": None, "count": c, "keys": nk})
    if dropped:
        rows.append({"domid": None, "epoch": 0, "source": "other", "op": None, "op_name": "(other)", "cmd": None,
                     "count": dropped, "keys": None})
    return rows


def analyze_stream(path, config=None, opts: StreamOptions | None = None, progress=None, digest=False):
    """Analyse the capture at ``path`` in bounded memory; the result equals
    ``analyze_table(read_xentrace(path))`` (see the module docstring). ``progress(done, total)`` is called as the
    passes advance; ``digest`` (True, or a running :class:`tracelens.digest.Digest` of the file) gives
    ``Analysis.sha256``."""
    from tracelens.analysis import analyze as A

    config = config or A.AnalysisConfig()
    opts = opts or StreamOptions()
    p_one = p_two = None
    if progress is not None:  # two passes: each reports half of the work
        def p_one(done, total):
            progress(done, 2 * total)

        def p_two(done, total):
            progress(total + done, 2 * total)
    if digest is True:
        from tracelens.digest import Digest

        digest = Digest(path)
    with digest or contextlib.nullcontext():  # a failure cancels the hashing
        sc, p1 = _pass1(path, config.decode.tolerance, opts, p_one, fuse=True)
        a = _analyze_passes(path, config, opts, p_two, sc, p1)
    # the digest, last: it has had the start-up, and every moment a core was free since (tracelens.digest)
    a.sha256 = digest.result(sc.size) if digest else None
    return a


def _analyze_passes(path, config, opts: StreamOptions, p_two, sc, p1: _Pass1):
    """Everything after pass 1: boundaries, pass 2, ledgers and the Analysis."""
    from tracelens._jit import join_beside
    from tracelens.analysis import analyze as A
    from tracelens.analysis.boundaries import find_boundaries
    from tracelens.parsers.xentrace import decode as D
    from tracelens.parsers.xentrace.catalog import parse_version

    join_beside("analyze")  # on a first run, the kernels from here on compiled in another process (_jit.first_run)
    rows = _sorted_rows(p1.rows)
    version = parse_version(config.decode.xen_version)
    dr = None
    sel = (rows["ev"] == R.MEM_DECREASE_RESERVATION) & (rows["n"] >= 4)
    if sel.any():
        dr = (rows["d"][sel, 2], rows["d"][sel, 3])
    guess = D._layout(config.decode.xen_version, p1.ids) if version is not None else _guess(p1.ids, dr)
    meta = {"tracelens.layout": {"label": guess.label, "version": guess.version, "reasons": guess.reasons},
            "tracelens.damage": [d.to_dict() for d in sc.damage], "tracelens.source": sc.path}
    rec = _records(rows, meta, p1)
    extra = _resume_candidates(sc, p1, rec, rows)
    if extra is not None:
        seen = set(zip(rows["cpu"].tolist(), rows["off"].tolist()))
        new = np.array([(c, o) not in seen for c, o in zip(extra["cpu"].tolist(), extra["off"].tolist())], bool)
        if new.any():
            rows = _sorted_rows({k: np.concatenate([rows[k], extra[k][new]]) for k in rows})
            rec = _records(rows, meta, p1)
    ep = find_boundaries(rec, user=list(config.boundaries))
    want_grants = any(p1.ids.get((ev, n)) for ev in (R.MEM_GRANT_MAP, R.MEM_GRANT_UNMAP) for n in range(1, 8))
    want_hc = any(p1.ids.get((ev, n)) for ev in (R.PV_HYPERCALL_V2, R.PV_HYPERCALL_SUBCALL, R.HVM_VMMCALL)
                  for n in range(1, 8))
    if want_grants or want_hc:
        gs, (hk, hcnt), (fk, fcnt), dropped = _pass2(sc, p1, ep, opts, p_two, want_grants, want_hc)
    else:
        gs, hk, hcnt, fk, fcnt, dropped = _GrantState(1), np.empty(0, np.uint64), np.empty(0, np.int64), \
            np.empty(0, np.uint64), np.empty(0, np.int64), 0
    D._release(sc.mm, sc.size)
    grants = _grant_ledger(gs, ep, opts.top)
    hc = _hypercalls(hk, hcnt, fk, fcnt, dropped, opts.top)
    balloon = L.balloon_ledger(rec, ep, xen_version=version, hypercalls=hc)
    guest = L.guest_ledger(rec, ep)
    lost = R.lost_intervals(rec)
    a = A.finish(rec, ep, grants, balloon, hc, guest, lost, p1.ids, p1.seen, config, path=os.fspath(path),
                 records=p1.records, vectors=L.vector_ledger(rec, p1.handled, p1.handled_big, p1.handled_other),
                 first_tsc=p1.first_tsc, last_tsc=p1.last_tsc)
    return a


def _guess(ids, dr):
    from tracelens.parsers.xentrace.catalog import guess_layout

    if dr is not None and not any(ids.get((R.MEM_DECREASE_RESERVATION, k)) for k in range(4, 8)):
        dr = None
    return guess_layout(ids, dr)


def first_pass(path, *, xen_version: str | None = None, tolerance: str = "strict", opts: StreamOptions | None = None,
               progress=None) -> dict:
    """What ``tracelens info`` shows, from pass 1 alone (no record kept but DECREASE_RESERVATION payloads for the
    layout guess; per-domain counts per thread, not per pCPU): bounded memory whatever the capture's size."""
    from tracelens.parsers.xentrace.catalog import given_layout, guess_layout, parse_version

    sc, p1 = _pass1(path, tolerance, opts or StreamOptions(), progress, select=False, want_doms=True)
    from tracelens.parsers.xentrace.decode import _release

    _release(sc.mm, sc.size)
    dr = None
    if any(p1.ids.get((R.MEM_DECREASE_RESERVATION, k)) for k in range(4, 8)):
        sel = (p1.rows["ev"] == R.MEM_DECREASE_RESERVATION) & (p1.rows["n"] >= 4)
        rows = _sorted_rows({k: v[sel] for k, v in p1.rows.items()})
        dr = (rows["d"][:, 2], rows["d"][:, 3])
    v = parse_version(xen_version)
    guess = given_layout(v) if v else guess_layout(p1.ids, dr)
    return {"sc": sc, "p1": p1, "guess": guess}
