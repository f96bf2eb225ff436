"""The real dumps in ../shared/samples/vmcore against the README's facts and the reference tools' output
(vmcore-dmesg, makedumpfile, readelf, libkdumpfile, crash, drgn as recorded in the JSON files)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from tracelens.errors import FormatError
from tracelens.parsers import vmcore

ALL = ["proc-vmcore.elf", "mdf-E31.elf", "mdf-n31.kdump", "guest-mdf-l31.kdump"]
FILTERED = ["mdf-E31.elf", "mdf-n31.kdump", "guest-mdf-l31.kdump"]
RAM_END = 256 << 20

#: README: "Page oracle"
ORACLE = {
    "proc-vmcore.elf": ("8057a905d8c86d35d01226b8593bf71b8090ffb17d0d8bec0c5b872d8ec42790", 14_099),
    "mdf-E31.elf": ("d0e27ed0997658f54c7f9944b7400f356b0ac3327ca315a5624a1d13ac5d7449", 12_977),
    "mdf-n31.kdump": ("d0e27ed0997658f54c7f9944b7400f356b0ac3327ca315a5624a1d13ac5d7449", 12_977),
    "guest-mdf-l31.kdump": ("d0e27ed0997658f54c7f9944b7400f356b0ac3327ca315a5624a1d13ac5d7449", 12_977),
}


def _need_codec(name):
    if name.startswith("guest-"):  # its pages are LZO-compressed
        pytest.importorskip("lzo", reason="python-lzo is not installed (pip install python-lzo; Debian liblzo2-dev)")


def _oracle(dump) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for b in dump.iter_pages():
        assert not b.errors, f"pages failed to decode: {list(b.errors.items())[:3]}"
        keep = b.data.any(axis=1) & (b.pfn < RAM_END // 4096)
        for pfn, row in zip(b.pfn[keep].tolist(), b.data[keep]):
            h.update(struct.pack("<Q", pfn))
            h.update(row.tobytes())
            n += 1
    return h.hexdigest(), n


@pytest.mark.parametrize("name", ALL)
def test_page_oracle(real_dumps, name):
    _need_codec(name)
    path, _ = real_dumps[name]
    with vmcore.open(path) as d:
        assert _oracle(d) == ORACLE[name]


@pytest.mark.parametrize("name", ALL)
def test_dmesg_matches_reference_tools_byte_for_byte(real_dumps, vmcore_samples, name):
    _need_codec(name)
    path, truth = real_dumps[name]
    with vmcore.open(path) as d:
        log = d.kernel_log()
    assert log.era == "lockless"
    assert log.render("vmcore-dmesg") == (vmcore_samples / "dmesg" / "proc-vmcore.vmcore-dmesg.txt").read_bytes()
    assert log.render("makedumpfile") == (vmcore_samples / "dmesg" / "proc-vmcore.makedumpfile.txt").read_bytes()
    text = log.render("vmcore-dmesg").decode()
    assert text.count("\n") == 418
    markers = [line for line in text.splitlines() if "tracelens-marker-490db7d5" in line]
    assert markers == truth["makedumpfile_dmesg"]["marker_texts"]
    assert hashlib.sha256(log.render("makedumpfile")).hexdigest() == truth["makedumpfile_dmesg"]["sha256"]


def test_dmesg_table_levels_of_marker_lines(real_dumps):
    path, _ = real_dumps["mdf-n31.kdump"]
    with vmcore.open(path) as d:
        t = d.dmesg().to_pylist()
    markers = [r for r in t if "tracelens-marker-490db7d5" in r["text"]]
    assert len(markers) == 12
    # the guest's init wrote them through /dev/kmsg at info, warning and error levels
    assert {r["level"] for r in markers} >= {3, 4, 6}
    assert [r["seq"] for r in t] == sorted(r["seq"] for r in t)
    assert all(r["status"] == "ok" for r in t)


@pytest.mark.parametrize("name", ALL)
def test_vmcoreinfo_equals_recorded_text(real_dumps, name):
    _need_codec(name)
    path, truth = real_dumps[name]
    with vmcore.open(path) as d:
        vi = d.vmcoreinfo
    assert hashlib.sha256(vi.raw).hexdigest() == truth["vmcoreinfo"]["sha256"]
    for key, value in truth["vmcoreinfo"]["key"].items():
        assert vi.get(key) == value, key
    assert vi.osrelease == "6.1.0-56-cloud-amd64"
    assert vi.page_size == 4096
    assert vi.kerneloffset == 0x1C000000
    assert vi.phys_base == -394264576
    assert vi.number("pgtable_l5_enabled") == 0
    assert vi.crashtime is not None
    assert vi.symbol("prb") is not None and vi.symbol("log_buf") is None


@pytest.mark.parametrize("name", ALL)
def test_prstatus_registers_equal_libkdumpfile(real_dumps, name):
    path, truth = real_dumps[name]
    with vmcore.open(path) as d:
        rows = d.prstatus().to_pylist()
    expected = truth["libkdumpfile"]["cpu_regs"]
    assert [r["pid"] for r in rows] == [0, 1]  # README: CPU 0 idle, then the panicking init
    for row, exp in zip(rows, expected):
        assert row["pid"] == exp["pid"]
        for reg, col in (("rip", "rip"), ("rsp", "rsp"), ("rbp", "rbp"), ("rax", "rax"), ("cs", "cs"), ("ss", "ss"), ("rflags", "eflags")):
            assert row[col] == int(exp[reg], 16), (reg, row[col])


@pytest.mark.parametrize(
    "name, counts",
    [
        # /proc/vmcore: every pfn of the 4 PT_LOADs' RAM (readelf: 51113 pages incl. the kernel-text overlap)
        ("proc-vmcore.elf", {"present": 40_825, "zero": 0, "excluded": 0, "lost": 0, "invalid": 0}),
        # -E: libkdumpfile read 14912 pages (it also counts 10 pages just before unaligned segments, see docs);
        # the 40,825 RAM pfns split into stored and filtered
        ("mdf-E31.elf", {"present": 14_902, "zero": 0, "excluded": 25_923, "lost": 0, "invalid": 0}),
        # kdump: 15,500 dumpable pages (README), 25,324 bitmap-1-only pfns (libkdumpfile read errors in pagemap)
        ("mdf-n31.kdump", {"present": 12_977, "zero": 2_523, "excluded": 25_324, "lost": 0, "invalid": 0}),
        ("guest-mdf-l31.kdump", {"present": 12_977, "zero": 2_523, "excluded": 25_324, "lost": 0, "invalid": 0}),
    ],
)
def test_page_state_counts(real_dumps, name, counts):
    path, truth = real_dumps[name]
    with vmcore.open(path) as d:
        got = d.page_counts()
    assert got == counts
    if name.endswith(".kdump"):
        assert got["present"] + got["zero"] == 15_500
        assert got["excluded"] == truth["libkdumpfile"]["read_all"]["read_errors_in_pagemap"]
        # every non-zero page is stored: the present count equals the oracle's non-zero page count
        assert got["present"] == ORACLE[name][1]
    if name == "proc-vmcore.elf":
        assert got["present"] == truth["libkdumpfile"]["read_all"]["pages_read"]


def _probe(d, addr):
    try:
        return hashlib.sha256(d.read_phys(addr, 4096)).hexdigest()
    except vmcore.PageUnavailable as e:
        return e.state


@pytest.mark.parametrize("name", ALL)
def test_probe_pages(real_dumps, name):
    """Where every reference tool returned bytes, tracelens returns the same bytes; where they disagree, the
    documented semantics hold (docs/vmcore.md)."""
    _need_codec(name)
    path, truth = real_dumps[name]
    lk = truth["libkdumpfile"]["probe_pages"]
    with vmcore.open(path) as d:
        for key, addr in truth["probe_addresses"].items():
            got = _probe(d, addr)
            refs = [truth[t]["probe_pages"][key]["sha256"] for t in ("libkdumpfile", "drgn", "crash") if t in truth]
            if all(r is not None for r in refs) and len(set(refs)) == 1:
                assert got == refs[0], key
            elif addr == 0:
                assert got == "hole"  # page 0 is outside every PT_LOAD / bitmap
            elif lk[key]["sha256"] is None and "NoData" in lk[key].get("error", ""):
                assert got in ("hole", "excluded"), key
    with vmcore.open(path) as d:
        # the PT_LOAD that ends mid-page at 0x9fc00: present (in /proc/vmcore), bytes past the segment are zeros
        if name == "proc-vmcore.elf":
            assert d.read_phys(0x9F000, 4096) == bytes(4096)


@pytest.mark.parametrize("name", FILTERED)
def test_filtered_pages_are_excluded_not_zero(real_dumps, name):
    _need_codec(name)
    path, truth = real_dumps[name]
    pattern = truth["meta"]["pattern_pages"][0]
    with vmcore.open(path) as d:
        with pytest.raises(vmcore.PageUnavailable) as e:
            d.read_phys(pattern, 16)
        assert e.value.state == "excluded"
        assert "excluded" in str(e.value)
        assert d.read_phys(pattern, 16, zero_excluded=True) == bytes(16)
    with vmcore.open(real_dumps["proc-vmcore.elf"][0]) as full:
        assert any(full.read_phys(pattern, 4096))


@pytest.mark.parametrize("name", ALL)
def test_kernel_virtual_reads(real_dumps, name):
    _need_codec(name)
    path, truth = real_dumps[name]
    with vmcore.open(path) as d:
        vi = d.vmcoreinfo
        uts = d.read_virt(vi.symbol("init_uts_ns") + (vi.offset("uts_namespace.name") or 0), 65 * 3)
        assert uts[:65].rstrip(b"\0") == b"Linux"
        assert uts[130:195].rstrip(b"\0") == b"6.1.0-56-cloud-amd64"  # libkdumpfile linux.uts.release
        # a direct-map address (mem_section lives in memblock memory) goes through the page-table walk
        ms = vi.symbol("mem_section")
        pa = d.virt_to_phys(ms)
        assert pa < RAM_END
        assert d.read_virt(ms, 64) == d.read_phys(pa, 64)
        # kernel text: phys_base applied (README: _stext page at 0x5800000)
        assert d.virt_to_phys(vi.symbol("_stext")) == 0x5800000


def test_kdump_headers_equal_makedumpfile_view(real_dumps):
    for name in ("mdf-n31.kdump", "guest-mdf-l31.kdump"):
        path, truth = real_dumps[name]
        mk = truth["kdump_header_per_makedumpfile_D"]  # headers only: no page is decoded here
        with vmcore.open(path) as d:
            info = d.info()
            assert info["header_version"] == int(mk["header_version"])
            assert info["status"] == int(mk["status"])
            assert info["dump_level"] == int(mk["dump_level"])
            assert info["max_mapnr"] == int(mk["max_mapnr_64"], 16)
            assert info["cpus"] == int(mk["nr_cpus"])
            assert info["header_phys_base"] & (2**64 - 1) == int(mk["phys_base"], 16)
            assert info["compression"] == ("lzo" if name.startswith("guest") else "none")
            assert info["osrelease"] == "6.1.0-56-cloud-amd64"
            assert info["kaslr_offset"] == "0x1c000000"
            assert info["phys_base"] == -394264576
            assert info["complete"] is True
            assert info["vmcoreinfo_source"] == "note"


def test_elf_segments_equal_readelf(real_dumps):
    for name in ("proc-vmcore.elf", "mdf-E31.elf"):
        path, truth = real_dumps[name]
        with vmcore.open(path) as d:
            segs = d.segments_table().to_pylist()
            assert [n["type_name"] for n in d.notes_table().to_pylist()] == ["NT_PRSTATUS", "NT_PRSTATUS", "VMCOREINFO"]
        ref = truth["elf"]["pt_loads"]
        assert len(segs) == truth["elf"]["pt_load_count"] == len(ref)
        for s, r in zip(segs, ref):
            assert (s["offset"], s["vaddr"], s["paddr"], s["filesz"], s["memsz"]) == (r["offset"], r["vaddr"], r["paddr"], r["filesz"], r["memsz"])


def test_flattened_copy_of_a_real_dump_reads_the_same(real_dumps, tmp_path):
    """makedumpfile -F output of the LZO dump, rebuilt from the rearranged file by the test writer."""
    from vmcore_writers import write_flattened

    _need_codec("guest-mdf-l31.kdump")
    path, _ = real_dumps["guest-mdf-l31.kdump"]
    flat = tmp_path / "guest.flat"
    write_flattened(flat, path.read_bytes(), chunk=1 << 16, shuffle=True)
    with vmcore.open(flat) as d:
        assert d.source.kind == "flattened" and d.source.complete
        assert _oracle(d) == ORACLE["guest-mdf-l31.kdump"]
        assert d.kernel_log().render("makedumpfile").count(b"\n") == 418


def test_missing_vmcoreinfo_override(real_dumps):
    """A user-supplied VMCOREINFO replaces the dump's (here: the same text, so dmesg is unchanged)."""
    path, truth = real_dumps["mdf-n31.kdump"]
    with vmcore.open(path, vmcoreinfo=truth["vmcoreinfo"]["raw"]) as d:
        assert d.kernel_log().render().count(b"\n") == 418
    with vmcore.open(path, vmcoreinfo="OSRELEASE=x\n") as d:
        with pytest.raises(FormatError, match="no printk buffer"):
            d.kernel_log()


