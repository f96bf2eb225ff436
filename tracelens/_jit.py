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
import numba.core.event  # noqa: E402

__all__ = ["numba", "njit", "njit_norc", "pin_constants", "prange", "set_threads"]


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


def njit_norc(*args, **kwargs):
    """``njit`` for kernels that allocate nothing (their callers pass every buffer): compiled without numba's
    runtime (NRT), so without reference counting. With it, a hot loop that calls a helper taking arrays updates the
    arrays' reference counts atomically around every call whenever numba's pruning pass cannot prove the updates
    pair up (a helper with a loop, such as the epoch cursor); in a parallel kernel both cores then fight over the
    same counters. Measured here: the grant ledger's epoch lookups took 32 ns each with NRT, 1 ns without, and the
    ledger 0.20 s instead of 0.02 s per GiB. Such a kernel fails to compile if it allocates, so a mistake shows
    at once (tests compile every kernel)."""
    kwargs["_nrt"] = False
    return numba.njit(*args, **kwargs)


def pin_constants(module_globals: dict, *inlined: dict) -> None:
    """Keep numba's cache of a kernel module in step with the constants it resolves at import from elsewhere.

    numba compiles a kernel's global ints in as constants, and keys its on-disk cache to the kernel's source file
    only: the event ids a kernel module takes from catalog.toml at import would outlive a change of the catalog in
    cached code. So the module's integer constants (upper-case module globals; those of ``inlined``, the globals of
    modules whose helpers its kernels inline, as well) are recorded beside its cache entries (``<module>.constants``
    in its numba cache directory); when the recorded values differ (or none are recorded), the module's cached
    kernels are dropped and compile again on first use. Call it at the end of the module."""
    import json

    from numba.core.registry import CPUDispatcher

    constants = {f"{g['__name__']}.{k}": v for g in (*inlined, module_globals) for k, v in g.items()
                 if k.isupper() and type(v) is int}
    name = module_globals["__name__"]
    mine = [v for v in module_globals.values()
            if isinstance(v, CPUDispatcher) and v.py_func.__module__ == name and getattr(v, "_cache", None) is not None]
    where = next((getattr(f._cache, "cache_path", None) for f in mine), None)
    if not where:  # caching is off
        return
    stamp = os.path.join(where, name.rpartition(".")[2] + ".constants")
    want = json.dumps(sorted(constants.items()))
    try:
        with open(stamp, encoding="utf-8") as fh:
            if fh.read() == want:
                return
    except OSError:
        pass
    for f in mine:
        try:
            if os.path.exists(f._cache._cache_file._index_path):
                f._cache.flush()  # an empty index: the kernel compiles on its next call and is cached again
        except (OSError, AttributeError):  # pragma: no cover - read-only, or numba's internals moved
            pass
    try:
        os.makedirs(where, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".constants-", dir=where)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(want)
        os.replace(tmp, stamp)
    except OSError:  # pragma: no cover - read-only: nothing is cached there to go stale
        pass


def set_threads(n: int | None) -> int:
    """Use ``n`` threads for parallel kernels (None: all cores). Returns the count in force."""
    if n is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()


# -- the first run -----------------------------------------------------------------------------------------------
# A kernel is compiled once per machine (40 s for the analysis' dozen on a small VM) and loaded from numba's cache
# afterwards (about 30 ms each). Until then a small capture is faster to process with the kernels' own Python code
# (numba keeps it as ``py_func``): the same code, run by the interpreter, prange as range, one thread.
INTERPRET_LIMIT = 4 << 20  # bytes of input below which a cold cache means "interpret" rather than "compile"


class _NumbaInInterpreter:
    """What the ``numba`` name means inside an interpreted kernel."""

    config = numba.config
    prange = range

    @staticmethod
    def get_thread_id() -> int:
        return 0


_INTERPRETED: dict = {}


def _names(code) -> set:
    out = set(code.co_names)
    for c in code.co_consts:
        if hasattr(c, "co_names"):
            out |= _names(c)
    return out


