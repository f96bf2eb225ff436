"""Round trips: the test writers build ELF, kdump-compressed (every codec, header versions 1-6, incomplete),
flattened and xc_core files from a known memory; the readers must give back exactly that memory, with the page
states the writer intended."""

from __future__ import annotations

import struct

import pytest
from vmcore_writers import PS, Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf, write_flattened, write_kdump

from tracelens.errors import FormatError
from tracelens.parsers import vmcore

RAM = [(1, 0x9F), (0x100, 0x400)]
EXCLUDED = set(range(0x380, 0x3A0)) | {0x3FE, 0x3FF}
CODECS = ["none", "zlib", "lzo", "snappy", "zstd"]


def _codec_ok(codec):
    if codec == "lzo":
        pytest.importorskip("lzo", reason="python-lzo is not installed (needs Debian liblzo2-dev)")


@pytest.fixture(scope="module")
def world():
    """A memory with a toy kernel, a lockless printk ring, patterned pages, zero pages and pages to exclude."""
    mem = Memory(ram=list(RAM))
    k = Kernel(mem)
    for pfn in list(range(0x10, 0x30)) + list(range(0x380, 0x3A0)) + [0x3FE]:
        mem.write(pfn * PS, bytes((pfn * 7 + i) & 0xFF for i in range(PS)))
    # a compressible page and an incompressible one (random bytes are stored raw even with a codec)
    mem.write(0x40 * PS, b"A" * PS)
    import random

    rnd = random.Random(5)
    mem.write(0x41 * PS, bytes(rnd.getrandbits(8) for _ in range(PS)))
    mem.write(k.vmalloc_target_pa, b"vmalloc page!" + bytes(PS - 13))
    recs = [LogRec(1_000_000 * i, f"record {i}".encode()) for i in range(10)]
    add_lockless_ring(k, recs, dynamic=True)
    vmci = k.vmcoreinfo()
    return mem, k, vmci, standard_notes(vmci)


def _check_memory(d, mem, excluded=frozenset(), lost=frozenset()):
    for pfn in mem.ram_pfns():
        if pfn in excluded:
            with pytest.raises(vmcore.PageUnavailable) as e:
                d.read_page(pfn)
            assert e.value.state == "excluded"
        elif pfn in lost:
            with pytest.raises(vmcore.PageUnavailable) as e:
                d.read_page(pfn)
            assert e.value.state == "lost"
        else:
            assert d.read_page(pfn) == mem.content(pfn), hex(pfn)
    # the scan agrees with page reads
    seen = {}
    for b in d.iter_pages():
        assert not b.errors
        for pfn, row in zip(b.pfn.tolist(), b.data):
            seen[pfn] = row.tobytes()
    expect = {p for p in mem.ram_pfns() if p not in excluded and p not in lost}
    assert set(seen) == expect
    for p in expect:
        assert seen[p] == mem.content(p)


def test_elf_roundtrip(world, tmp_path):
    mem, k, vmci, notes = world
    p = tmp_path / "a.elf"
    write_elf(p, mem, notes, ktext=(0x200000, k.ktext_va(0x200000), 0x100000))
    assert vmcore.dump_kind(p.read_bytes()[:4096]) == "elf-vmcore"
    with vmcore.open(p) as d:
        assert d.kind == "elf-vmcore"
        _check_memory(d, mem)
        assert d.page_counts()["present"] == sum(b - a for a, b in RAM)
        assert d.phys_base == k.phys_base
        assert d.page_offset_base == 0xFFFF888000000000
        assert d.prstatus().column("pid").to_pylist() == [0, 1]
        assert d.read_phys(0x10 * PS + PS - 3, 6) == mem.read(0x10 * PS + PS - 3, 6)
        assert d.read_virt(k.VMALLOC_VA, 13) == b"vmalloc page!"
        assert d.read_virt(k.direct_va(0x10 * PS), 8) == mem.read(0x10 * PS, 8)
        assert [r["text"] for r in d.dmesg().to_pylist()] == [f"record {i}" for i in range(10)]
        with pytest.raises(vmcore.PageUnavailable) as e:
            d.read_phys(0, 1)
        assert e.value.state == "hole" and "0x0" in str(e.value)


