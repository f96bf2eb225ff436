"""The streamed analysis (tracelens.analysis.stream, what ``analyze`` and ``gate`` run) against the in-memory one
(analyze_table of the decoded table, itself checked against the simulator's truth and the pure-Python references
in test_analysis_*.py). Chunks are forced down to one window so that every piece of carried state (per-pCPU
TSC/K/vCPU, pending grant rows, the grant ledger's pairs and cursors) crosses many chunk edges."""

from __future__ import annotations

import numpy as np
import pytest

import synth
import tracelens
from tracelens.analysis.analyze import AnalysisConfig, analyze, analyze_table
from tracelens.analysis.report import to_json_obj
from tracelens.analysis.stream import StreamOptions, analyze_stream
from tracelens.errors import FormatError
from tracelens.options import DecodeOptions
from tracelens.parsers.xentrace.writer import CPU_CHANGE_HEADER, encode_records

TINY = StreamOptions(chunk_bytes=1)  # one window per chunk


def _reference(path, config=None):
    config = config or AnalysisConfig()
    table = tracelens.read_xentrace(path, config.decode)
    return analyze_table(table, config, path=str(path))


def _same(ref, got):
    a, b = to_json_obj(ref), to_json_obj(got)
    for key in a:
        assert a[key] == b[key], key
    assert a == b
    for k, v in ref.grants.series.items():
        assert np.array_equal(np.asarray(v), np.asarray(got.grants.series[k])), k
    assert ref.records == got.records and (ref.first_tsc, ref.last_tsc) == (got.first_tsc, got.last_tsc)


@pytest.mark.parametrize("seed", range(60))
def test_random_hosts_equal_in_memory_analysis(seed, tmp_path):
    """Boundaries (soft resets, crashes, re-creations), losses, both balloon layouts (4.17 and 4.20 hosts), guest
    tracepoints, foreign maps, multicalls, 1-4 pCPUs whose windows interleave."""
    path = tmp_path / "c.xentrace"
    synth.random_scenario(seed).write(path)
    ref = _reference(path)
    _same(ref, analyze_stream(path, opts=TINY))
    _same(ref, analyze_stream(path))


@pytest.mark.parametrize("name", ["scenario_clean_soft_reset", "scenario_persistent_grants",
                                  "scenario_balloon_before_kexec", "scenario_foreign_map",
                                  "scenario_instrumented_guest", "scenario_lost_across_boundary",
                                  "scenario_crash_kdump"])
def test_scenarios_equal_in_memory_analysis(name, tmp_path):
    path = tmp_path / "c.xentrace"
    getattr(synth, name)().write(path)
    _same(_reference(path), analyze_stream(path, opts=TINY))


def test_pre_418_balloon_layout(tmp_path):
    path = tmp_path / "c.xentrace"
    synth.scenario_balloon_before_kexec(xen_version="4.17").write(path)
    got = analyze_stream(path, opts=TINY)
    assert {r["layout"] for r in got.balloon} == {"<4.18"}
    _same(_reference(path), got)
    cfg = AnalysisConfig(decode=DecodeOptions(xen_version="4.17"))
    _same(_reference(path, cfg), analyze_stream(path, cfg, opts=TINY))


def test_user_boundaries(tmp_path):
    path = tmp_path / "c.xentrace"
    sim = synth.scenario_persistent_grants()
    sim.write(path)
    mid = (sim.truth.boundaries[0]["tsc"] + 10_000_000) // 2
    cfg = AnalysisConfig(boundaries=((1, mid), (0, mid)))
    ref = _reference(path, cfg)
    assert any(b.kind == "user" for b in ref.boundaries)
    _same(ref, analyze_stream(path, cfg, opts=TINY))


def test_samples_and_api_entry_point():
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "sample-traces").glob("*.xentrace")):
        ref = _reference(path)
        got = analyze(path)  # the public entry point streams
        assert got.sha256 is not None
        got.sha256 = None
        _same(ref, got)


def test_real_captures(real_xentrace_dir):
    for path in sorted(real_xentrace_dir.glob("*.bin")):
        _same(_reference(path), analyze_stream(path, opts=StreamOptions(chunk_bytes=1 << 16)))


def _write_windows(path, windows):
    """windows: (cpu, events, n_extra, has_tsc, tsc, data) per window, in file order."""
    with open(path, "wb") as f:
        for cpu, ev, nx, ht, tsc, data in windows:
            words, _ = encode_records(ev, nx, ht, tsc, data)
            f.write(np.array([CPU_CHANGE_HEADER, cpu, words.nbytes], "<u4").tobytes())
            f.write(words.astype("<u4").tobytes())


