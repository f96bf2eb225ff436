"""The console entry point's ``info`` fast path (tracelens.console) for xentrace captures: the same output, errors
and exit codes as the typer command, without loading typer, click or pydantic; dumps and every other form of the
command go to the full CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from console_paths import both

from tracelens import console, cli

SAMPLES = Path(__file__).resolve().parent.parent / "sample-traces"
CAPTURE = SAMPLES / "persistent-grants.xentrace"


def test_table_and_json_equal_the_typer_command(capsys):
    rc, out, _ = both(capsys, ["info", CAPTURE])
    assert rc == 0 and "xentrace capture" in out and "records per class" in out
    rc, out, _ = both(capsys, ["info", "--json", CAPTURE, "--xen-version", "4.17"])
    assert rc == 0 and '"records"' in out and "4.17" in out
    rc, out, _ = both(capsys, ["info", CAPTURE, "--xen-version=4.7", "--json"])
    assert rc == 0 and "4.7 (given)" in out


def test_damage_and_errors_equal_the_typer_command(capsys, tmp_path):
    damaged = tmp_path / "cut.xentrace"
    damaged.write_bytes(CAPTURE.read_bytes()[:-6])  # a truncated last record
    rc, _, err = both(capsys, ["info", damaged])
    assert rc == 3 and "cut.xentrace" in err and "byte" in err and err.count("\n") == 1
    rc, _, err = both(capsys, ["info", damaged, "--tolerance", "truncate"])
    assert rc == 0 and "warning" in err
    rc, _, err = both(capsys, ["info", CAPTURE, "--tolerance", "lenient"])
    assert rc == 2 and "--tolerance" in err
    rc, _, err = both(capsys, ["info", tmp_path / "missing.bin"])
    assert rc == 3 and "missing.bin" in err
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    rc, _, err = both(capsys, ["info", empty])
    assert rc == 3 and "empty" in err


@pytest.mark.parametrize("argv", [["info"], ["info", "--help"], ["info", "--show-code", "x"], ["info", "a", "b"],
                                  ["info", "x", "--xen-version"], ["info", "x", "--bogus"]])
def test_other_forms_go_to_the_full_cli(argv):
    assert console.info_fast_args(argv[1:]) is None


def test_a_dump_goes_to_the_full_cli(capsys, tmp_path):
    elf = tmp_path / "not-a-capture.elf"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    rc1 = console.main(["info", str(elf)])
    out1, err1 = capsys.readouterr()
    rc2 = cli.main(["info", str(elf)])
    out2, err2 = capsys.readouterr()
    assert (rc1, out1, err1) == (rc2, out2, err2) and rc1 == 3


def test_fast_path_loads_no_cli_framework():
    code = ("import sys; from tracelens import console; rc = console.main(['info', sys.argv[1], '--json']); "
            "heavy = [m for m in ('typer', 'click', 'pydantic', 'tracelens.cli') if m in sys.modules]; "
            "print(rc, heavy, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, str(CAPTURE)], capture_output=True, text=True, timeout=300)
    assert r.stderr.strip().splitlines()[-1] == "0 []", r.stderr
