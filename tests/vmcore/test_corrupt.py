"""A corpus of damaged dumps: each gives one FormatError naming the file and the byte offset, or, when the damage
is confined to pages or records, a result that marks exactly those as unreadable. Never a traceback, never an
allocation sized by a damaged field."""

from __future__ import annotations

import importlib.util
import struct
import zlib

import pytest
from vmcore_writers import PS, Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf, write_flattened, write_kdump

from tracelens.errors import FormatError
from tracelens.parsers import vmcore


@pytest.fixture(scope="module")
def world():
    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    for pfn in range(0x140, 0x150):
        mem.write(pfn * PS, bytes((pfn + i) & 0xFF for i in range(PS)))
    add_lockless_ring(k, [LogRec(i, b"ok") for i in range(3)])
    vmci = k.vmcoreinfo()
    return mem, vmci, standard_notes(vmci)


def _kdump(tmp_path, world, tamper=None, **kw):
    mem, vmci, notes = world
    p = tmp_path / "c.kdump"
    lay = write_kdump(p, mem, notes, codec=kw.pop("codec", "zlib"), vmcoreinfo=vmci, tamper=tamper, **kw)
    return p, lay


def _desc_at(lay, pfn):
    return lay["desc_off"] + 24 * lay["dumpable"].index(pfn)


def _raises(path, offset, match):
    with pytest.raises(FormatError) as e:
        vmcore.open(path)
    assert e.value.offset == offset, str(e.value)
    assert str(e.value).startswith(f"{path}: at byte {offset}: ") if offset is not None else True
    assert e.match(match)
    assert "\n" not in str(e.value)


