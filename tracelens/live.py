"""Live analysis: follow a capture while ``xentrace`` writes it, and say, per guest, the moment it stops being safe
to kexec, and why (``tracelens watch``, ``tracelens.watch()``; docs/watch.md).

The input is a byte stream (a pipe, or a file that grows). xentrace writes each pCPU's trace buffer as one window
(a CPU_CHANGE record, then the buffer's records; spec ../shared/spec/xentrace.md §1-2), in any pCPU order, so
the stream is cut into whole windows as they arrive -- bytes of a window (or of its header) not there yet are
waited for, not taken for damage -- and each batch of windows goes through the streamed analysis'
passes (tracelens.analysis.stream) with their state carried from batch to batch:

1. **Pass 1** (:class:`tracelens.analysis.stream._Select`) on arrival: per pCPU, in file order, whatever order
   the pCPUs arrive in. It keeps each window's starting state, the rare records and the tallies.
2. **Resumes**: a kexec boundary is where the shut-down domain *runs again* (tracelens.analysis.boundaries). For
   every kexec shutdown seen, :func:`tracelens.analysis._kernels.run_candidates` keeps the earliest record (K,
   pCPU, offset) putting the domain on a pCPU after it, over every window that arrives: the same record the
   merged walk of the file analysis finds first.
3. **Commit** behind a *watermark* W: the smallest K that every pCPU has passed (K is the decoder's merge key, the
   running maximum of a pCPU's TSCs). Every record below W has arrived, so the boundaries below W are final; the
   windows whose records are all below W go through pass 2 (hypercall counts, grant rows with their epochs) and
   their grant rows are fed, in time order, to the grant ledger once no window still to come can hold an earlier
   one. A pCPU that has delivered nothing while ``stall_bytes`` of other windows arrived stops holding W back.
4. **Views**: now and then the analysis is finished on what has been committed (or, when the input has been quiet
   for ``quiet`` seconds, on a copy of the state with everything that arrived committed: a *speculative* view) and
   compared with the previous view; the differences are the events (:class:`Event`). Committed state never holds a
   guess, so a window that arrives after a speculative view only changes the next view: its events say what changed
   (``change``: ``changed``/``withdrawn``).

When the input ends, everything is committed and the analysis finished exactly as ``tracelens analyze`` finishes
it: the final findings equal analyze's on the finished capture (tests/test_watch.py).
"""

from __future__ import annotations

import copy
import hashlib
import os
import select
import time
from dataclasses import dataclass, field

import numpy as np

from tracelens.analysis import records as R
from tracelens.analysis import stream as S
from tracelens.parsers.xentrace.catalog import SUBCLASS_ID_MASK

QUIET_S = 0.5  # no byte for this long: what arrived is taken as complete (for a speculative view)
STALL_BYTES = 64 << 20  # a pCPU silent while this much else arrived stops holding the watermark back
READ_BYTES = 8 << 20  # largest read from the input at a time
VIEW_MIN_S = 0.25  # views at most this often (and at most a fifth of the time goes to them)
STATUS_S = 2.0  # status events at most this often
STARTUP_BYTES = 4 << 20  # nothing is committed before this much arrived: every pCPU has sent a window by then
INF = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class Event:
    """One state change. ``type``: ``boundary``, ``unsafe``, ``finding``, ``lost``, ``status`` or ``end``;
    ``data``: its fields (those of the matching rows of the JSON report); ``at``: seconds since the watch began."""

    type: str
    data: dict
    at: float = 0.0

    def to_dict(self) -> dict:
        return {"type": self.type, **self.data}


@dataclass
class WatchOptions:
    """``quiet``: seconds without input after which what arrived counts as complete; ``idle_exit``: end when a
    followed file has not grown for this many seconds (None: never); ``stall_bytes``: see the module docstring;
    ``status_every``: seconds between status events (None: none)."""

    quiet: float = QUIET_S
    idle_exit: float | None = None
    stall_bytes: int = STALL_BYTES
    status_every: float | None = STATUS_S
    read_bytes: int = READ_BYTES
    view_min: float = VIEW_MIN_S
    poll: float = 0.1  # seconds between checks of a followed file that stopped growing
    startup_bytes: int = STARTUP_BYTES
    commit_bytes: int = 8 << 20  # commit whenever this much waits behind the watermark (views come on their timer)


class WatchError(Exception):
    pass


# -- input -----------------------------------------------------------------------------------------------------


class _Input:
    """Bytes from a pipe, a followed file or a Python binary stream. ``read(timeout)`` returns new bytes, b"" when
    none came in time, None at the end."""

    def __init__(self, source, opts: WatchOptions):
        self.opts = opts
        self.name = "<stdin>"
        self.fd = None
        self.obj = None
        self.follow = False
        self.last_growth = time.monotonic()
        self.eof = False
        if source == "-" or source is None:
            self.fd = 0
            _grow_pipe(0)
        elif isinstance(source, (str, os.PathLike)):
            import stat

            from tracelens.errors import FormatError

            self.name = os.fspath(source)
            what = "a xentrace capture"
            try:
                mode = os.stat(self.name).st_mode
                if stat.S_ISDIR(mode):
                    raise FormatError(self.name, None, f"is a directory, not {what}")
                if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                    raise FormatError(self.name, None, f"is a socket or a device, not {what} (a file or a FIFO)")
                self.fd = os.open(self.name, os.O_RDONLY)  # a FIFO's open waits for its writer, as it should
            except OSError as e:
                raise FormatError(self.name, None, f"cannot open: {e.strerror}") from None
            self.follow = stat.S_ISREG(mode)  # a FIFO ends when its writer closes it, like standard input
            _grow_pipe(self.fd)
        else:
            self.obj = source
            self.name = getattr(source, "name", "<stream>")
            try:
                self.fd = source.fileno()
                self.obj = None
            except (AttributeError, OSError, ValueError):
                pass

    def read(self, timeout: float) -> bytes | None:
        if self.eof:
            return None
        n = self.opts.read_bytes
        if self.obj is not None:
            data = self.obj.read(n)
            return data if data else None
        if self.follow:
            data = os.read(self.fd, n)
            if data:
                self.last_growth = time.monotonic()
                return data
            idle = self.opts.idle_exit
            if idle is not None and time.monotonic() - self.last_growth >= idle:
                return None
            time.sleep(min(timeout, self.opts.poll) if timeout > 0 else 0)
            return b""
        r, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not r:
            return b""
        data = os.read(self.fd, n)
        if not data:
            return None
        # a pipe hands over at most its buffer (64 KiB) at a time: take what is there now, up to n bytes, so that
        # the passes run on batches of windows rather than on a few records each
        parts = [data]
        got = len(data)
        while got < n and select.select([self.fd], [], [], 0)[0]:
            more = os.read(self.fd, n - got)
            if not more:
                self.eof = True
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def close(self):
        if self.fd not in (None, 0):
            os.close(self.fd)