def test_dense_rare_records_and_grants_across_windows(tmp_path):
    """Windows made mostly of rare records (more than pass 1 first makes room for: it runs the chunk again) and of
    grant records whose time order interleaves across pCPUs and windows written out of order."""
    rng = np.random.default_rng(7)
    windows = []
    t = {0: 1_000, 1: 1_500, 2: 1_200}
    for rnd in range(12):
        for cpu in rng.permutation(3).tolist():
            n = 200
            kind = rng.integers(0, 4, n)
            ev = np.where(kind == 0, 0x0800F101, np.where(kind == 1, 0x0010F001,
                          np.where(kind == 2, 0x0010F002, 0x00021031))).astype(np.uint32)
            nx = np.where(kind == 3, 1, np.where(kind == 0, 3, 1))
            ht = rng.random(n) < 0.8
            steps = rng.integers(1, 50, n).astype(np.uint64)
            tsc = t[cpu] + np.cumsum(steps)
            t[cpu] = int(tsc[-1])
            data = np.zeros((n, 7), np.uint32)
            data[:, 0] = np.where(kind == 3, (rng.integers(1, 4, n) << 16), rng.integers(1, 4, n))
            windows.append((cpu, ev, nx, ht, tsc, data))
    path = tmp_path / "dense.xentrace"
    _write_windows(path, windows)
    ref = _reference(path)
    assert ref.grants.rows
    _same(ref, analyze_stream(path, opts=TINY))
    _same(ref, analyze_stream(path, opts=StreamOptions(chunk_bytes=3000)))


@pytest.mark.parametrize("tolerance", ["truncate", "skip"])
def test_damaged_capture_with_tolerance(tolerance, tmp_path):
    path = tmp_path / "c.xentrace"
    synth.scenario_persistent_grants().write(path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 4] = b"\xff\xff\xff\xff"  # a damaged header or record
    path.write_bytes(bytes(blob[: len(blob) - 6]))
    cfg = AnalysisConfig(decode=DecodeOptions(tolerance=tolerance))
    _same(_reference(path, cfg), analyze_stream(path, cfg, opts=TINY))
    with pytest.raises(FormatError):
        analyze_stream(path)