def test_elf_filtered_tail_is_excluded(world, tmp_path):
    mem, k, vmci, notes = world
    p = tmp_path / "f.elf"
    tail = {0x3FE, 0x3FF}
    write_elf(p, mem, notes, excluded=tail)
    with vmcore.open(p) as d:
        _check_memory(d, mem, excluded=tail)
        assert d.page_counts()["excluded"] == 2
        assert d.read_phys(0x3FE * PS, 4, zero_excluded=True) == bytes(4)


def test_elf_qemu_quirks(world, tmp_path):
    """QEMU: section headers first (e_phoff 192 here 192 = 64 + 2*64), p_vaddr 0, a non-RAM block with
    p_offset all-ones, QEMU CPU notes; and PN_XNUM."""
    from vmcore_writers import qemu_cpu_note

    mem, k, vmci, notes = world
    qnotes = notes + qemu_cpu_note(0xFFFFFFFF81000010, k.pgd_pa) + qemu_cpu_note(0xFFFFFFFF81000020, k.pgd_pa)
    p = tmp_path / "q.elf"
    write_elf(p, mem, qnotes, qemu=True, pn_xnum=True)
    with vmcore.open(p) as d:
        assert d.header["e_phoff"] == 192
        assert d.page_offset_base is None  # p_vaddr is not a VA in QEMU dumps
        _check_memory(d, mem)
        q = d.qemu_cpus().to_pylist()
        assert [r["cr3"] for r in q] == [k.pgd_pa, k.pgd_pa]
        with pytest.raises(vmcore.PageUnavailable):
            d.read_phys(0xFD000000, 1)  # the all-ones block holds nothing
        assert d.read_virt(k.direct_va(0x20 * PS), 16) == mem.read(0x20 * PS, 16)  # via the page-table walk
    # a QEMU dump without VMCOREINFO (no -device vmcoreinfo): the vCPU's CR3 (with PCID bits) roots the walk
    p2 = tmp_path / "q2.elf"
    write_elf(p2, mem, standard_notes(None) + qemu_cpu_note(0, k.pgd_pa | 0x5), qemu=True)
    with vmcore.open(p2) as d:
        assert not d.vmcoreinfo
        assert d.read_virt(k.VMALLOC_VA, 13) == b"vmalloc page!"
        assert d.read_virt(k.direct_va(0x20 * PS), 16) == mem.read(0x20 * PS, 16)


def test_elf_incomplete_and_truncated(world, tmp_path):
    mem, k, vmci, notes = world
    p = tmp_path / "t.elf"
    full = tmp_path / "full.elf"
    write_elf(full, mem, notes)
    size = full.stat().st_size
    write_elf(p, mem, notes, incomplete=True, truncate_to=size - 10 * PS - 100)
    with vmcore.open(p) as d:
        assert d.complete is False
        counts = d.page_counts()
        assert counts["lost"] == 11  # 10 whole pages and the one cut in the middle
        lost = {pfn for b in d._index_batches() for pfn, s in zip(b.pfn.tolist(), b.state.tolist()) if s == 3}
        assert lost == set(range(0x3F5, 0x400))
        _check_memory(d, mem, lost=lost)


