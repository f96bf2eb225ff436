"""``tracelens watch``: throughput, latency and memory over a long run, as whole processes.

    python benchmarks/bench_watch.py [--size-mib 1024] [--long-gib 10] [--rate-mbps 20] [--dir D] [--keep]

1. **Throughput**: the capture piped into ``tracelens watch - --json`` as fast as the pipe takes it, against
   ``tracelens analyze`` of the same file (the baseline, measured in the same run), both under /usr/bin/time.
   The final summary must equal analyze's.
2. **Latency**: the capture written to the pipe at a xentrace-like rate (``--rate-mbps`` in 100 ms bursts of whole
   windows, as xentrace's poll writes them); for every boundary event, the time from the write that completed the
   resume record's window to the event line on watch's standard output.
3. **Long run**: the capture streamed again and again (TSCs shifted by the capture's span each time, so time moves
   on) until ``--long-gib`` GiB went through one pipe; peak RSS of the watch process after 1/4 of it and at the end
   (/proc/PID/status VmHWM), which must stay flat.

Captures come from benchmarks/bench_xentrace.py's host simulator (8 soft resets, grant and hypercall traffic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_xentrace import generate, timed  # noqa: E402

TL = [sys.executable, "-m", "tracelens"]


def _hwm(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _window_ends(data: np.ndarray) -> np.ndarray:
    """Byte offsets where each window ends (data: the capture's words)."""
    ends = []
    p = 0
    n = data.shape[0]
    while p + 3 <= n:
        p += 3 + int(data[p + 2]) // 4
        ends.append(4 * p)
    return np.asarray(ends, np.int64)


def _tsc_words(cap: Path) -> np.ndarray:
    """Word index of every TSC's low word in the capture."""
    import tracelens

    t = tracelens.read_xentrace(cap)
    off = t.column("offset").to_numpy()
    has = t.column("has_tsc").to_numpy(zero_copy_only=False)
    return (off[has] // 4 + 1).astype(np.int64)


def throughput(cap: Path, work: Path, repeat: int) -> dict:
    out = work / "a.json"
    runs = {"analyze": [], "watch (pipe)": []}
    for _ in range(repeat + 1):
        runs["analyze"].append(timed([*TL, "analyze", str(cap), "--format", "json", "-o", str(out)]))
        r = timed(["sh", "-c", f"{' '.join(TL)} watch - --json < {cap} > {work / 'w.jsonl'}"])
        runs["watch (pipe)"].append(r)
    ref = json.loads(out.read_text())
    end = json.loads((work / "w.jsonl").read_text().splitlines()[-1])
    ref["capture"]["path"] = end["summary"]["capture"]["path"] = None
    same = end["summary"] == ref
    res = {}
    for name, rs in runs.items():
        rs = rs[1:]  # the first of each warms the caches
        res[name] = {"wall": statistics.median(r["wall"] for r in rs), "cpu": statistics.median(r["cpu"] for r in rs),
                     "rss": max(r["rss"] for r in rs)}
    print(f"\n| command ({cap.stat().st_size / 2**30:.2f} GiB) | wall (median of {repeat}) | cpu | peak RSS | vs analyze |")
    print("|---|---|---|---|---|")
    for name, m in res.items():
        print(f"| {name} | {m['wall']:.2f} s | {m['cpu']:.2f} s | {m['rss']:.0f} MiB | "
              f"{m['wall'] / res['analyze']['wall']:.2f}x |")
    print(f"final summary equal to analyze's: {same}; watch: {end['watch']}", flush=True)
    return res


def latency(cap: Path, rate_mbps: float, limit_bytes: int) -> None:
    data = np.fromfile(cap, np.uint32)
    ends = _window_ends(data)
    cut = int(ends[np.searchsorted(ends, min(limit_bytes, data.nbytes), "right") - 1])  # whole windows
    raw = data.view(np.uint8)[:cut]
    proc = subprocess.Popen([*TL, "watch", "-", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    written: list[tuple[int, float]] = []
    events: list[tuple[float, dict]] = []

    def read():
        for line in proc.stdout:
            events.append((time.monotonic(), json.loads(line)))

    th = threading.Thread(target=read)
    th.start()
    burst = int(rate_mbps * 1e6 / 10)
    p = 0
    t_next = time.monotonic()
    while p < raw.size:
        # whole windows, about one poll's worth (xentrace writes every 100 ms)
        q = int(ends[np.searchsorted(ends, p + burst, "left")]) if p + burst < ends[-1] else raw.size
        q = min(q, raw.size)
        proc.stdin.write(raw[p:q].tobytes())
        proc.stdin.flush()
        written.append((q, time.monotonic()))
        p = q
        t_next += 0.1
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(1.0)
    proc.stdin.close()
    proc.wait()
    th.join()
    offs = np.array([w[0] for w in written])
    lat = []
    for t, ev in events:
        if ev["type"] == "boundary":
            at = int(np.searchsorted(offs, ev["evidence"]["resume_offset"], "right"))
            if at < len(written):
                lat.append(t - written[at][1])
    if lat:
        print(f"latency at {rate_mbps:g} MB/s ({raw.size / 2**20:.0f} MiB, {len(lat)} boundaries): median "
              f"{statistics.median(lat):.2f} s, max {max(lat):.2f} s (from the write completing the resume's "
              "window to the event line)", flush=True)
    else:
        print("latency: no boundary event came", flush=True)


def long_run(cap: Path, total_gib: float) -> None:
    data = np.fromfile(cap, np.uint32)
    idx = _tsc_words(cap)
    lo = data[idx].astype(np.uint64) | (data[idx + 1].astype(np.uint64) << np.uint64(32))
    span = int(lo.max() - lo.min()) + 1_000_000
    proc = subprocess.Popen([*TL, "watch", "-", "--json"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    total = int(total_gib * 2**30)
    sent = 0
    rep = 0
    marks = []
    t0 = time.monotonic()
    while sent < total:
        t = lo + np.uint64(rep * span)
        data[idx] = (t & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        data[idx + 1] = (t >> np.uint64(32)).astype(np.uint32)
        mv = memoryview(data.view(np.uint8))
        for p in range(0, len(mv), 8 << 20):
            proc.stdin.write(mv[p:p + (8 << 20)])
        sent += data.nbytes
        rep += 1
        marks.append((sent / 2**30, _hwm(proc.pid)))
        print(f"  {sent / 2**30:6.2f} GiB in, watch peak RSS {marks[-1][1]:.0f} MiB", flush=True)
    proc.stdin.close()
    peak = _hwm(proc.pid)
    proc.wait()
    dt = time.monotonic() - t0
    print(f"long run: {sent / 2**30:.1f} GiB through one pipe in {dt:.0f} s ({sent / dt / 1e6:.0f} MB/s); peak RSS "
          f"{marks[0][1]:.0f} MiB after {marks[0][0]:.1f} GiB, {peak:.0f} MiB at the end; exit {proc.returncode}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--long-gib", type=float, default=10.0)
    ap.add_argument("--rate-mbps", type=float, default=20.0)
    ap.add_argument("--latency-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of throughput,latency,long")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="tl-bench-watch-"))
    work.mkdir(parents=True, exist_ok=True)
    cap = work / f"watch-{args.size_mib}m-kexec.bin"
    if not cap.exists():
        generate(cap, args.size_mib << 20, kexecs=8)
    skip = set(args.skip.split(","))
    if "throughput" not in skip:
        throughput(cap, work, args.repeat)
    if "latency" not in skip:
        latency(cap, args.rate_mbps, args.latency_mib << 20)
    if "long" not in skip:
        long_run(cap, args.long_gib)
    if not args.keep:
        cap.unlink()


if __name__ == "__main__":
    main()