def test_series_is_sampled_past_its_limit(tmp_path):
    path = tmp_path / "c.xentrace"
    synth.random_scenario(3, steps=400).write(path)
    ref = _reference(path)
    n = len(ref.grants.series["tsc"])
    assert n > 40
    got = analyze_stream(path, opts=StreamOptions(chunk_bytes=1, series_limit=n // 5))
    stride = got.grants.series_stride
    assert stride >= 8 and len(got.grants.series["tsc"]) <= n // 5
    for k, v in ref.grants.series.items():
        assert np.array_equal(np.asarray(v)[::stride], got.grants.series[k]), k
    assert to_json_obj(ref)["grants"] == to_json_obj(got)["grants"]


def test_hypercall_long_tail_is_summed(tmp_path):
    path = tmp_path / "c.xentrace"
    synth.random_scenario(5, steps=200).write(path)
    ref = _reference(path)
    assert len(ref.hypercalls) > 3
    got = analyze_stream(path, opts=StreamOptions(top=3))
    named = [h for h in got.hypercalls if h["source"] != "other"]
    other = [h for h in got.hypercalls if h["source"] == "other"]
    assert len(named) == 3 and other
    assert sum(h["count"] for h in got.hypercalls) == sum(h["count"] for h in ref.hypercalls)
    assert sum(h["keys"] for h in other) == len(ref.hypercalls) - 3
    top3 = sorted(ref.hypercalls, key=lambda h: -h["count"])[:3]
    assert sorted(h["count"] for h in named) == sorted(h["count"] for h in top3)


def _grant_totals(rows):
    out = {}
    for r in rows:
        k = (r["granter"], r["epoch"])
        m, u = out.get(k, (0, 0))
        out[k] = (m + r["maps"], u + r["unmaps"])
    return out


@pytest.mark.parametrize("limit", [None, 2])
def test_grant_long_tail_is_summed_per_granter(limit, tmp_path, monkeypatch):
    """Past ``top`` pairs in the report (or PAIR_LIMIT tracked pairs), the rest become one row per granter and
    epoch, with mapper null and other_mappers; the busiest pairs stay exact and the totals per granter hold."""
    import tracelens.analysis.stream as S

    path = tmp_path / "c.xentrace"
    seed = next(s for s in range(40) if len({(r["mapper"], r["granter"]) for r in
                                              _reference_rows(s, tmp_path)}) >= 4)
    synth.random_scenario(seed).write(path)
    ref = _reference(path)
    if limit:
        monkeypatch.setattr(S, "PAIR_LIMIT", limit)
    got = analyze_stream(path, opts=StreamOptions(top=2, chunk_bytes=1))
    other = [r for r in got.grants.rows if "other_mappers" in r]
    named = [r for r in got.grants.rows if "other_mappers" not in r]
    assert other and all(r["mapper"] is None for r in other)
    assert len({(r["mapper"], r["granter"]) for r in named}) <= 2
    assert _grant_totals(got.grants.rows) == _grant_totals(ref.grants.rows)
    want = {(r["mapper"], r["granter"], r["epoch"]): r for r in ref.grants.rows}
    for r in named:
        assert r == want[(r["mapper"], r["granter"], r["epoch"])]
    assert sum(r["outstanding_at_end"] or 0 for r in got.grants.rows) == sum(
        r["outstanding_at_end"] or 0 for r in ref.grants.rows)


def _reference_rows(seed, tmp_path):
    path = tmp_path / f"s{seed}.xentrace"
    synth.random_scenario(seed).write(path)
    return _reference(path).grants.rows


def test_out_of_range_irqs_are_counted_then_summed(tmp_path, monkeypatch):
    import tracelens.analysis.stream as S

    n = 300
    rng = np.random.default_rng(3)
    irq = np.concatenate([rng.integers(65536, 1 << 32, n), np.full(50, 70000), rng.integers(16, 40, 50)])
    ev = np.full(irq.size, 0x00802008, np.uint32)
    data = np.zeros((irq.size, 7), np.uint32)
    data[:, 0] = irq
    path = tmp_path / "irq.xentrace"
    _write_windows(path, [(0, ev, np.ones(irq.size, np.int64), np.ones(irq.size, bool),
                           1000 + np.arange(irq.size, dtype=np.uint64), data)])
    ref = _reference(path)
    _same(ref, analyze_stream(path, opts=TINY))
    monkeypatch.setattr(S, "IRQ_LIMIT", 64)
    got = analyze_stream(path, opts=TINY)
    other = [v for v in got.vectors if v.get("other_irqs")]
    assert len(other) == 1 and other[0]["irq"] is None
    assert sum(v["handled"] for v in got.vectors) == sum(v["handled"] for v in ref.vectors) == irq.size
    small = {v["irq"]: v["handled"] for v in ref.vectors if v["irq"] < 65536}
    assert {v["irq"]: v["handled"] for v in got.vectors if v["irq"] is not None and v["irq"] < 65536} == small


def test_info_of_many_pcpus_stays_small(tmp_path):
    """4,096 pCPUs of a few records each: no per-pCPU table of every domain (that was 2.6 GB for a 48 KB file)."""
    import json
    import subprocess
    import sys

    windows = []
    for cpu in range(4096):
        n = 2
        data = np.zeros((n, 7), np.uint32)
        data[:, 0] = (1 << 16) | (cpu & 3)
        windows.append((cpu, np.array([0x00021011, 0x0010F001], np.uint32), np.array([1, 1]),
                        np.array([True, True]), np.array([1000 + cpu, 1001 + cpu], np.uint64), data))
    path = tmp_path / "many.xentrace"
    _write_windows(path, windows)
    child = ("import json, resource, sys, tracelens; from tracelens.analysis.analyze import analyze; "
             "i = tracelens.info(sys.argv[1]); a = analyze(sys.argv[1]); "
             "print(json.dumps([len(i['pcpus']), i['records'], a.records, "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024]))")
    # the second run is measured: the first may compile kernels (a fresh checkout), and compiling takes memory
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    ncpu, records, analysed, rss_mib = json.loads(r.stdout)
    assert (ncpu, records, analysed) == (4096, 3 * 4096, 3 * 4096)
    assert rss_mib < 1024, rss_mib  # the bound (it was 2.6 GB); about 180 MiB warm here, 740 in a fresh CI clone
    assert analyze_stream(path).records == _reference(path).records


