#!/usr/bin/env python3
"""xentrace decoder benchmark: generates a capture with the project's writer and measures, in one run,
ratios against a plain read of the same file.

Every measurement runs in a fresh process (page faults on new memory are a large part of the cost on small
machines, and a warm process would hide them), repeated and alternated with its baseline; medians are reported.

    python benchmarks/bench_xentrace.py                 # 1 GiB capture
    python benchmarks/bench_xentrace.py --size-gib 1 --big 4   # also the bounded-memory decode of a 4 GiB capture

Reported: plain read (numpy.fromfile) time; in-memory decode on 1 thread and on all cores (ratio to the read,
records/s); peak RSS of each; `tracelens info` wall time including interpreter start-up; streaming decode to
Parquet peak RSS for 1 GiB vs the --big size; cold (empty numba cache) vs warm start-up.
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

import numpy as np

from tracelens.parsers.xentrace.writer import CPU_CHANGE_HEADER, encode_records

# (event, n_extra, has_tsc, weight): a mix shaped like the real HVM capture in ../shared (VMEXIT/VMENTRY pairs with
# handler records, credit2 and switch records) plus grant and hypercall traffic. Mean record size ~21 bytes.
MIX = [
    (0x00081102, 3, True, 14), (0x00081001, 0, True, 14), (0x0008200F, 1, False, 4), (0x00082012, 1, False, 5),
    (0x00082016, 2, False, 3), (0x0008200E, 6, False, 1), (0x00082013, 1, False, 2), (0x00084011, 2, True, 4),
    (0x00022209, 2, True, 8), (0x0002220C, 1, True, 8), (0x0002800E, 3, True, 5), (0x0002800F, 4, True, 5),
    (0x0002800A, 4, True, 5), (0x00021101, 1, True, 5), (0x00021011, 1, True, 3), (0x00028004, 2, True, 3),
    (0x0010F001, 1, True, 2), (0x0010F002, 1, True, 2), (0x0020100D, 3, True, 3), (0x00802008, 3, True, 2),
]


def _payloads(rng, events: np.ndarray, cpu: int) -> np.ndarray:
    """Payload words with plausible values where the analysis reads them: a few guests (d1-d3) and dom0, their
    vCPUs, a few dozen IRQs, real hypercall encodings; other words are random."""
    n = len(events)
    d = rng.integers(0, 1 << 16, (n, 7), dtype=np.uint32)
    doms = np.array([0, 1, 2, 3, 32767], np.uint32)
    dom = doms[rng.integers(0, len(doms), n)]
    vcpu = rng.integers(0, 4, n, dtype=np.uint32)
    runstate = (events & 0x0FFFF00F) == 0x00021001
    d[:, 0] = np.where(runstate, (dom << 16) | vcpu, d[:, 0])
    for ev in (0x00028004, 0x0002800E, 0x0002800F):
        sel = events == ev
        d[sel, 0], d[sel, 1] = dom[sel], vcpu[sel]
    sel = events == 0x0002800A
    d[sel, 0], d[sel, 1] = doms[rng.integers(0, len(doms), sel.sum())], vcpu[sel]
    d[sel, 2], d[sel, 3] = dom[sel], (vcpu[sel] + 1) % 4
    sel = (events == 0x0010F001) | (events == 0x0010F002)
    d[sel, 0] = rng.integers(1, 4, sel.sum(), dtype=np.uint32)  # the granting guest
    sel = events == 0x00802008
    d[sel, 0] = rng.integers(16, 48, sel.sum(), dtype=np.uint32)
    sel = events == 0x0020100D  # grant_table_op(cmd, count), sched_op(cmd), memory_op, event_channel_op
    choice = rng.integers(0, 4, sel.sum())
    d[sel, 0] = np.array([0x01100014, 0x0010001D, 0x0000000C, 0x00000020], np.uint32)[choice]
    d[sel, 1] = np.where(choice == 0, rng.integers(0, 2, sel.sum()), np.where(choice == 1, 1, d[sel, 1])).astype(np.uint32)
    d[sel, 2] = rng.integers(1, 32, sel.sum(), dtype=np.uint32)
    sel = events == 0x00082012
    d[sel, 0] = np.array([24, 32, 12, 29, 34], np.uint32)[rng.integers(0, 5, sel.sum())]
    return d


def generate(path: Path, size: int, ncpu: int = 8, seed: int = 1, burst: float = 12.0, kexecs: int = 0) -> int:
    """Write a capture of at least ``size`` bytes; returns the record count. Streams in rounds of windows.

    Records come in bursts (mean ``burst`` records a few hundred cycles apart, then a gap), which is how a pCPU
    writes them (an exit, its handler records, the entry) and gives the real HVM capture's mean run of 12 records
    per pCPU in merged order. ``burst=1`` interleaves the pCPUs record by record: the merge's worst case.

    ``kexecs`` > 0 spreads that many soft resets (SCHED_SHUTDOWN, reason 5) of the guests 1-3 over the capture, in
    place of SWITCH_INFPREV records of the same size; the guests keep running afterwards, so each is a kexec
    boundary, with the grant, balloon and hypercall traffic of the mix on both sides of it."""
    rng = np.random.default_rng(seed)
    ev = np.array([m[0] for m in MIX], np.uint32)
    nx = np.array([m[1] for m in MIX], np.int64)
    ht = np.array([m[2] for m in MIX], bool)
    p = np.array([m[3] for m in MIX], float)
    p /= p.sum()
    tsc = np.full(ncpu, 10_000_000, np.uint64)
    written = 0
    records = 0
    per_window = 3000  # records per window (~64 KiB)
    est_rounds = max(1, size // (ncpu * (12 + per_window * 21)))  # mean record: 21 bytes
    kexec_rounds = {(i + 1) * est_rounds // (kexecs + 1) for i in range(kexecs)}
    kexec_done = 0
    rounds = 0
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        while written < size:
            order = rng.permutation(ncpu)  # poll order: window start TSCs are not monotonic in file order
            for c in order:
                k = rng.choice(len(MIX), per_window, p=p)
                start = rng.random(per_window) < 1.0 / burst
                step = np.where(start, rng.integers(20_000 * ncpu, 80_000 * ncpu, per_window),
                                rng.integers(20, 200, per_window)).astype(np.uint64)
                t = tsc[c] + np.cumsum(step)
                tsc[c] = t[-1]
                events = ev[k].copy()
                data = _payloads(rng, events, c)
                if rounds in kexec_rounds and c == order[0]:
                    j = int(np.flatnonzero(events == 0x0002800E)[0])  # 3 words and a TSC, like SCHED_SHUTDOWN's
                    events[j] = 0x00028007
                    data[j, :3] = (1 + kexec_done % 3, 0, 5)  # domid, vcpu, reason soft_reset
                    kexec_done += 1
                words, _ = encode_records(events, nx[k], ht[k], t, data)
                f.write(np.array([CPU_CHANGE_HEADER, c, words.nbytes], "<u4").tobytes())
                f.write(words.astype("<u4").tobytes())
                written += 12 + words.nbytes
                records += per_window + 1
            rounds += 1
    os.replace(tmp, path)
    return records


CHILD = r"""
import json, os, resource, sys, time
mode, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
if mode == "read":
    import numpy as np
    t0 = time.perf_counter()
    a = np.fromfile(path, dtype=np.uint8)
    n = a.shape[0]
