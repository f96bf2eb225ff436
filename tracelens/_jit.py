"""numba set-up shared by every kernel module.

Kernels are compiled with ``cache=True`` so that the JIT cost is paid once per machine. numba writes its cache
next to the source file, or, when that is read-only (a system-wide install), in ``NUMBA_CACHE_DIR``. When neither
is writable numba raises at import time, so before numba is imported we point ``NUMBA_CACHE_DIR`` at a writable
per-user directory unless the user chose one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _configure_cache() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    pkg = Path(__file__).resolve().parent
    if os.access(pkg, os.W_OK) and os.access(pkg.parent, os.W_OK):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (os.path.join(base, "tracelens", "numba"), os.path.join(tempfile.gettempdir(), f"tracelens-numba-{os.getuid()}")):
        try:
            os.makedirs(candidate, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = candidate
            return


_configure_cache()

import numba  # noqa: E402  (must come after the cache set-up)

__all__ = ["numba", "njit", "prange", "set_threads"]

njit = numba.njit
prange = numba.prange


def set_threads(n: int | None) -> int:
    """Use ``n`` threads for parallel kernels (None: all cores). Returns the count in force."""
    if n is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()