def test_time_order_is_lexsort_of_key_cpu_offset():
    """Pass 2 orders grant rows with two stable sorts instead of lexsort((off, cpu, key)); the rows of one pCPU come
    in stream order (windows in file order), with K ties across pCPUs (and within one) on purpose."""
    from tracelens.analysis.stream import _time_order

    rng = np.random.default_rng(7)
    for _ in range(50):
        ncpu = int(rng.integers(1, 6))
        windows = []
        off = 0
        for _w in range(int(rng.integers(1, 40))):
            c = int(rng.integers(0, ncpu))
            n = int(rng.integers(0, 30))
            windows.append((c, off + 4 * np.arange(n)))
            off += 4 * n + 8
        # K per pCPU: non-decreasing along its stream, from a tiny range so that ties are everywhere
        key = {c: 0 for c in range(ncpu)}
        rows_key, rows_cpu, rows_off = [], [], []
        for c, offs in windows:
            for o in offs.tolist():
                key[c] += int(rng.integers(0, 2))
                rows_key.append(key[c])
                rows_cpu.append(c)
                rows_off.append(o)
        k = np.array(rows_key, np.uint64)
        cpu = np.array(rows_cpu, np.int64)
        offs = np.array(rows_off, np.int64)
        assert np.array_equal(_time_order(k, cpu), np.lexsort((offs, cpu, k)))


def test_more_event_ids_than_pass_1s_table(tmp_path):
    """Past 8,192 distinct (event, n_extra) keys on a thread, pass 1's id table is full: each further record's kind
    (category, whether it moves the pCPU's state) is worked out on the spot and the ids are counted exactly in a
    separate walk. Grants, runstate changes and a shutdown among 20,000 records of random ids, on one pCPU."""
    rng = np.random.default_rng(11)
    n = 20_000
    ev = rng.integers(0x00100000, 0x0FFFFFFF, n).astype(np.uint32) & np.uint32(0x0FFF0FFF)
    ev[(ev >> 16) == 0x0001] |= np.uint32(0x00020000)  # no random id may fall in the GEN class (CPU_CHANGE, LOST)
    nx = rng.integers(0, 8, n)
    special = rng.choice(n, 3_000, replace=False)
    kinds = rng.integers(0, 3, special.size)
    ev[special] = np.where(kinds == 0, 0x00021101, np.where(kinds == 1, 0x0010F001, 0x0010F002))  # runnable->running
    nx[special] = 1
    ht = rng.random(n) < 0.7
    tsc = 1_000 + np.cumsum(rng.integers(1, 40, n)).astype(np.uint64)
    data = rng.integers(0, 1 << 32, (n, 7), dtype=np.uint64).astype(np.uint32)
    data[special, 0] = np.where(kinds == 0, rng.integers(0, 4, special.size) << 16, rng.integers(1, 4, special.size))
    windows = [(0, ev[a:a + 500], nx[a:a + 500], ht[a:a + 500], tsc[a:a + 500], data[a:a + 500])
               for a in range(0, n, 500)]
    path = tmp_path / "ids.xentrace"
    _write_windows(path, windows)
    assert len({(int(e), int(x)) for e, x in zip(ev, nx)}) > 8192
    ref = _reference(path)
    assert ref.grants.rows
    _same(ref, analyze_stream(path))
    _same(ref, analyze_stream(path, opts=TINY))


# Pass 2's work done in pass 1 (stream.py, "Pass 2's work in pass 1"): grant rows kept within a budget, hypercalls
# counted per segment and given their epochs afterwards; whatever did not fit, or a segment a boundary cuts, is read
# again by pass 2. Each option below forces one of those paths on small captures.
FUSED = {
    "segments": StreamOptions(chunk_bytes=1 << 16, segment_bytes=64),  # boundaries fall inside segments
    "one-segment": StreamOptions(chunk_bytes=1 << 16, segment_bytes=1 << 30),
    "budget": StreamOptions(chunk_bytes=2048, keep_bytes=23 * 40),  # some chunks' grant rows kept, then none
    "no-budget": StreamOptions(chunk_bytes=3000, keep_bytes=0),
}


def test_nothing_kept_at_all_still_covers_every_chunk(tmp_path, monkeypatch):
    """No grant row kept and no hypercall count: pass 2 walks every chunk of pass 1, the last ones included."""
    import tracelens.analysis.stream as S

    monkeypatch.setattr(S, "TALLY_LIMIT", 1)
    for seed in (2, 7):
        path = tmp_path / f"c{seed}.xentrace"
        synth.random_scenario(seed).write(path)
        _same(_reference(path), analyze_stream(path, opts=StreamOptions(chunk_bytes=2048, keep_bytes=0)))