elif mode == "decode":
    import tracelens.parsers.xentrace.decode as d
    from tracelens._jit import set_threads
    set_threads(threads)
    t0 = time.perf_counter()
    t = d.read_xentrace(path, threads=threads)
    n = t.num_rows
elif mode == "floor":  # what producing the table's bytes costs at best: populate that much fresh memory, memcpy into it
    import numpy as np
    from tracelens.parsers.xentrace.decode import _open, _populated_anonymous
    _p, size, mm, w = _open(path, True)
    src = np.frombuffer(mm, np.uint8)
    total = int(sys.argv[4]) * int(sys.argv[5])  # rows * bytes per row
    t0 = time.perf_counter()
    out = np.frombuffer(_populated_anonymous(total), np.uint8)
    t1 = time.perf_counter()
    o = 0
    while o < total:
        k = min(size, total - o)
        out[o:o + k] = src[:k]
        o += k
    n = total
    print(json.dumps({"populate_seconds": t1 - t0}))
elif mode == "decode-again":  # a second decode in the same process: memory the first one freed is reused
    import tracelens.parsers.xentrace.decode as d
    from tracelens._jit import set_threads
    set_threads(threads)
    t = d.read_xentrace(path, threads=threads)
    del t
    t0 = time.perf_counter()
    t = d.read_xentrace(path, threads=threads)
    n = t.num_rows