# -- whole-file damage: one error with the offset ---------------------------------------------------------------
def test_empty_and_garbage_files(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    _raises(p, 0, "empty")
    p.write_bytes(b"hello world" * 100)
    _raises(p, 0, "not a known dump format")
    with pytest.raises(FormatError, match="directory"):
        vmcore.open(tmp_path)


def test_kdump_header_truncated(tmp_path):
    p = tmp_path / "t.kdump"
    p.write_bytes(b"KDUMP   " + bytes(100))
    _raises(p, 0, "truncated")


@pytest.mark.parametrize(
    "field_off, fmt, value, match",
    [
        (428, "<i", 1000, "block_size"),  # not a power of two
        (432, "<i", 10**6, "sub_hdr_size"),  # past EOF
        (436, "<I", 10**6, "bitmaps"),  # bitmaps past EOF
        (436, "<I", 0, "bitmap_blocks is 0"),
    ],
)
def test_kdump_header_fields(tmp_path, world, field_off, fmt, value, match):
    p, _ = _kdump(tmp_path, world, tamper=lambda lay, b: struct.pack_into(fmt, b, field_off, value))
    _raises(p, field_off, match)


def test_kdump_max_mapnr_larger_than_bitmap(tmp_path, world):
    def tamper(lay, b):
        struct.pack_into("<I", b, 440, 1 << 30)
        struct.pack_into("<Q", b, PS + 96, 1 << 30)  # max_mapnr_64

    p, _ = _kdump(tmp_path, world, tamper=tamper)
    _raises(p, 440, "max_mapnr")


def test_kdump_max_mapnr_zero(tmp_path, world):
    def tamper(lay, b):
        struct.pack_into("<I", b, 440, 0)
        struct.pack_into("<Q", b, PS + 96, 0)

    p, _ = _kdump(tmp_path, world, tamper=tamper)
    _raises(p, 440, "max_mapnr is 0")


def test_bitmap_disagrees_with_descriptor_count(tmp_path, world):
    def tamper(lay, b):
        off = lay["bitmap_off"] + lay["bm_bytes_each"] + (0x1F8 >> 3)  # 2nd bitmap: one more dumpable pfn
        b[off] |= 1 << (0x1F8 & 7) if not b[off] & (1 << (0x1F8 & 7)) else 0
        b[lay["bitmap_off"] + lay["bm_bytes_each"] + 0x30] |= 0xFF  # pfns 0x180..0x187: set for sure

    mem, vmci, notes = world
    p, lay = _kdump(tmp_path, world, tamper=tamper, excluded=set(range(0x180, 0x188)))
    _raises(p, lay["desc_off"], "bitmap and page descriptors disagree")


def test_kdump_notes_past_eof(tmp_path, world):
    p, _ = _kdump(tmp_path, world, tamper=lambda lay, b: struct.pack_into("<Q", b, PS + 56, 10**9))
    _raises(p, PS + 48, "notes")


def test_flattened_bad_header_and_records(tmp_path):
    p = tmp_path / "f"
    write_flattened(p, b"KDUMP   " + bytes(8000))
    raw = bytearray(p.read_bytes())
    struct.pack_into(">q", raw, 16, 7)
    p.write_bytes(raw)
    _raises(p, 16, "type 7")
    write_flattened(p, b"KDUMP   " + bytes(8000))
    raw = bytearray(p.read_bytes())
    struct.pack_into(">q", raw, 4096 + 8, -5)  # first record: negative size
    p.write_bytes(raw)
    _raises(p, 4096, "size -5")


def test_flattened_payload_missing(tmp_path):
    p = tmp_path / "f"
    head = bytearray(4096)
    head[:12] = b"makedumpfile"
    struct.pack_into(">qq", head, 16, 1, 1)
    p.write_bytes(bytes(head) + struct.pack(">qq", 8192, 4) + b"abcd" + b"\xff" * 16)
    _raises(p, 4096, "neither kdump-compressed nor ELF")


def test_elf_damage(tmp_path, world):
    mem, vmci, notes = world
    p = tmp_path / "e.elf"
    write_elf(p, mem, notes)
    good = p.read_bytes()
    bad = bytearray(good)
    struct.pack_into("<H", bad, 56, 60000)  # e_phnum: the table would run past EOF
    p.write_bytes(bad)
    _raises(p, 64, "program header table")
    bad = bytearray(good)
    struct.pack_into("<H", bad, 16, 2)  # ET_EXEC
    p.write_bytes(bad)
    with pytest.raises(FormatError):  # sniff refuses non-core ELF files
        vmcore.open(p)
    bad = bytearray(good)
    struct.pack_into("<Q", bad, 64 + 32, 10**12)  # PT_NOTE p_filesz
    p.write_bytes(bad)
    _raises(p, 64 + 8, "PT_NOTE")
    bad = bytearray(good)
    struct.pack_into("<Q", bad, 64 + 56 + 40, 1 << 60)  # PT_LOAD p_memsz beyond 2^52
    p.write_bytes(bad)
    _raises(p, 64 + 56 + 24, "beyond 2\\^52")
    bad = bytearray(good)
    memsz = struct.unpack_from("<Q", bad, 64 + 56 + 40)[0]
    struct.pack_into("<Q", bad, 64 + 56 + 32, memsz + 4096)  # PT_LOAD p_filesz past its p_memsz (a fuzzing find)
    p.write_bytes(bad)
    _raises(p, 64 + 56 + 32, "larger than its p_memsz")
    bad = bytearray(good)
    struct.pack_into("<Q", bad, 64 + 56 + 40, 1 << 45)  # 8 G pages of memory for a file of a few pages
    p.write_bytes(bad)
    _raises(p, 64 + 56 + 40, "claim 8,589,93")
    p.write_bytes(good[:40])
    _raises(p, 0, "truncated")


# -- damage confined to pages: marked, and reads say exactly why -------------------------------------------------
def test_descriptor_size_larger_than_a_block_is_refused(tmp_path, world):
    """A decompression bomb: the descriptor claims more than one block of data."""
    p, lay = _kdump(tmp_path, world, tamper=lambda lay, b: struct.pack_into("<I", b, _desc_at(lay, 0x141) + 8, 10**9))
    with vmcore.open(p) as d:
        rows = {r["pfn"]: r for r in d.pages().to_pylist()}
        assert rows[0x141]["state"] == "invalid"
        assert rows[0x142]["state"] == "present"
        with pytest.raises(vmcore.PageUnavailable) as e:
            d.read_page(0x141)
        assert e.value.state == "invalid" and "larger than a block" in str(e.value)
        assert f"page descriptor at byte {_desc_at(lay, 0x141)}" in str(e.value)
        assert d.read_page(0x142) == world[0].content(0x142)


def test_zlib_data_that_expands_past_a_page(tmp_path, world):
    bomb = zlib.compress(bytes(64 * PS), 9)  # small, but 64 pages once inflated

    def tamper(lay, b):
        off = len(b)
        b += bomb
        struct.pack_into("<qII", b, _desc_at(lay, 0x143), off, len(bomb), 1)
        return b

    p, lay = _kdump(tmp_path, world, tamper=tamper)
    with vmcore.open(p) as d:
        with pytest.raises(vmcore.PageUnavailable, match="expands past one page"):
            d.read_page(0x143)
        errs = {}
        for b in d.iter_pages():
            errs.update(b.errors)
            assert not b.ok[b.pfn == 0x143].any()
        assert list(errs) == [0x143]


@pytest.mark.parametrize("codec", ["zlib", "snappy", "zstd", "lzo"])
def test_corrupt_compressed_page(tmp_path, world, codec):
    if codec == "lzo":
        pytest.importorskip("lzo", reason="python-lzo is not installed")

    def tamper(lay, b):
        o, size, flags = struct.unpack_from("<qII", b, _desc_at(lay, 0x144))
        assert flags != 0
        b[o : o + size] = bytes((x * 37 + 11) & 0xFF for x in range(size))

    p, lay = _kdump(tmp_path, world, tamper=tamper, codec=codec)
    with vmcore.open(p) as d:
        with pytest.raises(vmcore.PageUnavailable) as e:
            d.read_page(0x144)
        assert e.value.state == "invalid"
        assert d.read_page(0x145) == world[0].content(0x145)
        bad = {pfn for b in d.iter_pages() for pfn in b.errors}
        assert bad == {0x144}


def test_descriptor_past_eof_and_into_headers(tmp_path, world):
    def tamper(lay, b):
        struct.pack_into("<q", b, _desc_at(lay, 0x146), len(b) + 10 * PS)
        struct.pack_into("<q", b, _desc_at(lay, 0x147), 100)

    p, lay = _kdump(tmp_path, world, tamper=tamper)
    with vmcore.open(p) as d:
        rows = {r["pfn"]: r["state"] for r in d.pages().to_pylist()}
        assert rows[0x146] == "lost" and rows[0x147] == "invalid"
        with pytest.raises(vmcore.PageUnavailable, match="points into the headers"):
            d.read_page(0x147)


def test_damaged_note_area_keeps_the_good_notes(tmp_path, world):
    mem, vmci, notes = world
    p = tmp_path / "n.elf"
    bad_notes = notes + struct.pack("<III", 5, 10**6, 1) + b"CORE\0\0\0\0"
    write_elf(p, mem, bad_notes)
    with vmcore.open(p) as d:
        assert [n.type_name for n in d.notes] == ["NT_PRSTATUS", "NT_PRSTATUS", "VMCOREINFO"]


def test_cli_reports_one_line_and_exit_3(tmp_path, world, capsys):
    from tracelens import cli
    p = tmp_path / "bad.kdump"
    p.write_bytes(b"KDUMP   " + bytes(50))
    for argv in (["dmesg", str(p)], ["pages", str(p)], ["read", str(p), "0x1000"], ["info", str(p)]):
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 3, argv
        assert err.count("\n") == 1 and "Traceback" not in err and f"{p}: at byte 0" in err
    p2, _ = _kdump(tmp_path, world)
    assert cli.main(["read", str(p2), "0x0"]) == 3
    assert "not in the dump" in capsys.readouterr().err


@pytest.mark.parametrize("line", [b"SIZE(printk_ringbuffer)=8", b"OFFSET(printk_info.text_len)=4090"])
def test_vmcoreinfo_sizes_that_do_not_fit_the_ring_are_format_errors(tmp_path, world, line):
    """A fuzzing find: SIZE(printk_ringbuffer)=8 with member offsets past it made struct.unpack_from escape. Sizes
    and offsets inconsistent with each other are damaged VMCOREINFO: one FormatError, never another exception."""
    import re

    mem, vmci, _ = world
    key = line.split(b"=")[0]
    vmci2 = re.sub(re.escape(key) + rb"=\d+", line, vmci)
    assert vmci2 != vmci
    p = tmp_path / "v.elf"
    write_elf(p, mem, standard_notes(vmci2))
    with vmcore.open(p) as d:
        with pytest.raises(FormatError) as e:
            d.kernel_log()
    assert "\n" not in str(e.value) and str(e.value).startswith(str(p))


# -- decompression bombs and shared frames (issue 12) ----------------------------------------------------------
def _zstd_frame_claiming(content_size: int, block: bytes = b"\0", run: int = 4096) -> bytes:
    """A zstd frame whose header states ``content_size`` (Frame_Content_Size, 8 bytes, single segment) and holds
    one last RLE block of ``run`` bytes: a few bytes that python-zstandard would allocate ``content_size`` for."""
    hdr = struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", content_size)
    bh = 1 | (1 << 1) | (run << 3)  # last block, Block_Type 1 (RLE), Block_Size = run
    return hdr + bh.to_bytes(3, "little") + block


def _bomb_kdump(tmp_path, world, frame: bytes, flags: int, pfns=(0x143,)):
    def tamper(lay, b):
        off = len(b)
        b += frame
        for pfn in pfns:
            struct.pack_into("<qII", b, _desc_at(lay, pfn), off, len(frame), flags)
        return b

    return _kdump(tmp_path, world, tamper=tamper)


def _bombs():
    import zstandard

    out = [
        ("zlib", 0x01, lambda: zlib.compress(bytes(64 * PS), 9), "expands past one page"),
        ("zstd-stated", 0x20, lambda: _zstd_frame_claiming(1 << 40), "claims 1099511627776 bytes"),
        ("zstd-stated-small", 0x20, lambda: zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20)), "claims 67108864"),
        ("zstd-unstated", 0x20,
         lambda: zstandard.ZstdCompressor(level=19, write_content_size=False).compress(bytes(64 << 20)), "expands past one page"),
        ("snappy", 0x04, lambda: bytes(__import__("cramjam").snappy.compress_raw(bytes(64 * PS)))[:3000], "claims 262144 bytes"),
        # the optional codec: skipped with its reason when python-lzo is not installed
        pytest.param("lzo", 0x02, lambda: __import__("lzo").compress(bytes(64 * PS), 1, False), "lzo",
                     marks=pytest.mark.skipif(importlib.util.find_spec("lzo") is None,
                                              reason="python-lzo is not installed (pip install python-lzo)")),
    ]
    return out


