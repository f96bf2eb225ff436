"""A slow, obviously-correct pure-Python xentrace decoder: the twin the fast numba decoder is tested against.

Written from ../shared/spec/xentrace.md (§1 the ``t_rec`` layout, §2 the CPU_CHANGE window framing, §2.4 WRAP,
§2.5 LOST_RECORDS, §2.7 how xenalyze orders records, §4.3 the scheduler ids), from the decoder contract (TSC
inheritance, merge order, dom/vcpu state machine, error offsets) and, for who was running, from what Xen's trace
points write (``sched_switch_units()``, ``insert_lost_records()``; docs/xentrace.md rule 4, which corrects spec §2.7),
never from the fast decoder's code. Only ``struct`` is used for decoding; no numpy.

Units: ``tsc`` is raw TSC cycles (u64); ``offset`` is a byte offset in the file.

The decoder is split in two so tests can feed the semantic half from another source (the capture writer's truth):

* :func:`parse_file` - framing only: bytes -> :class:`RawRecord` list in file order, CPU_CHANGE records included.
* :func:`order_and_attribute` - rules 2-4 of the contract: per-pCPU streams -> output rows (TSC inheritance,
  stable merge by running-max TSC, dom/vcpu).

:func:`decode` chains the two and returns plain Python columns (lists, ``None`` for null).

Where the contract is silent about tolerance (what survives around damage), :func:`parse_file` follows the
choices the decoder's author documented: a "plausible" header passes the same checks as any window header, the
records of a window before the one that crosses its end are kept, and a file that does not start with a whole
CPU_CHANGE record is not a capture whatever the tolerance.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CPU_CHANGE = 0x0001F003
WRAP_BUFFER = 0x0001F002
LOST_RECORDS = 0x0001F001
CPU_CHANGE_HEADER = 0x2001F003  # event 0x1f003, 2 extra words, no TSC (spec §2.2)
RUNSTATE_MASK = 0x0FFFF00F
RUNSTATE_CHANGE = 0x00021001
CONTINUE_RUNNING = 0x00021002

MAX_CPU = 4096  # a pCPU number at or above this is absurd
MAX_WINDOW = 65535 * 4096  # t_info.tbuf_size is u16 pages: no ring holds more

COLUMNS = ("cpu", "tsc", "has_tsc", "event", "n_extra", "d1", "d2", "d3", "d4", "d5", "d6", "d7",
           "offset", "dom", "vcpu")

_U32 = struct.Struct("<I")
_U32x3 = struct.Struct("<III")


class ReferenceFormatError(Exception):
    """Damage found by the reference decoder; ``offset`` is the byte offset the contract says to report."""

    def __init__(self, offset: int, reason: str):
        self.offset = offset
        self.reason = reason
        super().__init__(f"at byte {offset}: {reason}")


@dataclass(frozen=True)
class RawRecord:
    """One record as it sits in the file. ``cpu`` is the window's pCPU (d1 for the CPU_CHANGE record itself).

    ``tsc`` is the record's own TSC, or None when it has none. ``data`` holds exactly ``n_extra`` words
    (for WRAP records these are the stale ring bytes; they are nulled in the output).
    """

    cpu: int
    offset: int
    event: int
    n_extra: int
    tsc: int | None
    data: tuple[int, ...]

    @property
    def has_tsc(self) -> bool:
        return self.tsc is not None


@dataclass
class ParseResult:
    records: list[RawRecord]
    windows: list[tuple[int, int, int]]  # (offset of CPU_CHANGE, pCPU, window_size)
    skipped: list[tuple[int, int]]  # (start, end) byte ranges not decoded (tolerance "skip" or "truncate")
    stopped_at: int | None  # offset of the damage under tolerance="truncate" (None: read to the end)


def _read_window_header(buf: bytes, pos: int, *, first: bool) -> tuple[int, int]:
    """Validate the CPU_CHANGE record at ``pos``; return (pCPU, window_size) or raise with offset ``pos``."""
    n = len(buf)
    if n - pos < 4:
        raise ReferenceFormatError(pos, "file ends inside a CPU_CHANGE header")
    (word,) = _U32.unpack_from(buf, pos)
    if word != CPU_CHANGE_HEADER:
        if first:
            raise ReferenceFormatError(pos, f"not a xentrace capture (first word 0x{word:08x})")
        raise ReferenceFormatError(pos, f"garbage where a CPU_CHANGE header was expected (0x{word:08x})")
    if n - pos < 12:
        raise ReferenceFormatError(pos, "file ends inside a CPU_CHANGE header")
    _, cpu, size = _U32x3.unpack_from(buf, pos)
    if cpu >= MAX_CPU:
        raise ReferenceFormatError(pos, f"absurd pCPU {cpu}")
    if size % 4 or size > MAX_WINDOW:
        raise ReferenceFormatError(pos, f"absurd window size {size}")
    if pos + 12 + size > n:
        raise ReferenceFormatError(pos, f"window of {size} bytes extends past the end of the file")
    return cpu, size


def _walk_records(buf: bytes, start: int, end: int, cpu: int) -> tuple[list[RawRecord], int | None]:
    """Decode the records in buf[start:end]. Returns them and the offset of the first record that crosses ``end``
    (None when every record fits); decoding stops at that record."""
    out = []
    p = start
    while p < end:
        (h,) = _U32.unpack_from(buf, p)
        event = h & 0x0FFFFFFF
        n_extra = (h >> 28) & 7
        has_tsc = bool(h >> 31)
        size = 4 + (8 if has_tsc else 0) + 4 * n_extra
        if p + size > end:
            return out, p
        q = p + 4
        tsc = None
        if has_tsc:
            lo, hi = struct.unpack_from("<II", buf, q)
            tsc = lo | (hi << 32)
            q += 8
        data = struct.unpack_from(f"<{n_extra}I", buf, q)
        out.append(RawRecord(cpu, p, event, n_extra, tsc, tuple(data)))
        p += size
    return out, None


def _plausible_header(buf: bytes, pos: int) -> bool:
    try:
        _read_window_header(buf, pos, first=False)
    except ReferenceFormatError:
        return False
    return True


def parse_file(buf: bytes, tolerance: str = "strict") -> ParseResult:
    """Walk the CPU_CHANGE windows of a capture (spec §2.1-2.2).

    A file that does not start with a whole CPU_CHANGE record (header word 0x2001f003 and 12 bytes) is not a
    capture: that raises at offset 0 whatever the tolerance. Other damage is, by ``tolerance``:

    strict: raise :class:`ReferenceFormatError` at the first damage.
    truncate: stop at the first damage and keep every record before it (a damaged window's records before the
    record that crosses its end included); ``skipped`` is [(damage offset, file size)].
    skip: a bad window header is skipped by scanning forward 4 bytes at a time to the next plausible header (one
    that passes the same checks); a record that crosses its window's end loses the rest of that window (the
    records before it are kept). ``skipped`` lists every byte range not decoded.
    """
    if tolerance not in ("strict", "skip", "truncate"):
        raise ValueError(tolerance)
    n = len(buf)
    if n == 0:
        raise ReferenceFormatError(0, "empty file")
    if n < 12 or _U32.unpack_from(buf, 0)[0] != CPU_CHANGE_HEADER:
        _read_window_header(buf, 0, first=True)  # raises with the precise reason
        raise ReferenceFormatError(0, "file ends inside the first CPU_CHANGE header")
    records: list[RawRecord] = []
    windows = []
    skipped = []
    pos = 0
    while pos < n:
        try:
            cpu, size = _read_window_header(buf, pos, first=(pos == 0))
        except ReferenceFormatError:
            if tolerance == "strict":
                raise
            if tolerance == "truncate":
                return ParseResult(records, windows, [(pos, n)], pos)
            q = pos + 4
            while q < n and not _plausible_header(buf, q):
                q += 4
            skipped.append((pos, min(q, n)))
            pos = q
            continue
        end = pos + 12 + size
        recs, bad = _walk_records(buf, pos + 12, end, cpu)
        if bad is not None and tolerance == "strict":
            raise ReferenceFormatError(bad, f"record crosses the end of its window at byte {end}")
        windows.append((pos, cpu, size))
        records.append(RawRecord(cpu, pos, CPU_CHANGE, 2, None, (cpu, size)))
        records.extend(recs)
        if bad is not None:
            if tolerance == "truncate":
                return ParseResult(records, windows, [(bad, n)], bad)
            skipped.append((bad, end))
        pos = end
    return ParseResult(records, windows, skipped, None)


def merged_ranges(ranges) -> list[tuple[int, int]]:
    """(start, end) byte ranges sorted and with touching or overlapping ranges joined."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def streams_by_cpu(records: list[RawRecord]) -> dict[int, list[RawRecord]]:
    """Rule 1: each pCPU's stream is its records in file order (windows concatenated, CPU_CHANGE first)."""
    streams: dict[int, list[RawRecord]] = {}
    for r in records:
        streams.setdefault(r.cpu, []).append(r)
    return streams


