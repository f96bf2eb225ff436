"""Mutation fuzzing of small dumps of every format: whatever bytes are damaged, opening, indexing, scanning,
reading and the kernel log end in a result or a FormatError, never another exception."""

from __future__ import annotations

import random
import zlib

import pytest
from vmcore_writers import PS, Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf, write_flattened, write_kdump, write_xc_core

from tracelens.errors import FormatError
from tracelens.parsers import vmcore

MUTATIONS = int(__import__("os").environ.get("TRACELENS_FUZZ", "120"))
NAMES = ("a.elf", "a.kdump", "a.zstd.kdump", "a.snappy.kdump", "a.flat", "a.core")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    mem = Memory(ram=[(0x100, 0x140)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x130000, pt_pa=0x100000, phys_base=0)
    for pfn in range(0x110, 0x118):
        mem.write(pfn * PS, bytes((pfn + i) & 0xFF for i in range(PS)))
    add_lockless_ring(k, [LogRec(i, b"fuzz line %d" % i) for i in range(6)])
    vmci = k.vmcoreinfo()
    notes = standard_notes(vmci)
    out = {}
    write_elf(d / "a.elf", mem, notes)
    write_kdump(d / "a.kdump", mem, notes, codec="zlib", excluded={0x130, 0x131}, vmcoreinfo=vmci)
    # the other codecs' page paths (issue 12: zstd frame headers that claim gigabytes)
    write_kdump(d / "a.zstd.kdump", mem, notes, codec="zstd", vmcoreinfo=vmci)
    write_kdump(d / "a.snappy.kdump", mem, notes, codec="snappy", vmcoreinfo=vmci)
    write_flattened(d / "a.flat", (d / "a.kdump").read_bytes(), chunk=4096)
    write_xc_core(d / "a.core", mem)
    for name in NAMES:
        out[name] = (d / name).read_bytes()
    return out


def _exercise(path):
    try:
        with vmcore.open(path) as d:
            d.page_counts()
            d.pages()
            for b in d.iter_pages():
                pass
            for pfn in (0x100, 0x110, 0x130, 0x13F):
                try:
                    d.read_page(pfn)
                except FormatError:
                    pass
            d.notes_table()
            d.prstatus()
            d.info()
            try:
                d.kernel_log().render("makedumpfile")
            except FormatError:
                pass
    except FormatError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("name", NAMES)
def test_mutations_never_escape_as_other_exceptions(originals, tmp_path, name):
    rnd = random.Random(zlib.crc32(name.encode()))  # the same mutations in every run (hash() of a str is not)
    data = originals[name]
    p = tmp_path / name
    # the headers and metadata are where damage matters: aim most mutations at the first 32 KiB
    hot = min(len(data), 32768)
    for i in range(MUTATIONS):
        buf = bytearray(data)
        kind = rnd.random()
        if kind < 0.6:
            for _ in range(rnd.randint(1, 8)):
                buf[rnd.randrange(hot)] = rnd.randrange(256)
        elif kind < 0.8:
            pos = rnd.randrange(hot - 8)
            buf[pos : pos + 8] = rnd.choice([b"\xff" * 8, bytes(8), (1 << 62).to_bytes(8, "little"), rnd.randbytes(8)])
        else:
            buf = buf[: rnd.randrange(len(buf))]
        p.write_bytes(bytes(buf))
        _exercise(p)