def _grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (Linux F_SETPIPE_SZ), so that a writer does not wait on every 64 KiB."""
    try:
        import fcntl
        import stat

        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ValueError, ImportError):
        pass  # an unprivileged process may be capped (/proc/sys/fs/pipe-max-size): 64 KiB still works


# -- the engine ------------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Windows that arrived together: their words (a copy), per window its word range, pCPU, pass-1 starting state,
    grant record count and K after its last record; ``base``: word index of ``words[0]`` in the capture."""

    words: np.ndarray
    base: int
    pos: np.ndarray
    vend: np.ndarray
    cpu: np.ndarray
    tsc0: np.ndarray
    key0: np.ndarray
    state0: np.ndarray
    grants: np.ndarray
    end_key: np.ndarray
    open: np.ndarray  # windows not committed yet


@dataclass
class _Commit:
    """What the commit step changes (copied whole for a speculative view)."""

    gs: S._GrantState
    hc: tuple
    fold: tuple
    dropped: np.ndarray
    pending: dict | None = None
    csr_key: tuple = ()
    cursors: tuple = ()
    retained: list = field(default_factory=list)  # batches with open windows
    w: int = 0  # the watermark committed so far
    w_fed: int = 0  # grant rows below this K have been fed to the ledger
    csr: tuple | None = None  # the boundaries the last commit used