def _vcpu_of_runstate(r: RawRecord):
    """(dom, vcpu) named by a runstate record: Xen traces ``struct { uint16_t vcpu, domain; }`` (vcpu first)."""
    return (r.data[0] >> 16, r.data[0] & 0xFFFF)


def _vcpu_of_lost(r: RawRecord):
    """(dom, vcpu) in a LOST_RECORDS payload: ``struct { u32 lost_records; u16 did, vid; u64 first_tsc; }``."""
    return (r.data[1] & 0xFFFF, r.data[1] >> 16)


def _runstate(r: RawRecord):
    """(old, new) runstates of a TRC_SCHED_RUNSTATE_CHANGE record (minor bits 8-11 old, 4-7 new), else None."""
    if (r.event & RUNSTATE_MASK) == RUNSTATE_CHANGE and r.n_extra >= 1:
        return (r.event >> 8) & 0xF, (r.event >> 4) & 0xF
    return None


def _current_after(current, r: RawRecord):
    """Rule 4, the running vCPU of a pCPU after record ``r`` (None: not known), as Xen's trace points imply it.

    ``sched_switch_units()`` writes SCHED_SWITCH and both runstate records before ``context_switch()``; what a
    consumer can see is the vCPU that was put into running (or continues), and a vCPU leaving running stops being
    current (only if it is the one we believe current: a record about another vCPU says nothing about ours).
    ``insert_lost_records()`` puts ``current``'s dom/vcpu in the LOST record it writes right before the next
    record, so after a loss that vCPU is current. SCHED_SWITCH itself moves nothing (xenalyze neither).
    """
    rs = _runstate(r)
    if rs is not None:
        old, new = rs
        if new == 0:
            return _vcpu_of_runstate(r)
        if old == 0 and current == _vcpu_of_runstate(r):
            return None
        return current
    if r.event == CONTINUE_RUNNING and r.n_extra >= 1:
        return _vcpu_of_runstate(r)
    if r.event == LOST_RECORDS:
        return _vcpu_of_lost(r) if r.n_extra >= 2 else None
    return current