elif mode == "analyze-full":  # tracelens.analysis.api.analyze: decode, analysis and the file's SHA-256
    from tracelens.analysis.api import analyze
    from tracelens._jit import set_threads
    set_threads(threads)
    t0 = time.perf_counter()
    n = analyze(path).records
elif mode == "analyze":  # decode, then the whole analysis (what `tracelens analyze` computes before rendering)
    import tracelens.parsers.xentrace.decode as d
    from tracelens.analysis.api import analyze_table
    t0 = time.perf_counter()
    t = d.read_xentrace(path, threads=threads)
    t1 = time.perf_counter()
    a = analyze_table(t, path=path)
    n = t.num_rows
    print(json.dumps({"decode_seconds": t1 - t0, "analyze_seconds": time.perf_counter() - t1}))
elif mode == "stream":  # exactly what `tracelens decode -o OUT.parquet` does
    import tracelens.parsers.xentrace.decode as d
    from tracelens.commands.trace import _write_overlapped
    t0 = time.perf_counter()
    n, _ = _write_overlapped(d.iter_batches(path, threads=threads, reuse_buffers=2, batch_bytes=64 << 20),
                             "parquet", sys.argv[4])
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "n": n, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, path: Path, threads: int = 1, extra=(), env=None) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(threads), *extra], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{mode} failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def wall(cmd: list[str], env=None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{cmd} failed: {r.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--big", type=float, default=0.0, help="also stream-decode a capture of this many GiB (RSS check)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worst-case", action="store_true", help="also decode a capture whose pCPUs interleave record by record")
    ap.add_argument("--dir", default=None, help="where to put the generated captures (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="tl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cap = work / f"bench-{args.size_gib:g}g.bin"
    if not cap.exists():
        t0 = time.perf_counter()
        nrec = generate(cap, int(args.size_gib * (1 << 30)))
        print(f"generated {cap} ({cap.stat().st_size / 2**30:.2f} GiB, {nrec:,} records) in {time.perf_counter() - t0:.1f} s")
    size = cap.stat().st_size
    cores = os.cpu_count() or 1
    child("decode", cap, 1)  # warm the numba cache and the page cache
    child("read", cap)
    rows = {"read": [], "decode1": [], f"decode{cores}": []}
    rss = {}
    for _ in range(args.repeat):
        for key, mode, th in (("read", "read", 1), ("decode1", "decode", 1), (f"decode{cores}", "decode", cores)):
            r = child(mode, cap, th)
            rows[key].append(r["seconds"])
            rss[key] = max(rss.get(key, 0), r["maxrss_mib"])
            if mode == "decode":
                nrows = r["n"]
    # the floor: populating the table's bytes of fresh memory and copying into them, which any decoder pays
    row_bytes = 59  # cpu 2, tsc 8, event 4, n_extra 1, d1..d7 28, offset 8, dom 2, vcpu 2, name 2, scratch 2
    rows["floor"], rows["decode1 again"], rows[f"decode{cores} again"] = [], [], []
    populate = []
    for _ in range(args.repeat):
        r = child("floor", cap, 1, [str(nrows), str(row_bytes)])
        rows["floor"].append(r["seconds"])
        rss["floor"] = max(rss.get("floor", 0), r["maxrss_mib"])
        for key, th in (("decode1 again", 1), (f"decode{cores} again", cores)):
            r = child("decode-again", cap, th)
            rows[key].append(r["seconds"])
            rss[key] = max(rss.get(key, 0), r["maxrss_mib"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\ncapture: {size / 2**30:.2f} GiB, {nrows:,} records, {cores} cores; medians of {args.repeat} fresh processes")
    print(f"{'measure':28s} {'seconds':>9s} {'x read':>8s} {'Mrec/s':>8s} {'peak RSS MiB':>13s}")
    for k in rows:
        rate = nrows / med[k] / 1e6 if k.startswith("decode") else float("nan")
        print(f"{k:28s} {med[k]:9.3f} {med[k] / med['read']:8.2f} {rate:8.1f} {rss[k]:13.0f}")
    print(f"(floor: populate {nrows * row_bytes / 2**30:.2f} GiB of fresh memory, the table's size, and memcpy into it;"
          f" 'again': a second decode in the same process, on memory the first one freed)")
    # analysis on top of decoding (issue 4: at most 30 % more than decoding), on the same traffic with 8 soft resets
    # of the guests spread over it (kexec boundaries with grants mapped across them)
    capk = work / f"bench-{args.size_gib:g}g-kexec.bin"
    if not capk.exists():
        generate(capk, int(args.size_gib * (1 << 30)), kexecs=8)
    child("analyze", capk, cores)
    an = []
    for _ in range(args.repeat):
        r = subprocess.run([sys.executable, "-c", CHILD, "analyze", str(capk), str(cores)], capture_output=True, text=True)
        lines = r.stdout.strip().splitlines()
        an.append(json.loads(lines[-2]))
    dec = statistics.median(x["decode_seconds"] for x in an)
    ana = statistics.median(x["analyze_seconds"] for x in an)
    print(f"{'decode + analyze (kexec)':28s} {dec + ana:9.3f}   analysis adds {ana:.3f} s = {100 * ana / dec:.0f} % of the decode ({dec:.3f} s)"
          f"; medians, same processes")
    # the whole of analyze() (what `tracelens analyze` computes: decode, analysis, SHA-256 of the file) against a
    # decode alone, alternated in fresh processes
    full, alone = [], []
    for _ in range(args.repeat):
        full.append(child("analyze-full", capk, cores)["seconds"])
        alone.append(child("decode", capk, cores)["seconds"])
    f_med, a_med = statistics.median(full), statistics.median(alone)
    print(f"{'analyze() vs decode':28s} {f_med:9.3f}   vs {a_med:.3f} s: +{100 * (f_med - a_med) / a_med:.0f} % "
          f"(decode, analysis and SHA-256; fresh processes, alternated)")
    env = dict(os.environ)
    info = [wall(["tracelens", "info", str(cap)], env) for _ in range(args.repeat)]
    print(f"{'tracelens info (wall)':28s} {statistics.median(info):9.3f}   (includes interpreter start-up; warm numba cache)")
    if args.worst_case:
        capw = work / f"bench-{args.size_gib:g}g-interleaved.bin"
        if not capw.exists():
            generate(capw, int(args.size_gib * (1 << 30)), seed=3, burst=1.0)
        child("decode", capw, cores)
        r1 = statistics.median(child("decode", capw, 1)["seconds"] for _ in range(args.repeat))
        r2 = statistics.median(child("decode", capw, cores)["seconds"] for _ in range(args.repeat))
        print(f"{'worst case (run length 1)':28s} {r1:9.3f} {r1 / med['read']:8.2f}   1 thread; {r2:.3f} s ({r2 / med['read']:.2f}x) on {cores}")
    # cold vs warm start-up: an empty numba cache directory, then the same again
    small = work / "small.bin"
    generate(small, 1 << 20)
    cold_dir = tempfile.mkdtemp(prefix="tl-numba-cold-")
    env_cold = dict(os.environ, NUMBA_CACHE_DIR=cold_dir)
    cold = wall(["tracelens", "decode", str(small), "-o", str(work / "small.parquet")], env_cold)
    warm = statistics.median(wall(["tracelens", "decode", str(small), "-o", str(work / "small.parquet")], env_cold) for _ in range(3))
    cold_i = wall(["tracelens", "info", str(small)], dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp()))
    warm_i = statistics.median(wall(["tracelens", "info", str(small)], env) for _ in range(3))
    print(f"{'decode 1 MiB: cold / warm':28s} {cold:9.3f} / {warm:.3f} s   (cold = empty numba cache: JIT compile)")
    print(f"{'info 1 MiB: cold / warm':28s} {cold_i:9.3f} / {warm_i:.3f} s")
    shutil.rmtree(cold_dir, ignore_errors=True)
    # bounded memory: streaming decode to Parquet
    s1 = child("stream", cap, cores, [str(work / "o1.parquet")])
    print(f"{'stream to Parquet':28s} {s1['seconds']:9.3f} {s1['seconds'] / med['read']:8.2f} {'':8s} {s1['maxrss_mib']:13.0f}   ({size / 2**30:.2f} GiB)")
    if args.big:
        capb = work / f"bench-{args.big:g}g.bin"
        if not capb.exists():
            generate(capb, int(args.big * (1 << 30)), seed=2)
        sb = child("stream", capb, cores, [str(work / "ob.parquet")])
        print(f"{'stream to Parquet':28s} {sb['seconds']:9.3f} {'':8s} {'':8s} {sb['maxrss_mib']:13.0f}   ({capb.stat().st_size / 2**30:.2f} GiB)")
    print(f"\n(work files in {work}; delete when done)")


if __name__ == "__main__":
    main()
