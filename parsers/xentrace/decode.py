"""Decode xentrace captures into Arrow tables (spec ../shared/spec/xentrace.md §1-2, §2.7).

Public entry points: :func:`read_xentrace` (whole capture, one in-memory table), :func:`iter_batches` (bounded
memory: tables of consecutive time ranges, for captures larger than memory) and :func:`info` (counts for
``tracelens info`` without materialising any record); each takes a :class:`tracelens.options.DecodeOptions`. All three memory-map the file and share the numba passes in
``_kernels.py``; this module is the single place where kernel status codes become :class:`FormatError` messages
(:class:`IncompleteCaptureError` for damage the tolerance does not cover) and where the tolerance is applied.

Columns (units: ``tsc`` in TSC cycles, ``time_ns`` in nanoseconds = tsc * 1e9 / cpu_hz, ``offset`` in bytes):
``cpu`` u16, ``tsc`` u64, ``has_tsc`` bool, ``event`` u32 (28-bit id), ``n_extra`` u8, ``d1``..``d7`` u32 (null
beyond n_extra, and for WRAP records whose payload is garbage), ``offset`` u64, ``dom``/``vcpu`` u16 (null when
unknown), ``name`` dictionary<int32, string>, and ``time_ns`` i64 when ``cpu_hz`` is given.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from tracelens.errors import FormatError, IncompleteCaptureError, UsageError
from tracelens.parsers.xentrace import _kernels as K
from tracelens.options import TOLERANCES, DecodeOptions, check_choice
from tracelens.parsers.xentrace.catalog import LayoutGuess, given_layout, guess_layout, load_catalog, parse_version

MAX_CPU = 4096  # Xen's NR_CPUS limit; a CPU_CHANGE naming a higher pCPU is corrupt
MAX_WINDOW_BYTES = 65535 * 4096  # t_info.tbuf_size is a u16 page count: no window can exceed that ring
COLUMNS = ("cpu", "tsc", "has_tsc", "event", "n_extra", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "offset", "dom", "vcpu", "name")
FALLBACK_NAME = "UNKNOWN"
MAX_DISTINCT_IDS = 1_000_000  # a real capture has a few hundred (event id, word count) pairs

Progress = Callable[[int, int], None]


@dataclass
class Damage:
    """A byte range that was not decoded, and why."""

    offset: int
    length: int
    reason: str

    def to_dict(self) -> dict:
        return {"offset": self.offset, "length": self.length, "reason": self.reason}


@dataclass
class _Scan:
    path: str
    size: int
    mm: mmap.mmap | None
    words: np.ndarray
    pos: np.ndarray
    end: np.ndarray
    cpu: np.ndarray
    nrec: np.ndarray
    vend: np.ndarray  # where each window's whole records end (before any damaged record)
    damage: list[Damage] = field(default_factory=list)
    populated: bool = False  # the whole file was mapped in at once (else passes go chunk by chunk)


def _message(code: int, w: np.ndarray, p: int, size: int) -> str:
    nbytes_left = size - 4 * p
    if code == K.E_BAD_WINDOW_HEADER:
        return (f"expected a CPU_CHANGE window header ({K.CPU_CHANGE_HEADER:#010x}) but found 0x{int(w[p]):08x}: "
                "garbage or a damaged window")
    if code == K.E_ABSURD_CPU:
        return f"CPU_CHANGE names pCPU {int(w[p + 1])}, beyond Xen's limit of {MAX_CPU}: corrupt window header"
    if code == K.E_BAD_SIZE:
        return f"CPU_CHANGE window size {int(w[p + 2])} is not a multiple of 4: corrupt window header"
    if code == K.E_ABSURD_SIZE:
        return (f"CPU_CHANGE window size {int(w[p + 2])} bytes exceeds the largest possible trace ring "
                f"({MAX_WINDOW_BYTES} bytes): corrupt window header")
    if code == K.E_WINDOW_PAST_EOF:
        return (f"window of {int(w[p + 2])} bytes runs past the end of the file ({nbytes_left - 12} bytes left): "
                "truncated capture")
    if code == K.E_TRUNCATED_HEADER:
        return f"file ends inside a CPU_CHANGE header ({nbytes_left} bytes left): truncated capture"
    if code == K.E_RECORD_CROSSES_WINDOW:
        h = int(w[p])
        need = 4 * (1 + ((h >> 28) & 7) + 2 * (h >> 31))
        return (f"record header 0x{h:08x} needs {need} bytes but its window ends first: truncated or corrupt record")
    return f"damaged capture (code {code})"


CHUNK_BYTES = 64 << 20  # passes that only read (count, per-pCPU stream) work through the file this much at a time
# Up to this size a capture is mapped whole and populated in one call (fastest: one pass, no faults); larger ones,
# and the streaming decoder, are mapped chunk by chunk and released behind, so resident memory stays bounded.
POPULATE_LIMIT = 2 << 30


def _release(mm: mmap.mmap | None, upto_byte: int) -> None:
    """Drop the mapping of the file's first ``upto_byte`` bytes (page cache stays): resident memory then follows the
    window being worked on, not the capture's size."""
    if mm is None or upto_byte <= 0 or not hasattr(mm, "madvise"):
        return
    length = (upto_byte // mmap.PAGESIZE) * mmap.PAGESIZE
    if length:
        try:
            mm.madvise(mmap.MADV_DONTNEED, 0, min(length, len(mm)))
        except (OSError, ValueError):  # pragma: no cover - advisory only
            pass


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+


def _populate(mm: mmap.mmap | None, start_byte: int, end_byte: int) -> None:
    """Map a range of the file in one call (much cheaper than a page fault per 64 KiB on virtual machines)."""
    if mm is None or not hasattr(mm, "madvise"):
        return
    a = (max(0, start_byte) // mmap.PAGESIZE) * mmap.PAGESIZE
    b = min(len(mm), end_byte)
    if b > a:
        try:
            mm.madvise(MADV_POPULATE_READ, a, b - a)
        except (OSError, ValueError):  # older kernels: ordinary faults will do
            pass


def _chunks(pos: np.ndarray, end: np.ndarray, chunk_bytes: int = CHUNK_BYTES, mm=None):
    """Consecutive window index ranges (a, b) spanning about ``chunk_bytes`` of the file each; with ``mm``, each
    range is mapped in before it is yielded and released after."""
    n = len(pos)
    a = 0
    while a < n:
        limit = int(pos[a]) * 4 + chunk_bytes
        b = int(np.searchsorted(end * 4, limit, side="right"))
        b = min(max(b, a + 1), n)
        if mm is not None:
            _populate(mm, int(pos[a]) * 4, int(end[b - 1]) * 4)
        yield a, b
        if mm is not None:
            _release(mm, int(end[b - 1]) * 4)
        a = b


def _open(path, populate: bool = False) -> tuple[str, int, mmap.mmap | None, np.ndarray]:
    from tracelens.detect import open_input

    path = os.fspath(path)
    fd = open_input(path, "a xentrace capture")  # a directory, FIFO or device is a FormatError here
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise FormatError(path, 0, "empty file: not a xentrace capture")
        # a whole-capture decode reads every page: map them in one go instead of one fault per 64 KiB
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        mm = mmap.mmap(fd, 0, flags=flags, prot=mmap.PROT_READ)
    except OSError as e:
        raise FormatError(path, None, f"cannot map: {e.strerror}") from None
    finally:
        os.close(fd)
    words = np.frombuffer(mm, dtype="<u4", count=size // 4)
    return path, size, mm, words


class _Recount(Exception):
    """An uncounted scan met a damaged record: redo it with ``scan(count=True)``, which applies the tolerance."""


def scan(path, tolerance: str = "strict", populate: bool | None = None, count: bool = True) -> _Scan:
    """Passes 1 and 2: the windows and their record counts, with the damage tolerance applied. ``populate`` maps
    the whole file at once (default: when it is at most POPULATE_LIMIT bytes). ``count=False`` skips the counting
    pass of a populated, undamaged walk (``nrec`` is None, ``vend`` the window ends): the per-pCPU pass counts the
    records then, and its caller raises :class:`_Recount` if it finds a damaged one."""
    check_choice(tolerance, TOLERANCES, "tolerance")
    if populate is None:
        try:
            populate = os.path.getsize(path) <= POPULATE_LIMIT
        except OSError:
            populate = False
    path, size, mm, w = _open(path, populate)
    nwords = w.shape[0]
    if nwords < 3 or int(w[0]) != K.CPU_CHANGE_HEADER:
        from tracelens.detect import not_a

        hint = not_a(path, "capture", bytes(mm[:4096])) if mm is not None else None
        first = f"0x{int(w[0]):08x}" if nwords else f"{size} byte(s)"
        raise FormatError(path, 0, f"not a xentrace capture: {hint}" if hint else
                          f"not a xentrace capture: a capture starts with a CPU_CHANGE record "
                          f"({K.CPU_CHANGE_HEADER:#010x}), this file starts with {first}")
    parts = []
    p = 0
    while True:  # in steps, releasing what was walked over (file fault-around maps 64 KiB around each header)
        if not populate:
            _populate(mm, p * 4, p * 4 + CHUNK_BYTES + (1 << 20))
        r = K.walk_windows(w, p, nwords, MAX_CPU, MAX_WINDOW_BYTES, tolerance == "skip", p + CHUNK_BYTES // 4)
        parts.append(r[:6])
        status, status_pos, p = r[6], r[7], r[8]
        if not populate:
            _release(mm, p * 4)
        if status != K.OK or p >= nwords:
            break
    pos, end, cpu, s_from, s_to, s_code = (np.concatenate([x[i] for x in parts]) for i in range(6))
    damage = [Damage(int(a) * 4, int(b - a) * 4, _message(int(c), w, int(a), size)) for a, b, c in zip(s_from, s_to, s_code)]
    problems = []  # (byte offset, message) in strict/truncate mode
    if status != K.OK:
        problems.append((int(status_pos) * 4, _message(int(status), w, int(status_pos), size), len(pos)))
    elif size % 4:
        problems.append((nwords * 4, f"file ends with {size % 4} stray byte(s) after the last record: truncated capture", len(pos)))
    if populate and not count and not problems:
        return _Scan(path, size, mm, w, pos, end, cpu, None, end, damage, populate)
    if populate:
        nrec, bad = K.count_records(w, pos, end)
    else:
        _release(mm, size)
        nrec = np.empty(len(pos), np.int64)
        bad = np.empty(len(pos), np.int64)
        for a, b in _chunks(pos, end, mm=mm):
            nrec[a:b], bad[a:b] = K.count_records(w, pos[a:b], end[a:b])
    for i in np.nonzero(bad >= 0)[0]:
        b = int(bad[i])
        msg = _message(K.E_RECORD_CROSSES_WINDOW, w, b, size)
        if tolerance == "skip":
            damage.append(Damage(4 * b, 4 * int(end[i] - b), msg))
        else:
            problems.append((4 * b, msg, int(i)))
    if tolerance == "skip" and size % 4:
        damage.append(Damage(nwords * 4, size % 4, "stray bytes after the last record: truncated capture"))
    if problems:
        off, msg, win = min(problems)
        if tolerance == "strict":
            raise IncompleteCaptureError(path, off, msg)
        # truncate: keep everything before the first damage
        keep = win + 1 if win < len(pos) and bad[win] >= 0 else win
        pos, end, cpu, nrec, bad = pos[:keep], end[:keep], cpu[:keep], nrec[:keep], bad[:keep]
        damage.append(Damage(off, size - off, msg))
    damage.sort(key=lambda d: d.offset)
    return _Scan(path, size, mm, w, pos, end, cpu, nrec.astype(np.int64), np.where(bad >= 0, bad, end), damage,
                 populate)


# -- the per-pCPU pass -------------------------------------------------------------------------------------------


@dataclass
class _Carry:
    """Per-pCPU state carried across batches."""

    tsc: dict = field(default_factory=dict)
    key: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


def _group(win_cpu: np.ndarray):
    """pCPU ids, windows in (pCPU, file) order, and each pCPU's first index in that order."""
    cpus, cidx = np.unique(win_cpu, return_inverse=True)
    cidx = cidx.astype(np.int64)
    order = np.argsort(cidx, kind="stable")
    cpu_start = np.zeros(len(cpus) + 1, np.int64)
    np.cumsum(np.bincount(cidx, minlength=len(cpus)), out=cpu_start[1:])
    return cpus, order, cpu_start


def _stream(w, pos, vend, win_cpu, carry: _Carry, want_doms: bool):
    cpus, order, cpu_start = _group(win_cpu)
    ncpu = len(cpus)
    in_tsc = np.array([carry.tsc.get(int(c), 0) for c in cpus], np.uint64)
    in_key = np.array([carry.key.get(int(c), 0) for c in cpus], np.uint64)
    in_state = np.array([carry.state.get(int(c), K.UNKNOWN) for c in cpus], np.int64)
    dom_counts = np.zeros((ncpu, 65537) if want_doms else (1, 1), np.int64)
    res = K.stream_pass(w, pos, vend, order, cpu_start, in_tsc, in_key, in_state, dom_counts, want_doms)
    return cpus, order, cpu_start, dom_counts, res


def _ids_of(sc_words, pos, nrec, res, path) -> dict[tuple[int, int], int]:
    """Per (event id, n_extra) counts from a stream pass, recounted exactly when a per-pCPU table overflowed."""
    hkeys, hcounts, overflow = res[6], res[7], res[8]
    if not overflow.any():
        return _id_counts(hkeys, hcounts)
    return _exact_ids(sc_words, pos, nrec, path)


def _exact_ids(words, pos, nrec, path) -> dict[tuple[int, int], int]:
    """Every (event id, n_extra) counted exactly (a per-pCPU table overflowed); bounded at MAX_DISTINCT_IDS."""
    keys, counts, status = K.exact_id_counts(words, pos, nrec, MAX_DISTINCT_IDS)
    if status:
        raise FormatError(path, 0, f"more than {MAX_DISTINCT_IDS:,} distinct event ids: not a plausible capture "
                                   "(a real one has a few hundred)")
    return _id_counts(keys, counts)


def _id_counts(hkeys, hcounts) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    used = hkeys != 0xFFFFFFFF
    for k, c in zip(hkeys[used].tolist(), hcounts[used].tolist()):
        key = (k & 0x0FFFFFFF, k >> 28)
        out[key] = out.get(key, 0) + c
    return out


def _name_table(id_counts, catalog, version):
    """Dictionary of names and the open-addressing table mapping (event | n_extra << 28) to a name index."""
    names = [FALLBACK_NAME]
    index = {FALLBACK_NAME: 0}
    slots = 1 << max(4, (2 * len(id_counts) + 1).bit_length())
    keys = np.full(slots, 0xFFFFFFFF, np.uint32)
    vals = np.zeros(slots, np.int32)  # int32: a capture may hold up to MAX_DISTINCT_IDS names
    mask = slots - 1
    for ev, n in id_counts:
        nm, _ = catalog.layout(ev, n, version)
        if nm not in index:
            index[nm] = len(names)
            names.append(nm)
        k = (ev | (n << 28)) & 0xFFFFFFFF
        h = (k * 2654435761) & mask
        while keys[h] != 0xFFFFFFFF:
            h = (h + 1) & mask
        keys[h] = k
        vals[h] = index[nm]
    return names, keys, vals


# -- Arrow assembly ----------------------------------------------------------------------------------------------


def _bitmaps(cols, n):
    """The nine validity bitmaps of ``n`` rows (d1..d7, has_tsc, known) as pyarrow buffers, from one kernel pass."""
    import pyarrow as pa

    nb = (n + 7) // 8
    out = np.empty((9, max(nb, 1)), np.uint8)
    K.validity_bitmaps(cols["n_extra"], cols["event"], cols["has_tsc"], cols["known"], n, K.SPREAD, out)
    return [pa.py_buffer(out[j, :nb]) for j in range(9)]


def _to_table(cols, names, n, cpu_hz, meta, columns=None):
    """Wrap the decoded buffers as a pyarrow.Table without copying. ``columns`` (None: all) limits the table to
    those columns, and only their dictionary is built."""
    import pyarrow as pa

    want = set(COLUMNS) | ({"time_ns"} if cpu_hz else set()) if columns is None else set(columns)
    event = cols["event"][:n]
    n_extra = cols["n_extra"][:n]
    bits = _bitmaps(cols, n) if want & {"has_tsc", "dom", "vcpu", *(f"d{j}" for j in range(1, 8))} else None
    built = {}
    if "cpu" in want:
        built["cpu"] = pa.Array.from_buffers(pa.uint16(), n, [None, pa.py_buffer(cols["cpu"][:n])])
    if "tsc" in want:
        built["tsc"] = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(cols["tsc"][:n])])
    if "has_tsc" in want:
        built["has_tsc"] = pa.Array.from_buffers(pa.bool_(), n, [None, bits[7]])
    if "event" in want:
        built["event"] = pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(event)])
    if "n_extra" in want:
        built["n_extra"] = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(n_extra)])
    for j in range(7):
        if f"d{j + 1}" in want:
            built[f"d{j + 1}"] = pa.Array.from_buffers(pa.uint32(), n, [bits[j], pa.py_buffer(cols["d"][j, :n])])
    if "offset" in want:
        built["offset"] = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(cols["offset"][:n])])
    if "dom" in want:
        built["dom"] = pa.Array.from_buffers(pa.uint16(), n, [bits[8], pa.py_buffer(cols["dom"][:n])])
    if "vcpu" in want:
        built["vcpu"] = pa.Array.from_buffers(pa.uint16(), n, [bits[8], pa.py_buffer(cols["vcpu"][:n])])
    if "name" in want:
        idx = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(cols["name"][:n])])
        # indices come from the kernel, which only writes valid ones
        built["name"] = pa.DictionaryArray.from_arrays(idx, pa.array(names, pa.string()), safe=False)
    if cpu_hz and "time_ns" in want:
        hz = np.uint64(int(cpu_hz))
        tsc = cols["tsc"][:n]
        ns = (tsc // hz) * np.uint64(1_000_000_000) + ((tsc % hz) * np.uint64(1_000_000_000)) // hz
        built["time_ns"] = pa.array(ns.view(np.int64))
    order = [c for c in (*COLUMNS, "time_ns") if c in built]
    unknown = want - set(COLUMNS) - {"time_ns"}
    if unknown:
        raise UsageError(f"no such column(s): {', '.join(sorted(unknown))} (columns: {', '.join(COLUMNS)}, time_ns)")
    table = pa.Table.from_arrays([built[c] for c in order], names=order)
    return table.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})


