"""Benchmark: tracelens vs libkdumpfile (full page scan) and vs makedumpfile (kernel log), in one run.

    python benchmarks/bench_vmcore.py [DUMP ...] [--lkd-python /usr/bin/python3] [--repeat 5]

Without DUMP arguments it uses the real dumps of ../shared/samples/vmcore, decompressed into the test cache
(``$TMPDIR/tracelens-test-cache/vmcore``, the same place the test fixture uses; they are extracted here if missing).

* page scan: read every readable page of the dump. tracelens: ``iter_pages()`` (thread-pool decode); libkdumpfile:
  its Python bindings (Debian ``python3-libkdumpfile``; PyPI's pykdumpfile does not build on Debian 12), reading
  every pfn below max_pfn with ``ctx.read(KDUMP_KPHYSADDR, ...)`` the way its own tools do, skipping pfns that
  have no data. Each side runs in a fresh process, so the max RSS of each is reported too.
* dmesg: wall time of the ``tracelens dmesg`` command (``python -m tracelens``, and the ``tracelens`` console script
  when installed; both take the console's fast path) vs ``makedumpfile --dump-dmesg`` (Debian ``makedumpfile``),
  the in-process library time of ``vmcore.open()`` + ``dump.kernel_log().render()``, and the floor every Python
  command pays: ``python -c pass`` (interpreter and site start-up, nothing of tracelens).

Tools that are absent are reported as such; the script never fails for a missing comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(tempfile.gettempdir()) / "tracelens-test-cache" / "vmcore"
NAMES = ["proc-vmcore.elf", "mdf-E31.elf", "mdf-n31.kdump", "guest-mdf-l31.kdump"]

TRACELENS_SCAN = r"""
import json, resource, sys, time
t_start = time.perf_counter()
import numpy  # the scan API hands out numpy arrays: its import is part of the fixed start-up cost
from tracelens.parsers import vmcore
# open() imports the reader of the detected format on first use; load them all here, so that code loading counts as
# import time on both sides (libkdumpfile's readers are all loaded by `import kdumpfile`)
import tracelens.detect, tracelens.parsers.vmcore.elf, tracelens.parsers.vmcore.kdump, tracelens.parsers.vmcore.source
t0 = time.perf_counter()
d = vmcore.open(sys.argv[1])
pages = nonzero = 0
for b in d.iter_pages():
    pages += len(b.pfn)
    nonzero += int((b.data.max(axis=1) != 0).sum())  # max() reads every byte of every page
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "import_seconds": t0 - t_start, "pages": pages, "nonzero": nonzero,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LKD_SCAN = r"""
import json, resource, sys, time
t_start = time.perf_counter()
import kdumpfile
t0 = time.perf_counter()
ctx = kdumpfile.kdumpfile(sys.argv[1])
ctx.attr["addrxlat.ostype"] = "linux"
ps = ctx.attr["arch.page_size"]
KP = kdumpfile.KDUMP_KPHYSADDR
read = ctx.read
pages = nonzero = 0
zero = bytes(ps)
for pfn in range(ctx.attr["max_pfn"]):
    try:
        data = read(KP, pfn * ps, ps)
    except Exception:
        continue
    pages += 1
    nonzero += data != zero
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "import_seconds": t0 - t_start, "pages": pages, "nonzero": nonzero,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def find_lkd_python(explicit: str | None) -> str | None:
    for cand in ([explicit] if explicit else []) + [sys.executable, "/usr/bin/python3"]:
        if cand and shutil.which(cand) or (cand and os.path.exists(cand)):
            r = subprocess.run([cand, "-c", "import kdumpfile"], capture_output=True)
            if r.returncode == 0:
                return cand
    return None


def ensure_dumps() -> list[Path]:
    missing = [n for n in NAMES if not (CACHE / n).exists()]
    if missing:
        sys.path.insert(0, str(HERE.parent / "tests" / "vmcore"))
        import conftest  # the test fixture's extractor

        if not conftest.SAMPLES.is_dir():
            sys.exit(f"no dumps given and no samples at {conftest.SAMPLES}")
        conftest.real_dumps.__wrapped__(conftest.SAMPLES)
    dumps = [CACHE / n for n in NAMES]
    # a zlib variant of the same memory (the samples have raw and LZO pages only), made by makedumpfile -c
    zlib_dump = CACHE / "mdf-c31.kdump"
    mdf = shutil.which("makedumpfile")
    if mdf and not zlib_dump.exists():
        tmp = zlib_dump.with_suffix(".tmp")
        if tmp.exists():
            tmp.unlink()
        r = subprocess.run([mdf, "-c", "-d", "31", str(CACHE / "proc-vmcore.elf"), str(tmp)], capture_output=True)
        if r.returncode == 0:
            os.replace(tmp, zlib_dump)
    if zlib_dump.exists():
        dumps.append(zlib_dump)
    return dumps


def run_json(cmd: list[str]) -> dict | None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  ! {' '.join(cmd[:3])}...: {r.stderr.strip().splitlines()[-1:] }", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def best_of(n: int, fn):
    results = [fn() for _ in range(n)]
    results = [r for r in results if r is not None]
    if not results:
        return None
    return min(results, key=lambda r: r["seconds"])


def time_cmd(cmd: list[str], repeat: int, **kw) -> float | None:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, **kw)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            return None
        times.append(dt)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="*", type=Path)
    ap.add_argument("--lkd-python", help="a Python that can import kdumpfile (default: this one, then /usr/bin/python3)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dumps = args.dumps or ensure_dumps()
    lkd = find_lkd_python(args.lkd_python)
    mdf = shutil.which("makedumpfile")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; libkdumpfile via {lkd or 'ABSENT'}; makedumpfile {mdf or 'ABSENT'}")
    print()
    print("page scan: seconds from open() to the last page (best of --repeat), each in a fresh process; the module")
    print("import is shown apart (+imp); RSS is the process maximum")
    print(f"{'dump':24} {'size MiB':>9} | {'tracelens s':>11} {'+imp':>5} {'RSS MiB':>8} | {'libkdumpfile s':>14} {'+imp':>5} {'RSS MiB':>8} | {'speed-up':>8} | pages (tl/lkd)")
    for path in dumps:
        size = path.stat().st_size / 2**20
        tl = best_of(args.repeat, lambda: run_json([sys.executable, "-c", TRACELENS_SCAN, str(path)]))
        lk = best_of(args.repeat, lambda: run_json([lkd, "-c", LKD_SCAN, str(path)])) if lkd else None
        ratio = f"{lk['seconds'] / tl['seconds']:7.2f}x" if tl and lk else "     n/a"
        print(f"{path.name:24} {size:9.1f} | {tl['seconds']:11.3f} {tl['import_seconds']:5.2f} {tl['maxrss_mib']:8.0f} | "
              + (f"{lk['seconds']:14.3f} {lk['import_seconds']:5.2f} {lk['maxrss_mib']:8.0f}" if lk else f"{'absent':>14} {'':>5} {'':>8}")
              + f" | {ratio} | {tl['pages']}/{lk['pages'] if lk else '-'} (non-zero {tl['nonzero']}/{lk['nonzero'] if lk else '-'})")
    print()
    script = shutil.which("tracelens")
    floor = time_cmd([sys.executable, "-c", "pass"], args.repeat)
    print(f"dmesg: median wall seconds of --repeat runs; python -c pass (the interpreter floor) = {floor:.3f} s")
    print(f"{'dump':24} | {'python -m tracelens':>19} {'tracelens':>9} {'library':>8} | {'makedumpfile':>12} | {'ratio':>6}")
    sys.path.insert(0, str(HERE.parent))
    from tracelens.parsers import vmcore

    for path in dumps:
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            with vmcore.open(path) as d:
                d.kernel_log().render()
        lib = (time.perf_counter() - t0) / args.repeat
        cli = time_cmd([sys.executable, "-m", "tracelens", "dmesg", str(path)], args.repeat)
        cli_script = time_cmd([script, "dmesg", str(path)], args.repeat) if script else None
        md = None
        if mdf:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "dmesg.txt"

                def once():
                    if out.exists():
                        out.unlink()
                    t0 = time.perf_counter()
                    r = subprocess.run([mdf, "--dump-dmesg", str(path), str(out)], capture_output=True)
                    return (time.perf_counter() - t0) if r.returncode == 0 else None

                runs = [once() for _ in range(args.repeat)]
                runs = [r for r in runs if r is not None]
                md = statistics.median(runs) if runs else None
        ratio = f"{cli / md:5.1f}x" if cli and md else "   n/a"
        print(f"{path.name:24} | {cli if cli else float('nan'):19.3f} "
              + (f"{cli_script:9.3f}" if cli_script else f"{'absent':>9}") + f" {lib:8.4f} | "
              + (f"{md:12.4f}" if md else f"{'absent':>12}") + f" | {ratio}")
    print()
    print("speed-up = libkdumpfile time / tracelens time (higher is better); ratio = python -m tracelens dmesg / "
          "makedumpfile (lower is better)")


if __name__ == "__main__":
    main()
