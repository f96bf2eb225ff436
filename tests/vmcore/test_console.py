"""The console entry point's ``dmesg`` fast path (tracelens.console): the same output, errors and exit codes as the
typer command, without loading the CLI framework or numpy/pyarrow; everything else goes to the full CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from console_paths import both
from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf, write_kdump

from tracelens import console

from tracelens import cli  # noqa: E402

HEAVY = ("typer", "click", "rich", "pydantic", "numpy", "pyarrow", "polars", "numba", "dataclasses", "inspect",
         "concurrent.futures")
TEXT = b"[    1.000000] first\n[    2.000000] second line\n  indented\n"
TEXT_MDF = b"[    1.000000] first\n[    2.000000] second line\n                 indented\n"


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    add_lockless_ring(k, [LogRec(10**9, b"first"), LogRec(2 * 10**9, b"second line\n  indented")])
    vmci = k.vmcoreinfo()
    good = d / "good.elf"
    write_elf(good, mem, standard_notes(vmci))
    bare = d / "novmci.elf"  # no VMCOREINFO note: the error says how to get one
    write_elf(bare, mem, standard_notes(None))
    vmci_file = d / "vmcoreinfo.txt"
    vmci_file.write_bytes(vmci)
    parts = []
    for i, rng in enumerate([(0, 0x180), (0x180, 0x200)]):
        p = d / f"part{i}"
        write_kdump(p, mem, standard_notes(vmci), codec="zlib", vmcoreinfo=vmci, split=rng)
        parts.append(p)
    return {"good": good, "bare": bare, "vmci": vmci_file, "parts": parts, "dir": d}


def test_styles_match_printk():
    from tracelens.parsers.vmcore.printk import STYLES

    assert console._STYLES == STYLES


def test_output_matches_the_typer_command(dumps, capsysbinary):
    assert both(capsysbinary, ["dmesg", dumps["good"]]) == (0, TEXT, b"")
    assert both(capsysbinary, ["dmesg", dumps["good"], "--format", "makedumpfile"]) == (0, TEXT_MDF, b"")
    assert both(capsysbinary, ["dmesg", "--format=makedumpfile", dumps["good"]]) == (0, TEXT_MDF, b"")
    assert both(capsysbinary, ["dmesg", dumps["bare"], "--vmcoreinfo", dumps["vmci"]]) == (0, TEXT, b"")
    assert both(capsysbinary, ["dmesg", *dumps["parts"][::-1]]) == (0, TEXT, b"")


def test_errors_match_the_typer_command(dumps, capsysbinary):
    rc, out, err = both(capsysbinary, ["dmesg", dumps["bare"]])
    assert rc == 3 and out == b"" and b"-device vmcoreinfo" in err and err.count(b"\n") == 1
    missing = dumps["dir"] / "no-such-dump"
    rc, _, err = both(capsysbinary, ["dmesg", missing])
    assert rc == 3 and err.startswith(f"tracelens: error: {missing}".encode()) and err.count(b"\n") == 1
    rc, _, err = both(capsysbinary, ["dmesg", dumps["bare"], "--vmcoreinfo", missing])
    assert rc == 3 and b"cannot read VMCOREINFO file" in err
    rc, _, err = both(capsysbinary, ["dmesg", dumps["parts"][0]] + [dumps["good"]])
    assert rc == 3 and b"not a kdump-compressed part" in err


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["X", "--json"], ["X", "--xen"], ["X", "--show-code"],
                                  ["X", "--format", "nope"], ["X", "--format"], [], ["X", "--bogus"], ["--", "X"]])
def test_other_arguments_take_the_full_cli(args):
    assert console.dmesg_fast_args(args) is None


def test_full_cli_still_answers(dumps, capsysbinary):
    rc = console.main(["dmesg", "--help"])
    out, _ = capsysbinary.readouterr()
    assert rc == 0 and b"--vmcoreinfo" in out and b"--format" in out
    rc = console.main(["dmesg", str(dumps["good"]), "--format", "nope"])
    _, err = capsysbinary.readouterr()
    assert rc == 2 and b"--format must be one of" in err
    rc = console.main(["dmesg"])
    _, err = capsysbinary.readouterr()
    assert rc == 2 and b"Missing argument" in err
    rc = console.main(["info", str(dumps["good"]), "--json"])
    out, _ = capsysbinary.readouterr()
    assert rc == 0 and b'"format": "elf-vmcore"' in out


def test_fast_path_imports_no_framework(dumps):
    """Modules the fast path itself loads (whatever the interpreter's site already imported is not counted)."""
    code = ("import sys\nbefore = set(sys.modules)\nfrom tracelens.console import main\nrc = main(['dmesg', sys.argv[1]])\n"
            f"print(rc, sorted(m for m in {HEAVY!r} if m in set(sys.modules) - before), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, str(dumps["good"])], capture_output=True, text=True, timeout=60)
    assert r.stdout.encode() == TEXT
    assert r.stderr.strip() == "0 []", r.stderr


def test_subprocess_module_entry(dumps):
    r = subprocess.run([sys.executable, "-m", "tracelens", "dmesg", str(dumps["good"])], capture_output=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, TEXT, b"")
    r = subprocess.run([sys.executable, "-m", "tracelens", "dmesg", str(dumps["bare"])], capture_output=True, timeout=60)
    assert r.returncode == 3 and r.stderr.count(b"\n") == 1 and b"Traceback" not in r.stderr