_COLUMN_DTYPES = (("cpu", np.uint16, 1), ("tsc", np.uint64, 1), ("has_tsc", np.uint8, 1), ("event", np.uint32, 1),
                  ("n_extra", np.uint8, 1), ("d", np.uint32, 7), ("offset", np.uint64, 1), ("dom", np.uint16, 1),
                  ("vcpu", np.uint16, 1), ("known", np.uint8, 1), ("name", np.int32, 1))


_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14


def _populated_anonymous(size: int) -> mmap.mmap:
    """An anonymous mapping of ``size`` bytes, backed by transparent huge pages where the kernel allows it (one fault
    per 2 MiB instead of per 4 KiB) and populated in one call. On older kernels, MAP_POPULATE does the populating."""
    mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mm, "madvise"):
        try:
            mm.madvise(getattr(mmap, "MADV_HUGEPAGE", 14))
        except OSError:  # pragma: no cover - THP disabled or unsupported
            pass
        try:
            mm.madvise(_MADV_POPULATE_WRITE)
            return mm
        except OSError:  # pragma: no cover - kernel older than 5.14
            pass
    mm.close()  # pragma: no cover
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0))


def _alloc(n: int) -> dict[str, np.ndarray]:
    """Output buffers for ``n`` rows, zero-filled: views into one anonymous mapping on huge pages, populated in a
    single call. Fresh memory is the largest cost of a decode on virtual machines; populating it up front is several
    times cheaper than faulting it in page by page (what it still costs depends on whether the hypervisor backs
    that memory already: 0.3 s to 6 s for 3 GiB here). The views keep the mapping alive."""
    n = max(int(n), 1)
    layout = []
    total = 0
    for name, dt, k in _COLUMN_DTYPES:
        size = np.dtype(dt).itemsize * n * k
        layout.append((name, dt, k, total))
        total += (size + 63) // 64 * 64
    try:
        mm = _populated_anonymous(total)
    except (OSError, ValueError):  # pragma: no cover - fall back to numpy's allocator
        return {name: (np.zeros((k, n), dt) if k > 1 else np.zeros(n, dt)) for name, dt, k in _COLUMN_DTYPES}
    out = {}
    for name, dt, k, off in layout:
        a = np.frombuffer(mm, dtype=dt, count=n * k, offset=off)
        out[name] = a.reshape(k, n) if k > 1 else a
    return out