def _attributed(current, r: RawRecord):
    """Rule 4, the (dom, vcpu) a row gets from the running vCPU before it (None: unknown). A LOST_RECORDS record
    names its own writer; the runstate change *into* running goes to the vCPU it starts (the documented exception:
    xenalyze has no current vCPU at that record)."""
    if r.event == LOST_RECORDS and r.n_extra >= 2:
        return _vcpu_of_lost(r)
    rs = _runstate(r)
    if rs is not None and rs[1] == 0:
        return _vcpu_of_runstate(r)
    return current


def order_and_attribute(streams: dict[int, list[RawRecord]]) -> dict[str, list]:
    """Rules 2-4: TSC inheritance, merge order by (running-max TSC, pCPU, stream position), dom/vcpu.

    Returns columns as Python lists (None = null), rows in output order.
    """
    rows = []
    for cpu, stream in streams.items():
        last_tsc = 0  # xenalyze's p->last_tsc starts at 0
        k = 0
        state = None
        for pos, r in enumerate(stream):
            if r.tsc is not None:
                last_tsc = r.tsc
            tsc = last_tsc
            k = max(k, tsc)
            who = _attributed(state, r)
            dom, vcpu = (None, None) if who is None else who
            state = _current_after(state, r)
            if r.event == WRAP_BUFFER:
                d = [None] * 7
            else:
                d = list(r.data) + [None] * (7 - r.n_extra)
            rows.append(((k, cpu, pos), (cpu, tsc, r.tsc is not None, r.event, r.n_extra, *d, r.offset, dom, vcpu)))
    rows.sort(key=lambda x: x[0])
    cols = {c: [] for c in COLUMNS}
    cols["_k"] = []
    for key, row in rows:
        cols["_k"].append(key[0])
        for c, v in zip(COLUMNS, row):
            cols[c].append(v)
    return cols