def interpreted(f):
    """The pure-Python twin of an njit kernel: its ``py_func`` with every kernel it calls replaced by that kernel's
    twin, ``prange`` by ``range`` and numba's thread id by 0. Anything else is returned as it is."""
    from numba.core.registry import CPUDispatcher

    if not isinstance(f, CPUDispatcher):
        return f
    done = _INTERPRETED.get(f)
    if done is not None:
        return done
    import types

    py = f.py_func
    g = dict(py.__globals__)
    for name in _names(py.__code__):
        v = g.get(name)
        if isinstance(v, CPUDispatcher):
            g[name] = interpreted(v)
        elif v is numba.prange:
            g[name] = range
        elif v is numba:
            g[name] = _NumbaInInterpreter
    fn = types.FunctionType(py.__code__, g, py.__name__, py.__defaults__, py.__closure__)
    fn.__kwdefaults__ = py.__kwdefaults__
    _INTERPRETED[f] = fn
    return fn


def _dispatchers(module) -> dict:
    from numba.core.registry import CPUDispatcher

    return {name: v for name, v in vars(module).items() if isinstance(v, CPUDispatcher)}


def cached(f) -> bool:
    """Whether numba's cache holds compiled code of kernel ``f`` for this source (True when that cannot be told)."""
    try:
        return bool(f._cache._cache_file._load_index())
    except Exception:  # pragma: no cover - numba internals moved: assume compiled code is at hand
        return True


def cold(modules, names=None) -> bool:
    """Whether any kernel (of ``names``, else every one) of the kernel ``modules`` still needs compiling."""
    for m in modules:
        for name, f in _dispatchers(m).items():
            if (names is None or name in names) and not cached(f):
                return True
    return False


class interpreting:
    """Within the block, the kernels of ``modules`` (those named in ``names``, else every one) run interpreted (see
    :func:`interpreted`): callers that look them up as ``module.kernel`` at call time get the twins. Not for
    concurrent use from several threads."""

    def __init__(self, *modules, names=None):
        self.modules = modules
        self.names = names
        self.saved: list = []

    def __enter__(self):
        for m in self.modules:
            for name, f in _dispatchers(m).items():
                if self.names is not None and name not in self.names:
                    continue
                self.saved.append((m, name, f))
                setattr(m, name, interpreted(f))
        return self

    def __exit__(self, *exc):
        for m, name, f in self.saved:
            setattr(m, name, f)
        self.saved.clear()
        return False


def mode(size: int, modules, names=None) -> str:
    """"interpret" (a cold cache and an input below INTERPRET_LIMIT), "compile" (a cold cache otherwise) or "run";
    ``TRACELENS_JIT=interpret|compile`` forces the first two."""
    forced = os.environ.get("TRACELENS_JIT", "").strip().lower()
    if forced in ("interpret", "compile"):
        return forced if forced == "interpret" or cold(modules, names) else "run"
    if not cold(modules, names):
        return "run"
    return "interpret" if size <= INTERPRET_LIMIT else "compile"


class _CompileNotes(numba.core.event.Listener):
    """Says on stderr, as it happens, that kernels are being compiled (the first run on a machine), one line each."""

    def __init__(self, expected: int, stream):
        self.expected = max(expected, 1)
        self.stream = stream
        self.beside = False  # helper processes compile some kernels meanwhile (compile_beside)
        self.done = 0
        self.depth = 0
        self.t0 = {}

    def on_start(self, event):
        import time

        if self.depth == 0 and self.done == 0:
            where = numba.config.CACHE_DIR or "beside the package"
            print(f"tracelens: preparing kernels for this machine, first run only (cache: {where})",
                  file=self.stream, flush=True)
            if self.beside:
                print("tracelens:   (and, meanwhile, the next ones in other processes)", file=self.stream, flush=True)
        self.depth += 1
        self.t0[id(event.data.get("dispatcher"))] = time.perf_counter()

    def on_end(self, event):
        import time

        self.depth -= 1
        disp = event.data.get("dispatcher")
        if self.depth == 0 and disp is not None:
            self.done += 1
            t = time.perf_counter() - self.t0.pop(id(disp), time.perf_counter())
            name = getattr(getattr(disp, "py_func", None), "__name__", "kernel")
            print(f"tracelens:   [{self.done}] {name} ({t:.1f} s)", file=self.stream, flush=True)