def _decode_batch(w, pos, end, win_cpu, carry, catalog, version, frontier, cols_cap=None, counted=None, path="",
                  names_fixed=None):
    """Decode one batch of windows. Returns (cols, n, names, id_counts, pending windows, new carry).
    ``counted`` = (nrec, vend) when the windows were already counted by :func:`scan`; (None, ends) when an
    uncounted scan found no damage (a damaged record then raises :class:`_Recount`); None: the per-pCPU pass counts
    and the records of a window stop at the first one that overruns it."""
    from tracelens._jit import numba

    nrec, vend = counted if counted is not None else (None, end)
    cpus, order, cpu_start, _dc, res = _stream(w, pos, vend, win_cpu, carry, False)
    w_tsc0, w_key0, w_state0, out_tsc, out_key, out_state, hkeys, hcounts, _overflow, _stats, s_nrec, s_bad = res
    if nrec is None:  # the per-pCPU pass counted the records
        if counted is not None and (s_bad >= 0).any():
            raise _Recount
        nrec = s_nrec
        vend = np.where(s_bad >= 0, s_bad, end)
    use_frontier = frontier is not None
    piv = _pivots_from_windows(w_key0, out_key, cpu_start, order, 4 * numba.get_num_threads(),
                               frontier if use_frontier else None)
    ids = _ids_of(w, pos, nrec, res, path) if names_fixed is None else {}
    names, nkeys, nvals = names_fixed if names_fixed is not None else _name_table(ids, catalog, version)
    total_upper = int(nrec.sum())
    reuse = cols_cap is not None and cols_cap["cpu"].shape[0] >= total_upper
    cols = cols_cap if reuse else _alloc(total_upper)
    pend = np.full((len(cpus), 5), -1, np.int64)
    n = int(K.merge_decode(w, pos, vend, nrec, win_cpu.astype(np.int32), order, cpu_start, w_tsc0, w_key0, w_state0,
                           out_key, piv, use_frontier, nkeys, nvals, cols["cpu"], cols["tsc"], cols["has_tsc"],
                           cols["event"], cols["n_extra"], cols["d"], cols["offset"], cols["dom"], cols["vcpu"],
                           cols["known"], cols["name"], pend, reuse))
    new = _Carry({int(c): int(t) for c, t in zip(cpus, out_tsc)}, {int(c): int(k) for c, k in zip(cpus, out_key)},
                 {int(c): int(s) for c, s in zip(cpus, out_state)})
    pp, pe, pc = [], [], []
    for k, c in enumerate(cpus.tolist()):
        j = int(pend[k, 0])
        if j < 0:
            continue
        # pCPU c restarts, in the next batch, from its cursor at the frontier
        new.key[c] = int(np.int64(pend[k, 3]).view(np.uint64))
        new.tsc[c] = int(np.int64(pend[k, 2]).view(np.uint64))
        new.state[c] = int(pend[k, 4])
        for jj in range(j, int(cpu_start[k + 1])):
            wi = int(order[jj])
            pp.append(int(pend[k, 1]) if jj == j else int(pos[wi]))
            pe.append(int(end[wi]))
            pc.append(c)
    pending = (np.array(pp, np.int64), np.array(pe, np.int64), np.array(pc, np.int32))
    return cols, n, names, ids, pending, new


