"""The first run on a machine (tracelens/_jit.py): with numba's cache cold, small inputs run the kernels' own
Python code instead of compiling them, and give exactly what the compiled kernels give; large ones compile and say
so on stderr, kernel by kernel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synth
import tracelens
from tracelens import _jit
from tracelens.analysis import _kernels as AK
from tracelens.analysis.report import to_json_obj
from tracelens.analysis.stream import StreamOptions, analyze_stream
from tracelens.parsers.xentrace import _kernels as XK
from tracelens.parsers.xentrace import decode

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "sample-traces").glob("*.xentrace"))


def _interpreted(fn, *args, **kw):
    with _jit.interpreting(AK, XK), np.errstate(all="ignore"):
        return fn(*args, **kw)


def test_twins_are_plain_python():
    with _jit.interpreting(AK, XK):
        from numba.core.registry import CPUDispatcher

        assert not isinstance(AK.stream_select, CPUDispatcher)
        assert not isinstance(XK.merge_decode, CPUDispatcher)
    assert isinstance(AK.stream_select, CPUDispatcher)  # restored


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_interpreted_equals_compiled_on_samples(path):
    assert to_json_obj(_interpreted(analyze_stream, path)) == to_json_obj(analyze_stream(path))
    assert _interpreted(decode.info, path) == decode.info(path)
    assert _interpreted(tracelens.read_xentrace, path).equals(tracelens.read_xentrace(path))


@pytest.mark.parametrize("seed", range(8))
def test_interpreted_equals_compiled_on_random_hosts(seed, tmp_path):
    path = tmp_path / "c.xentrace"
    synth.random_scenario(seed).write(path)
    opts = StreamOptions(chunk_bytes=1)
    assert to_json_obj(_interpreted(analyze_stream, path, opts=opts)) == to_json_obj(analyze_stream(path, opts=opts))
    assert _interpreted(tracelens.read_xentrace, path).equals(tracelens.read_xentrace(path))


def test_mode(monkeypatch):
    monkeypatch.delenv("TRACELENS_JIT", raising=False)
    monkeypatch.setattr(_jit, "cold", lambda modules, names=None: True)
    assert _jit.mode(1000, ()) == "interpret"
    assert _jit.mode(_jit.INTERPRET_LIMIT + 1, ()) == "compile"
    monkeypatch.setenv("TRACELENS_JIT", "compile")
    assert _jit.mode(1000, ()) == "compile"
    monkeypatch.setattr(_jit, "cold", lambda modules, names=None: False)
    assert _jit.mode(_jit.INTERPRET_LIMIT + 1, ()) == "run"
    monkeypatch.setenv("TRACELENS_JIT", "interpret")
    assert _jit.mode(_jit.INTERPRET_LIMIT + 1, ()) == "interpret"


def _cli(args, cache, **env_extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), **env_extra)
    env.pop("TRACELENS_JIT", None) if "TRACELENS_JIT" not in env_extra else None
    return subprocess.run([sys.executable, "-m", "tracelens", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def test_cold_cache_small_capture_runs_interpreted_and_quietly(tmp_path):
    sample = str(SAMPLES[0])
    warm = _cli(["info", sample], os.environ.get("NUMBA_CACHE_DIR", tmp_path / "warm"))
    cold = _cli(["info", sample], tmp_path / "cold")
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout == warm.stdout
    assert "preparing kernels" not in cold.stderr
    assert not list((tmp_path / "cold").rglob("*.nbi"))  # nothing was compiled


def test_cold_cache_compiling_says_so(tmp_path):
    r = _cli(["info", str(SAMPLES[0])], tmp_path / "cold", TRACELENS_JIT="compile")
    assert r.returncode == 0, r.stderr
    assert "preparing kernels for this machine, first run only" in r.stderr
    assert "[1] " in r.stderr and "walk_windows" in r.stderr
    # pass 1's kernel compiled meanwhile in another process (tracelens._warm select), then loaded from the cache
    assert set(re.findall(r"\] (\w+) \(", r.stderr)) == {"walk_windows"}, r.stderr
    assert any(p.name.startswith("_kernels.stream_select-") for p in (tmp_path / "cold").rglob("*.nbi"))
    again = _cli(["info", str(SAMPLES[0])], tmp_path / "cold", TRACELENS_JIT="compile")
    assert "preparing kernels" not in again.stderr  # loaded from the cache this time
    assert again.stdout == r.stdout


def test_a_cold_analysis_compiles_its_later_kernels_in_a_second_process(tmp_path):
    """``analyze`` compiles the window walk itself and, meanwhile, two other processes (tracelens._warm) compile
    pass 1's kernel and those of the later steps on a sample: the command then loads them from the cache."""
    sample = str(SAMPLES[0])
    cache = tmp_path / "cold"
    out = tmp_path / "a.json"
    r = _cli(["analyze", sample, "--format", "json", "-o", str(out)], cache, TRACELENS_JIT="compile")
    assert r.returncode == 0, r.stderr
    assert "meanwhile, the next ones in other processes" in r.stderr
    compiled_here = set(re.findall(r"\] (\w+) \(", r.stderr))
    assert compiled_here == {"walk_windows"}, r.stderr
    names = {p.name.split(".")[1].rsplit("-", 1)[0] for p in cache.rglob("*.nbi")}
    assert {"stream_select", "stream_grants_hypercalls", "grant_ledger_step", "first_run_after", "find_resumes"} <= names
    warm = _cli(["analyze", sample, "--format", "json", "-o", str(tmp_path / "b.json")], cache)
    assert "preparing kernels" not in warm.stderr
    assert (tmp_path / "b.json").read_bytes() == out.read_bytes()


def test_warm_helper_usage():
    from tracelens import _warm

    assert _warm.main([]) == 2 and _warm.main(["nope"]) == 2
    assert _warm.sample_path().is_file()
