"""The dump commands through the real CLI entry point (tracelens.cli.main) and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from vmcore_writers import PS, Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_kdump

from tracelens import cli  # noqa: E402

EXCLUDED = set(range(0x180, 0x190))


@pytest.fixture(scope="module")
def dump_file(tmp_path_factory):
    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    mem.write(0x150 * PS, b"hello physical memory" + bytes(PS - 21))
    mem.write(0x180 * PS, b"filtered" * 8)
    add_lockless_ring(k, [LogRec(10**9, b"first line"), LogRec(2 * 10**9, b"two\nparts")])
    vmci = k.vmcoreinfo()
    p = tmp_path_factory.mktemp("cli") / "d.kdump"
    write_kdump(p, mem, standard_notes(vmci), codec="zlib", excluded=EXCLUDED, vmcoreinfo=vmci)
    return p, k


def run(capsysbinary, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsysbinary.readouterr()
    return rc, out, err


def test_dmesg_text_and_formats(dump_file, capsysbinary):
    p, _ = dump_file
    rc, out, _ = run(capsysbinary, "dmesg", p)
    assert rc == 0 and out == b"[    1.000000] first line\n[    2.000000] two\nparts\n"
    rc, out, _ = run(capsysbinary, "dmesg", p, "--format", "makedumpfile")
    assert rc == 0 and out == b"[    1.000000] first line\n[    2.000000] two\n               parts\n"
    rc, out, _ = run(capsysbinary, "dmesg", p, "--json")
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["text"] for r in rows] == ["first line", "two\nparts"] and rows[0]["ts_nsec"] == 10**9
    rc, _, err = run(capsysbinary, "dmesg", p, "--format", "nope")
    assert rc == 2 and b"--format" in err


def test_info_json_and_table(dump_file, capsysbinary):
    p, _ = dump_file
    rc, out, _ = run(capsysbinary, "info", p, "--json")
    info = json.loads(out)
    assert rc == 0
    assert info["format"] == "kdump" and info["compression"] == "zlib" and info["header_version"] == 6
    assert info["pages"]["excluded"] == len(EXCLUDED)
    assert info["pages"]["present"] + info["pages"]["zero"] == 0x100 - len(EXCLUDED)
    assert info["osrelease"] == "6.1.0-test" and info["cpus"] == 2 and info["kaslr_offset"] == "0x0"
    rc, out, _ = run(capsysbinary, "info", p)
    assert rc == 0 and b"6.1.0-test" in out and b"excluded" in out


def test_show_code_runs(dump_file, capsysbinary, tmp_path):
    p, _ = dump_file
    for argv in (["info", p, "--show-code"], ["dmesg", p, "--show-code"], ["pages", p, "--show-code"],
                 ["read", p, "0x150000", "8", "--show-code"]):
        rc, out, _ = run(capsysbinary, *argv)
        assert rc == 0 and (b"tracelens.open(" in out or b"tracelens.info(" in out)
        ns: dict = {}
        exec(compile(out.decode(), "<show-code>", "exec"), ns)  # the printed code really works
        capsysbinary.readouterr()
        assert "dump" in ns or "info" in ns  # equivalence: tests/test_show_code_options.py


def test_pages_parquet_is_written_atomically(dump_file, capsysbinary, tmp_path):
    import pyarrow.parquet as pq

    p, _ = dump_file
    out = tmp_path / "pages.parquet"
    rc, _, err = run(capsysbinary, "pages", p, "-o", out)
    assert rc == 0 and out.exists() and err == f"{p}: 256 pages -> {out}\n".encode()
    assert [f for f in os.listdir(tmp_path) if f.endswith(".part")] == []
    t = pq.read_table(out)
    assert t.num_rows == 256
    rc, out_json, _ = run(capsysbinary, "pages", p, "--json")
    runs = json.loads(out_json)
    assert {"first_pfn": 0x180, "last_pfn": 0x18F, "pages": 16, "state": "excluded", "compression": "none"} in runs
    rc, _, err = run(capsysbinary, "pages", p, "-o", tmp_path / "no" / "such" / "dir.parquet")
    assert rc == 2 and b"cannot write" in err


@pytest.mark.parametrize("kind", ["same path", "symlink", "hard link"])
def test_pages_refuses_to_write_over_its_dump(dump_file, capsysbinary, tmp_path, kind):
    """Issue 11: `pages DUMP -o DUMP` turned a 20 MB dump into a Parquet file. An output that resolves to the dump
    (the same path, a symlink to it, a hard link: same device and inode) is refused with exit 2."""
    import hashlib
    import shutil

    dump = tmp_path / "d.kdump"
    shutil.copyfile(dump_file[0], dump)
    before = hashlib.sha256(dump.read_bytes()).hexdigest()
    out = {"same path": dump, "symlink": tmp_path / "s.parquet", "hard link": tmp_path / "h.parquet"}[kind]
    if kind == "symlink":
        out.symlink_to(dump)
    elif kind == "hard link":
        os.link(dump, out)
    rc, _, err = run(capsysbinary, "pages", dump, "-o", out)
    assert rc == 2 and b"refusing to overwrite an input" in err and len(err.strip().splitlines()) == 1
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == before
    assert [f for f in os.listdir(tmp_path) if f.endswith(".part")] == []


def test_read_physical_and_virtual(dump_file, capsysbinary):
    p, k = dump_file
    rc, out, _ = run(capsysbinary, "read", p, "0x150000", "21", "--raw")
    assert rc == 0 and out == b"hello physical memory"
    rc, out, _ = run(capsysbinary, "read", p, hex(k.direct_va(0x150000)), "5", "--hex", "--virtual")
    assert rc == 0 and out == b"68656c6c6f\n"
    rc, out, _ = run(capsysbinary, "read", p, "0x150000", "16")
    assert rc == 0 and out.startswith(b"0000000000150000:  ") and b"hello physical m" in out
    rc, _, err = run(capsysbinary, "read", p, "0x180000", "8")
    assert rc == 3 and b"excluded" in err and err.count(b"\n") == 1
    rc, out, _ = run(capsysbinary, "read", p, "0x180000", "8", "--raw", "--zero-excluded")
    assert rc == 0 and out == bytes(8)
    rc, _, err = run(capsysbinary, "read", p, "zzz")
    assert rc == 2 and b"not a number" in err


def test_subprocess_dmesg_on_a_real_dump(real_dumps, vmcore_samples):
    pytest.importorskip("lzo", reason="python-lzo is not installed (the dump's pages are LZO)")
    path, _ = real_dumps["guest-mdf-l31.kdump"]
    r = subprocess.run([sys.executable, "-m", "tracelens", "dmesg", str(path), "--format", "makedumpfile"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (vmcore_samples / "dmesg" / "proc-vmcore.makedumpfile.txt").read_bytes()


def test_dmesg_path_does_not_import_numpy(dump_file):
    """Start-up time: opening a dump, reading pages and printing the log need neither numpy nor pyarrow."""
    p, _ = dump_file
    code = ("import sys\nfrom tracelens.parsers import vmcore\nd = vmcore.open(sys.argv[1])\n"
            "d.kernel_log().render(); d.read_phys(0x150000, 16); d.info\n"
            "print(sorted(m for m in ('numpy', 'pyarrow', 'polars') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
