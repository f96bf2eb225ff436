"""A xentrace capture writer: the project's own producer of test, benchmark and sample captures.

It writes exactly what ``tools/xentrace/xentrace.c`` writes (spec ../shared/spec/xentrace.md §1-2): a sequence of
windows, each a ``TRC_TRACE_CPU_CHANGE`` record (header 0x2001f003, d1 = pCPU, d2 = window size in bytes) followed by
that many bytes of ``struct t_rec`` records from one pCPU's ring. Records are added per pCPU, in that pCPU's order;
:meth:`CaptureWriter.to_bytes` cuts each pCPU's stream into windows at poll-period boundaries (TSC cycles) and
interleaves them the way the daemon's poll loop does, so window start TSCs are not monotonic in file order.

The writer keeps the truth (every record's pCPU, TSC, id, payload and file offset) for tests to compare against.
Encoding is vectorised (:func:`encode_records`) so the benchmark can produce multi-GiB captures quickly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracelens.parsers.xentrace.catalog import event_id

CPU_CHANGE = event_id("TRACE_CPU_CHANGE")
WRAP_BUFFER = event_id("TRACE_WRAP_BUFFER")
LOST_RECORDS = event_id("LOST_RECORDS")
CPU_CHANGE_HEADER = CPU_CHANGE | 2 << 28  # 2 payload words (pCPU, window size), no TSC


def encode_records(event, n_extra, has_tsc, tsc, data) -> tuple[np.ndarray, np.ndarray]:
    """Encode records into little-endian u32 words.

    ``event`` (u32), ``n_extra`` (0-7), ``has_tsc`` (bool), ``tsc`` (u64 cycles, ignored where has_tsc is false)
    are 1-D arrays of length n; ``data`` is an (n, 7) u32 array whose first n_extra columns are written.
    Returns (words, start) where start[i] is the first word of record i.
    """
    event = np.asarray(event, dtype=np.uint32)
    n_extra = np.asarray(n_extra, dtype=np.int64)
    has_tsc = np.asarray(has_tsc, dtype=bool)
    tsc = np.asarray(tsc, dtype=np.uint64)
    data = np.asarray(data, dtype=np.uint32)
    sizes = 1 + 2 * has_tsc.astype(np.int64) + n_extra
    start = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(sizes[:-1], out=start[1:])
    total = int(sizes.sum()) if len(sizes) else 0
    words = np.zeros(total, dtype=np.uint32)
    words[start] = (event & np.uint32(0x0FFFFFFF)) | (n_extra.astype(np.uint32) << np.uint32(28)) | (
        has_tsc.astype(np.uint32) << np.uint32(31)
    )
    ts = np.nonzero(has_tsc)[0]
    words[start[ts] + 1] = (tsc[ts] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    words[start[ts] + 2] = (tsc[ts] >> np.uint64(32)).astype(np.uint32)
    body = start + 1 + 2 * has_tsc.astype(np.int64)
    for j in range(7):
        sel = np.nonzero(n_extra > j)[0]
        words[body[sel] + j] = data[sel, j]
    return words, start


@dataclass
class _Stream:
    event: list = field(default_factory=list)
    n_extra: list = field(default_factory=list)
    has_tsc: list = field(default_factory=list)
    tsc: list = field(default_factory=list)
    data: list = field(default_factory=list)


class CaptureWriter:
    """Collects records per pCPU and lays them out as a xentrace file.

    ``poll_period`` is the TSC span of one poll round: each pCPU's stream is cut into windows at multiples of it
    (plus at ``max_window_records``). Within a round, pCPUs are written in a shuffled order (``seed``), which
    reproduces the non-monotonic window start TSCs of real captures.
    """

    def __init__(self, poll_period: int = 2_400_000, max_window_records: int = 4096, seed: int = 0, shuffle: bool = True):
        self.poll_period = int(poll_period)
        self.max_window_records = int(max_window_records)
        self.seed = seed
        self.shuffle = shuffle
        self._streams: dict[int, _Stream] = {}
        self._last_tsc: dict[int, int] = {}
        self._truth = None

    # -- adding records ------------------------------------------------------------------------------------------
    def record(self, cpu: int, event: int, data=(), tsc: int | None = None) -> None:
        """Append one record to pCPU ``cpu``. ``tsc`` None writes a record without a TSC."""
        data = [int(x) & 0xFFFFFFFF for x in data]
        if len(data) > 7:
            raise ValueError("at most 7 payload words")
        s = self._streams.setdefault(int(cpu), _Stream())
        s.event.append(int(event) & 0x0FFFFFFF)
        s.n_extra.append(len(data))
        s.has_tsc.append(tsc is not None)
        s.tsc.append(int(tsc) if tsc is not None else 0)
        s.data.append(data + [0] * (7 - len(data)))
        if tsc is not None:
            self._last_tsc[int(cpu)] = int(tsc)
        self._truth = None

    def lost(self, cpu: int, count: int, dom: int, vcpu: int, first_tsc: int, tsc: int) -> None:
        """A TRC_LOST_RECORDS record (always with TSC and 4 words, 28 bytes)."""
        self.record(cpu, LOST_RECORDS, (count, (dom & 0xFFFF) | ((vcpu & 0xFFFF) << 16), first_tsc & 0xFFFFFFFF, first_tsc >> 32), tsc=tsc)

    def wrap(self, cpu: int, nbytes: int, garbage: int = 0xDEADBEEF) -> None:
        """A TRC_TRACE_WRAP_BUFFER padding record of ``nbytes`` (4-36) whose payload is stale garbage."""
        if nbytes % 4 or not 4 <= nbytes <= 36:
            raise ValueError("a WRAP record is 4 to 36 bytes, a multiple of 4")
        words = nbytes // 4 - 1
        with_tsc = words > 7
        if with_tsc:
            words -= 2
        # Xen adds the current TSC when 7 words cannot fill the gap (spec 2.4); the payload stays stale
        self.record(cpu, WRAP_BUFFER, [garbage ^ (i * 0x01010101) for i in range(words)],
                    tsc=self._last_tsc.get(cpu, 0) if with_tsc else None)

    @property
    def cpus(self) -> list[int]:
        return sorted(self._streams)

    def last_tsc(self, cpu: int) -> int:
        return self._last_tsc.get(cpu, 0)

    # -- layout --------------------------------------------------------------------------------------------------
    def _windows(self):
        """Yield (cpu, first record index, end record index) in file order."""
        rng = np.random.default_rng(self.seed)
        cuts: dict[int, list[tuple[int, int]]] = {}
        for cpu, s in self._streams.items():
            tsc = np.asarray(s.tsc, dtype=np.uint64)
            has = np.asarray(s.has_tsc, dtype=bool)
            # records without a TSC belong to the period of the previous timed record
            eff = np.maximum.accumulate(np.where(has, tsc, 0)) if len(tsc) else tsc
            period = (eff // np.uint64(max(self.poll_period, 1))).astype(np.int64)
            bounds = [0] + list(np.nonzero(np.diff(period))[0] + 1) + [len(tsc)]
            spans = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                for x in range(a, b, self.max_window_records):
                    spans.append((int(period[a]) if len(period) else 0, x, min(b, x + self.max_window_records)))
            cuts[cpu] = spans
        rounds: dict[int, list] = {}
        for cpu, spans in cuts.items():
            for p, a, b in spans:
                rounds.setdefault(p, []).append((cpu, a, b))
        for p in sorted(rounds):
            batch = rounds[p]
            order = rng.permutation(len(batch)) if self.shuffle else range(len(batch))
            # keep each pCPU's own windows in order even when shuffled
            seen: dict[int, list] = {}
            for cpu, a, b in batch:
                seen.setdefault(cpu, []).append((a, b))
            cpu_order = [batch[i][0] for i in order]
            emitted = set()
            for cpu in cpu_order:
                if cpu in emitted:
                    continue
                emitted.add(cpu)
                for a, b in seen[cpu]:
                    yield cpu, a, b

    def to_bytes(self) -> bytes:
        """The capture file's bytes. Also fixes the truth (see :meth:`truth`)."""
        encoded = {}
        for cpu, s in self._streams.items():
            words, start = encode_records(s.event, s.n_extra, s.has_tsc, s.tsc, np.asarray(s.data, dtype=np.uint32).reshape(-1, 7))
            encoded[cpu] = (words, start)
        parts = []
        offsets = {cpu: np.zeros(len(s.event), dtype=np.int64) for cpu, s in self._streams.items()}
        cc_rows = []  # (cpu, position-in-stream before record a, offset, size)
        pos = 0
        for cpu, a, b in self._windows():
            words, start = encoded[cpu]
            w0 = start[a]
            w1 = start[b] if b < len(start) else len(words)
            size = int(w1 - w0) * 4
            parts.append(np.array([CPU_CHANGE_HEADER, cpu, size], dtype=np.uint32))
            cc_rows.append((cpu, a, pos, size))
            pos += 12
            offsets[cpu][a:b] = pos + (start[a:b] - w0) * 4
            parts.append(words[w0:w1])
            pos += size
        blob = np.concatenate(parts).astype("<u4").tobytes() if parts else b""
        self._truth = (offsets, cc_rows)
        return blob

    def write(self, path) -> int:
        """Write the capture atomically (temp file + rename). Returns its size in bytes."""
        blob = self.to_bytes()
        atomic_write_bytes(path, blob)
        return len(blob)

    def truth(self) -> dict[str, np.ndarray]:
        """Every record of the last :meth:`to_bytes`, CPU_CHANGE window markers included, in per-pCPU stream order.

        Columns: cpu, event, n_extra, has_tsc, tsc (0 where has_tsc is false), data (n, 7), offset (bytes).
        Rows are grouped by pCPU (ascending) and, within a pCPU, in the order the records were added, with each
        window's CPU_CHANGE record in front of the window's first record.
        """
        if self._truth is None:
            self.to_bytes()
        offsets, cc_rows = self._truth
        cols = {k: [] for k in ("cpu", "event", "n_extra", "has_tsc", "tsc", "data", "offset")}
        cc_by_cpu: dict[int, list] = {}
        for cpu, a, off, size in cc_rows:
            cc_by_cpu.setdefault(cpu, []).append((a, off, size))
        for cpu in sorted(self._streams):
            s = self._streams[cpu]
            marks = {a: (off, size) for a, off, size in cc_by_cpu.get(cpu, [])}
            for i in range(len(s.event)):
                if i in marks:
                    off, size = marks[i]
                    cols["cpu"].append(cpu); cols["event"].append(CPU_CHANGE); cols["n_extra"].append(2)
                    cols["has_tsc"].append(False); cols["tsc"].append(0); cols["data"].append([cpu, size, 0, 0, 0, 0, 0])
                    cols["offset"].append(off)
                cols["cpu"].append(cpu); cols["event"].append(s.event[i]); cols["n_extra"].append(s.n_extra[i])
                cols["has_tsc"].append(s.has_tsc[i]); cols["tsc"].append(s.tsc[i]); cols["data"].append(s.data[i])
                cols["offset"].append(int(offsets[cpu][i]))
        out = {
            "cpu": np.asarray(cols["cpu"], dtype=np.uint16),
            "event": np.asarray(cols["event"], dtype=np.uint32),
            "n_extra": np.asarray(cols["n_extra"], dtype=np.uint8),
            "has_tsc": np.asarray(cols["has_tsc"], dtype=bool),
            "tsc": np.asarray(cols["tsc"], dtype=np.uint64),
            "data": np.asarray(cols["data"], dtype=np.uint32).reshape(-1, 7),
            "offset": np.asarray(cols["offset"], dtype=np.int64),
        }
        return out


def atomic_write_bytes(path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically (temp file beside it, then rename)."""
    from tracelens.output import atomic_output

    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(blob)
