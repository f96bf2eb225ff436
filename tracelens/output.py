"""Atomic output files: write to a temporary file beside the target, rename on success, remove on failure."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

from tracelens.errors import UsageError


@contextmanager
def atomic_output(path):
    """Yield a temporary path in the target's directory; it replaces ``path`` only if the block succeeds."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise UsageError(f"cannot write {path}: directory {d} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tracelens-", suffix=".part", dir=d)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
