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

    monkeypatch.setattr(dump_mod.Dump, "page_counts", no_memory)
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