def _pivots_from_windows(w_key0, out_key, cpu_start, order, nparts, frontier):
    """Partition pivots from the windows' starting keys (quantiles), so each partition has similar work."""
    ks = np.sort(w_key0)
    lo = np.zeros(1, np.uint64)
    if len(ks) > 1 and nparts > 1:
        q = np.unique(ks[(np.arange(1, nparts) * len(ks)) // nparts])
        q = q[q > 0]
    else:
        q = np.zeros(0, np.uint64)
    if frontier is not None:
        q = q[q < np.uint64(frontier)]
        return np.concatenate([lo, q, np.full(1, frontier, np.uint64)])
    return np.concatenate([lo, q, np.full(1, np.iinfo(np.uint64).max, np.uint64)])


def _layout(version_text, ids, table_cols=None, n=0) -> LayoutGuess:
    v = parse_version(version_text)
    if v is not None:
        return given_layout(v)
    dr = None
    # the payload scan is only needed when there are DECREASE_RESERVATION records of 4+ words
    if table_cols is not None and n and any(ids.get((K.EV_DECREASE_RESERVATION, k)) for k in range(4, 8)):
        sel = table_cols["event"][:n] == K.EV_DECREASE_RESERVATION
        if sel.any():
            sel &= table_cols["n_extra"][:n] >= 4
            dr = (table_cols["d"][2, :n][sel], table_cols["d"][3, :n][sel])
    return guess_layout(ids, dr)


def read_xentrace(path, decode: DecodeOptions | None = None, *, columns=None):
    """Decode a whole capture into one time-ordered ``pyarrow.Table`` (columns: see the module docstring).

    The table's schema metadata carries ``tracelens.layout`` (the Xen layout used and why) and ``tracelens.damage``
    (byte ranges not decoded under a non-strict ``tolerance``). ``columns`` limits the table to those columns.
    """
    from tracelens._jit import DECODE_KERNELS, first_run, set_threads

    d = decode or DecodeOptions()
    set_threads(d.threads)
    catalog = load_catalog(d.catalog_files)
    with first_run(_size(path), kernels=DECODE_KERNELS):
        return _read_xentrace(path, d.xen_version, d.cpu_hz, d.tolerance, catalog, columns)


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except (OSError, TypeError, ValueError):
        return 0


def _read_xentrace(path, xen_version, cpu_hz, tolerance, catalog, columns):
    sc = scan(path, tolerance, populate=True, count=False)
    version = parse_version(xen_version)
    try:
        cols, n, names, ids, _pend, _carry = _decode_batch(sc.words, sc.pos, sc.end, sc.cpu, _Carry(), catalog, version,
                                                           None, counted=(sc.nrec, sc.vend), path=sc.path)
    except _Recount:  # damage the walk did not see: count first, applying the tolerance
        sc = scan(path, tolerance, populate=True)
        cols, n, names, ids, _pend, _carry = _decode_batch(sc.words, sc.pos, sc.end, sc.cpu, _Carry(), catalog, version,
                                                           None, counted=(sc.nrec, sc.vend), path=sc.path)
    guess = _layout(xen_version, ids, cols, n)
    if guess.version != version:  # names can depend on the version: redo the dictionary only
        names2, nkeys, nvals = _name_table(ids, catalog, guess.version)
        if names2 != names:
            cols["name"][:n] = _rename(cols, n, names, names2, catalog, guess.version)
            names = names2
    meta = {"tracelens.layout": {"label": guess.label, "version": guess.version, "reasons": guess.reasons},
            "tracelens.damage": [d.to_dict() for d in sc.damage], "tracelens.source": sc.path}
    return _to_table(cols, names, n, cpu_hz, meta, columns)


def _rename(cols, n, old_names, new_names, catalog, version):
    """Re-point name indices after the layout guess changed names (rare: only version-dependent names)."""
    ev = cols["event"][:n].astype(np.int64) | (cols["n_extra"][:n].astype(np.int64) << 28)
    out = np.empty(n, np.int32)
    uniq, inv = np.unique(ev, return_inverse=True)
    index = {nm: i for i, nm in enumerate(new_names)}
    mapped = np.array([index[catalog.layout(int(u) & 0x0FFFFFFF, int(u) >> 28, version)[0]] for u in uniq], np.int32)
    out[:] = mapped[inv]
    return out


def iter_batches(path, decode: DecodeOptions | None = None, *, batch_bytes: int = 128 << 20,
                 progress: Progress | None = None, reuse_buffers: int = 0, columns=None) -> Iterator:
    """Decode a capture in bounded memory: yields time-ordered tables whose concatenation equals
    :func:`read_xentrace`'s table. Windows are taken ``batch_bytes`` at a time in file order; records that a later
    window could still precede (K at or past the frontier: the smallest latest-key among pCPUs that have windows
    further on) are held back for the next batch. ``reuse_buffers=N`` cycles through N sets of buffers (a table is
    overwritten N batches later: only for consumers that copy it before then, like the Parquet writer)."""
    from tracelens._jit import DECODE_KERNELS, first_run, set_threads

    d = decode or DecodeOptions()
    set_threads(d.threads)
    catalog = load_catalog(d.catalog_files)
    with first_run(_size(path), kernels=DECODE_KERNELS):
        yield from _iter_batches(path, batch_bytes, d.xen_version, d.cpu_hz, d.tolerance, catalog, progress,
                                 reuse_buffers, columns)


def _iter_batches(path, batch_bytes, xen_version, cpu_hz, tolerance, catalog, progress, reuse_buffers, columns):
    sc = scan(path, tolerance, populate=False)
    # a first look at every record fixes, before the first batch, the layout guess and one name dictionary
    # shared by all batches (an Arrow IPC file cannot change a dictionary between batches)
    first = count_pass(sc, want_doms=False, xen_version=xen_version)
    guess = first["_guess"]
    version = guess.version
    names_fixed = _name_table(first["ids"], catalog, version)
    nwin = len(sc.pos)
    # last window index of every pCPU, to know which pCPUs still have windows after a batch
    last_win = {}
    for i, c in enumerate(sc.cpu.tolist()):
        last_win[c] = i
    carry = _Carry()
    pending = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32))
    bufs: list = [None] * max(1, int(reuse_buffers))
    k = 0
    i = 0
    meta = {"tracelens.layout": {"label": guess.label, "version": guess.version, "reasons": guess.reasons},
            "tracelens.damage": [d.to_dict() for d in sc.damage], "tracelens.source": sc.path}
    while i < nwin or len(pending[0]):
        j = i
        start_byte = int(sc.pos[i]) * 4 if i < nwin else sc.size
        while j < nwin and (j == i or (int(sc.end[j]) * 4 - start_byte) <= batch_bytes):
            j += 1
        pos = np.concatenate([pending[0], sc.pos[i:j]])
        end = np.concatenate([pending[1], sc.end[i:j]])
        cpu = np.concatenate([pending[2], sc.cpu[i:j]]).astype(np.int32)
        # the windows of a pCPU must stay in file order: pending ones come from earlier in the file
        order = np.argsort(pos, kind="stable")
        pos, end, cpu = pos[order], end[order], cpu[order]
        future = {c for c, last in last_win.items() if last >= j}
        frontier = None
        if future:
            # frontier: min over pCPUs with later windows of their latest key after this batch (the pass stops
            # at a record that overruns its window, as the counting pass would)
            cpus, _o, _cs, _dc, res = _stream(sc.words, pos, end, cpu, carry, False)
            out_key = res[4]
            fr = [int(k) for c, k in zip(cpus.tolist(), out_key.tolist()) if c in future]
            fr += [carry.key.get(c, 0) for c in future if c not in set(cpus.tolist())]
            frontier = min(fr) if fr else None
        cols, n, names, _ids, pend, carry = _decode_batch(sc.words, pos, end, cpu, carry, catalog, version,
                                                          frontier, cols_cap=bufs[k % len(bufs)] if reuse_buffers else None,
                                                          path=sc.path, names_fixed=names_fixed)
        if reuse_buffers:
            bufs[k % len(bufs)] = cols
        pending = pend
        # nothing before the earliest pending record or the next batch is needed again
        keep_from = int(sc.pos[j]) * 4 if j < nwin else sc.size
        if len(pending[0]):
            keep_from = min(keep_from, int(pending[0].min()) * 4)
        _release(sc.mm, keep_from)
        i = j
        if progress is not None:
            progress(min(int(sc.end[j - 1]) * 4 if j else 0, sc.size), sc.size)
        if n:
            yield _to_table(cols, names, n, cpu_hz, meta, columns)
            k += 1
        if i >= nwin and frontier is None:
            break


