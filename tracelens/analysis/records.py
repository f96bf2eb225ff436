"""The decoded capture as numpy arrays, the input of every analysis module.

:func:`columns` turns the Arrow table of :func:`tracelens.read_xentrace` (time-ordered; spec
../shared/spec/xentrace.md §2.7) into plain arrays. Nulls become sentinels so kernels can work on them: a payload word
beyond ``n_extra`` reads 0, an unknown running domain (``dom`` null) is -1. Units: ``tsc`` in TSC cycles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from tracelens.parsers.xentrace.catalog import event_id, family, subclass_id

# the event ids the analysis reads (spec §2, §4), by their names in the catalog (catalog.toml, the one source)
LOST_RECORDS = event_id("LOST_RECORDS")
RUNSTATE_CHANGE, RUNSTATE_MASK = family("RUNSTATE_CHANGE")  # | old state << 8 | new state << 4
CONTINUE_RUNNING = event_id("SCHED_CONTINUE_RUNNING")
SCHED_DOM_REM = event_id("SCHED_DOM_REM")
SCHED_SHUTDOWN = event_id("SCHED_SHUTDOWN")
SCHED_SWITCH = event_id("SCHED_SWITCH")
SCHED_SHUTDOWN_CODE = event_id("SCHED_SHUTDOWN_CODE")
DOM0_DOM_ADD = event_id("DOM0_DOM_ADD")
DOM0_DOM_REM = event_id("DOM0_DOM_REM")
HVM_VMMCALL = event_id("HVM_VMMCALL")
MEM_GRANT_MAP = event_id("MEM_PAGE_GRANT_MAP")
MEM_GRANT_UNMAP = event_id("MEM_PAGE_GRANT_UNMAP")
MEM_DECREASE_RESERVATION = event_id("MEM_DECREASE_RESERVATION")
PV_HYPERCALL_V2 = event_id("PV_HYPERCALL_V2")
PV_HYPERCALL_SUBCALL = event_id("PV_HYPERCALL_SUBCALL")
HW_IRQ_CLEAR_VECTOR = event_id("HW_IRQ_CLEAR_VECTOR")
HW_IRQ_ASSIGN_VECTOR = event_id("HW_IRQ_ASSIGN_VECTOR")
HW_IRQ_HANDLED = event_id("HW_IRQ_HANDLED")
SCHED_MIN = subclass_id("SCHED_MIN")  # the subclass of runstate changes and CONTINUE_RUNNING
TRC_GUEST = subclass_id("GUEST")  # a whole subclass: every id whose class and subclass bits are these

DOMID_IDLE = 0x7FFF
NO_DOM = -1


def dom_name(domid) -> str:
    """The one name of a domain in every report, table, finding and export: ``d1``, ``idle`` for the idle domain
    (32767), ``?`` when unknown (None or negative); a key that is not a number (``unknown`` in ``info``'s counts)
    is kept as it is."""
    if isinstance(domid, str) and not domid.lstrip("-").isdigit():
        return domid
    if domid is None or int(domid) < 0:
        return "?"
    return "idle" if int(domid) == DOMID_IDLE else f"d{int(domid)}"


def vcpu_name(domid, vcpu) -> str:
    """A vCPU as ``d1v0`` / ``idlev2`` (the domain's :func:`dom_name`, then ``v`` and the vCPU), ``?`` unknown."""
    if domid is None or vcpu is None or int(domid) < 0:
        return "?"
    return f"{dom_name(domid)}v{int(vcpu)}"


@dataclass
class Records:
    """A decoded capture, in the decoder's time order. Whole columns are zero-copy views of the Arrow table; the
    rows the analysis reads are grouped by category in one pass (:meth:`rows`), and payload words and the running
    domain are gathered only for those rows (:meth:`word`, :meth:`dom_at`)."""

    tsc: np.ndarray       # u64 cycles (inherited for records without a TSC)
    cpu: np.ndarray       # u16
    event: np.ndarray     # u32, 28-bit id
    n_extra: np.ndarray   # u8
    offset: np.ndarray    # u64 byte offset in the file
    table: object = None  # the pyarrow.Table
    meta: dict = field(default_factory=dict)
    _rows: np.ndarray = None
    _starts: np.ndarray = None

    def __len__(self) -> int:
        return int(self.tsc.shape[0])

    def rows(self, *cats: int) -> np.ndarray:
        """Row indices (time order; int32, or int64 past 2**31 rows) of the given categories (_kernels.CAT_*)."""
        parts = [self._rows[self._starts[c]:self._starts[c + 1]] for c in cats]
        if len(parts) == 1:
            return parts[0]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)  # small categories only

    def word(self, i: int, sel) -> np.ndarray:
        """Payload word d<i> (1-based) of the rows ``sel`` as i64; 0 beyond n_extra."""
        return _take(self.table.column(f"d{i}"), sel, 0)

    def at(self, row: int, i: int) -> int:
        """d<i> of one record."""
        return int(self.word(i, np.asarray([row], np.int64))[0])

    def buffer(self, name: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Zero-copy view of an integer column for kernels: (values indexed by row, validity bits or an empty array
        when there are no nulls, bit offset of row 0 in the bits)."""
        import pyarrow as pa

        col = self.table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        validity, data = col.buffers()[:2]
        width = col.type.bit_width // 8
        if data is None:  # an all-null column may come without a value buffer
            return np.zeros(len(col), np.dtype(f"<u{width}")), np.zeros((len(col) + 7) // 8, np.uint8), 0
        vals = np.frombuffer(data, dtype=np.dtype(f"<u{width}"), count=len(col) + col.offset)[col.offset:]
        bits = np.frombuffer(validity, np.uint8) if (col.null_count and validity is not None) else np.empty(0, np.uint8)
        return vals, bits, col.offset

    def dom_at(self, sel) -> np.ndarray:
        """The running domain of the rows ``sel`` (i64, -1 when unknown)."""
        return _take(self.table.column("dom"), sel, NO_DOM)

    @property
    def layout_version(self) -> tuple[int, int] | None:
        v = (self.meta.get("tracelens.layout") or {}).get("version")
        return tuple(v) if v else None

    @property
    def first_tsc(self) -> int:
        """TSC of the first record that carries one (0 when none does)."""
        i = _first_true(self.table.column("has_tsc"))
        return int(self.tsc[i]) if i >= 0 else 0

    @property
    def last_tsc(self) -> int:
        return int(self.tsc.max()) if len(self) else 0


def _np(col, dtype, fill=0) -> np.ndarray:
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if col.null_count:
        import pyarrow.compute as pc

        col = pc.fill_null(col, fill)
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _first_true(col) -> int:
    """Row of the first true value of a boolean column (nulls count as false), -1 when none; read from the bit
    buffers without unpacking the column."""
    import pyarrow as pa

    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    base = 0
    for ch in chunks:
        n = len(ch)
        if n and ch.null_count:  # rare: a table built by hand
            v = _np(ch, bool, False)
            if v.any():
                return base + int(np.argmax(v))
        elif n:
            bits = np.frombuffer(ch.buffers()[1], np.uint8)
            lo, hi = ch.offset, ch.offset + n  # bit range of the chunk
            b0, b1 = lo >> 3, (hi + 7) >> 3
            seg = bits[b0:b1]
            # mask the bits outside [lo, hi) in the first and last bytes, then find the first non-zero byte
            head = int(seg[0]) & (0xFF << (lo & 7)) & 0xFF
            if b1 - b0 == 1:
                head &= (1 << (hi - 8 * b0)) - 1 if hi - 8 * b0 < 8 else 0xFF
            if head:
                return base + 8 * b0 + (head & -head).bit_length() - 1 - lo
            if b1 - b0 > 1:
                mid = seg[1:-1]
                nz = int(np.argmax(mid != 0)) if mid.size else 0
                if mid.size and mid[nz]:
                    byte = int(mid[nz])
                    return base + 8 * (b0 + 1 + nz) + (byte & -byte).bit_length() - 1 - lo
                tail = int(seg[-1])
                if hi & 7:
                    tail &= (1 << (hi & 7)) - 1
                if tail:
                    return base + 8 * (b1 - 1) + (tail & -tail).bit_length() - 1 - lo
        base += n
    return -1


def _take(col, sel, fill) -> np.ndarray:
    """Values of an integer Arrow column at the rows ``sel``, as i64, ``fill`` where null: a gather straight from
    the column's value buffer and validity bitmap (no copy of the column)."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    sel = np.asarray(sel)
    if sel.dtype == bool:
        sel = np.flatnonzero(sel)
    if sel.size == 0:
        return np.empty(0, np.int64)
    validity, data = col.buffers()[:2]
    if data is None:  # all null
        return np.full(sel.size, fill, np.int64)
    width = col.type.bit_width // 8
    vals = np.frombuffer(data, dtype=np.dtype(f"<u{width}"), count=len(col) + col.offset)
    bits = np.frombuffer(validity, np.uint8) if (col.null_count and validity is not None) else np.empty(0, np.uint8)
    if sel.size < SMALL_GATHER:  # most gathers are of a few rows: numpy, without loading a kernel
        pos = sel.astype(np.int64) + col.offset
        out = vals[pos].astype(np.int64)
        if bits.size:
            out[((bits[pos >> 3] >> (pos & 7).astype(np.uint8)) & 1) == 0] = fill
        return out
    from tracelens.analysis._kernels import take_i64

    return take_i64(vals, bits, col.offset, sel, fill)


SMALL_GATHER = 1 << 16


def columns(table) -> Records:
    """A decoded capture (a pyarrow.Table with the columns of tracelens.read_xentrace) for the analysis."""
    from tracelens.analysis._kernels import classify

    meta = {}
    for k, v in (table.schema.metadata or {}).items():
        try:
            meta[k.decode()] = json.loads(v)
        except (ValueError, UnicodeDecodeError):
            pass
    rec = Records(
        tsc=_np(table.column("tsc"), np.uint64),
        cpu=_np(table.column("cpu"), np.uint16),
        event=_np(table.column("event"), np.uint32),
        n_extra=_np(table.column("n_extra"), np.uint8),
        offset=_np(table.column("offset"), np.uint64),
        table=table,
        meta=meta,
    )
    rec._rows, rec._starts = classify(rec.event, rec.n_extra)
    return rec


def lost_intervals(rec: Records) -> np.ndarray:
    """LOST_RECORDS as an (k, 4) i64 array: cpu, first_tsc (d3|d4<<32, when the first record was dropped), tsc (when
    the loss ended: the record's own TSC), count (d1).

    Xen always writes 4 words and a count of at least 1 (``insert_lost_records()``, spec §2.5); anything else is
    damage (:func:`lost_malformed`) and is read so that it can never look clean: without d3/d4 the loss is taken to
    have begun at TSC 0 (before everything), without d1 its count is 0 here and unbounded for the analysis."""
    from tracelens.analysis._kernels import CAT_LOST

    sel = rec.rows(CAT_LOST)
    n = rec.n_extra[sel]
    out = np.empty((sel.size, 4), np.int64)
    out[:, 0] = rec.cpu[sel]
    out[:, 1] = np.where(n >= 4, rec.word(3, sel) | (rec.word(4, sel) << 32), 0)
    out[:, 2] = rec.tsc[sel].astype(np.int64)
    out[:, 3] = rec.word(1, sel)
    return out


def lost_details(rec: Records) -> dict:
    """Per LOST_RECORDS row of :func:`lost_intervals`: ``malformed`` (bool: fewer than 4 payload words, or a count
    of 0, which Xen never writes), ``dom`` (i64: the domain of the vCPU its d2 names, current when the loss ended;
    -1 without d2) and ``offset`` (u64 byte offset in the file)."""
    from tracelens.analysis._kernels import CAT_LOST

    sel = rec.rows(CAT_LOST)
    n = rec.n_extra[sel]
    d1 = rec.word(1, sel)
    return {"malformed": (n < 4) | (d1 == 0), "dom": np.where(n >= 2, rec.word(2, sel) & 0xFFFF, -1),
            "offset": rec.offset[sel]}


def seen_domains(rec: Records) -> np.ndarray:
    """Sorted domids that some record made current on a pCPU (a runstate change into running, CONTINUE_RUNNING, a
    LOST_RECORDS payload: the decoder's state rule, docs/xentrace.md rule 4). The streamed pass 1 marks the same
    domains as it walks (``_kernels.stream_select``, ``dom_seen``)."""
    ev = rec.event
    if not ev.size:
        return np.empty(0, np.int64)
    nx = rec.n_extra
    to_run = ((ev & RUNSTATE_MASK) == RUNSTATE_CHANGE) & (((ev >> 4) & 0xF) == 0) & (nx >= 1)
    cont = (ev == CONTINUE_RUNNING) & (nx >= 1)
    lost = (ev == LOST_RECORDS) & (nx >= 2)
    a = np.flatnonzero(to_run | cont)
    b = np.flatnonzero(lost)
    doms = np.concatenate([rec.word(1, a) >> 16, rec.word(2, b) & 0xFFFF])
    return np.unique(doms).astype(np.int64)


def event_counts(rec: Records) -> dict[int, int]:
    """Records per event id (what the streamed pass 1 counts per (event, n_extra) as it walks)."""
    u, c = np.unique(rec.event, return_counts=True)
    return dict(zip(u.tolist(), c.tolist()))