@pytest.mark.parametrize("codec", ["-c", "-l", None])
def test_real_makedumpfile_split_set_reads_as_the_whole_dump(real_dumps, vmcore_samples, tmp_path, codec):
    """makedumpfile --split of the real /proc/vmcore (Debian's makedumpfile, not our writer): the three parts, given
    in any order, hold the README's -d 31 page oracle and print the reference kernel log, from the API and the CLI."""
    import random
    import shutil
    import subprocess
    import sys

    tool = shutil.which("makedumpfile") or shutil.which("makedumpfile", path="/usr/sbin:/sbin")
    if tool is None:
        pytest.skip("makedumpfile is not installed (Debian package: makedumpfile)")
    if codec == "-l":
        pytest.importorskip("lzo", reason="python-lzo is not installed")
    src, _ = real_dumps["proc-vmcore.elf"]
    parts = [tmp_path / f"part{i}" for i in range(1, 4)]
    r = subprocess.run([tool, "--split", *([codec] if codec else []), "-d", "31", str(src), *map(str, parts)],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    shuffled = parts[:]
    random.Random(7).shuffle(shuffled)
    with vmcore.open(shuffled) as d:
        assert _oracle(d) == ORACLE["mdf-n31.kdump"]
        assert d.page_counts()["present"] == ORACLE["mdf-n31.kdump"][1]
    out = subprocess.run([sys.executable, "-m", "tracelens", "dmesg", *map(str, shuffled)], capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (vmcore_samples / "dmesg" / "proc-vmcore.vmcore-dmesg.txt").read_bytes()
    # without the part that starts at pfn 0 the set has a gap: refused, naming a file (here makedumpfile put every
    # page in part1 and left the other two empty ranges at max_mapnr, so part1 is the one that cannot be missing)
    bad = subprocess.run([sys.executable, "-m", "tracelens", "info", str(parts[2]), str(parts[1])],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 3 and "missing" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