def count_pass(sc: _Scan, *, want_doms: bool = True, xen_version: str | None = None) -> dict:
    """Record ids, pCPUs, lost records and TSC span: every record is visited, none is materialised. Works through the file in
    chunks of windows, carrying each pCPU's state, so resident memory does not grow with the capture."""
    carry = _Carry()
    ids: dict[tuple[int, int], int] = {}
    dom_counts = np.zeros(65537, np.int64)
    lost_recs = lost_n = 0
    lo = hi = None
    overflow = False
    cpus_seen: set[int] = set()
    w32 = sc.cpu.astype(np.int32)
    spans = [(0, len(sc.pos))] if sc.populated else _chunks(sc.pos, sc.end, mm=sc.mm)
    for a, b in spans:
        cpus, order, cpu_start, dc, res = _stream(sc.words, sc.pos[a:b], sc.vend[a:b], w32[a:b], carry, want_doms)
        w_tsc0, w_key0, w_state0, out_tsc, out_key, out_state, hkeys, hcounts, ovf, stats, s_nrec, s_bad = res
        if sc.nrec is None:  # an uncounted scan (one span): this pass counted
            if (s_bad >= 0).any():
                raise _Recount
            sc.nrec = s_nrec
        for k, c in enumerate(cpus.tolist()):
            carry.tsc[c], carry.key[c], carry.state[c] = int(out_tsc[k]), int(out_key[k]), int(out_state[k])
        cpus_seen.update(cpus.tolist())
        if ovf.any():
            overflow = True
        else:
            for key, cnt in _id_counts(hkeys, hcounts).items():
                ids[key] = ids.get(key, 0) + cnt
        if want_doms:
            dom_counts += dc.sum(axis=0)
        lost_recs += int(stats[:, 0].sum())
        lost_n += int(stats[:, 1].sum())
        timed = stats[:, 3] >= stats[:, 2]
        if timed.any():
            cl, ch = int(stats[timed, 2].min()), int(stats[timed, 3].max())
            lo = cl if lo is None else min(lo, cl)
            hi = ch if hi is None else max(hi, ch)
    if overflow:  # a per-pCPU table overflowed somewhere: count every id exactly (rare; bounded)
        ids = _exact_ids(sc.words, sc.pos, sc.nrec, sc.path)
        _release(sc.mm, sc.size)
    dr = None
    if any(ids.get((K.EV_DECREASE_RESERVATION, k)) for k in range(4, 8)):
        dr = K.decrease_res_payloads(sc.words, sc.pos, sc.nrec)
        _release(sc.mm, sc.size)
    v = parse_version(xen_version)
    guess = given_layout(v) if v else guess_layout(ids, dr)
    out = {"_guess": guess, "ids": ids, "cpus": np.array(sorted(cpus_seen)), "overflow": overflow,
           "lost": (lost_recs, lost_n), "span": (lo, hi)}
    if want_doms:
        out["dom_counts"] = dom_counts
    return out


