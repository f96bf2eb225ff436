"""Linux crash dumps: ELF vmcore, makedumpfile kdump-compressed and flattened, Xen ``xl dump-core``.

The format facts live in shared/spec/vmcore.md; each module names the section it mirrors. Entry points:

* ``dump_kind(head)``: the dump kind from a file's first 4096 bytes (never from its name);
* ``open(path)``: a format reader (``dump.DumpReader``): ``info()``, ``pages()`` (the page index), ``notes_table()``,
  ``vmcoreinfo``, ``prstatus()``, ``read_phys()``, ``read_virt()``, ``dmesg()`` / ``kernel_log()``.
"""

from __future__ import annotations

import os

from tracelens.errors import FormatError

from . import constants as C
from .dump import CodecMissing, DumpReader, PageUnavailable

__all__ = ["dump_kind", "open", "DumpReader", "PageUnavailable", "CodecMissing"]


def dump_kind(head: bytes) -> str | None:
    """``"elf-vmcore"``, ``"kdump"``, ``"flattened"``, ``"xc_core"`` or None, from the first bytes of a file."""
    if head[:8] in (C.KDUMP_SIGNATURE, C.DISKDUMP_SIGNATURE):
        return "kdump"
    if head[:13] == C.FLAT_SIGNATURE + b"\0" or (head[:12] == C.FLAT_SIGNATURE and len(head) == 12):
        return "flattened"
    if head[:4] == C.ELF_MAGIC and len(head) < 64:
        return "elf-vmcore"  # a truncated ELF header: the reader says so
    if head[:4] == C.ELF_MAGIC and head[4] in (C.ELFCLASS32, C.ELFCLASS64):
        from .structs import ELF32_EHDR, ELF64_EHDR

        layout = ELF64_EHDR if head[4] == C.ELFCLASS64 else ELF32_EHDR
        if len(head) < layout.size:
            return None
        eh = layout.unpack(head)
        if eh["e_type"] != C.ET_CORE:
            return None
        if eh["e_phnum"] == 0 and eh["e_shnum"] > 0:
            return "xc_core"
        return "elf-vmcore"
    return None


def open(path, *, vmcoreinfo: bytes | str | None = None) -> DumpReader:  # noqa: A001 - the module's verb
    """Open a dump of any supported format (detected from its bytes). ``vmcoreinfo`` replaces the dump's own
    VMCOREINFO (a text with KEY=VALUE lines) for dumps that lack one or carry a wrong one. A list of paths opens
    the parts of a ``makedumpfile --split`` set as one dump, in any order (a list of one path is that file alone);
    parts that do not form one complete set raise FormatError naming the file and byte offset."""
    if isinstance(path, (list, tuple)):
        paths = [os.fspath(p) for p in path]
        if len(paths) == 1:
            return open(paths[0], vmcoreinfo=vmcoreinfo)
        return _open_split_set(paths, vmcoreinfo)
    from tracelens.detect import read_head

    path = os.fspath(path)
    head = read_head(path, "a dump")
    kind = dump_kind(head)
    if kind == "kdump":
        from .kdump import KdumpDump
        from .source import FileSource

        return KdumpDump(FileSource(path), vmcoreinfo=vmcoreinfo)
    if kind == "flattened":
        from .flattened import open_flattened

        return open_flattened(path, vmcoreinfo=vmcoreinfo)
    if kind == "elf-vmcore":
        from .elf import ElfDump
        from .source import FileSource

        return ElfDump(FileSource(path), vmcoreinfo=vmcoreinfo)
    if kind == "xc_core":
        from .source import FileSource
        from .xc_core import XcCoreDump

        return XcCoreDump(FileSource(path), vmcoreinfo=vmcoreinfo)
    from tracelens.detect import not_a

    hint = not_a(path, "dump", head)
    raise FormatError(path, 0, f"not a dump: {hint}" if hint else
                      "not a known dump format (ELF vmcore, kdump-compressed, makedumpfile flattened, xl dump-core)")


def _open_split_set(paths: list[str], vmcoreinfo) -> DumpReader:
    """Open every part, then check that together they are one --split set (kdump.check_split_set)."""
    from .kdump import KdumpDump, KdumpSplitSet

    if not paths:
        from tracelens.errors import UsageError

        raise UsageError("no dump files given")
    parts: list[DumpReader] = []
    try:
        for p in paths:
            d = open(p, vmcoreinfo=vmcoreinfo)
            parts.append(d)
            if not isinstance(d, KdumpDump):
                raise FormatError(d.path, 0, f"a {d.kind} dump, not a kdump-compressed part of a makedumpfile --split set")
        return KdumpSplitSet(parts)
    except BaseException:
        for d in parts:
            d.close()
        raise
