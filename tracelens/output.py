"""Atomic output files: write to a temporary file beside the target, rename on success, remove on failure.

:func:`check_outputs` is called by every command before it reads anything: an output path that resolves to one of
the command's inputs (the same path, a symlink to it, or a hard link: same device and inode) is a usage error
(exit 2) and nothing is written.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterable

from tracelens.errors import UsageError


# -- outputs are never inputs ------------------------------------------------------------------------------------
def _flat(paths) -> list[str]:
    out = []
    for p in paths:
        if p is None or p == "":
            continue
        if isinstance(p, (list, tuple)):
            out.extend(_flat(p))
        else:
            out.append(os.fspath(p))
    return out


def check_outputs(outputs: Iterable[tuple[str, object]], inputs: Iterable) -> None:
    """Raise :class:`UsageError` when an output path resolves to an input file.

    ``outputs``: (option name, path or None) pairs, e.g. ``[("-o", output)]``. ``inputs``: the paths the command
    reads (None and nested lists, e.g. the parts of a split dump, are fine). Resolving follows symlinks on both
    sides, and a hard link is the same file (same device and inode). Outputs that do not exist yet cannot be an
    input and pass."""
    seen: dict[tuple[int, int], str] = {}
    for p in _flat(inputs):
        try:
            st = os.stat(p)
        except OSError:
            continue  # the command reports unreadable inputs itself
        seen.setdefault((st.st_dev, st.st_ino), p)
    for option, out in outputs:
        if out is None or out == "":
            continue
        out = os.fspath(out)
        try:
            st = os.stat(out)
        except OSError:
            continue
        hit = seen.get((st.st_dev, st.st_ino))
        if hit is None:
            continue
        if os.path.abspath(out) == os.path.abspath(hit):
            how = "is"
        elif os.path.realpath(out) == os.path.realpath(hit):
            how = "resolves (through a symlink) to"
        else:
            how = "is a hard link to"
        raise UsageError(f"{option} {out} {how} the input {hit}: refusing to overwrite an input")


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
