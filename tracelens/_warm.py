"""``python -m tracelens._warm JOB``: compile numba kernels a command will need later, in a process of its own
(started by :func:`tracelens._jit.compile_beside` on a first run, when the cache is cold).

A first run of ``tracelens analyze`` would compile every kernel it calls, one after the other, on one core: the
window walk, pass 1's kernel, then those of the boundaries, pass 2 and the ledgers. Instead it compiles the window
walk itself while two such processes compile the rest: ``select`` pass 1's kernel, ``analyze`` the later ones.
Each runs the same code on a small sample capture (``persistent-grants.xentrace`` of ``sample-traces/``, shipped in
the wheel as ``tracelens/samples/``) with the kernels it leaves to others interpreted, so its kernels compile for
exactly the argument types the command gives them, and numba's cache then hands them to the command. Nothing is
printed; a failure only means the command compiles them itself.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

#: per job: the kernels it compiles (when any of them is not cached, tracelens._jit.compile_beside starts it)
KERNELS = {
    "select": ("stream_select",),
    "analyze": ("first_run_after", "find_resumes", "stream_grants_hypercalls", "grant_ledger_step"),
}


SAMPLE = "persistent-grants.xentrace"


def sample_path() -> Path:
    """The sample: shipped in the wheel as package data (tracelens/samples/), read from the source tree in a
    checkout or an editable install."""
    import tracelens

    pkg = Path(tracelens.__file__).resolve().parent
    shipped = pkg / "samples" / SAMPLE
    return shipped if shipped.is_file() else pkg.parent / "sample-traces" / SAMPLE


def _run(job, interpret) -> None:
    from tracelens import _jit
    from tracelens.analysis import _kernels as AK
    from tracelens.parsers.xentrace import _kernels as XK

    # u64 arithmetic of the interpreted kernels wraps on purpose, as compiled (see _jit.first_run)
    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
    with _jit.interpreting(AK, XK, names=interpret):
        job()


def select() -> None:
    """Pass 1's kernel (``tracelens info``'s first pass: the same argument types as the analysis' pass 1), while
    the first process compiles the window walk."""
    from tracelens.analysis import stream as S

    _run(lambda: S.first_pass(str(sample_path())), ("walk_windows",))


def analyze() -> None:
    """The kernels of the analysis after pass 1: boundaries, pass 2 (made to walk the grant rows: keep_bytes=0),
    the ledgers."""
    from tracelens.analysis import stream as S

    _run(lambda: S.analyze_stream(str(sample_path()), opts=S.StreamOptions(keep_bytes=0)),
         ("walk_windows", "stream_select"))


JOBS = {"select": select, "analyze": analyze}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in JOBS:
        print(f"usage: python -m tracelens._warm {{{','.join(JOBS)}}}", file=sys.stderr)
        return 2
    JOBS[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