@pytest.mark.parametrize("name, flags, make, match", _bombs(), ids=[getattr(b, "values", b)[0] for b in _bombs()])
def test_decompression_bombs_of_every_codec_are_invalid_pages(tmp_path, world, name, flags, make, match):
    """Issue 12: python-zstandard ignored max_output_size when the frame states its content size (2.1 GB from a
    320 KB kdump). Every codec stops at one page: the page is invalid, nothing is allocated for the claim."""
    import resource

    frame = make()
    assert len(frame) < PS
    p, lay = _bomb_kdump(tmp_path, world, frame, flags)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with vmcore.open(p) as d:
        with pytest.raises(vmcore.PageUnavailable, match=match) as e:
            d.read_page(0x143)
        assert e.value.state == "invalid" and "\n" not in str(e.value)
        errs = {}
        for b in d.iter_pages():
            errs.update(b.errors)
        assert list(errs) == [0x143]
        assert d.read_page(0x142) == world[0].content(0x142)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mib < 48, f"peak RSS grew by {grew_mib:.0f} MiB"


def test_cli_read_of_a_zstd_bomb_is_exit_3(tmp_path, world, capsys):
    from tracelens import cli
    p, _ = _bomb_kdump(tmp_path, world, _zstd_frame_claiming(1 << 40), 0x20)
    assert cli.main(["read", str(p), hex(0x143 * PS), "64"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "claims 1099511627776 bytes" in err and str(p) in err


def _shared_frame_kdump(tmp_path, n: int, frame: bytes, flags: int, step: int = 0):
    """``n`` dumpable pages whose descriptors (but the first, the zero page) all point at one compressed frame
    (``step`` > 0: at overlapping frames ``step`` bytes apart)."""
    mem = Memory(ram=[(0x100, 0x100 + n)])

    def tamper(lay, b):
        off = len(b)
        b += frame + bytes(step * n)
        for i in range(1, len(lay["dumpable"])):
            struct.pack_into("<qII", b, lay["desc_off"] + 24 * i, off + step * i, len(frame), flags)
        return b

    p = tmp_path / "shared.kdump"
    write_kdump(p, mem, standard_notes(None), codec="zlib", tamper=tamper)
    return p


@pytest.mark.parametrize("good", [True, False])
def test_descriptors_sharing_one_frame_decode_it_once_per_batch(tmp_path, monkeypatch, good):
    """Issue 12: 20,000 descriptors pointing at one frame made the page scan of analyze --vmcore take 28 minutes.
    A frame is decoded once per scan batch (and a frame that failed, once per scan)."""
    from tracelens.parsers.vmcore import dump as dump_mod

    page = bytes(range(256)) * (PS // 256)
    frame = zlib.compress(page if good else bytes(8 * PS), 9)
    n = 6000
    p = _shared_frame_kdump(tmp_path, n, frame, 0x01)
    calls = []
    real = dump_mod.decode_page
    monkeypatch.setattr(dump_mod, "decode_page", lambda *a: calls.append(1) or real(*a))
    with vmcore.open(p) as d:
        seen = bad = 0
        for b in d.iter_pages(threads=2):
            seen += len(b.pfn)
            bad += len(b.errors)
            if good:
                assert all(b.data[i].tobytes() == page for i in range(len(b.pfn)) if b.pfn[i] != 0x100)
    assert seen == n
    assert bad == (0 if good else n - 1)
    assert len(calls) <= (-(-n // dump_mod.SCAN_BATCH) + 1 if good else 1)  # batches need not start at the first pfn


def test_scan_decode_budget_stops_overlapping_frames(tmp_path, monkeypatch):
    """Descriptors pointing at *different* overlapping frames cannot share a decode; a scan decompresses at most
    DECODE_BUDGET_RATIO times the file size, then reports the remaining compressed pages as unreadable."""
    from tracelens.parsers.vmcore import dump as dump_mod

    frame = zlib.compress(bytes(PS), 9)
    p = _shared_frame_kdump(tmp_path, 3000, frame, 0x01, step=1)
    monkeypatch.setattr(dump_mod, "DECODE_BUDGET_MIN", 0)
    monkeypatch.setattr(dump_mod, "DECODE_BUDGET_RATIO", 4)
    size = p.stat().st_size
    with vmcore.open(p) as d:
        errs = {}
        for b in d.iter_pages():
            errs.update(b.errors)
    budget_pages = 4 * size // PS
    over = [e for e in errs.values() if "not decoded" in e]
    assert over and len(over) >= 3000 - 1 - budget_pages - 1
    assert all("\n" not in e for e in errs.values())


# -- ELF note amplification (issue 12) ---------------------------------------------------------------------------
def test_pt_notes_over_the_same_area_are_refused(tmp_path, world):
    """200 PT_NOTE headers over one 1 MiB area made 17.5 M note objects (2.6 GB for `tracelens info` of a 1 MB
    file): note segments may not overlap."""
    mem, vmci, notes = world
    p = tmp_path / "n.elf"
    area = notes + struct.pack("<III", 0, 0, 1) * 50_000  # bare 12-byte notes: 10 M of them through 200 headers
    write_elf(p, mem, area, note_copies=200)
    _raises(p, 64 + 56 + 8, "overlaps the PT_NOTE at byte 64")


def test_more_notes_than_the_limit_is_a_format_error(tmp_path, world):
    from tracelens.parsers.vmcore.notes import MAX_NOTES

    mem, vmci, notes = world
    p = tmp_path / "n.elf"
    bare = struct.pack("<III", 0, 0, 1)
    write_elf(p, mem, notes + bare * MAX_NOTES)
    with pytest.raises(FormatError, match="more than 65,536 ELF notes") as e:
        vmcore.open(p)
    assert e.value.offset is not None and "\n" not in str(e.value)
    k = tmp_path / "n.kdump"
    write_kdump(k, mem, notes + bare * MAX_NOTES, vmcoreinfo=vmci)
    with pytest.raises(FormatError, match="more than 65,536 ELF notes"):
        vmcore.open(k)


def test_cli_info_of_overlapping_notes_is_exit_3(tmp_path, world, capsys):
    from tracelens import cli
    mem, vmci, notes = world
    p = tmp_path / "n.elf"
    write_elf(p, mem, notes, note_copies=3)
    assert cli.main(["info", str(p)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "overlaps" in err and f"{p}: at byte {64 + 56 + 8}" in err
