"""``python -m tracelens._warm JOB``: compile the numba kernels a job needs *after* its first pass, in a process of
its own (started by :func:`tracelens._jit.compile_beside` on a first run, when the cache is cold).

A first run of ``tracelens analyze`` compiles every kernel it calls, one after the other, on one core: the first
pass's kernels, then those of the boundaries, pass 2 and the ledgers. This process compiles the second group on the
other core meanwhile, by running the same job on a small sample capture (``persistent-grants.xentrace`` of
``sample-traces/``, shipped in the wheel as ``tracelens/samples/``) with the first pass's kernels interpreted: the
kernels compile for exactly the argument types the job gives them, and numba's cache then hands them to the first
process. Nothing is printed; a failure only means the first process compiles them itself.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

#: per job: the kernels the first process compiles itself (run interpreted here), and the job on a sample
FIRST_PASS = {"analyze": ("walk_windows", "stream_select")}


SAMPLE = "persistent-grants.xentrace"


def sample_path() -> Path:
    """The sample: shipped in the wheel as package data (tracelens/samples/), read from the source tree in a
    checkout or an editable install."""
    import tracelens

    pkg = Path(tracelens.__file__).resolve().parent
    shipped = pkg / "samples" / SAMPLE
    return shipped if shipped.is_file() else pkg.parent / "sample-traces" / SAMPLE


def analyze() -> None:
    from tracelens import _jit
    from tracelens.analysis import _kernels as AK
    from tracelens.analysis import stream as S
    from tracelens.parsers.xentrace import _kernels as XK

    # u64 arithmetic of the interpreted kernels wraps on purpose, as compiled (see _jit.first_run)
    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
    # keep_bytes=0: pass 2 reads the grant rows itself, so that its walk compiles too
    with _jit.interpreting(AK, XK, names=FIRST_PASS["analyze"]):
        S.analyze_stream(str(sample_path()), opts=S.StreamOptions(keep_bytes=0))


JOBS = {"analyze": analyze}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in JOBS:
        print(f"usage: python -m tracelens._warm {{{','.join(JOBS)}}}", file=sys.stderr)
        return 2
    JOBS[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
