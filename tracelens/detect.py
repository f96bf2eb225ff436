"""Format detection from a file's first bytes (never from its name)."""

from __future__ import annotations

import os
import struct

from tracelens.errors import FormatError

XENTRACE = "xentrace"
#: every dump format family is reported by tracelens.parsers.vmcore.dump_kind(); these are the names it returns
DUMP_KINDS = ("elf-vmcore", "kdump", "flattened", "xc_core")

#: the first word of every capture: the decoder's CPU_CHANGE_HEADER (parsers/xentrace/_kernels.py, from the catalog),
#: written out here because every command detects and the catalog is not loaded for that (a test holds them equal)
_CPU_CHANGE_HEADER = 0x2001F003


def open_input(path, what: str) -> int:
    """A read-only descriptor of the regular file ``path``, or a FormatError naming it (``what``: e.g. "a dump").
    Every reader opens its input here: a directory is "is a directory" (os.open succeeds on one, and mmap then
    failed with "Invalid argument"), and a FIFO, socket or device is refused before anything waits on it (opening
    a FIFO blocks until a writer comes; reading one never ends). It also records the input for the error choke
    point (tracelens.errors.run_guarded names it when an allocation fails)."""
    import stat

    from tracelens import errors

    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # O_NONBLOCK: a FIFO's open does not wait
    except IsADirectoryError:
        raise FormatError(path, None, f"is a directory, not {what}") from None
    except OSError as e:
        raise FormatError(path, None, f"cannot open: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise FormatError(path, None, f"is a directory, not {what}")
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise FormatError(path, None, f"is {kind}, not a regular file: tracelens reads {what} from a file "
                                          "(save the stream to a file first)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    errors.current_input = path
    return fd


def read_head(path, what: str, size: int = 4096) -> bytes:
    """The first ``size`` bytes of ``path``, or a FormatError naming the file (``what``: e.g. "a dump")."""
    path = os.fspath(path)
    fd = open_input(path, what)
    try:
        head = os.read(fd, size)
    except OSError as e:
        raise FormatError(path, None, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if not head:
        raise FormatError(path, 0, f"empty file: not {what}")
    return head


def _kind(head: bytes) -> str | None:
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == _CPU_CHANGE_HEADER:
        return XENTRACE
    from tracelens.parsers.vmcore import dump_kind

    return dump_kind(head)


def sniff(path) -> str:
    """Return ``"xentrace"`` or one of the dump kinds for the file at ``path``; raise FormatError otherwise."""
    path = os.fspath(path)
    head = read_head(path, "a xentrace capture or a dump")
    kind = _kind(head)
    if kind:
        return kind
    hint = not_a(path, "either", head)
    raise FormatError(path, 0, f"not a xentrace capture nor a dump: {hint}" if hint else
                      "not a xentrace capture (it must start with a CPU_CHANGE record 0x2001f003) nor a known dump "
                      "format (ELF vmcore, kdump-compressed, makedumpfile flattened, xl dump-core)")


#: how the dump kinds are named to a user
DUMP_NAMES = {"elf-vmcore": "an ELF vmcore", "kdump": "a kdump-compressed dump",
              "flattened": "a makedumpfile flattened dump", "xc_core": "an xl dump-core file"}
#: compressed files (magic bytes, format, the command that undoes it): tracelens does not read inside them
_COMPRESSED = ((b"\x28\xb5\x2f\xfd", "zstd", "zstd -d"), (b"\x1f\x8b", "gzip", "gunzip"),
               (b"\xfd7zXZ\x00", "xz", "xz -d"), (b"BZh", "bzip2", "bunzip2"), (b"\x04\x22\x4d\x18", "lz4", "lz4 -d"))


def _compressed_hint(path, head: bytes) -> str | None:
    for magic, fmt, undo in _COMPRESSED:
        if head.startswith(magic):
            return (f"a {fmt}-compressed file: decompress it first ({undo} {os.path.basename(os.fspath(path))}) and "
                    "give tracelens the result")
    return None


def not_a(path, wanted: str, head: bytes | None = None) -> str | None:
    """What the file at ``path`` is when it is not what a command reads (``wanted``: ``"capture"``, ``"dump"`` or
    ``"either"``), and what to run instead, as the tail of an error message; None when the bytes say nothing useful.
    ``head``: its first bytes, when the caller has them."""
    if head is None:
        try:
            head = read_head(path, "a file")
        except FormatError:
            return None
    hint = _compressed_hint(path, head)
    if hint:
        return hint
    kind = _kind(head)
    if wanted == "capture" and kind in DUMP_NAMES:
        return (f"this is {DUMP_NAMES[kind]}; dump commands read it (tracelens info, dmesg, pages, read), and "
                "analyze and gate take it beside its capture: tracelens analyze CAPTURE --vmcore DUMP")
    if wanted == "dump" and kind == XENTRACE:
        return ("this is a xentrace capture; capture commands read it (tracelens info, events, decode, analyze, "
                "gate), and a dump of its guest goes beside it: tracelens analyze CAPTURE --vmcore DUMP")
    if head[:4] == b"\x7fELF" and kind is None:
        return "an ELF file that is not a core dump (a program, a library or a kernel image such as vmlinux)"
    return None


#: largest policy, baseline or catalog file read (a real one is a few KiB; a baseline of 100,000 fingerprints is
#: about 20 MiB)
MAX_CONFIG_BYTES = 64 << 20


def read_capped(path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a small text file (policy, baseline, catalog), reading at most ``limit`` bytes: OSError as
    ``open`` raises it, ValueError when the file holds more (``baseline = "/dev/zero"`` read for ever)."""
    with open(os.fspath(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit >> 20} MiB: not a tracelens configuration file")
    return data