def decode(buf: bytes, tolerance: str = "strict") -> dict[str, list]:
    """Decode a capture's bytes into the contract's columns (plus ``_k``, the running-max TSC sort key)."""
    return order_and_attribute(streams_by_cpu(parse_file(buf, tolerance).records))


def decode_path(path, tolerance: str = "strict") -> dict[str, list]:
    with open(path, "rb") as f:
        return decode(f.read(), tolerance)


# -- comparison helpers for the tests ----------------------------------------------------------------------------
def first_difference(a: dict, b: dict, columns=COLUMNS) -> str | None:
    """None when the two column dicts are equal; otherwise a message naming the first differing row (both rows)."""
    for c in columns:
        if len(a[c]) != len(b[c]):
            return f"row counts differ in column {c!r}: {len(a[c])} != {len(b[c])}"
    for c in columns:
        if a[c] != b[c]:
            i = next(i for i, (x, y) in enumerate(zip(a[c], b[c])) if x != y)
            ra = {k: a[k][i] for k in columns}
            rb = {k: b[k][i] for k in columns}
            return f"column {c!r} differs first at row {i}:\n  {ra}\n  {rb}"
    return None


def order_violation(cols: dict) -> str | None:
    """Rule 3 checked directly on output rows: (running-max TSC along the pCPU's rows, pCPU) never decreases, and
    each pCPU's rows keep file order (offsets increase). None when the order is right."""
    kmax: dict[int, int] = {}
    last_off: dict[int, int] = {}
    prev = None
    for i, (cpu, tsc, off) in enumerate(zip(cols["cpu"], cols["tsc"], cols["offset"])):
        if off <= last_off.get(cpu, -1):
            return f"row {i}: pCPU {cpu} record at offset {off} comes after its offset {last_off[cpu]}"
        last_off[cpu] = off
        kmax[cpu] = max(kmax.get(cpu, 0), tsc)
        key = (kmax[cpu], cpu)
        if prev is not None and key < prev:
            return f"row {i} (offset {off}): (running-max TSC, pCPU) {key} after {prev}"
        prev = key
    return None


def summary_mismatches(cols: dict, summary: dict, windows: int | None = None) -> list[str]:
    """Compare a ``tracelens info`` summary dict with counts taken from reference columns; [] when they agree.

    ``windows`` is the window count from :func:`parse_file`; by default the CPU_CHANGE rows are counted, which is
    the same unless a CPU_CHANGE record sits inside a window."""
    from collections import Counter

    # every LOST_RECORDS record is a marker; its count word (d1) adds up when present. Xen always writes 4 words
    # and a count >= 1 (insert_lost_records()): one with fewer words or a count of 0 is malformed (damage)
    markers = [(d1, d4) for e, d1, d4 in zip(cols["event"], cols["d1"], cols["d4"]) if e == LOST_RECORDS]
    lost = [d1 for d1, _d4 in markers if d1 is not None]
    malformed = sum(1 for d1, d4 in markers if d4 is None or not d1)
    timed = [t for t, h in zip(cols["tsc"], cols["has_tsc"]) if h]
    want = {
        "records": len(cols["cpu"]),
        "windows": cols["event"].count(CPU_CHANGE) if windows is None else windows,
        "pcpus": sorted(set(cols["cpu"])),
        "records_per_domain": dict(Counter("unknown" if d is None else d for d in cols["dom"])),
        "lost_records": {"records": len(markers), "lost": sum(lost), "malformed": malformed},
        "tsc_first": min(timed, default=None),
        "tsc_last": max(timed, default=None),
    }
    out = [f"{k}: {summary.get(k)!r} != {v!r}" for k, v in want.items() if summary.get(k) != v]
    if sum(summary.get("records_per_event", {}).values()) != len(cols["cpu"]):
        out.append("records_per_event does not add up to the record count")
    return out
