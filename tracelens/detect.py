"""Format detection from a file's first bytes (never from its name)."""

from __future__ import annotations

import os
import struct

from tracelens.errors import FormatError

XENTRACE = "xentrace"
#: every dump format family is reported by tracelens.parsers.vmcore.sniff(); these are the names it returns
DUMP_KINDS = ("elf-vmcore", "kdump", "flattened", "xc_core")

_CPU_CHANGE_HEADER = 0x2001F003


def read_head(path, what: str, size: int = 4096) -> bytes:
    """The first ``size`` bytes of ``path``, or a FormatError naming the file (``what``: e.g. "a dump")."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(size)
    except IsADirectoryError:
        raise FormatError(path, None, f"is a directory, not {what}") from None
    except OSError as e:
        raise FormatError(path, None, f"cannot open: {e.strerror}") from None
    if not head:
        raise FormatError(path, 0, f"empty file: not {what}")
    return head


def sniff(path) -> str:
    """Return ``"xentrace"`` or one of the dump kinds for the file at ``path``; raise FormatError otherwise."""
    path = os.fspath(path)
    head = read_head(path, "a xentrace capture or a dump")
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == _CPU_CHANGE_HEADER:
        return XENTRACE
    try:
        from tracelens.parsers.vmcore import sniff as sniff_dump
    except ImportError:  # pragma: no cover - the vmcore package is part of every install
        sniff_dump = None
    if sniff_dump is not None:
        kind = sniff_dump(head)
        if kind:
            return kind
    raise FormatError(
        path,
        0,
        "not a xentrace capture (it must start with a CPU_CHANGE record 0x2001f003) nor a known dump format "
        "(ELF vmcore, kdump-compressed, makedumpfile flattened, xl dump-core)",
    )
