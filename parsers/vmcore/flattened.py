"""makedumpfile flattened format (``-F``; QEMU ``kdump-*`` before 8.2), read in place (shared/spec/vmcore.md §2.12).

The record index lives in ``source.FlattenedSource``; this module picks the reader for the payload, which is a
kdump-compressed file or an ELF vmcore (``makedumpfile -E -F``) once reassembled. A stream that ends without the
end marker is an incomplete dump: what its records hold is read, the rest is lost.
"""

from __future__ import annotations

from tracelens.errors import FormatError

from . import constants as C
from .source import FlattenedSource


def open_flattened(path, **kw):
    src = FlattenedSource(path)
    head = src.pread(0, 8)
    if head[:8] in (C.KDUMP_SIGNATURE, C.DISKDUMP_SIGNATURE):
        from .kdump import KdumpDump

        return KdumpDump(src, **kw)
    if head[:4] == C.ELF_MAGIC:
        from .elf import ElfDump

        return ElfDump(src, **kw)
    if not src.covered(0, 8):
        raise FormatError(src.path, C.FLAT_HEADER_SIZE, "the flattened stream has no record for offset 0 (the payload header): incomplete stream")
    raise FormatError(src.path, C.FLAT_HEADER_SIZE, "the flattened payload is neither kdump-compressed nor ELF")