_BESIDE: dict = {}  # job -> the helper process compiling its kernels beside this one (compile_beside)


def compile_beside(job: str):
    """Start a process that compiles the kernels of ``job`` (see :mod:`tracelens._warm`: kernels this process will
    need later), so that they compile on the other core while this process compiles and runs what comes first;
    :func:`join_beside` waits for it before they are needed. None when they are cached already, or when no process
    can start."""
    import subprocess
    import sys

    from tracelens import _warm
    from tracelens.analysis import _kernels as AK
    from tracelens.parsers.xentrace import _kernels as XK

    if job in _BESIDE or not cold((AK, XK), _warm.KERNELS[job]):
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tracelens._warm", job], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    except OSError:  # pragma: no cover - no process to spare: this process compiles them when it gets there
        return None
    _BESIDE[job] = proc
    return proc


def join_beside(job: str | None = None, timeout: float = 300.0, kill: bool = False) -> None:
    """Wait for the helper of ``job`` (every helper when None) started by :func:`compile_beside`: its kernels are
    then in the cache, and load from it when first called here. ``kill`` stops them instead (the work ended
    early). A helper that fails or overruns changes nothing: the kernels compile here instead."""
    import subprocess

    for name in [job] if job is not None else list(_BESIDE):
        proc = _BESIDE.pop(name, None)
        if proc is None:
            continue
        try:
            if kill:
                proc.kill()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


class first_run:
    """Around work that runs kernels on an input of ``size`` bytes: while its main ``kernels`` (names) are not
    cached, small inputs run the kernels interpreted (see :func:`mode`), large ones compile them and say so on
    stderr, kernel by kernel. ``beside`` names jobs of :mod:`tracelens._warm` whose kernels compile in other
    processes meanwhile (the work joins them, :func:`join_beside`, where it needs those kernels)."""

    def __init__(self, size: int, stream=None, kernels=None, beside: tuple = ()):
        self.size = int(size)
        self.stream = stream
        self.kernels = kernels  # the names of the kernels the work runs on (None: every kernel)
        self.beside = beside
        self.stack = []

    def __enter__(self):
        import contextlib
        import sys
        import warnings

        from tracelens.analysis import _kernels as AK
        from tracelens.parsers.xentrace import _kernels as XK

        m = mode(self.size, (AK, XK), self.kernels)
        stack = contextlib.ExitStack()
        if m == "interpret":
            stack.enter_context(interpreting(AK, XK))
            # u64 arithmetic wraps on purpose, as compiled; not np.errstate: a context variable cannot be left from
            # the other context a generator (iter_batches) may be resumed in
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        elif m == "compile":  # the main kernels compile now: say so (a rarely needed one compiles quietly later)
            expected = sum(not cached(f) for mod in (AK, XK) for f in _dispatchers(mod).values())
            listener = _CompileNotes(expected, self.stream or sys.stderr)
            stack.enter_context(numba.core.event.install_listener("numba:compile", listener))
            started = [job for job in self.beside if compile_beside(job) is not None]
            if started:
                listener.beside = True
                stack.callback(join_beside, kill=True)  # (the work joins them when it needs their kernels)
        self.stack.append(stack)
        stack.__enter__()
        return m

    def __exit__(self, *exc):
        return self.stack.pop().__exit__(*exc)


#: the main kernels of each job: while these are cached the job runs compiled (a rarely needed kernel, e.g. for a
#: kexec boundary, then compiles on first use: a few seconds)
ANALYZE_KERNELS = ("walk_windows", "stream_select", "stream_grants_hypercalls", "grant_ledger_step")
INFO_KERNELS = ("walk_windows", "stream_select")
WATCH_KERNELS = ("walk_windows", "count_records", "stream_select", "run_candidates", "stream_grants_hypercalls",
                 "grant_ledger_step")
DECODE_KERNELS = ("walk_windows", "count_records", "stream_pass", "merge_decode", "validity_bitmaps")
