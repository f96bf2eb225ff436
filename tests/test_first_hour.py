"""A newcomer's first hour (issue 16): ``tracelens --version``, the licence, the README's commands and formats, and
errors that say what a wrong file is and what to run instead: a dump given to a capture command, a capture given
to a dump command, a compressed file, an LZO dump without python-lzo."""

from __future__ import annotations

import importlib.metadata
import re
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import tracelens
from tracelens.cli import main

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample-traces"
CAPTURE = SAMPLES / "persistent-grants.xentrace"
DUMP = SAMPLES / "instrumented-guest-d1.kdump"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _run(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# -- version and licence -------------------------------------------------------------------------------------------
def test_version_is_printed_from_the_one_place_it_is_written():
    r = subprocess.run([sys.executable, "-m", "tracelens", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    m = re.fullmatch(r"tracelens (\S+) \(Python (\d+\.\d+\.\d+); extras: lzo (yes|no), plot (yes|no), "
                     r"fleet (yes|no), notebook (yes|no)\)\n", r.stdout)
    assert m, r.stdout
    assert m.group(2) == ".".join(map(str, sys.version_info[:3]))
    # pyproject.toml takes the version from tracelens.__version__; the installed metadata agrees
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tracelens.__version__"}
    assert m.group(1) == tracelens.__version__ == importlib.metadata.version("tracelens")


def test_version_says_which_extras_are_missing(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lzo" else real(name, *a))
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0 and "extras: lzo no, " in out


def test_the_licence_is_apache_2_as_pyproject_says():
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 11000  # the whole text, not a pointer to it
    assert PYPROJECT["project"]["license"] == "Apache-2.0" and PYPROJECT["project"]["license-files"] == ["LICENSE"]


# -- the README ------------------------------------------------------------------------------------------------------
def test_readme_lists_every_report_format():
    from tracelens.commands.analyze import FORMATS

    line = next(x for x in (REPO / "README.md").read_text().splitlines() if x.strip().startswith("tracelens analyze"))
    assert re.search(r"--format ([a-z|]+)", line).group(1).split("|") == list(FORMATS)


def test_readme_commands_use_the_project_venv():
    """The two commands run the .venv's own tracelens and pytest (never whatever is first on PATH), and the scripts
    parse; a fresh clone running them is the CI run itself (.ci/run calls scripts/test.sh)."""
    readme = (REPO / "README.md").read_text()
    assert "    bash scripts/demo.sh\n" in readme and "    bash scripts/test.sh\n" in readme
    assert "exec bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    demo, test = (REPO / "scripts" / n for n in ("demo.sh", "test.sh"))
    assert re.search(r"^exec \.venv/bin/tracelens analyze ", demo.read_text(), re.M)
    assert re.search(r"^\.venv/bin/python -m pytest ", test.read_text(), re.M)
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "VENV=.venv" in setup and '"$PY" -m venv "$VENV"' in setup
    assert setup.count("pip install") == setup.count('"$VPY" -m pip install') > 0  # pip of .venv only
    assert "/.venv/" in (REPO / ".gitignore").read_text().splitlines()
    for script in ("setup.sh", "demo.sh", "test.sh"):
        r = subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


# -- outputs say what they wrote ---------------------------------------------------------------------------------------
def test_analyze_o_says_what_it_wrote_like_decode(capsys, tmp_path):
    out = tmp_path / "r.json"
    rc, stdout, err = _run(capsys, "analyze", CAPTURE, "--format", "json", "-o", out)
    assert rc == 0 and stdout == "" and out.is_file()
    import json

    n = len(json.loads(out.read_text())["findings"])
    assert n == 2 and err == f"{CAPTURE}: 2 finding(s), json report -> {out}\n"
    rc, _, err = _run(capsys, "decode", CAPTURE, "-o", tmp_path / "d.parquet")
    assert rc == 0 and re.fullmatch(rf"{re.escape(str(CAPTURE))}: 514 records -> .*d\.parquet\n", err)


# -- the wrong file ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["events", "{}"], ["decode", "{}", "-o", "{out}"], ["analyze", "{}"], ["watch", "{}"]],
                         ids=lambda a: a[0])
def test_a_dump_given_to_a_capture_command_is_named(capsys, tmp_path, argv):
    rc, out, err = _run(capsys, *(a.format(DUMP, out=tmp_path / "x.parquet") for a in argv))
    assert rc == 3 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"tracelens: error: {DUMP}: at byte 0: not a xentrace capture: this is a "
                          "kdump-compressed dump; dump commands read it (tracelens info, dmesg, pages, read)")
    assert "--vmcore DUMP" in err and "0x" not in err


def test_the_gate_names_a_dump_among_its_captures(capsys, tmp_path):
    rc, out, err = _run(capsys, "gate", DUMP)
    assert rc == 3
    assert "not a xentrace capture: this is a kdump-compressed dump" in out + err


@pytest.mark.parametrize("argv", [["dmesg", "{}"], ["pages", "{}"], ["read", "{}", "0x1000", "16"],
                                  ["analyze", str(CAPTURE), "--vmcore", "{}"]], ids=lambda a: a[0] + str(len(a)))
def test_a_capture_given_to_a_dump_command_is_named(capsys, argv):
    rc, out, err = _run(capsys, *(a.format(CAPTURE) for a in argv))
    assert rc == 3 and out == "" and err.count("\n") == 1, err
    assert f"{CAPTURE}: at byte 0: not a dump: this is a xentrace capture; capture commands read it" in err


@pytest.mark.parametrize("magic, fmt, undo", [(b"\x28\xb5\x2f\xfd", "zstd", "zstd -d"), (b"\x1f\x8b\x08", "gzip", "gunzip"),
                                              (b"\xfd7zXZ\x00", "xz", "xz -d"), (b"BZh9", "bzip2", "bunzip2")])
@pytest.mark.parametrize("command", ["info", "analyze", "dmesg"])
def test_a_compressed_file_is_to_be_decompressed(capsys, tmp_path, magic, fmt, undo, command):
    p = tmp_path / f"capture.{fmt}"
    p.write_bytes(magic + bytes(200))
    rc, _, err = _run(capsys, command, p)
    assert rc == 3 and err.count("\n") == 1
    assert err.endswith(f": a {fmt}-compressed file: decompress it first ({undo} {p.name}) and give tracelens the "
                        "result\n"), err


def test_a_real_zstd_capture(capsys, tmp_path):
    import zstandard

    p = tmp_path / "persistent-grants.xentrace.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(CAPTURE.read_bytes()))
    rc, _, err = _run(capsys, "analyze", p)
    assert rc == 3 and "decompress it first (zstd -d persistent-grants.xentrace.zst)" in err


def _lzo_dump(tmp_path) -> Path:
    """A kdump-compressed dump whose stored pages are marked LZO (the data is never decoded: without python-lzo
    the reader must stop at the codec)."""
    sys.path.insert(0, str(REPO / "tests" / "vmcore"))
    import vmcore_writers as vw

    def to_lzo(layout, out):
        for i in range(len(layout["dumpable"])):
            at = layout["desc_off"] + 24 * i
            offset, size, flags, _ = struct.unpack_from("<qIIQ", out, at)
            if flags == vw.CODEC_FLAGS["zlib"]:
                struct.pack_into("<I", out, at + 12, vw.CODEC_FLAGS["lzo"])

    mem = vw.Memory(ram=[(0x100, 0x200)])
    k = vw.Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    vw.add_lockless_ring(k, [vw.LogRec(1_000, b"Hypervisor detected: Xen HVM")])
    p = tmp_path / "lzo.kdump"
    vw.write_kdump(p, mem, vw.standard_notes(k.vmcoreinfo()), codec="zlib", vmcoreinfo=k.vmcoreinfo(), tamper=to_lzo)
    return p


def test_an_lzo_dump_without_python_lzo_names_the_missing_package(capsys, tmp_path, monkeypatch):
    from tracelens.parsers import vmcore
    from tracelens.parsers.vmcore import codecs

    monkeypatch.setattr(codecs, "_lzo_mod", None)
    p = _lzo_dump(tmp_path)
    rc, _, err = _run(capsys, "dmesg", p)
    assert rc == 3 and err.count("\n") == 1
    assert ("the page is lzo-compressed, and python-lzo, an optional package, is not installed: pip install "
            "python-lzo") in err and "liblzo2-dev" in err
    assert "damaged" not in err
    with vmcore.open(p) as d:
        with pytest.raises(vmcore.CodecMissing, match="python-lzo, an optional package") as e:
            d.read_phys(0x120000, 16)
        assert e.value.state == "invalid" and e.value.offset is None
        errors = {}
        for b in d.iter_pages():
            errors.update(b.errors)
        assert errors and all("python-lzo, an optional package, is not installed" in m for m in errors.values())