@pytest.mark.parametrize("codec", CODECS)
def test_kdump_roundtrip_each_codec(world, tmp_path, codec):
    _codec_ok(codec)
    mem, k, vmci, notes = world
    p = tmp_path / f"{codec}.kdump"
    lay = write_kdump(p, mem, notes, codec=codec, excluded=EXCLUDED, vmcoreinfo=vmci)
    assert vmcore.dump_kind(p.read_bytes()[:4096]) == "kdump"
    with vmcore.open(p) as d:
        assert d.compression == codec
        _check_memory(d, mem, excluded=EXCLUDED)
        zero_pfns = [pf for pf in lay["dumpable"] if mem.content(pf) == bytes(PS)]
        counts = d.page_counts()
        assert counts == {"present": len(lay["dumpable"]) - len(zero_pfns), "zero": len(zero_pfns),
                          "excluded": len(EXCLUDED), "lost": 0, "invalid": 0}
        t = d.pages()
        rows = {r["pfn"]: r for r in t.to_pylist()}
        assert rows[0x40]["compression"] == codec  # a compressible page
        assert rows[0x41]["compression"] == "none" and rows[0x41]["size"] == PS  # incompressible: stored raw
        assert rows[0x380]["state"] == "excluded" and rows[0x380]["offset"] == -1
        assert rows[0x100]["state"] == "zero"
        assert d.read_page(0x100) == bytes(PS)
        assert [r["text"] for r in d.dmesg().to_pylist()] == [f"record {i}" for i in range(10)]


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_kdump_header_versions(world, tmp_path, version):
    mem, k, vmci, notes = world
    p = tmp_path / f"v{version}.kdump"
    write_kdump(p, mem, notes, codec="zlib", version=version, excluded=EXCLUDED, vmcoreinfo=vmci)
    with vmcore.open(p) as d:
        assert d.header["header_version"] == version
        _check_memory(d, mem, excluded=EXCLUDED)
        if version >= 3:
            assert d.vmcoreinfo.osrelease == "6.1.0-test"
            assert d.kernel_log().render().startswith(b"[    0.000000] record 0\n")
        else:
            assert not d.vmcoreinfo
            with pytest.raises(FormatError, match="vmcoreinfo"):
                d.kernel_log()
        assert len(d.prstatus()) == (2 if version >= 4 else 0)


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_kdump_incomplete_reports_lost_pages(world, tmp_path, codec):
    mem, k, vmci, notes = world
    p = tmp_path / "inc.kdump"
    lay = write_kdump(p, mem, notes, codec=codec, excluded=EXCLUDED, incomplete_after=100, vmcoreinfo=vmci)
    lost = set(lay["dumpable"][100:])
    with vmcore.open(p) as d:
        assert d.complete is False
        assert d.page_counts()["lost"] == len(lost)
        _check_memory(d, mem, excluded=EXCLUDED, lost=lost)
        with pytest.raises(vmcore.PageUnavailable, match="incomplete"):
            d.read_page(max(lost))


def test_kdump_truncated_file_loses_only_the_tail(world, tmp_path):
    mem, k, vmci, notes = world
    p = tmp_path / "cut.kdump"
    write_kdump(p, mem, notes, codec="none", excluded=EXCLUDED, exclude_zero=False)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 5 * PS - 7])
    with vmcore.open(p) as d:
        counts = d.page_counts()
        assert counts["lost"] == 6
        dumpable = [pf for pf in mem.ram_pfns() if pf not in EXCLUDED]
        _check_memory(d, mem, excluded=EXCLUDED, lost=set(dumpable[-6:]))


@pytest.mark.parametrize("payload", ["kdump", "elf"])
def test_flattened_roundtrip(world, tmp_path, payload):
    mem, k, vmci, notes = world
    inner = tmp_path / "inner"
    if payload == "kdump":
        write_kdump(inner, mem, notes, codec="zlib", excluded=EXCLUDED, vmcoreinfo=vmci)
        excluded = EXCLUDED
    else:
        write_elf(inner, mem, notes)
        excluded = frozenset()
    flat = tmp_path / "flat"
    write_flattened(flat, inner.read_bytes(), chunk=3000, shuffle=True, overlap=True)
    assert vmcore.dump_kind(flat.read_bytes()[:4096]) == "flattened"
    with vmcore.open(flat) as d:
        assert d.source.kind == "flattened" and d.complete
        assert d.source.records > 10
        _check_memory(d, mem, excluded=excluded)
        assert [r["text"] for r in d.dmesg().to_pylist()] == [f"record {i}" for i in range(10)]


def test_flattened_without_end_marker_is_incomplete(world, tmp_path):
    mem, k, vmci, notes = world
    inner = tmp_path / "inner"
    write_kdump(inner, mem, notes, codec="none", excluded=EXCLUDED, exclude_zero=False, vmcoreinfo=vmci)
    payload = inner.read_bytes()
    flat = tmp_path / "flat"
    write_flattened(flat, payload, chunk=4096, end_marker=False)
    stream = flat.read_bytes()
    flat.write_bytes(stream[: len(stream) - 20 * (PS + 16) - 100])  # cut inside a record, no end marker
    with vmcore.open(flat) as d:
        assert d.complete is False
        counts = d.page_counts()
        assert counts["lost"] > 0 and counts["invalid"] == 0
        lost = {pfn for b in d._index_batches() for pfn, s in zip(b.pfn.tolist(), b.state.tolist()) if s == 3}
        _check_memory(d, mem, excluded=EXCLUDED, lost=lost)


