"""The SHA-256 of a capture, computed on a thread of its own from the moment the command knows the path.

Reports name the capture they judge by its SHA-256 (``capture.sha256`` in JSON, ``hashes`` in SARIF, the gate's
JSON lines and JUnit properties). Hashing a GiB takes about 0.8 s of one core here (OpenSSL, through hashlib, which
releases the GIL while it hashes). The analysis' first moments are single-threaded (importing numba, loading the
kernels), so a command that starts the digest before them (``prefetch``) gets most of it done on the core that
would otherwise wait; the analysis then picks the running digest up (``take``) instead of hashing again, and takes
its result last. The hashing thread runs at a lower priority (``NICE``), so the analysis' own threads win a core
whenever both want one.

The file is read with ``pread`` into one reused buffer: no mapping, so the digest adds a fixed 16 MiB to the
process' resident memory whatever the capture's size. Only regular files are hashed (a FIFO or a device gives no
digest; the analysis reports what it makes of them). The digest covers the file's first ``size`` bytes, its size
when hashing started; the analysis takes it only when it analysed that many bytes.

Standard library only: it runs before the heavy imports.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading

CHUNK = 16 << 20  # bytes per read; hashing one takes ~14 ms, so waiting for the GIL between reads (up to 5 ms) costs little


def _hash(path, stop: threading.Event | None = None) -> tuple[int | None, str | None]:
    """(size, hex SHA-256) of the regular file at ``path``, read with ``pread`` into one reused buffer; (size,
    None) when ``stop`` is set first or the file shrinks meanwhile, (None, None) when it is no regular file or cannot
    be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError, TypeError):
        return None, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device: nothing to hash (and no read that could block)
            return None, None
        size = st.st_size
        h = hashlib.sha256()
        buf = memoryview(bytearray(min(CHUNK, max(size, 1))))
        off = 0
        while off < size:
            if stop is not None and stop.is_set():
                return size, None
            n = os.preadv(fd, [buf[: min(len(buf), size - off)]], off)
            if n <= 0:  # the file shrank: no digest of a size it no longer has
                return size, None
            h.update(buf[:n])
            off += n
        return size, h.hexdigest()
    except OSError:
        return None, None
    finally:
        os.close(fd)


def sha256_file(path) -> str | None:
    """Hex SHA-256 of the regular file at ``path``, here and now; None when it is no regular file or unreadable."""
    return _hash(os.fspath(path))[1]


class Digest:
    """SHA-256 of the file at ``path``, on a daemon thread started at creation. As a context manager it cancels
    the hashing when the block fails (an error is reported at once, not after hashing the rest of a big file)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.size: int | None = None
        self._hex: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracelens-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _lower_priority()
        try:
            self.size, self._hex = _hash(self.path, self._stop)
        finally:
            self._ready.set()

    def __enter__(self) -> Digest:
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        if exc_type is not None:
            self.cancel()
        return False

    def result(self, size: int | None = None) -> str | None:
        """The hex digest (waiting for it), or None: not a regular file, unreadable, cancelled, or (with ``size``)
        not of a file of ``size`` bytes."""
        self._ready.wait()
        if size is not None and self.size != size:
            return None
        return self._hex

    def cancel(self) -> None:
        """Stop hashing (an error is reported at once, not after hashing the rest of a big file)."""
        self._stop.set()


NICE = 10  # how much lower the hashing thread's priority is than the process's


def _lower_priority() -> None:
    """Give the calling thread a lower scheduling priority (Linux: a thread's own nice value), so that the
    analysis' threads win a core over the hash whenever both want it; the hash then runs in the moments a core is
    free (the start-up, the single-threaded steps between passes) and the analysis waits for it only at the end.
    Alone on a core it runs at full speed, whatever its nice value."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: the same digest, at the usual priority
        pass


_started: dict[str, Digest] = {}


def _key(path) -> str | None:
    try:
        return os.path.realpath(os.fspath(path))
    except (TypeError, ValueError):
        return None


def prefetch(path) -> None:
    """Start hashing ``path`` now, for the analysis to :func:`take` later in this process."""
    key = _key(path)
    if key is not None and key not in _started:
        _started[key] = Digest(path)


def take(path) -> Digest:
    """The digest of ``path`` started by :func:`prefetch`, else one started now."""
    key = _key(path)
    started = _started.pop(key, None) if key is not None else None
    return started if started is not None else Digest(path)