def _coverage(ids) -> dict:
    from tracelens.analysis.coverage import coverage

    return coverage(ids)


def info(path, decode: DecodeOptions | None = None, *, progress: Progress | None = None) -> dict:
    """Everything ``tracelens info`` shows, from one streamed pass over every record (no table is built; the file
    is mapped a chunk at a time, so resident memory does not grow with the capture). The pass is the first of the
    streamed analysis (tracelens/analysis/stream.py)."""
    from tracelens._jit import INFO_KERNELS, first_run, set_threads
    from tracelens.analysis.stream import first_pass

    d = decode or DecodeOptions()
    set_threads(d.threads)
    catalog = load_catalog(d.catalog_files)
    with first_run(_size(path), kernels=INFO_KERNELS, beside=("select",)):
        r = first_pass(path, xen_version=d.xen_version, tolerance=d.tolerance, progress=progress)
    sc, p1 = r["sc"], r["p1"]
    s = {"_guess": r["guess"], "ids": p1.ids, "cpus": p1.cpus, "lost": p1.lost,
         "span": (p1.min_tsc, p1.last_tsc if p1.min_tsc is not None else None), "dom_counts": p1.dom_counts}
    guess = s["_guess"]
    per_class: dict[str, int] = {}
    per_event: dict[str, int] = {}
    for (ev, n), c in sorted(s["ids"].items()):
        per_class[catalog.class_name(ev)] = per_class.get(catalog.class_name(ev), 0) + c
        nm = catalog.layout(ev, n, guess.version)[0]
        per_event[nm] = per_event.get(nm, 0) + c
    lost = s["lost"]
    first, last = s["span"]
    dc = s["dom_counts"]
    per_dom = {("unknown" if d == 65536 else int(d)): int(dc[d]) for d in np.nonzero(dc)[0]}
    return {
        "path": sc.path,
        "format": "xentrace",
        "size_bytes": sc.size,
        "pcpus": [int(c) for c in s["cpus"]],
        "windows": int(len(sc.pos)),
        "records": int(sc.nrec.sum()),
        "records_per_class": per_class,
        "records_per_event": dict(sorted(per_event.items(), key=lambda kv: -kv[1])),
        "records_per_domain": per_dom,
        "lost_records": {"records": int(lost[0]), "lost": int(lost[1]), "malformed": int(p1.bad_lost)},
        "coverage": _coverage(s["ids"]),
        "tsc_first": first,
        "tsc_last": last,
        "xen_layout": {"label": guess.label, "reasons": guess.reasons},
        "damage": [d.to_dict() for d in sc.damage],
    }