def test_pages_parquet_roundtrip(world, tmp_path):
    import pyarrow.parquet as pq

    mem, k, vmci, notes = world
    p = tmp_path / "z.kdump"
    write_kdump(p, mem, notes, codec="zlib", excluded=EXCLUDED, vmcoreinfo=vmci)
    from tracelens.dump import Dump

    with Dump(p) as d:
        n = d.write_pages(tmp_path / "pages.parquet")
        direct = d.raw.pages()
    back = pq.read_table(tmp_path / "pages.parquet")
    assert n == back.num_rows == direct.num_rows == sum(b - a for a, b in RAM)
    assert back.equals(direct)
    assert back.column("pfn").to_pylist() == direct.column("pfn").to_pylist()
    assert back.column("state").to_pylist() == direct.column("state").to_pylist()
    assert [f.name for f in back.schema] == ["pfn", "offset", "size", "compression", "state"]


def test_page_index_offsets_point_at_page_data(world, tmp_path):
    """For raw pages the offset column is where the page bytes are in the file."""
    mem, k, vmci, notes = world
    p = tmp_path / "raw.kdump"
    write_kdump(p, mem, notes, codec="none", excluded=EXCLUDED)
    raw = p.read_bytes()
    with vmcore.open(p) as d:
        for r in d.pages().to_pylist():
            if r["state"] == "present":
                assert raw[r["offset"] : r["offset"] + r["size"]] == mem.content(r["pfn"])


def test_read_virt_errors_are_format_errors(world, tmp_path):
    mem, k, vmci, notes = world
    p = tmp_path / "a.elf"
    write_elf(p, mem, notes)
    with vmcore.open(p) as d:
        with pytest.raises(FormatError, match="not mapped"):
            d.read_virt(0xFFFFC90000400000, 8)
        assert struct.unpack("<Q", d.read_virt(k.ktext_va(k.pgd_pa) + 511 * 8, 8))[0] & 1


def test_split_set(world, tmp_path):
    """makedumpfile --split: three parts, each with its own pfn range; one part alone sees only its range."""
    mem, k, vmci, notes = world
    ranges = [(0, 0x200), (0x200, 0x390), (0x390, 0x400)]
    paths = []
    for i, rng in enumerate(ranges):
        p = tmp_path / f"part{i}.kdump"
        write_kdump(p, mem, notes, codec="zstd", excluded=EXCLUDED, vmcoreinfo=vmci, split=rng)
        paths.append(p)
    with vmcore.open(list(reversed(paths))) as d:
        assert d.header["parts"] == 3
        _check_memory(d, mem, excluded=EXCLUDED)
        counts = d.page_counts()
        assert counts["excluded"] == len(EXCLUDED)
        assert counts["present"] + counts["zero"] == sum(b - a for a, b in RAM) - len(EXCLUDED)
        assert [r["text"] for r in d.dmesg().to_pylist()] == [f"record {i}" for i in range(10)]
    with vmcore.open(paths[1]) as part:
        assert part.read_page(0x300) == mem.content(0x300)
        with pytest.raises(vmcore.PageUnavailable) as e:
            part.read_page(0x150)  # in another part
        assert e.value.state == "hole"
    with pytest.raises(FormatError, match="overlaps"):
        vmcore.open([paths[0], paths[0]])


def test_elf_qemu_paging_mode_overlapping_loads(world, tmp_path):
    """QEMU dump-guest-memory -p: PT_LOADs per virtual mapping, several over the same physical pages. The
    physical view is unchanged, and the direct map is the delta shared by most memory."""
    mem, k, vmci, notes = world
    p = tmp_path / "paging.elf"
    extra = [(0x10 * PS, 0xFFFFC90000100000, 4 * PS), (0x20 * PS, 0xFFFFEA0000000000, 2 * PS)]
    write_elf(p, mem, notes, extra_loads=extra, ktext=(0x200000, k.ktext_va(0x200000), 0x100000))
    with vmcore.open(p) as d:
        assert d.page_offset_base == 0xFFFF888000000000
        assert d.page_counts()["present"] == sum(b - a for a, b in RAM)
        _check_memory(d, mem)