class Engine:
    """The incremental analysis (module docstring). ``feed(bytes)``; ``view()`` the Analysis so far;
    ``view(final=True)`` the final one."""

    def __init__(self, config=None, opts: WatchOptions | None = None, name: str = "<stdin>",
                 stream_opts: S.StreamOptions | None = None):
        from tracelens.analysis import analyze as A

        self.config = config or A.AnalysisConfig()  # DecodeOptions checked its tolerance
        self.opts = opts or WatchOptions()
        self.sopts = stream_opts or S.StreamOptions()
        self.name = name
        self.sel = S._Select(self.sopts, 0, None)
        self.nth = self.sel.hkeys.shape[0]
        self.buf = bytearray()
        self.base = 0  # byte offset of buf[0] in the capture
        self.size = 0  # bytes received
        self.sha = hashlib.sha256()
        self.ids: dict = {}
        self.damage: list = []
        self.skipping: tuple | None = None  # (byte offset, message) of an open skipped range (tolerance "skip")
        self.skip_first = False
        self.stopped = False  # truncate: damage met, the rest is not analysed
        self.ended = False
        self._epochs_memo = None
        self.started = False
        self.cpus: set = set()
        self.last_seen = np.zeros(self.sel.ncpu, np.int64)  # bytes received when each pCPU last sent a window
        self.queries: dict = {}  # (domid, key, cpu, off, inclusive) -> index into the candidate arrays
        self.wanted: list = []  # the queries the rare records so far ask for
        self.shutdowns = 0
        self.cand = self._cand_arrays(0)
        self.rows_parts: list = []
        self.windows_total = 0
        self.late = 0  # grant records that came after later ones had been fed to the ledger
        self.late_windows = 0  # windows that arrived with records below the committed watermark
        nth = self.nth
        size = 1 << 17
        self.limit = min(S.HYPERCALL_KEY_LIMIT, size // 2)

        def tables():
            return (np.zeros((nth, size), np.uint64), np.zeros((nth, size), np.bool_),
                    np.zeros((nth, size), np.int64), np.zeros(nth, np.int64))

        self.c = _Commit(S._GrantState(1), tables(), tables(), np.zeros(nth, np.int64))

    # -- framing ---------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> int:
        """Take more bytes of the capture; returns how many windows became complete."""
        if not data:
            return 0
        self.sha.update(data)
        self.size += len(data)
        if self.stopped:
            return 0
        self.buf += data
        return self._frame(final=False)

    def _error(self, off: int, msg: str):
        from tracelens.errors import FormatError

        raise FormatError(self.name, off, msg)

    def _frame(self, final: bool) -> int:
        from tracelens.parsers.xentrace import _kernels as XK
        from tracelens.parsers.xentrace import decode as D

        nw_total = 0
        while True:
            nbytes = len(self.buf) // 4 * 4
            if not self.started:
                if len(self.buf) < 4 and not final:
                    return nw_total
                w0 = int.from_bytes(self.buf[:4], "little") if len(self.buf) >= 4 else None
                if w0 != XK.CPU_CHANGE_HEADER:
                    self._not_a_capture(w0)
                self.started = True
            if nbytes < 12 and not final and self.skipping is None:
                return nw_total
            if not final and self.skipping is None and self._head_incomplete():
                return nw_total  # the first window is not whole yet: no copy of what has come so far
            # a copy (the bytearray grows and shrinks under it); it becomes the windows' own storage
            words = np.frombuffer(bytes(self.buf[:nbytes]), np.uint32) if nbytes else np.zeros(0, np.uint32)
            n = words.shape[0]
            if self.skipping is not None:
                found, q = self._resync(words, 1 if self.skip_first else 0, final)
                self.skip_first = False
                del words
                self._consume(4 * q)
                if final and not found:
                    self.buf.clear()
                if not found:
                    return nw_total
                continue
            r = XK.walk_windows(words, 0, n, D.MAX_CPU, D.MAX_WINDOW_BYTES, False, n)
            pos, end, cpu, status, spos = r[0], r[1], r[2], int(r[6]), int(r[7])
            done = int(end[-1]) if pos.size else 0
            if pos.size:
                wcopy = words[:done] if done * 4 > nbytes // 2 else words[:done].copy()
                del words
                self._consume(4 * done)
                nw_total += pos.size
                if self._windows(wcopy, pos, end, cpu.astype(np.int64)):
                    return nw_total  # truncate: damage met
                continue
            if status == XK.OK:  # nothing there yet
                if final:
                    self._tail(words, n)
                    del words
                    self.buf.clear()
                return nw_total
            waiting = status in (XK.E_TRUNCATED_HEADER, XK.E_WINDOW_PAST_EOF)
            if waiting and not final:
                return nw_total
            # damage at words[spos] (spos is 0 here: the walk stops at the first bad header)
            msg = D._message(status, words, spos, len(self.buf))
            off = self.base + 4 * spos
            if final and waiting and self.config.decode.tolerance == "truncate":
                self._damage(off, self.size - off, msg)
                self.stopped = True
                return nw_total
            self._bad(off, msg)
            if self.stopped:
                return nw_total
            self.skipping = (off, msg)
            self.skip_first = True
            del words

    def _head_incomplete(self) -> bool:
        """The buffer starts with a plausible CPU_CHANGE header whose window has not all arrived (a big window coming
        in small reads is then not copied again at every read)."""
        from tracelens.parsers.xentrace import _kernels as XK
        from tracelens.parsers.xentrace import decode as D

        b = self.buf
        if int.from_bytes(b[0:4], "little") != XK.CPU_CHANGE_HEADER:
            return False
        cpu, size = int.from_bytes(b[4:8], "little"), int.from_bytes(b[8:12], "little")
        if cpu >= D.MAX_CPU or size % 4 or size > D.MAX_WINDOW_BYTES:
            return False  # damage: the walk reports it
        return 12 + size > len(b)

    def _tail(self, words, n):
        """The end of the input with whole windows only: stray bytes after the last record are damage."""
        stray = len(self.buf) - 4 * n
        if stray:
            off = self.base + 4 * n
            if self.config.decode.tolerance == "strict":
                self._error(off, f"file ends with {stray} stray byte(s) after the last record: truncated capture")
            if self.config.decode.tolerance == "skip":
                self._damage(off, stray, "stray bytes after the last record: truncated capture")
            else:
                self._damage(off, stray, f"file ends with {stray} stray byte(s) after the last record: truncated "
                                         "capture")


    def _not_a_capture(self, w0):
        from tracelens.detect import not_a
        from tracelens.errors import FormatError

        what = f"{len(self.buf)} byte(s)" if w0 is None else f"0x{w0:08x}"
        hint = not_a(self.name, "capture", bytes(self.buf[:4096]))  # a dump, a compressed file: what to run instead
        raise FormatError(self.name, 0, f"not a xentrace capture: {hint}" if hint else
                          "not a xentrace capture: a capture starts with a CPU_CHANGE record (0x2001f003), this "
                          f"input starts with {what}")

    def _bad(self, off: int, msg: str):
        tol = self.config.decode.tolerance
        if tol == "strict":
            self._error(off, msg)
        if tol == "truncate":
            self._damage(off, None, msg)  # its length is known at the end
            self.stopped = True

    def _damage(self, off, length, msg):
        from tracelens.parsers.xentrace.decode import Damage

        self.damage.append(Damage(off, length, msg))

    def _resync(self, words, start, final) -> tuple[bool, int]:
        """Tolerance "skip": (found, q): the word index q of the next plausible window header at or after ``start``
        (the skipped range becomes one Damage, as decode.scan records it); without one in the bytes so far, how
        many words can be dropped while waiting for more."""
        from tracelens.parsers.xentrace import _kernels as XK
        from tracelens.parsers.xentrace import decode as D

        n = words.shape[0]
        cand = (np.flatnonzero(words[start:] == XK.CPU_CHANGE_HEADER) + start).tolist() if n > start else []
        for q in cand:
            code = XK._window_problem(words, q, n, D.MAX_CPU, D.MAX_WINDOW_BYTES)
            if code == XK.OK:
                self._end_skip(self.base + 4 * q)
                return True, q
            if code in (XK.E_WINDOW_PAST_EOF, XK.E_TRUNCATED_HEADER) and not final:
                return False, q  # may be a whole window once the rest arrives: keep it
        if final:
            self._end_skip(self.base + 4 * n)
            self._tail(words, n)
            return False, n
        return False, max(start, n - 2)  # a header cut after its first word(s) may still come

    def _end_skip(self, end_off: int):
        off, msg = self.skipping
        self.skipping = None
        self._damage(off, end_off - off, msg)

    def _consume(self, nbytes: int):
        del self.buf[:nbytes]
        self.base += nbytes

    # -- arrival: pass 1 and resume candidates ----------------------------------------------------------------

    def _windows(self, words, pos, end, cpu) -> bool:
        """Pass 1 over whole windows that arrived; returns True when truncation stopped the analysis."""
        from tracelens.parsers.xentrace import _kernels as XK
        from tracelens.parsers.xentrace import decode as D

        base_w = (self.base - 4 * int(end[-1])) // 4  # self.base moved past these windows already
        nrec, bad = XK.count_records(words, pos, end)
        vend = np.where(bad >= 0, bad, end)
        stop = False
        badw = np.flatnonzero(bad >= 0)
        if badw.size:
            tol = self.config.decode.tolerance
            b0 = int(badw[0])
            msg = D._message(XK.E_RECORD_CROSSES_WINDOW, words, int(bad[b0]), 4 * words.shape[0])
            off = 4 * (base_w + int(bad[b0]))
            if tol == "strict":
                self._error(off, msg)
            if tol == "truncate":
                keep = b0 + 1
                pos, end, cpu, vend = pos[:keep], end[:keep], cpu[:keep], vend[:keep]
                self._damage(off, None, msg)
                self.stopped = True
                stop = True
            else:
                for i in badw.tolist():
                    b = int(bad[i])
                    self._damage(4 * (base_w + b), 4 * int(end[i] - b),
                                 D._message(XK.E_RECORD_CROSSES_WINDOW, words, b, 4 * words.shape[0]))
        sel = self.sel
        nparts = len(sel.parts)
        sel.chunk(words, pos, vend, cpu)
        part = None
        if len(sel.parts) > nparts:
            part = sel.parts.pop()
            part["off"] = part["off"] + 4 * base_w
            self.rows_parts.append(part)
        tsc0, key0, state0, grants, nwin = sel.windows.pop()
        self._drain_ids(words, pos, nwin)
        self.windows_total += pos.size
        # K after each window: the next window of its pCPU starts there; the last ones end at the pCPU's K
        end_key = np.empty(pos.size, np.uint64)
        nxt = {}
        for i in range(pos.size - 1, -1, -1):
            k = int(cpu[i])
            end_key[i] = nxt[k] if k in nxt else sel.st_key[k]
            nxt[k] = key0[i]
        for k in np.unique(cpu).tolist():
            self.cpus.add(k)
            self.last_seen[k] = self.size
        if self.c.w:  # records below the committed watermark: a pCPU that held nothing back sent them late
            w = np.uint64(self.c.w)
            k0 = key0.astype(np.uint64)
            self.late_windows += int(((end_key < w) | ((k0 > 0) & (k0 < w))).sum())
        b = _Batch(words, base_w, pos, vend, cpu, tsc0.astype(np.uint64), key0.astype(np.uint64), state0, grants,
                   end_key, np.ones(pos.size, bool))
        self.c.retained.append(b)
        self._update_queries(b, part)
        return stop

    def _drain_ids(self, words, pos, nwin):
        """Move pass 1's per-thread id tables into ``self.ids`` (exact counts of this batch when a table filled)."""
        from tracelens.parsers.xentrace import decode as D

        sel = self.sel
        batch = D._exact_ids(words, pos, nwin, self.name) if sel.hoverflow.any() else sel.table_ids()
        for key, c in batch.items():
            self.ids[key] = self.ids.get(key, 0) + c
        if len(self.ids) > D.MAX_DISTINCT_IDS:
            self._error(0, f"more than {D.MAX_DISTINCT_IDS:,} distinct event ids: not a plausible capture "
                           "(a real one has a few hundred)")
        sel.hkeys[:] = 0xFFFFFFFF
        sel.hcounts[:] = 0
        sel.hoverflow[:] = False

    def rows(self) -> dict:
        """Every rare record so far, in time order (K, pCPU, offset)."""
        if len(self.rows_parts) != 1:
            merged = {name: np.concatenate([p[name] for p in self.rows_parts]) if self.rows_parts
                      else S._alloc_rows(0)[name] for name in S._alloc_rows(0)}
            self.rows_parts = [S._sorted_rows(merged)]
        return self.rows_parts[0]

    @staticmethod
    def _cand_arrays(n):
        return {"found": np.zeros(n, np.bool_), "key": np.zeros(n, np.uint64), "cpu": np.zeros(n, np.int64),
                "off": np.zeros(n, np.int64), "tsc": np.zeros(n, np.uint64), "has": np.zeros(n, np.int64),
                "dom": np.zeros(n, np.int64), "vcpu": np.zeros(n, np.int64), "ev": np.zeros(n, np.int64),
                "n": np.zeros(n, np.int64), "d": np.zeros((n, 7), np.uint32)}

    def _query_set(self, rows) -> list:
        """The resume searches analyze_stream makes (stream._resume_candidates), from the shutdown and runstate
        rows alone (the only ones kexec_shutdowns and first_offline read)."""
        from tracelens.analysis.boundaries import first_offline, kexec_shutdowns

        ev = rows["ev"]
        keep = (ev == R.SCHED_SHUTDOWN) | (ev == R.SCHED_SHUTDOWN_CODE) | ((ev & SUBCLASS_ID_MASK) == R.SCHED_MIN)
        rows = {k: v[keep] for k, v in rows.items()}
        rec = S._records(rows, {}, _P1Stub())
        out = []
        for i, domid, _vcpu, _reason, _eff in kexec_shutdowns(rec):
            out.append((int(domid), int(rows["key"][i]), int(rows["cpu"][i]), int(rows["off"][i]), False))
            f = first_offline(rec, i + 1, domid)
            if f >= 0:
                out.append((int(domid), int(rows["key"][f]), int(rows["cpu"][f]), int(rows["off"][f]), True))
        return out

    def _update_queries(self, new_batch: _Batch, part: dict | None):
        if part is not None:
            ev = part["ev"]
            self.shutdowns += int((ev == R.SCHED_SHUTDOWN).sum())
            if ((ev == R.SCHED_SHUTDOWN) | (ev == R.SCHED_SHUTDOWN_CODE) | ((ev & SUBCLASS_ID_MASK) == R.SCHED_MIN)).any() \
                    and self.shutdowns:
                self.wanted = self._query_set(self.rows())
        if not self.shutdowns:
            return
        wanted = self.wanted
        new = [q for q in wanted if q not in self.queries]
        if new:
            start = len(self.queries)
            for j, q in enumerate(new):
                self.queries[q] = start + j
            grown = self._cand_arrays(len(self.queries))
            for k, v in self.cand.items():
                grown[k][: v.shape[0]] = v
            self.cand = grown
            # a new query looks at every window not committed yet (committed ones lie before it)
            self._scan(self.c.retained, [self.queries[q] for q in new])
        old = [self.queries[q] for q in wanted if q not in new]
        if old:
            self._scan([new_batch], old)

    def _scan(self, batches, which):
        from tracelens.analysis import _kernels as K

        if not which:
            return
        qs = sorted(self.queries.items(), key=lambda kv: kv[1])
        idx = np.asarray(which, np.int64)
        q_dom = np.array([qs[i][0][0] for i in which], np.int64)
        q_key = np.array([qs[i][0][1] for i in which], np.uint64)
        q_cpu = np.array([qs[i][0][2] for i in which], np.int64)
        q_off = np.array([qs[i][0][3] for i in which], np.int64)
        q_incl = np.array([qs[i][0][4] for i in which], np.bool_)
        sub = {k: v[idx].copy() for k, v in self.cand.items()}
        for b in batches:
            o = np.flatnonzero(b.open)
            if not o.size:
                continue
            K.run_candidates(b.words, b.pos[o], b.vend[o], np.full(o.size, b.base, np.int64), b.cpu[o], b.tsc0[o],
                             b.key0[o], b.state0[o], q_dom, q_key, q_cpu, q_off, q_incl, sub["found"], sub["key"],
                             sub["cpu"], sub["off"], sub["tsc"], sub["has"], sub["dom"], sub["vcpu"], sub["ev"],
                             sub["n"], sub["d"])
        for k, v in sub.items():
            self.cand[k][idx] = v

    # -- the watermark and the commit ---------------------------------------------------------------------------

    def watermark(self) -> int:
        """The smallest K every pCPU has passed (pCPUs silent for ``stall_bytes`` of input excepted)."""
        if self.size < self.opts.startup_bytes:
            return 0
        sel = self.sel
        ks = [int(sel.st_key[k]) for k in self.cpus if self.size - int(self.last_seen[k]) < self.opts.stall_bytes]
        if not ks:
            ks = [int(sel.st_key[k]) for k in self.cpus] or [0]
            return max(ks)
        return min(ks)

    def _extra_rows(self, limit: int) -> dict | None:
        """The resume candidates found before K ``limit`` as rows (what stream._resume_candidates adds)."""
        if not self.queries:
            return None
        c = self.cand
        found = {}
        for q, i in self.queries.items():
            if c["found"][i] and int(c["key"][i]) < limit:
                found[(int(c["cpu"][i]), int(c["off"][i]))] = i
        if not found:
            return None
        extra = S._alloc_rows(len(found))
        for r, ((cpu, off), i) in enumerate(sorted(found.items())):
            extra["key"][r], extra["tsc"][r], extra["off"][r], extra["cpu"][r] = c["key"][i], c["tsc"][i], off, cpu
            extra["ev"][r], extra["n"][r], extra["has"][r] = c["ev"][i], c["n"][i], c["has"][i]
            extra["d"][r] = c["d"][i]
            extra["dom"][r], extra["vcpu"][r] = c["dom"][i], c["vcpu"][i]
        return extra

    def _rec(self, limit: int):
        """(rows, Records) of the rare records below K ``limit`` with the resume records found there, as
        analyze_stream builds them."""
        rows = self.rows()
        if limit < int(INF):
            keep = rows["key"] < np.uint64(limit)
            rows = {k: v[keep] for k, v in rows.items()}
        meta = self._meta(rows)
        p1 = self._p1()
        rec = S._records(rows, meta, p1)
        extra = self._extra_rows(limit)
        if extra is not None:
            seen = set(zip(rows["cpu"].tolist(), rows["off"].tolist()))
            new = np.array([(c, o) not in seen for c, o in zip(extra["cpu"].tolist(), extra["off"].tolist())],
                           bool)
            if new.any():
                rows = S._sorted_rows({k: np.concatenate([rows[k], extra[k][new]]) for k in rows})
                rec = S._records(rows, meta, p1)
        return rows, rec

    def _epochs(self, limit: int):
        """(Records, Epochs) below K ``limit``; a view right after a commit at the same watermark reuses the
        commit's (building the table and finding the boundaries is the costly part of both)."""
        from tracelens.analysis.boundaries import find_boundaries

        key = (limit, self.rows()["ev"].size, self.cand["found"].tobytes(), self.cand["key"].tobytes(),
               len(self.damage), int(self.sel.st_stats[:, 0].sum()), self.ended)
        if self._epochs_memo is None or self._epochs_memo[0] != key:
            _rows, rec = self._rec(limit)
            self._epochs_memo = (key, rec, find_boundaries(rec, user=list(self.config.boundaries)))
        return self._epochs_memo[1], self._epochs_memo[2]

    def _meta(self, rows) -> dict:
        from tracelens.parsers.xentrace import decode as D
        from tracelens.parsers.xentrace.catalog import parse_version

        version = parse_version(self.config.decode.xen_version)
        dr = None
        sel = (rows["ev"] == R.MEM_DECREASE_RESERVATION) & (rows["n"] >= 4)
        if sel.any():
            dr = (rows["d"][sel, 2], rows["d"][sel, 3])
        guess = D._layout(self.config.decode.xen_version, self.ids) if version is not None else S._guess(self.ids, dr)
        for d in self.damage:
            if d.length is None and self.ended:
                d.length = self.size - d.offset
        damage = sorted(self.damage, key=lambda d: d.offset)
        return {"tracelens.layout": {"label": guess.label, "version": guess.version, "reasons": guess.reasons},
                "tracelens.damage": [d.to_dict() for d in damage], "tracelens.source": self.name}

    def _p1(self):
        st = self.sel.st_stats
        timed = st[:, 5] > 0
        p = _P1Stub()
        p.records = int(st[:, 0].sum())
        p.first_tsc = int(self.sel.st_first[timed].min()) if timed.any() else 0
        p.last_tsc = int(st[:, 4].max())
        return p

    def _commit(self, c: _Commit, limit: int) -> None:
        """Commit, in ``c``, every retained window whose records all lie below K ``limit``, and feed the grant
        rows below the frontier to the ledger."""
        from tracelens.analysis import _kernels as K

        lim = np.uint64(min(limit, int(INF)))
        todo = [(b, np.flatnonzero(b.open & (b.end_key < lim) if limit < int(INF) else b.open))
                for b in c.retained]
        todo = [(b, o) for b, o in todo if o.size]
        if todo:
            _rec, ep = self._epochs(limit)
            csr = ep.csr()
            key = (csr[0].tobytes(), csr[1].tobytes(), csr[2].tobytes())
            if key != c.csr_key:  # new boundaries: epochs widen, cursors start again (_epoch_cursor self-corrects)
                c.csr_key = key
                n_ep = 1 + max((ep.count(d) for d in ep.by_dom), default=0)
                _widen(c.gs, n_ep)
                c.cursors = (K._dom_slots(csr[0]), np.zeros(csr[0].shape[0], np.int64),
                             np.zeros(csr[0].shape[0], np.int64))
            c.csr = csr
            for b, o in todo:
                g_start = np.zeros(o.size + 1, np.int64)
                np.cumsum(b.grants[o], out=g_start[1:])
                m = int(g_start[-1])
                g = {name: np.empty(m, dt) for name, dt in S._GRANT_ROWS}
                scratch = np.zeros((c.hc[0].shape[0], max(1, csr[0].shape[0])), np.int64)  # per-thread cursors
                K.stream_grants_hypercalls(b.words, b.pos[o], b.vend[o], np.arange(o.size, dtype=np.int64),
                                           b.cpu[o], b.tsc0[o], b.key0[o], b.state0[o], g_start[:-1], csr[1],
                                           csr[2], c.cursors[0], scratch, K.TABLE_IDS, K.TABLE_CAT, K.TABLE_NEED,
                                           g["key"],
                                           g["tsc"], g["cpu"], g["off"], g["mapper"], g["granter"], g["map"], *c.hc,
                                           *c.fold, self.limit, c.dropped, S._EVERY_DOMAIN)
                g["off"] += 4 * b.base
                if m and c is self.c:
                    self.late += int((g["key"] < np.uint64(c.w_fed)).sum())
                if c.pending is not None and c.pending["key"].size:
                    g = {k: np.concatenate([c.pending[k], g[k]]) for k in g}
                c.pending = g
                b.open[o] = False
            c.retained = [b for b in c.retained if b.open.any()]
        # grant rows are final below the frontier: no retained window (nor any still to come) starts before it
        front = min([limit] + [int(b.key0[b.open].min()) for b in c.retained])
        if c.pending is not None and c.pending["key"].size and c.csr is not None:
            g = c.pending
            order = np.lexsort((g["off"], g["cpu"], g["key"]))
            g = {k: v[order] for k, v in g.items()}
            cut = g["key"].size if front >= int(INF) else int(np.searchsorted(g["key"], np.uint64(front), "left"))
            S._feed_grants(c.gs, {k: v[:cut] for k, v in g.items()}, c.csr, c.cursors, self.sopts.series_limit)
            c.pending = {k: v[cut:] for k, v in g.items()}
        c.w_fed = max(c.w_fed, min(front, int(INF)))
        c.w = max(c.w, limit)

    def retained_bytes(self) -> int:
        return sum(b.words.nbytes for b in self.c.retained)

    def step(self) -> None:
        """Commit up to the watermark."""
        self._commit(self.c, self.watermark())

    # -- views ----------------------------------------------------------------------------------------------------

    def view(self, speculative: bool = False, final: bool = False):
        """The Analysis of what has been committed; ``speculative``: of a copy with everything that arrived
        committed (the state itself is left as it is); ``final``: commit everything (the input ended)."""
        from tracelens.analysis import analyze as A
        from tracelens.analysis import ledgers as L

        if final:
            self.ended = True
            if not self.stopped:
                self._frame(final=True)
            c = self.c
            limit = int(INF)
        elif speculative:
            c = self._copy()
            limit = int(INF)
        else:
            c = self.c
            limit = self.watermark()
        self._commit(c, limit)
        rec, ep = self._epochs(c.w if not (final or speculative) else int(INF))
        _widen(c.gs, 1 + max((ep.count(d) for d in ep.by_dom), default=0))
        grants = S._grant_ledger(c.gs, ep, self.sopts.top)
        hk, hcnt = _tables(c.hc)
        fk, fcnt = _tables(c.fold)
        hc = S._hypercalls(hk, hcnt, fk, fcnt, int(c.dropped.sum()), self.sopts.top)
        from tracelens.parsers.xentrace.catalog import parse_version

        balloon = L.balloon_ledger(rec, ep, xen_version=parse_version(self.config.decode.xen_version), hypercalls=hc)
        guest = L.guest_ledger(rec, ep)
        lost = R.lost_intervals(rec)
        sel = self.sel
        big = sel.big_irqs()
        p1 = self._p1()
        seen = np.flatnonzero(sel.dom_seen.any(axis=0))
        a = A.finish(rec, ep, grants, balloon, hc, guest, lost, dict(self.ids), seen, self.config,
                     path=self.name, records=p1.records,
                     vectors=L.vector_ledger(rec, sel.handled, big, int(sel.big[5].sum())),
                     first_tsc=p1.first_tsc, last_tsc=p1.last_tsc)
        a.sha256 = self.sha.hexdigest() if final else None
        return a

    def _copy(self) -> _Commit:
        c = self.c
        out = copy.copy(c)
        out.gs = copy.deepcopy(c.gs)
        out.hc = tuple(x.copy() for x in c.hc)
        out.fold = tuple(x.copy() for x in c.fold)
        out.dropped = c.dropped.copy()
        out.pending = None if c.pending is None else {k: v.copy() for k, v in c.pending.items()}
        out.cursors = tuple(x.copy() for x in c.cursors)
        out.retained = [copy.copy(b) for b in c.retained]
        for b in out.retained:
            b.open = b.open.copy()
        return out


class _P1Stub:
    records = 0
    first_tsc = 0
    last_tsc = 0


def _tables(t):
    keys, counts = [], []
    for i in range(t[0].shape[0]):
        used = t[1][i]
        keys.append(t[0][i][used])
        counts.append(t[2][i][used])
    return S._sum_keys(keys, counts)


def _widen(gs: S._GrantState, n_ep: int) -> None:
    """Give the ledger's per-epoch arrays ``n_ep`` columns (boundaries found since they were made)."""
    if n_ep <= gs.n_ep:
        return
    for name, arr in list(gs.arrays.items()):
        if arr.ndim == 2:
            fill = -1 if name in gs._INDEX else 0
            new = np.full((arr.shape[0], n_ep), fill, arr.dtype)
            new[:, : arr.shape[1]] = arr
            gs.arrays[name] = new
    gs.n_ep = n_ep


# -- events: differences between views ----------------------------------------------------------------------------


class _Differ:
    """Turns successive Analyses into events."""

    def __init__(self):
        self.boundaries: set = set()
        self.unsafe: set = set()
        self.findings: dict = {}
        self.lost: set = set()
        self.current: dict = {}  # guest -> (epoch, verdict) of its latest epoch in the last view
        self.outstanding: dict = {}  # (mapper, granter) -> grants mapped at the end of the last view

    def diff(self, a) -> list[tuple[str, dict]]:
        from tracelens.analysis.safety import lost_dict

        out = []
        self.outstanding = {(r["mapper"], r["granter"]): r["outstanding_at_end"] for r in a.grants.rows
                            if r.get("outstanding_at_end") and r.get("mapper") is not None}
        for r in a.safety:
            if r["epoch"] >= self.current.get(r["domid"], (-1, None))[0]:
                self.current[r["domid"]] = (r["epoch"], r.get("verdict"))
        for b in a.boundaries:
            k = (b.domid, b.epoch, b.kind, b.tsc)
            if k not in self.boundaries:
                self.boundaries.add(k)
                out.append((b.tsc, "boundary", b.to_dict()))
        for r in a.safety:
            for kind, tsc in sorted(r.get("unsafe", {}).items(), key=lambda kv: (kv[1] is None, kv[1] or 0)):
                if kind in ("grant_outstanding", "grant_ref_active", "pirq_bound") and r.get("boundary_kind") is None:
                    continue  # the live state of a running guest, not an operation: shown in status
                k = (r["domid"], r["epoch"], kind)
                if k in self.unsafe:
                    continue
                self.unsafe.add(k)
                out.append((tsc or 0, "unsafe", {"domid": r["domid"], "epoch": r["epoch"], "kind": kind, "tsc": tsc,
                                                 "first": kind == r.get("first_unsafe_kind"),
                                                 "verdict": r.get("verdict")}))
        now = {}
        for f in a.findings:
            d = f.to_dict()
            now[f.fingerprint] = d
            prev = self.findings.get(f.fingerprint)
            if prev is None:
                out.append((f.tsc or 0, "finding", dict(_finding_fields(d), change="raised")))
            elif prev != d:
                out.append((f.tsc or 0, "finding", dict(_finding_fields(d), change="changed",
                                                        evidence=d["evidence"])))
        for fp, d in self.findings.items():
            if fp not in now:
                out.append((d.get("tsc") or 0, "finding", dict(_finding_fields(d), change="withdrawn")))
        self.findings = now
        inconclusive = [{"domid": r["domid"], "epoch": r["epoch"]} for r in a.safety
                        if r.get("verdict") == "inconclusive"]
        for i in range(a.lost.shape[0]):
            d = lost_dict(a.lost, a.lost_info, i)
            k = tuple(sorted((x, str(y)) for x, y in d.items()))
            if k in self.lost:
                continue
            self.lost.add(k)
            out.append((d.get("tsc") or 0, "lost", dict(d, inconclusive=inconclusive)))
        out.sort(key=lambda x: (x[0] if isinstance(x[0], int) else 0))
        return [(t, d) for _, t, d in out]


def _finding_fields(d: dict) -> dict:
    return {k: d[k] for k in ("rule", "severity", "domid", "epoch", "object", "tsc", "fingerprint", "message")}


# -- the loop ---------------------------------------------------------------------------------------------------


def watch(source="-", config=None, opts: WatchOptions | None = None, *, stop=None, on_open=None):
    """Follow a capture as it is written and yield :class:`Event` objects as its analysis changes; the last one is
    ``end``, whose ``analysis`` is the final Analysis object (``data["findings"]``: as in the JSON report).

    ``source``: ``"-"`` (standard input), a path (a regular file is followed as it grows, a FIFO read until its
    writer closes it) or a binary file object. ``config``: an AnalysisConfig. ``stop``: a callable; when it
    returns True the watch ends as if the input had ended (SIGINT in the CLI). ``on_open()`` is called once the
    input is open (a FIFO's open waits for its writer)."""
    from tracelens.analysis.report import to_json_obj

    from tracelens.options import AnalysisConfig

    opts = opts or WatchOptions()
    config = config or AnalysisConfig()
    src = _Input(source, opts)
    if on_open is not None:
        on_open()
    from tracelens._jit import WATCH_KERNELS, first_run

    size = 1 << 40  # a stream: as large as they come
    if src.follow:
        size = max(os.fstat(src.fd).st_size, 64 << 20)  # a file that grows
    jit = first_run(size, kernels=WATCH_KERNELS)  # a cold cache says so, kernel by kernel, before the data waits
    jit.__enter__()
    eng = Engine(config, opts, name=src.name)
    differ = _Differ()

    def event(typ, d, at):
        if config.decode.cpu_hz and isinstance(d.get("tsc"), int):
            d = dict(d, time_s=round((d["tsc"] - eng._p1().first_tsc) / config.decode.cpu_hz, 9))
        return Event(typ, d, at)

    t0 = time.monotonic()
    last_byte = t0
    last_view = 0.0
    view_cost = 0.0
    last_status = t0
    dirty = False  # windows arrived since the last view
    spec_shown = False
    records_at = (t0, 0)
    try:
        while True:
            if stop is not None and stop():
                break
            data = src.read(opts.quiet / 2)
            now = time.monotonic()
            if data is None:
                break
            if data:
                last_byte = now
                if eng.feed(data):
                    dirty = True
                    spec_shown = False
                    if eng.retained_bytes() > opts.commit_bytes:
                        eng.step()  # commit as the data comes, so that what waits for the watermark stays small
            quiet = now - last_byte >= opts.quiet
            starting = eng.size < opts.startup_bytes  # nothing committed yet: views commit a copy
            if (dirty or (quiet and not spec_shown and eng.c.retained)) and \
                    now - last_view >= max(opts.view_min, 4 * view_cost):
                t1 = time.monotonic()
                if quiet or starting:
                    a = eng.view(speculative=True)
                    spec_shown = True
                else:
                    eng.step()
                    a = eng.view()
                dirty = False
                view_cost = time.monotonic() - t1
                last_view = time.monotonic()
                for typ, d in differ.diff(a):
                    yield event(typ, d, last_view - t0)
            if opts.status_every is not None and now - last_status >= opts.status_every:
                recs = eng._p1().records
                rate = (recs - records_at[1]) / max(now - records_at[0], 1e-9)
                records_at = (now, recs)
                last_status = now
                yield Event("status", _status(eng, rate, differ), now - t0)
        a = eng.view(final=True)
        recomputed = False
        if (eng.late or eng.late_windows) and src.follow:
            # windows came after later records had been committed: the file is whole now, analyse it again
            from tracelens.analysis.analyze import analyze

            a = analyze(src.name, config)
            recomputed = True
        for typ, d in differ.diff(a):
            yield event(typ, d, time.monotonic() - t0)
        obj = to_json_obj(a)
        yield Event("end", {"findings": obj["findings"], "summary": obj, "analysis": a,
                            "watch": {"bytes": eng.size, "windows": eng.windows_total, "late_records": eng.late,
                                      "late_windows": eng.late_windows, "recomputed": recomputed,
                                      "exact": recomputed or not (eng.late or eng.late_windows),
                                      "seconds": round(time.monotonic() - t0, 3)}}, time.monotonic() - t0)
    finally:
        jit.__exit__(None, None, None)
        src.close()


def gate_verdict(end: Event, name: str, config=None):
    """The gate's verdict (a tracelens.gate.evaluate.CaptureResult; ``exit_code``) on the ``end`` event of a watch,
    under ``config`` (a GateConfig: policy, fail_on; ``tracelens watch --gate``). Windows that arrived after later
    records had been analysed make it inconclusive: the live analysis may differ from the finished capture's."""
    from tracelens.gate.evaluate import judge, resolve_policy
    from tracelens.options import GateConfig

    _path, policy, fail_on = resolve_policy(config or GateConfig())
    res = judge(end.data["analysis"], name, policy, fail_on)
    w = end.data["watch"]
    if not w["exact"]:  # (a followed file was analysed again at the end: exact)
        res.inconclusive.append(f"{w['late_windows']} window(s) arrived after later records had been analysed: the "
                                "live analysis may differ from the finished capture's")
    return res


def _status(eng: Engine, rate: float, differ: _Differ) -> dict:
    """The status event: progress, the guests' epochs found unsafe so far, and the grants each backend holds now
    (a state, not an unsafe operation: it becomes one if the guest kexecs with them mapped)."""
    out = differ.outstanding
    backends = [{"mapper": m, "granter": g, "outstanding": n} for (m, g), n in sorted(out.items())]
    unsafe = sorted({(d, e) for d, e, _k in differ.unsafe})
    guests = {"safe": 0, "unsafe": 0, "inconclusive": 0}
    unsafe_set = set(unsafe)
    for d, (e, verdict) in differ.current.items():  # each guest's running kernel, in the kexec_is_safe sense
        key = "unsafe" if (d, e) in unsafe_set else ("inconclusive" if verdict in ("inconclusive", "not covered")
                                                       else "safe")
        guests[key] += 1
    return {"bytes": eng.size, "records": eng._p1().records, "records_per_s": round(rate),
            "watermark_tsc": eng.c.w or None, "retained_windows": sum(int(b.open.sum()) for b in eng.c.retained),
            "guests": guests, "unsafe_epochs": len(unsafe), "unsafe": [{"domid": d, "epoch": e} for d, e in unsafe],
            "outstanding": backends}