def _spy(monkeypatch):
    """What pass 2 was given and did: the kept work (p1.fused) and the segments counted again."""
    import tracelens.analysis.stream as S

    seen = {"fused": [], "kept": [], "again": []}
    resolve, pass2 = S._resolve_tallies, S._pass2

    def spy_resolve(*a):
        out = resolve(*a)
        seen["again"].append(sum(len(v) for v in out[2].values()))
        return out

    def spy_pass2(sc, p1, *a):
        seen["fused"].append(p1.fused)
        seen["kept"].append([g is not None for g in p1.fused.grants])  # (pass 2 releases them as it goes)
        return pass2(sc, p1, *a)

    monkeypatch.setattr(S, "_resolve_tallies", spy_resolve)
    monkeypatch.setattr(S, "_pass2", spy_pass2)
    return seen


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("mode", sorted(FUSED))
def test_pass_two_work_done_in_pass_one_equals_in_memory_analysis(mode, seed, tmp_path):
    path = tmp_path / "c.xentrace"
    synth.random_scenario(seed).write(path)
    _same(_reference(path), analyze_stream(path, opts=FUSED[mode]))


def test_the_kept_work_and_the_walks_are_both_exercised(tmp_path, monkeypatch):
    """The options above do reach every path: segments cut by a boundary counted again, grant rows kept for some
    chunks and read again for others."""
    seen = _spy(monkeypatch)
    for seed in range(24):
        path = tmp_path / f"c{seed}.xentrace"
        synth.random_scenario(seed).write(path)
        analyze_stream(path, opts=FUSED["segments"])
    assert sum(seen["again"]) > 0
    assert all(f is not None and all(t is not None for t in f.tallies) for f in seen["fused"])
    seen["kept"].clear()
    analyze_stream(tmp_path / "c3.xentrace", opts=FUSED["budget"])
    assert any(seen["kept"][0]) and not all(seen["kept"][0])


@pytest.mark.parametrize("limit", [1, 6])
def test_hypercall_counts_past_pass_one_limit_are_left_to_pass_two(limit, tmp_path, monkeypatch):
    """A chunk whose hypercall keys do not fit pass 1's table (or past TALLY_LIMIT counts in all) is counted by
    pass 2 instead, as is every chunk after it: the result does not change."""
    import tracelens.analysis.stream as S

    seen = _spy(monkeypatch)
    monkeypatch.setattr(S, "TALLY_LIMIT", limit)
    for seed in (2, 7, 11):
        path = tmp_path / f"c{seed}.xentrace"
        synth.random_scenario(seed).write(path)
        ref = _reference(path)
        assert ref.hypercalls
        _same(ref, analyze_stream(path, opts=StreamOptions(chunk_bytes=4096)))
    assert any(t is None for f in seen["fused"] for t in f.tallies)


def test_segment_bytes_must_be_a_power_of_two(tmp_path):
    path = tmp_path / "c.xentrace"
    synth.random_scenario(1).write(path)
    with pytest.raises(ValueError, match="power of two"):
        analyze_stream(path, opts=StreamOptions(segment_bytes=100))


def test_pass_two_releases_the_pages_it_walks(tmp_path, monkeypatch):
    """Resident memory follows the chunk in pass 2 too: every range pass 2 walks is mapped in before and released
    after (with nothing kept, that is every chunk of the capture)."""
    import tracelens.analysis.stream as S
    from tracelens.parsers.xentrace import decode as D

    path = tmp_path / "c.xentrace"
    synth.random_scenario(4).write(path)
    calls = []
    pass2 = S._pass2

    def spy_pass2(sc, p1, *a):
        monkeypatch.setattr(D, "_populate", lambda mm, a, b: calls.append(("in", a, b)))
        monkeypatch.setattr(D, "_release", lambda mm, upto: calls.append(("out", upto)))
        try:
            return pass2(sc, p1, *a)
        finally:
            calls.append(("spans", [(int(sc.pos[a]) * 4, int(sc.end[a + n - 1]) * 4) for a, n in p1.fused.spans]))

    monkeypatch.setattr(S, "_pass2", spy_pass2)
    analyze_stream(path, opts=StreamOptions(chunk_bytes=2048, keep_bytes=0))
    at = next(i for i, c in enumerate(calls) if c[0] == "spans")
    spans, calls = calls[at][1], calls[:at]
    assert len(spans) > 3 and len(calls) % 2 == 0
    pairs = list(zip(calls[::2], calls[1::2]))  # each walk: its range mapped in, then released up to its end
    assert all(i[0] == "in" and o == ("out", i[2]) for i, o in pairs), pairs
    assert set(spans) <= {(i[1], i[2]) for i, _ in pairs}  # (and the segments a boundary cuts, walked again)
