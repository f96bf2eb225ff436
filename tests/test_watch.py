"""``tracelens watch`` / tracelens.live: a capture analysed while it is written.

The judge is ``tracelens analyze`` of the finished capture: whatever the cuts (inside a CPU_CHANGE header, inside a
window, inside a record), pauses and views along the way, the final analysis must equal it. The live events must
come while the writer still holds the capture open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import synth
from tracelens.analysis.analyze import analyze
from tracelens.analysis.report import to_json_obj
from tracelens.errors import FormatError
from tracelens.live import Engine, WatchOptions
from tracelens.options import AnalysisConfig, DecodeOptions

SAMPLES = sorted((Path(__file__).parent.parent / "sample-traces").glob("*.xentrace"))
REAL = Path(__file__).parent.parent.parent / "shared" / "samples" / "xentrace-real"


def _norm(obj: dict) -> dict:
    obj = dict(obj)
    obj["capture"] = dict(obj["capture"], path=None)
    return obj


def _reference(path, config=None) -> dict:
    return _norm(json.loads(json.dumps(to_json_obj(analyze(path, config)))))


def _engine_final(data: bytes, rng, name, startup=None, config=None, views=True):
    opts = WatchOptions() if startup is None else WatchOptions(startup_bytes=startup)
    eng = Engine(config, opts, name=name)
    p = 0
    while p < len(data):
        n = int(rng.integers(1, max(2, len(data) // 15)))
        eng.feed(data[p:p + n])
        p += n
        if views and rng.random() < 0.4:
            eng.step()
            eng.view(speculative=bool(rng.random() < 0.5))
    a = eng.view(final=True)
    return eng, _norm(json.loads(json.dumps(to_json_obj(a))))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_samples_fed_in_random_pieces_equal_analyze(path):
    ref = _reference(path)
    data = path.read_bytes()
    for seed in range(3):
        _eng, got = _engine_final(data, np.random.default_rng(seed), str(path))
        assert got == ref


@pytest.mark.parametrize("seed", range(30))
def test_random_hosts_equal_analyze_whatever_the_commit_points(seed, tmp_path):
    """Losses, soft resets, crashes, re-creations, several pCPUs. With commits from the first byte (no start-up
    delay) a pCPU can first appear with records below what was committed: the engine must then say so
    (late_windows), and whenever it does not, the result must be exact."""
    path = tmp_path / "c.xentrace"
    synth.random_scenario(seed).write(path)
    ref = _reference(path)
    data = path.read_bytes()
    _eng, got = _engine_final(data, np.random.default_rng(seed), str(path))
    assert got == ref
    eng, got = _engine_final(data, np.random.default_rng(seed + 100), str(path), startup=0)
    if eng.late_windows == 0 and eng.late == 0:
        assert got == ref
    else:
        assert eng.late_windows > 0  # said so


def test_commits_along_the_way_on_windows_that_arrive_in_time(tmp_path):
    """A capture whose pCPUs all send windows from the start: commits happen early (the watermark moves), state
    crosses many commits, and the result is exact."""
    path = tmp_path / "c.xentrace"
    synth.random_scenario(3).write(path)
    data = path.read_bytes()
    ref = _reference(path)
    eng = Engine(None, WatchOptions(startup_bytes=len(data) // 2), name=str(path))
    rng = np.random.default_rng(5)
    p = 0
    commits = 0
    while p < len(data):
        n = int(rng.integers(1, 200))
        eng.feed(data[p:p + n])
        p += n
        w = eng.c.w
        eng.step()
        commits += eng.c.w != w
    a = eng.view(final=True)
    assert commits > 0
    assert eng.late_windows == 0  # every pCPU sent a window in the first half
    assert _norm(json.loads(json.dumps(to_json_obj(a)))) == ref


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/samples/xentrace-real is not there")
@pytest.mark.parametrize("name", ["hvm-credit2-8cpu.bin", "sched-rtds-pre48.bin"])
def test_real_captures_equal_analyze(name):
    path = REAL / name
    ref = _reference(path)
    _eng, got = _engine_final(path.read_bytes(), np.random.default_rng(1), str(path), views=False)
    assert got == ref


@pytest.mark.parametrize("tolerance", ["truncate", "skip"])
@pytest.mark.parametrize("cut", ["header", "window", "record", "stray"])
def test_damaged_ends_equal_analyze(tolerance, cut, tmp_path):
    """A capture cut short: waited for while the input is open, damage at its end, as analyze tolerates it."""
    src = SAMPLES[0].read_bytes()
    at = {"header": 6 * 4 + 3, "window": len(src) // 2 - (len(src) // 2) % 4, "record": len(src) - 6,
          "stray": len(src) + 3}[cut]
    data = (src + b"\x01\x02\x03")[:at]
    path = tmp_path / "cut.xentrace"
    path.write_bytes(data)
    config = AnalysisConfig(decode=DecodeOptions(tolerance=tolerance))
    ref = _reference(path, config)
    _eng, got = _engine_final(data, np.random.default_rng(0), str(path), config=config)
    assert got == ref


def test_damage_in_the_middle_equal_analyze(tmp_path):
    """A corrupt window header in the middle: strict names the same byte as analyze; skip and truncate give analyze's
    result."""
    src = bytearray(SAMPLES[1].read_bytes())
    # find the third window header and break it
    words = np.frombuffer(bytes(src), np.uint32)
    heads = np.flatnonzero(words == 0x2001F003)
    src[int(heads[2]) * 4:int(heads[2]) * 4 + 4] = b"\xde\xad\xbe\xef"
    path = tmp_path / "bad.xentrace"
    path.write_bytes(bytes(src))
    with pytest.raises(FormatError) as ref_err:
        analyze(path)
    with pytest.raises(FormatError) as got_err:
        _engine_final(bytes(src), np.random.default_rng(0), str(path))
    assert got_err.value.offset == ref_err.value.offset
    for tol in ("skip", "truncate"):
        config = AnalysisConfig(decode=DecodeOptions(tolerance=tol))
        _eng, got = _engine_final(bytes(src), np.random.default_rng(1), str(path), config=config)
        assert got == _reference(path, config)


# -- the command, on a pipe and on a growing file -----------------------------------------------------------------

def _cuts(data: bytes) -> list[int]:
    """Cut points inside a CPU_CHANGE header, inside a window and inside a record, then regular pieces."""
    words = np.frombuffer(data[: len(data) // 4 * 4], np.uint32)
    heads = np.flatnonzero(words == 0x2001F003).tolist()
    cuts = {4 * heads[1] + 5, 4 * heads[2] + 8, 4 * heads[3] + 4 * 7 + 2}
    cuts |= set(range(0, len(data), max(1, len(data) // 12)))
    return sorted(c for c in cuts if 0 < c < len(data))


def _writer(data, write, pause, hold, done_at):
    prev = 0
    for c in _cuts(data) + [len(data)]:
        write(data[prev:c])
        prev = c
        time.sleep(pause)
    time.sleep(hold)  # the capture stays open: the events must come before this ends
    done_at.append(time.monotonic())


def _run_watch(args, data, *, pipe: bool, tmp_path, pause=0.05, hold=2.0):
    env = dict(os.environ)
    lines = []
    if pipe:
        proc = subprocess.Popen([sys.executable, "-m", "tracelens", "watch", "-", "--json", *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

        def write(b):
            proc.stdin.write(b)
            proc.stdin.flush()
    else:
        path = tmp_path / "growing.xentrace"
        f = open(path, "wb")
        proc = subprocess.Popen([sys.executable, "-m", "tracelens", "watch", str(path), "--json", "--idle-exit", "3",
                                 *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

        def write(b):
            f.write(b)
            f.flush()

    def read():
        for line in proc.stdout:
            lines.append((time.monotonic(), json.loads(line)))

    reader = threading.Thread(target=read)
    reader.start()
    done_at: list = []
    _writer(data, write, pause, hold, done_at)
    if pipe:
        proc.stdin.close()
    else:
        f.close()
    rc = proc.wait(timeout=120)
    reader.join(timeout=10)
    return rc, lines, done_at[0], proc.stderr.read().decode()


@pytest.mark.parametrize("pipe", [True, False], ids=["pipe", "file"])
@pytest.mark.parametrize("name", ["persistent-grants", "foreign-map", "balloon-before-kexec",
                                  "lost-across-boundary", "crash-kdump"])
def test_live_events_before_the_writer_is_done(name, pipe, tmp_path):
    path = Path(__file__).parent.parent / "sample-traces" / f"{name}.xentrace"
    data = path.read_bytes()
    rc, lines, done, err = _run_watch([], data, pipe=pipe, tmp_path=tmp_path)
    assert rc == 0, err
    types = [o["type"] for _t, o in lines]
    assert types[-1] == "end"
    end = lines[-1][1]
    ref = _reference(path)
    assert end["findings"] == ref["findings"]
    assert _norm(end["summary"]) == ref
    live = [(t, o) for t, o in lines if o["type"] in ("unsafe", "boundary", "finding", "lost")]
    assert live, types
    first_unsafe = [t for t, o in live if o["type"] == "unsafe"]
    if any(r["verdict"] == "unsafe" and r["boundary_kind"] for r in ref["safety"]):
        assert first_unsafe and first_unsafe[0] < done  # while the writer still held the capture open
    for t, o in live:
        assert t < done, o


def test_live_on_a_generated_host_with_losses_and_several_boundaries(tmp_path):
    path = tmp_path / "c.xentrace"
    seed = next(s for s in range(100) if len(synth.random_scenario(s).truth.boundaries) >= 3
                and synth.random_scenario(s).truth.lost)
    synth.random_scenario(seed).write(path)
    data = path.read_bytes()
    rc, lines, done, err = _run_watch([], data, pipe=True, tmp_path=tmp_path, pause=0.02)
    assert rc == 0, err
    ref = _reference(path)
    assert _norm(lines[-1][1]["summary"]) == ref
    bounds = [o for t, o in lines if o["type"] == "boundary" and t < done]
    assert len(bounds) == len(ref["boundaries"])
    assert any(o["type"] == "lost" for _t, o in lines)


def test_gate_exit_code_and_policy(tmp_path):
    data = (Path(__file__).parent.parent / "sample-traces" / "foreign-map.xentrace").read_bytes()
    rc, lines, _done, err = _run_watch(["--gate"], data, pipe=True, tmp_path=tmp_path, pause=0.0, hold=0.0)
    assert rc == 1, err
    assert lines[-1][1]["gate"] == {"status": "fail", "exit_code": 1}
    pol = tmp_path / "p.toml"
    pol.write_text('[gate]\nfail_on = "error"\n[gate.rules]\n"TL-GNT-003" = "off"\n"TL-GNT-001" = "off"\n')
    rc, lines, _done, err = _run_watch(["--gate", "--policy", str(pol)], data, pipe=True, tmp_path=tmp_path,
                                       pause=0.0, hold=0.0)
    assert rc == 0, err
    clean = (Path(__file__).parent.parent / "sample-traces" / "clean-soft-reset.xentrace").read_bytes()
    rc, _lines, _done, err = _run_watch(["--gate"], clean, pipe=True, tmp_path=tmp_path, pause=0.0, hold=0.0)
    assert rc == 0, err


def test_gate_fails_closed_on_a_cut_capture(tmp_path):
    data = SAMPLES[0].read_bytes()[:-6]
    proc = subprocess.run([sys.executable, "-m", "tracelens", "watch", "-", "--gate"], input=data,
                          capture_output=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.decode().count("\n") == 1 and "at byte" in proc.stderr.decode()


@pytest.mark.parametrize("what,needle", [(b"", "not a xentrace capture"), (b"KDUMP   " + bytes(64), "not a xentrace"),
                                         (b"\x28\xb5\x2f\xfd" + bytes(60), "not a xentrace")])
def test_not_a_capture_is_one_line_exit_3(what, needle):
    proc = subprocess.run([sys.executable, "-m", "tracelens", "watch", "-"], input=what, capture_output=True,
                          timeout=120)
    assert proc.returncode == 3
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_sigint_ends_with_the_final_summary(tmp_path):
    path = tmp_path / "g.xentrace"
    data = SAMPLES[-1].read_bytes()
    path.write_bytes(data)
    proc = subprocess.Popen([sys.executable, "-m", "tracelens", "watch", str(path), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)
    assert proc.poll() is None  # a followed file never ends by itself
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    end = json.loads(out.decode().splitlines()[-1])
    assert end["type"] == "end" and _norm(end["summary"]) == _reference(SAMPLES[-1])


def test_python_api_yields_events_for_a_stream():
    import io

    import tracelens

    data = SAMPLES[-1].read_bytes()
    events = list(tracelens.watch(io.BytesIO(data)))
    assert events[-1].type == "end"
    assert _norm(json.loads(json.dumps(to_json_obj(events[-1].data["analysis"])))) == _reference(SAMPLES[-1])
    assert {e.type for e in events} >= {"boundary", "unsafe", "finding"}
    assert all(set(e.to_dict()) >= {"type"} for e in events)


def test_named_fifo_is_read_until_its_writer_closes(tmp_path):
    fifo = tmp_path / "xentrace.fifo"
    os.mkfifo(fifo)
    data = SAMPLES[0].read_bytes()

    def writer():
        time.sleep(0.5)
        with open(fifo, "wb") as f:
            f.write(data)

    t = threading.Thread(target=writer)
    t.start()
    proc = subprocess.run([sys.executable, "-m", "tracelens", "watch", str(fifo), "--json"], capture_output=True,
                          timeout=120)
    t.join()
    assert proc.returncode == 0, proc.stderr.decode()
    end = json.loads(proc.stdout.decode().splitlines()[-1])
    assert _norm(end["summary"]) == _reference(SAMPLES[0])


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_bad_paths_are_one_line_exit_3(where, tmp_path):
    path = tmp_path / "nothing" if where == "missing" else tmp_path
    proc = subprocess.run([sys.executable, "-m", "tracelens", "watch", str(path)], capture_output=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.decode().count("\n") == 1


def test_gate_verdict_is_inconclusive_only_when_the_live_result_may_differ():
    from tracelens.live import Event, gate_verdict

    clean = Path(__file__).parent.parent / "sample-traces" / "clean-soft-reset.xentrace"
    a = analyze(clean)

    def end(exact):
        return Event("end", {"analysis": a, "watch": {"late_records": 0, "late_windows": 0 if exact else 2,
                                                       "exact": exact}})

    assert gate_verdict(end(True), str(clean)).exit_code == 0
    late = gate_verdict(end(False), str(clean))
    assert late.exit_code == 3 and any("window(s) arrived" in r for r in late.inconclusive)
    recomputed = end(True)
    recomputed.data["watch"]["late_windows"] = 2  # a followed file analysed again at the end is exact
    assert gate_verdict(recomputed, str(clean)).exit_code == 0
