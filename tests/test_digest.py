"""tracelens.digest (a capture's SHA-256 on its own thread, started early) and console.leave (the CLI's exit)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tracelens import digest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample-traces" / "clean-soft-reset.xentrace"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 4095, digest.CHUNK - 1, digest.CHUNK, digest.CHUNK + 7, 2 * digest.CHUNK + 3])
def test_digest_equals_hashlib(tmp_path, size):
    data = os.urandom(size)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    d = digest.Digest(p)
    assert d.result() == _sha(data)
    assert d.result(size) == _sha(data)
    assert d.size == size


def test_digest_of_another_size_is_none(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 100)
    d = digest.Digest(p)
    assert d.result(101) is None  # the analysis saw a file of another size: not the bytes it hashed
    assert d.result(100) == _sha(b"x" * 100)


def test_no_digest_of_missing_directory_or_fifo(tmp_path):
    assert digest.Digest(tmp_path / "missing").result() is None
    assert digest.Digest(tmp_path).result() is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    d = digest.Digest(fifo)  # no writer: a blocking open would hang this thread for ever
    d._thread.join(5)
    assert not d._thread.is_alive()
    assert d.result() is None


def test_cancel_stops_hashing(tmp_path):
    p = tmp_path / "big.bin"
    with open(p, "wb") as f:
        f.truncate(64 * digest.CHUNK)  # 1 GiB, sparse
    d = digest.Digest(p)
    d.cancel()
    d._thread.join(10)
    assert not d._thread.is_alive()
    assert d.result() is None


def test_prefetch_then_take_is_the_same_digest(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    digest.prefetch(p)
    digest.prefetch(str(p))  # started once
    first = digest.take(tmp_path / "." / "f.bin")  # the same file by another spelling of its path
    assert first.result() == _sha(b"abc")
    second = digest.take(p)  # taken already: a new one
    assert second is not first and second.result() == _sha(b"abc")


def test_analysis_reports_the_files_sha256(tmp_path):
    from tracelens.analysis.analyze import analyze

    assert analyze(SAMPLE).sha256 == _sha(SAMPLE.read_bytes())


def test_cli_report_sha256_and_output_complete(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "tracelens", "analyze", str(SAMPLE), "--format", "json", "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["capture"]["sha256"] == _sha(SAMPLE.read_bytes())
    assert "json report ->" in r.stderr
    # stdout through a pipe: everything arrives although the interpreter's teardown is skipped
    r = subprocess.run([sys.executable, "-m", "tracelens", "analyze", str(SAMPLE), "--format", "json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["capture"]["sha256"] == _sha(SAMPLE.read_bytes())


LEAVE = """
import atexit, sys, threading, time
from pathlib import Path
from tracelens.console import leave
atexit.register(lambda: print("atexit ran"))
def late():
    time.sleep(0.3)
    Path(sys.argv[1]).write_text("thread done")
threading.Thread(target=late).start()
sys.stdout.write("partial line without newline; ")
sys.stderr.write("to stderr")
leave(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 1, 3])
def test_leave_flushes_runs_atexit_joins_threads_and_keeps_the_code(tmp_path, code):
    flag = tmp_path / "flag"
    r = subprocess.run([sys.executable, "-c", LEAVE, str(flag), str(code)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == code
    assert r.stdout == "partial line without newline; atexit ran\n"
    assert r.stderr == "to stderr"
    assert flag.read_text() == "thread done"


def test_leave_none_is_zero():
    r = subprocess.run([sys.executable, "-c", "from tracelens.console import leave; leave(None)"], timeout=120)
    assert r.returncode == 0


def test_digest_thread_is_a_daemon(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x")
    d = digest.Digest(p)
    assert d._thread.daemon  # an unfinished digest never holds the process open
    d.result()
    d._thread.join(10)
    assert not d._thread.is_alive()  # and it ends once the digest is done


def test_the_hashing_thread_runs_at_a_lower_priority(tmp_path):
    """Linux: the thread lowers its own nice value (the analysis' threads win a core over it)."""
    if not hasattr(os, "getpriority") or not sys.platform.startswith("linux"):
        pytest.skip("per-thread priorities are a Linux feature")
    seen = []
    orig = digest._lower_priority

    def spy():
        orig()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 10)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    digest._lower_priority = spy
    try:
        assert digest.Digest(p).result() == _sha(b"x" * 10)
    finally:
        digest._lower_priority = orig
    assert seen == [min(19, base + digest.NICE)]
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the process (its main thread) keeps its priority


def test_sha256_file_and_cancel_on_error(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert digest.sha256_file(p) == _sha(b"abc" * 1000)
    assert digest.sha256_file(tmp_path) is None and digest.sha256_file(tmp_path / "missing") is None
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * digest.CHUNK)
    d = digest.Digest(big)
    with pytest.raises(ZeroDivisionError):
        with d:
            1 / 0  # noqa: B018  # a failing analysis: the hashing stops at once
    d._thread.join(10)
    assert not d._thread.is_alive() and d.result() is None
    ok = digest.Digest(p)
    with ok:
        pass
    assert ok.result() == _sha(b"abc" * 1000)
