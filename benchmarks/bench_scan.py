#!/usr/bin/env python3
"""``tracelens scan`` benchmark: many generated captures, a plain loop over ``analyze`` in one process against
``scan`` on a LocalCluster of 1 and of N workers, measured in the same run.

    python benchmarks/bench_scan.py                          # 200 captures of 5-50 MB, 1 and 2 workers
    python benchmarks/bench_scan.py --count 40 --max-mb 20   # smaller, on a busy machine

Captures come from the decoder benchmark's generator (benchmarks/bench_xentrace.py: an HVM-like record mix with
grant, hypercall and IRQ traffic); a fraction of them (``--leaky``) have soft-reset kexecs with grants still mapped
across them (TL-GNT-001 findings). Each measurement runs in a fresh process with a warm page cache (the captures
were just written), so the comparison is of CPU work, not of the disk. The loop is what a user would write first::

    for p in paths: analyze(p)          # tracelens.analysis.analyze.analyze, its default (all-core) numba threads

The loop is also timed with numba on one thread (what one scan worker does per task). ``scan`` times include
starting the LocalCluster and its workers. Reported: seconds, captures/s, MB/s and the
speed-up against the loop; the scan's findings are checked equal to the loop's (count per capture).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_xentrace import generate  # noqa: E402

LOOP = r"""
import json, sys, time
from tracelens.analysis.analyze import analyze
paths = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
findings = {}
for p in paths:
    findings[p] = len(analyze(p).findings)
print(json.dumps({"seconds": time.perf_counter() - t0, "findings": findings}))
"""

LOOP_1 = "from tracelens._jit import set_threads; set_threads(1)\n" + LOOP

SCAN = r"""
import json, sys, time
import tracelens
from tracelens.fleet.scan import ScanConfig
from tracelens.fleet.cluster import ClusterOptions
if __name__ == "__main__":
    folder, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.perf_counter()
    res = tracelens.scan([folder], out, ScanConfig(cluster=ClusterOptions(workers=workers)))
    dt = time.perf_counter() - t0
    caps = res.captures
    print(json.dumps({"seconds": dt, "analysed": res.analysed, "errors": res.errors, "resumed": res.resumed,
                      "findings": dict(zip(caps["capture"].to_list(), caps["findings"].to_list())),
                      "task_seconds": float(caps["elapsed_s"].sum())}))
"""


def child(code: str, *args) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"child failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--min-mb", type=float, default=5)
    ap.add_argument("--max-mb", type=float, default=50)
    ap.add_argument("--leaky", type=float, default=0.3, help="fraction of captures with kexecs and leaked grants")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dir", type=Path, default=None, help="where to write the captures (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the captures and outputs")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-scan-", dir=args.dir))
    caps = work / "captures"
    caps.mkdir()
    rng = np.random.default_rng(13)
    sizes = rng.uniform(args.min_mb, args.max_mb, args.count)
    leaky = rng.random(args.count) < args.leaky
    t0 = time.perf_counter()
    paths = []
    for i, (mb, leak) in enumerate(zip(sizes, leaky)):
        p = caps / f"host{i % 17:02d}-{i:04d}.xentrace"
        generate(p, int(mb * 1e6), ncpu=4, seed=1000 + i, kexecs=3 if leak else 0)
        paths.append(str(p))
    total = sum(os.path.getsize(p) for p in paths)
    print(f"generated {args.count} captures, {total / 1e9:.2f} GB ({args.min_mb:g}-{args.max_mb:g} MB, "
          f"{int(leaky.sum())} with kexecs) in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores")
    (work / "paths.json").write_text(json.dumps(paths))

    rows = []
    loop = child(LOOP, work / "paths.json")
    rows.append(("loop over analyze (1 process)", loop["seconds"]))
    print(f"load average before the runs: {os.getloadavg()[0]:.1f} (other work on the machine competes for it)")
    one = child(LOOP_1, work / "paths.json")
    rows.append(("loop over analyze (1 process, 1 numba thread)", one["seconds"]))
    leaks = sum(1 for v in loop["findings"].values() if v)
    print(f"captures with findings: {leaks}")
    for n in args.workers:
        out = work / f"out-{n}"
        r = child(SCAN, caps, out, n)
        assert r["analysed"] == args.count and r["errors"] == 0, r
        assert r["findings"] == loop["findings"], "scan findings differ from the loop's"
        rows.append((f"scan --workers {n}", r["seconds"]))
        print(f"scan --workers {n}: {r['task_seconds']:.1f} s inside the tasks; load average "
              f"{os.getloadavg()[0]:.1f}")
        if n == args.workers[-1]:
            again = child(SCAN, caps, out, n)
            assert again["resumed"] == args.count and again["analysed"] == 0
            rows.append((f"scan --workers {n}, re-run (all skipped)", again["seconds"]))
    base = rows[0][1]
    print(f"\n{'run':44s} {'seconds':>8s} {'captures/s':>11s} {'MB/s':>7s} {'speed-up':>9s}")
    for name, s in rows:
        print(f"{name:44s} {s:8.1f} {args.count / s:11.2f} {total / 1e6 / s:7.0f} {base / s:8.2f}x")
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept in {work}")


if __name__ == "__main__":
    main()
