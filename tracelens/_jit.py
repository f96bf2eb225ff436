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


def _skip_blas_probe() -> None:
    """The first kernel call of a process (even one loaded from the cache) makes numba load its NumPy
    implementations, and ``numba.np.arraymath`` then probes for BLAS by importing ``scipy.linalg`` when SciPy is
    installed: 0.25 s of a 0.35 s first call here. No tracelens kernel uses BLAS, so the probe runs with the import
    blocked and then unblocked: SciPy stays importable, numba compiles ``np.dot`` and friends as usual (they import
    SciPy themselves), and only numba's choice of a BLAS inner product inside ``np.trapz`` changes in this process.
    Nothing is done when SciPy is absent or already imported."""
    import importlib.util
    import sys

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    try:
        if importlib.util.find_spec("scipy") is None:
            return
    except (ImportError, ValueError):  # pragma: no cover
        return
    key = "scipy.linalg.cython_blas"
    sys.modules[key] = None  # type: ignore[assignment]  # makes "import scipy.linalg.cython_blas" raise ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    except Exception:  # pragma: no cover - leave numba to load it the usual way
        pass
    finally:
        if sys.modules.get(key, 0) is None:
            del sys.modules[key]


_skip_blas_probe()

njit = numba.njit
prange = numba.prange


def set_threads(n: int | None) -> int:
    """Use ``n`` threads for parallel kernels (None: all cores). Returns the count in force."""
    if n is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()
