"""numba's on-disk cache when tracelens is installed read-only (a system-wide install): kernels must still import,
run and be cached, in a per-user directory (tracelens/_jit.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample-traces" / "clean-soft-reset.xentrace"

# Root ignores file modes, so a chmod cannot make the package read-only here: the child process makes os.access
# report the package directory unwritable instead, which is what tracelens._jit consults.
CHILD = r"""
import os, sys
import tracelens  # the package's __init__ only; tracelens._jit (and numba) come below
real = os.access
pkg = os.path.dirname(os.path.realpath(tracelens.__file__))
unwritable = {pkg, os.path.dirname(pkg)}
os.access = lambda p, m, *a, **k: False if (m & os.W_OK and os.path.realpath(p) in unwritable) else real(p, m, *a, **k)
import tracelens._jit
print(os.environ.get("NUMBA_CACHE_DIR", ""))
import tracelens
t = tracelens.read_xentrace(sys.argv[1])
print(t.num_rows)
"""


def _run(tmp_path, env_extra):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["TRACELENS_JIT"] = "compile"  # a small capture on a cold cache would otherwise run interpreted
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CHILD, str(SAMPLE)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_read_only_install_uses_a_user_cache_dir(tmp_path):
    cache_home = tmp_path / "xdg"
    r = _run(tmp_path, {"XDG_CACHE_HOME": str(cache_home)})
    assert r.returncode == 0, r.stderr
    cache_dir, rows = r.stdout.split()
    assert Path(cache_dir) == cache_home / "tracelens" / "numba"
    assert int(rows) > 0
    # the kernels were compiled and written there, so the next run loads them instead of compiling
    written = list(Path(cache_dir).rglob("*.nbi"))
    assert written, "no numba index files in the user cache directory"
    again = _run(tmp_path, {"XDG_CACHE_HOME": str(cache_home)})
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in Path(cache_dir).rglob("*.nbi")) == sorted(p.name for p in written)


def test_user_choice_of_cache_dir_is_kept(tmp_path):
    mine = tmp_path / "mine"
    r = _run(tmp_path, {"NUMBA_CACHE_DIR": str(mine)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(mine)
