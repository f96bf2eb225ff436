"""Inputs that are no capture file at all, and allocation failure (issue 12): a FIFO or a directory given as the
capture or dump, and a MemoryError at the error choke point. One line naming the file, exit 3, never a hang."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tracelens import cli, errors

TESTS = Path(__file__).resolve().parent
SAMPLE = TESTS.parent / "sample-traces" / "crash-kdump.xentrace"
COMMANDS = [["info"], ["events"], ["analyze"], ["gate"], ["decode", "-o", "{tmp}/x.parquet"], ["dmesg"], ["pages"]]


@pytest.fixture
def alarm():
    """Fail (instead of hanging the suite) when a command waits on its input."""
    def on_alarm(*_):
        raise TimeoutError("the command blocked on its input")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_fifo_is_refused_at_once(tmp_path, capsys, alarm, cmd):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    argv = [cmd[0], str(fifo)] + [a.format(tmp=tmp_path) for a in cmd[1:]]
    assert cli.main(argv) == 3
    out, err = capsys.readouterr()
    msg = err if err else out
    assert f"{fifo}: is a FIFO, not a regular file" in msg
    assert err.count("\n") <= 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_analyze_with_a_fifo_as_vmcore(tmp_path, capsys, alarm):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rc = cli.main(["gate", str(SAMPLE), "--vmcore", str(fifo)])
    out, err = capsys.readouterr()
    assert rc == 3 and "is a FIFO" in out + err


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_directory_is_a_directory(tmp_path, capsys, cmd):
    d = tmp_path / "adir"
    d.mkdir()
    argv = [cmd[0], str(d)] + [a.format(tmp=tmp_path) for a in cmd[1:]]
    assert cli.main(argv) == 3
    out, err = capsys.readouterr()
    assert f"{d}: is a directory" in err + out and "cannot map" not in err + out


def test_memory_error_at_the_choke_point_is_exit_3(capsys, monkeypatch):
    monkeypatch.setattr(errors, "current_input", "/some/dump")

    def boom():
        raise MemoryError

    assert errors.run_guarded(boom) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tracelens: error: /some/dump: out of memory")


def test_memory_error_while_reading_a_dump_names_it(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(TESTS / "vmcore"))
    import vmcore_writers as vw

    from tracelens.parsers.vmcore import dump as dump_mod

    mem = vw.Memory(ram=[(0x100, 0x110)])
    p = tmp_path / "d.kdump"
    vw.write_kdump(p, mem, vw.standard_notes(None))

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(dump_mod.DumpReader, "page_counts", no_memory)
    assert cli.main(["info", str(p)]) == 3
    err = capsys.readouterr().err
    assert err == f"tracelens: error: {p}: out of memory while reading it (a damaged size field, or an input too large for this machine): input unreadable\n"


# -- captures with many distinct event ids --------------------------------------------------------------------------
def test_more_than_32767_distinct_event_ids(tmp_path, capsys):
    """Issue 12: 32,768 or more distinct event ids overflowed the int16 name index (OverflowError, exit 70) in
    events, analyze and gate, while the documented cap is MAX_DISTINCT_IDS (1,000,000). The index is int32."""
    from tracelens.parsers.xentrace.decode import read_xentrace
    from tracelens.parsers.xentrace.writer import CaptureWriter

    w = CaptureWriter(poll_period=10_000)
    ids = 40_000
    for i in range(ids):
        w.record(i % 2, 0x00F00000 + i, (i,), tsc=1000 + 10 * i)
    p = tmp_path / "many.xentrace"
    w.write(p)
    t = read_xentrace(p)
    names = t.column("name").combine_chunks()
    assert names.type.index_type.bit_width == 32
    assert len(set(names.dictionary.to_pylist())) >= ids
    assert names[-1].as_py() == f"UNKNOWN_0x{0x00F00000 + ids - 1:08x}"
    assert cli.main(["events", str(p), "--limit", "2"]) == 0
    assert cli.main(["analyze", str(p), "--format", "json", "-o", str(tmp_path / "a.json")]) == 0
    assert cli.main(["gate", str(p)]) == 0
    err = capsys.readouterr().err
    assert "internal error" not in err


# -- policy, baseline, catalog and option values --------------------------------------------------------------------
def _one_line_exit_2(capsys, argv, *fragments):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (argv, out, err)
    assert err.count("\n") == 1 and "internal error" not in err and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory):
    from tracelens.parsers.xentrace.writer import CaptureWriter

    w = CaptureWriter(poll_period=1000)
    for i in range(20):
        w.record(i % 2, 0x00028004, [1, i % 4], tsc=100 + 40 * i)
    p = tmp_path_factory.mktemp("cap") / "small.xentrace"
    w.write(p)
    return p


@pytest.mark.parametrize("name, text, fragment", [
    ("deep.toml", "[gate]\nx = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("bigint.toml", "[gate]\nx = " + "9" * 5000 + "\n", "invalid TOML"),
])
def test_hostile_policy_files(tmp_path, capsys, small_capture, name, text, fragment):
    p = tmp_path / name
    p.write_text(text)
    _one_line_exit_2(capsys, ["gate", small_capture, "--policy", p], str(p), fragment)


@pytest.mark.parametrize("name, text, fragment", [
    ("deep.json", '{"schema_version": 1, "accepted": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ("bigint.json", '{"schema_version": 1, "accepted": [], "n": ' + "9" * 5000 + "}", "invalid JSON"),
    ("true.json", '{"schema_version": true, "accepted": []}', "schema_version must be 1 (an integer), not true"),
    ("float.json", '{"schema_version": 1.0, "accepted": []}', "schema_version must be 1 (an integer), not 1.0"),
])
def test_hostile_baseline_files(tmp_path, capsys, small_capture, name, text, fragment):
    p = tmp_path / name
    p.write_text(text)
    _one_line_exit_2(capsys, ["gate", small_capture, "--baseline", p], str(p), fragment)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_baseline_dev_zero_is_capped(tmp_path, capsys, small_capture, alarm):
    pol = tmp_path / "p.toml"
    pol.write_text('[gate]\nbaseline = "/dev/zero"\n')
    _one_line_exit_2(capsys, ["gate", small_capture, "--policy", pol], "/dev/zero", "larger than")
    _one_line_exit_2(capsys, ["gate", small_capture, "--baseline", "/dev/zero"], "/dev/zero", "larger than")


@pytest.mark.parametrize("text, fragment", [
    ('[[class]]\nvalue = 1\nname = "X"\n', "class #1: 'mask' must be an integer"),
    ('[[class]]\nmask = "0xf"\nvalue = 1\nname = "X"\n', "class #1: 'mask' must be an integer"),
    ('[[class]]\nmask = 15\nvalue = 1\n', "class #1: 'name' must be a non-empty string"),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("[hypercalls]\nabc = 'x'\n", "[hypercalls]: keys must be integers"),
    ("event = 3\n", "'event' must be an array of tables"),
])
def test_hostile_catalog_files(tmp_path, capsys, small_capture, text, fragment):
    p = tmp_path / "cat.toml"
    p.write_text(text)
    _one_line_exit_2(capsys, ["events", small_capture, "--catalog", p], str(p), fragment)


@pytest.mark.parametrize("argv, fragment", [
    (["events", "{cap}", "--cpu-hz", "0"], "--cpu-hz"),
    (["events", "{cap}", "--cpu-hz", "-1"], "--cpu-hz"),
    (["events", "{cap}", "--cpu-hz", "inf"], "--cpu-hz"),
    (["events", "{cap}", "--cpu-hz", "nan"], "--cpu-hz"),
    (["analyze", "{cap}", "--cpu-hz", "nan"], "--cpu-hz"),
    (["query", "{cap}", "--cpu-hz", "0", "SELECT count(*) FROM records"], "--cpu-hz"),
    (["decode", "{cap}", "-o", "{tmp}/x.parquet", "--cpu-hz", "0"], "--cpu-hz"),
    (["events", "{cap}", "--limit", "-1"], "--limit"),
    (["decode", "{cap}", "-o", "{tmp}/x.parquet", "--batch-mb", "0"], "--batch-mb"),
    (["decode", "{cap}", "-o", "{tmp}/x.parquet", "--batch-mb", "-5"], "--batch-mb"),
    (["decode", "{cap}", "-o", "{tmp}/x.parquet", "--threads", "0"], "--threads"),
    (["decode", "{cap}", "-o", "{tmp}/x.parquet", "--threads", "-2"], "--threads"),
    (["events", "{cap}", "--class", "FOO"], "--class FOO: no such event class"),
])
def test_bad_option_values_are_usage_errors(tmp_path, capsys, small_capture, argv, fragment):
    argv = [a.format(cap=small_capture, tmp=tmp_path) for a in argv]
    _one_line_exit_2(capsys, argv, fragment)


def test_library_open_checks_cpu_hz(small_capture):
    import tracelens
    from tracelens.errors import UsageError

    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UsageError):
            tracelens.open(small_capture, tracelens.DecodeOptions(cpu_hz=bad))
