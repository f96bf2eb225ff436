"""Output files: never one of the inputs, written atomically beside the target, created as ``open()`` would.

Every file a command writes goes through :func:`atomic_output` (documented in docs/exit-codes.md, "Output files"):

* The data is written to a *part file* in the target's directory, ``.<target name>.tracelens-<pid>-<host>-<random>.part``
  (``<host>``: 8 hex digits of a hash of the host name), which replaces the target in one rename only when the
  writing succeeded; on any failure it is removed.
* The part file is created the way ``open(target, "w")`` creates a file: mode 0666 minus the umask (and whatever
  the directory's default ACL says), or, when the target is an existing regular file, the target's permission bits
  (``open()`` keeps them).
* SIGTERM while part files are open removes them, then the process dies of SIGTERM as it would have (only when the
  writing happens in the main thread, where Python runs signal handlers; the removal waits until the interpreter
  regains control from a long native call).
* SIGKILL cannot be caught: the next :func:`atomic_output` of the same target removes that target's part files left
  by processes of this host that no longer exist. Part files of live processes, of other hosts (a shared file
  system) and of other targets are left alone.

:func:`check_outputs` is called by every command before it reads anything: an output path that resolves to one of
the command's inputs (the same path, a symlink to it, or a hard link: same device and inode) is a usage error
(exit 2) and nothing is written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import threading
from contextlib import contextmanager
from typing import Iterable

from tracelens.errors import UsageError

PART_INFIX = ".tracelens-"
PART_SUFFIX = ".part"
_NAME_BYTES = 200  # the target name's share of a part file's name (NAME_MAX is 255 bytes)
_PART_RE = re.compile(r"(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})-[0-9a-z]+")


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

    ``outputs``: (option or parameter name, path or None) pairs, e.g. ``[("-o", output)]``. ``inputs``: the paths the command
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
        params = () if option.startswith("-") or option.isupper() else (option,)  # a library parameter name
        raise UsageError(f"{option} {out} {how} the input {hit}: refusing to overwrite an input", *params)


# -- part files --------------------------------------------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _stem(name: str) -> str:
    """The target name as it appears in its part files' names (cut to fit NAME_MAX)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= _NAME_BYTES:
        return name
    return raw[:_NAME_BYTES].decode("utf-8", "ignore")


def part_prefix(path) -> str:
    """The name every part file of target ``path`` starts with (``.<name>.tracelens-``)."""
    return "." + _stem(os.path.basename(os.fspath(path))) + PART_INFIX


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: someone else's live process
    return True


def clean_stale_parts(path) -> list[str]:
    """Remove the part files of target ``path`` whose writer (a process of this host) no longer exists. Returns
    the removed paths."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    prefix = part_prefix(path)
    host = _host_tag()
    removed = []
    try:
        entries = [e.name for e in os.scandir(d) if e.name.startswith(prefix) and e.name.endswith(PART_SUFFIX)]
    except OSError:
        return removed
    for name in entries:
        m = _PART_RE.fullmatch(name[len(prefix):-len(PART_SUFFIX)])
        if not m or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            os.unlink(os.path.join(d, name))
            removed.append(os.path.join(d, name))
        except OSError:
            pass
    return removed


def _create_part(path: str, d: str) -> str:
    """Create an empty part file for target ``path`` in directory ``d`` with the mode open() would give it."""
    prefix = part_prefix(path)
    tag = f"{os.getpid()}-{_host_tag()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(d, f"{prefix}{tag}-{secrets.token_hex(4)}{PART_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask, as for open(path, "w")
        except FileExistsError:
            continue
        try:
            st = os.stat(path)
            if stat.S_ISREG(st.st_mode):  # open() of an existing file keeps its permission bits
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o777)
        except OSError:
            pass
        finally:
            os.close(fd)
        return tmp
    raise OSError(errno.EEXIST, "no free part file name")


# -- SIGTERM removes the part files of this process --------------------------------------------------------------
_live: set[str] = set()
_lock = threading.Lock()
_previous = None  # the SIGTERM disposition before ours, while ours is installed


def _on_sigterm(signum, frame):
    global _previous
    for p in list(_live):
        try:
            os.unlink(p)
        except OSError:
            pass
    _live.clear()
    prev, _previous = _previous, None
    signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
    if callable(prev):
        prev(signum, frame)
        return
    os.kill(os.getpid(), signal.SIGTERM)  # die of SIGTERM, as without us


def _track(tmp: str) -> None:
    global _previous
    with _lock:
        _live.add(tmp)
        if threading.current_thread() is not threading.main_thread() or _previous is not None:
            return
        try:
            cur = signal.getsignal(signal.SIGTERM)
            if cur is signal.SIG_IGN or cur is None:  # ignored, or set outside Python: leave it
                return
            signal.signal(signal.SIGTERM, _on_sigterm)
            _previous = cur
        except (ValueError, OSError):
            pass


def _untrack(tmp: str) -> None:
    global _previous
    with _lock:
        _live.discard(tmp)
        if _live or _previous is None or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, _previous)
        except (ValueError, OSError):
            pass
        _previous = None


@contextmanager
def atomic_output(path):
    """Yield the path of a part file beside ``path``; it replaces ``path`` only if the block succeeds.

    Before creating it, part files of the same target left by dead processes (SIGKILL) are removed."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise UsageError(f"cannot write {path}: directory {d} does not exist")
    clean_stale_parts(path)
    try:
        tmp = _create_part(path, d)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    _track(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        _untrack(tmp)