def test_phys_base_prefers_vmcoreinfo_over_the_kdump_header(world, tmp_path):
    """QEMU writes a wrong sub-header phys_base under KASLR (it parses the decimal VMCOREINFO value as hex):
    NUMBER(phys_base) wins; without it the sub-header is used."""
    mem, k, vmci, notes = world
    p = tmp_path / "q.kdump"
    write_kdump(p, mem, notes, codec="zlib", vmcoreinfo=vmci, phys_base=0x1234000)
    with vmcore.open(p) as d:
        assert d.info()["header_phys_base"] == 0x1234000
        assert d.phys_base == k.phys_base
        assert d.read_virt(k.ktext_va(0x10 * PS), 8) == mem.read(0x10 * PS, 8)
    stripped = b"\n".join(ln for ln in vmci.split(b"\n") if not ln.startswith(b"NUMBER(phys_base)"))
    with vmcore.open(p, vmcoreinfo=stripped) as d:
        assert d.phys_base == 0x1234000


@pytest.mark.parametrize("fmt", ["elf", "kdump-none", "kdump-zlib", "flattened", "split"])
def test_read_phys_of_long_ranges_equals_the_written_memory(tmp_path, fmt):
    """read_phys reads runs of whole raw pages stored back to back in one call; ranges of every length and
    alignment, across segment gaps, zero pages, compressed pages and split parts, give the writer's bytes, and a
    range touching an excluded page fails as reading that page alone does."""
    import random

    from vmcore_writers import PS, Memory, standard_notes, write_elf, write_flattened, write_kdump

    from tracelens.parsers import vmcore as V

    mem = Memory(ram=[(0x100, 0x180), (0x190, 0x1C0)])
    for pfn in range(0x100, 0x1C0):
        if pfn % 7:  # every seventh page stays zero (the kdump writers share the zero page)
            mem.write(pfn * PS, bytes((pfn * 31 + i) & 0xFF for i in range(PS)))
    notes = standard_notes(None)
    excluded = {0x17E, 0x17F}  # the tail of the first range (ELF writes only tails as p_memsz > p_filesz)
    if fmt == "elf":
        paths = [tmp_path / "d.elf"]
        write_elf(paths[0], mem, notes, excluded=excluded)
    elif fmt == "split":
        paths = [tmp_path / "p0", tmp_path / "p1"]
        write_kdump(paths[0], mem, notes, codec="none", excluded=excluded, split=(0, 0x160))
        write_kdump(paths[1], mem, notes, codec="none", excluded=excluded, split=(0x160, 0x1C0))
    else:
        paths = [tmp_path / "d.kdump"]
        write_kdump(paths[0], mem, notes, codec="zlib" if fmt == "kdump-zlib" else "none", excluded=excluded)
        if fmt == "flattened":
            inner = paths[0].read_bytes()
            paths = [tmp_path / "d.flat"]
            write_flattened(paths[0], inner, chunk=5000, shuffle=True)
    rng = random.Random(fmt)
    with V.open(paths if len(paths) > 1 else paths[0]) as d:
        for _ in range(60):
            lo_pfn, hi_pfn = rng.choice([(0x100, 0x17E), (0x190, 0x1C0)])
            start = rng.randrange(lo_pfn * PS, hi_pfn * PS - 1)
            size = rng.randrange(1, min(hi_pfn * PS - start, 40 * PS) + 1)
            want = b"".join(mem.content(p) for p in range(start // PS, -(-(start + size) // PS)))
            off = start % PS
            assert d.read_phys(start, size) == want[off:off + size], (hex(start), size)
        with pytest.raises(V.PageUnavailable) as e:
            d.read_phys(0x17B * PS + 100, 4 * PS)
        assert e.value.pfn == 0x17E and e.value.state == "excluded"
        with pytest.raises(V.PageUnavailable) as e:
            d.read_phys(0x1BE * PS, 3 * PS)  # runs past the last page into a hole
        assert e.value.pfn == 0x1C0
