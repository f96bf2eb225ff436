"""makedumpfile --split sets through the CLI (tracelens.cli.main and a real subprocess) and tracelens.open: the parts
are written by the test writer (write_kdump(split=...)), so every expected value comes from the memory the writer
was given, never from the reader."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from vmcore_writers import PS, Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf, write_kdump

from tracelens import cli  # noqa: E402

RAM = [(0x100, 0x300)]
EXCLUDED = set(range(0x2A0, 0x2B0))
RANGES = [(0, 0x180), (0x180, 0x240), (0x240, 0x300)]  # max_mapnr = 0x300: the last part ends there
PATTERN_PFNS = (0x150, 0x1A0, 0x250)  # one page in each part


def _world(tag: bytes = b"A", excluded=EXCLUDED):
    mem = Memory(ram=list(RAM))
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    for pfn in PATTERN_PFNS:
        mem.write(pfn * PS, tag * 8 + f"page {pfn:#x}".encode())
    add_lockless_ring(k, [LogRec(10**9, b"split one"), LogRec(2 * 10**9, b"split two")])
    vmci = k.vmcoreinfo()
    return mem, k, vmci, standard_notes(vmci)


@pytest.fixture(scope="module")
def split_set(tmp_path_factory):
    mem, k, vmci, notes = _world()
    d = tmp_path_factory.mktemp("split")
    paths = []
    for i, rng in enumerate(RANGES):
        p = d / f"vmcore_{i}"
        write_kdump(p, mem, notes, codec="zlib", excluded=EXCLUDED, vmcoreinfo=vmci, split=rng)
        paths.append(p)
    return paths, mem, k


def run(capsysbinary, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsysbinary.readouterr()
    return rc, out, err


def test_info_any_order(split_set, capsysbinary):
    paths, mem, _ = split_set
    ram_pages = sum(b - a for a, b in RAM)
    for order in (paths, paths[::-1], [paths[1], paths[2], paths[0]]):
        rc, out, err = run(capsysbinary, "info", *order, "--json")
        assert rc == 0, err
        info = json.loads(out)
        assert info["format"] == "kdump" and info["split"] is True
        assert [(p["start_pfn"], p["end_pfn"]) for p in info["parts"]] == RANGES
        assert info["pages"]["excluded"] == len(EXCLUDED)
        assert info["pages"]["present"] + info["pages"]["zero"] == ram_pages - len(EXCLUDED)
        assert info["osrelease"] == "6.1.0-test"
    rc, out, _ = run(capsysbinary, "info", *paths[::-1])
    assert rc == 0 and b"6.1.0-test" in out


def test_single_part_alone_is_unchanged(split_set, capsysbinary):
    """One file is read alone, as before: its own pfn range only (the rest are holes)."""
    paths, mem, _ = split_set
    rc, out, _ = run(capsysbinary, "info", paths[1], "--json")
    info = json.loads(out)
    assert rc == 0 and "parts" not in info and (info["start_pfn"], info["end_pfn"]) == RANGES[1]
    assert info["pages"]["present"] + info["pages"]["zero"] == RANGES[1][1] - RANGES[1][0]
    rc, _, err = run(capsysbinary, "read", paths[1], hex(0x150 * PS), "8")
    assert rc == 3 and b"hole" in err


def test_dmesg_pages_read(split_set, capsysbinary):
    paths, mem, k = split_set
    rc, out, _ = run(capsysbinary, "dmesg", paths[2], paths[0], paths[1])
    assert rc == 0 and out == b"[    1.000000] split one\n[    2.000000] split two\n"
    rc, out, _ = run(capsysbinary, "pages", *paths[::-1], "--json")
    runs = json.loads(out)
    assert rc == 0
    assert {"first_pfn": 0x2A0, "last_pfn": 0x2AF, "pages": 16, "state": "excluded", "compression": "none"} in runs
    assert sum(r["pages"] for r in runs) == sum(b - a for a, b in RAM)
    for pfn in PATTERN_PFNS:  # a page from every part, the address first and then with a length
        rc, out, _ = run(capsysbinary, "read", *paths[::-1], hex(pfn * PS), "32", "--raw")
        assert rc == 0 and out == mem.content(pfn)[:32]
    rc, out, _ = run(capsysbinary, "read", paths[1], paths[0], paths[2], hex(0x1A0 * PS), "--hex")
    assert rc == 0 and out == mem.content(0x1A0)[:64].hex().encode() + b"\n"  # LENGTH defaults to 64
    rc, out, _ = run(capsysbinary, "read", *paths, hex(k.direct_va(0x250 * PS)), "8", "--virtual", "--raw")
    assert rc == 0 and out == mem.content(0x250)[:8]
    rc, _, err = run(capsysbinary, "read", *paths, hex(0x2A0 * PS), "zz")
    assert rc == 2 and b"LENGTH" in err


def test_show_code_opens_the_set(split_set, capsysbinary):
    paths, mem, _ = split_set
    rc, out, _ = run(capsysbinary, "read", *paths, hex(0x250 * PS), "8", "--show-code")
    assert rc == 0
    ns: dict = {}
    exec(compile(out.decode(), "<show-code>", "exec"), ns)
    assert ns["data"] == mem.content(0x250)[:8]


def _one_line_error(err: bytes, path, what: bytes) -> None:
    text = err.decode()
    assert err.count(b"\n") == 1 and "Traceback" not in text, text
    assert text.startswith(f"tracelens: error: {path}: at byte "), text
    assert what in err, text


@pytest.mark.parametrize("command", ["info", "dmesg", "pages", "read"])
def test_missing_part(split_set, capsysbinary, command):
    paths, _, _ = split_set
    extra = [hex(0x150 * PS)] if command == "read" else []
    # the middle part is missing: a gap after part 0
    rc, _, err = run(capsysbinary, command, paths[2], paths[0], *extra)
    assert rc == 3
    _one_line_error(err, paths[2], b"missing")
    # the last part is missing: the set ends before max_mapnr
    rc, _, err = run(capsysbinary, command, paths[1], paths[0], *extra)
    assert rc == 3
    _one_line_error(err, paths[1], b"missing")
    # the first part is missing: the set does not start at pfn 0
    rc, _, err = run(capsysbinary, command, paths[1], paths[2], *extra)
    assert rc == 3
    _one_line_error(err, paths[1], b"missing")
    # the same part twice
    rc, _, err = run(capsysbinary, command, *paths, paths[1], *extra)
    assert rc == 3 and b"overlaps" in err and err.count(b"\n") == 1


def test_part_of_another_dump(split_set, capsysbinary, tmp_path):
    paths, _, _ = split_set
    # another guest's dump: other pages filtered, so the bitmaps differ
    mem, _, vmci, notes = _world(b"B", excluded=set(range(0x200, 0x210)))
    other = tmp_path / "other_1"
    write_kdump(other, mem, notes, codec="zlib", excluded=set(range(0x200, 0x210)), vmcoreinfo=vmci, split=RANGES[1])
    rc, _, err = run(capsysbinary, "info", paths[0], other, paths[2])
    assert rc == 3
    _one_line_error(err, other, b"another dump")
    # same memory layout and filtering, another kernel (VMCOREINFO differs)
    mem, k, _, _ = _world(b"C")
    k.lines[0] = "OSRELEASE=6.1.0-other"
    vmci = k.vmcoreinfo()
    other2 = tmp_path / "other_2"
    write_kdump(other2, mem, standard_notes(vmci), codec="zlib", excluded=EXCLUDED, vmcoreinfo=vmci, split=RANGES[1])
    rc, _, err = run(capsysbinary, "dmesg", paths[0], other2, paths[2])
    assert rc == 3
    _one_line_error(err, other2, b"VMCOREINFO differs")


def test_non_split_files_mixed_in(split_set, capsysbinary, tmp_path):
    paths, _, _ = split_set
    mem, k, vmci, notes = _world()
    whole = tmp_path / "whole.kdump"
    write_kdump(whole, mem, notes, codec="zlib", excluded=EXCLUDED, vmcoreinfo=vmci)
    rc, _, err = run(capsysbinary, "info", paths[0], whole, paths[1], paths[2])
    assert rc == 3
    _one_line_error(err, whole, b"split = 0")
    elf = tmp_path / "whole.elf"
    write_elf(elf, mem, notes)
    rc, _, err = run(capsysbinary, "pages", *paths, elf)
    assert rc == 3
    _one_line_error(err, elf, b"not a kdump-compressed part")
    capture = tmp_path / "trace.bin"
    capture.write_bytes(bytes.fromhex("03f00120") + bytes(28))  # a xentrace CPU_CHANGE record header
    rc, _, err = run(capsysbinary, "info", *paths, capture)
    assert rc == 3
    _one_line_error(err, capture, b"xentrace capture")


def test_python_api_list(split_set):
    import tracelens
    from tracelens.errors import FormatError

    paths, mem, _ = split_set
    with tracelens.open([paths[2], paths[0], paths[1]]) as d:
        assert d.paths == [str(p) for p in (paths[2], paths[0], paths[1])]
        assert d.info()["split"] is True
        for pfn in PATTERN_PFNS:
            assert d.read_phys(pfn * PS, PS) == mem.content(pfn)
        assert d.dmesg()["text"].to_list() == ["split one", "split two"]
    with pytest.raises(FormatError, match="missing"):
        tracelens.open(paths[:2])


def test_subprocess_info(split_set):
    paths, _, _ = split_set
    r = subprocess.run([sys.executable, "-m", "tracelens", "info", str(paths[2]), str(paths[0]), str(paths[1]), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["parts"][0]["path"] == str(paths[0])
    r = subprocess.run([sys.executable, "-m", "tracelens", "dmesg", str(paths[0]), str(paths[2])], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3 and r.stderr.startswith(f"tracelens: error: {paths[2]}: at byte ") and r.stderr.count("\n") == 1


def test_pages_refuses_to_write_over_a_part_of_the_set(split_set, capsysbinary, tmp_path):
    """Issue 11: an output that resolves to any part of the split set (here a hard link to the middle one) is
    refused with exit 2; the parts are untouched."""
    import os
    import shutil

    paths, _mem, _k = split_set
    copies = [tmp_path / p.name for p in paths]
    for src, dst in zip(paths, copies):
        shutil.copyfile(src, dst)
    before = [c.read_bytes() for c in copies]
    out = tmp_path / "pages.parquet"
    os.link(copies[1], out)
    rc, _, err = run(capsysbinary, "pages", *copies, "-o", out)
    assert rc == 2 and b"hard link" in err and b"refusing to overwrite an input" in err
    assert [c.read_bytes() for c in copies] == before
