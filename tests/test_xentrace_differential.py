"""Differential tests of the fast xentrace decoder (tracelens.parsers.xentrace) against the pure-Python reference
(xentrace_reference.py), on captures generated with the project's CaptureWriter and on hand-made damaged files.

Oracles, in order of independence:
* the writer's truth (every record's pCPU, TSC, payload and byte offset, per pCPU stream) with rules 2-4 applied by
  :func:`xentrace_reference.order_and_attribute` - this checks the reference's own parsing too;
* the generator's own model of which vCPU runs on each pCPU (kept while it emits scheduler records), for dom/vcpu;
* order properties checked directly on the output (running-max TSC then pCPU non-decreasing; each pCPU's records
  keep their file order);
* hand-computed byte offsets for damaged files.

Covered entry points: read_xentrace (strict, truncate, skip; cpu_hz; thread counts), iter_batches, info.
The real captures are in test_xentrace_real.py.
"""
from __future__ import annotations

import random
import struct
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xentrace_reference as ref
from tracelens.parsers.xentrace.writer import CaptureWriter

CPU_CHANGE, WRAP, LOST = 0x0001F003, 0x0001F002, 0x0001F001
RUNSTATE_CHANGE, CONTINUE_RUNNING, SWITCH = 0x00021001, 0x00021002, 0x0002800A
DOMS = (0, 1, 7, 14, 0x7FFF)


# -- generated captures ------------------------------------------------------------------------------------------
def generate(seed: int):
    """A random multi-pCPU capture. Returns (writer, model) where model[(cpu, i)] is the (dom, vcpu) or None that
    the generator knows was running on ``cpu`` when it added that pCPU's i-th record (docs/xentrace.md rule 4: a
    runstate change into running is the vCPU it starts; SCHED_SWITCH moves nothing; after LOST_RECORDS the vCPU
    its payload names runs)."""
    rng = random.Random(seed)
    pool = list(range(8)) + [rng.randrange(8, 4096) for _ in range(2)]
    cpus = rng.sample(pool, rng.randint(1, 6))
    w = CaptureWriter(poll_period=rng.choice([500, 2_000, 10_000]), max_window_records=rng.choice([1, 3, 17, 64]),
                      seed=seed, shuffle=rng.random() < 0.9)
    model = {}
    gran = rng.choice([1, 50, 1000])  # coarse TSCs make ties across pCPUs likely
    for j, cpu in enumerate(cpus):
        t = rng.randrange(0, 3) * gran
        running = None
        n = rng.randint(0 if j else 1, 150)  # some pCPUs have no records, but the file is never empty
        for i in range(n):
            model[(cpu, i)] = running
            if rng.random() < 0.7:
                t += rng.randrange(0, 20) * gran
            if rng.random() < 0.03:
                t = max(0, t - rng.randrange(1, 30) * gran)  # TSC skew: goes backwards on this pCPU
            if rng.random() < 0.005:
                t += 1 << rng.choice([32, 40, 48])  # crosses the 32-bit boundary of cycles_lo
            timed = rng.random() < 0.7
            tsc = t if timed else None
            dom, vcpu = rng.choice(DOMS), rng.randrange(0, 4)
            kind = rng.random()
            if kind < 0.12:  # runstate change, sometimes without payload
                old, new = rng.randrange(4), rng.randrange(4)
                n_extra = rng.choice([0, 1, 1, 1, 2])
                data = [(dom << 16) | vcpu, rng.getrandbits(32)][:n_extra]
                if rng.random() < 0.5 and running and n_extra and new != 0:
                    old = 0  # out of running, often of the vCPU that is running here
                    data[0] = (running[0] << 16) | running[1]
                w.record(cpu, RUNSTATE_CHANGE | (old << 8) | (new << 4), data, tsc=tsc)
                if n_extra >= 1:
                    who = (data[0] >> 16, data[0] & 0xFFFF)
                    if new == 0:
                        model[(cpu, i)] = running = who
                    elif old == 0 and running == who:
                        running = None
            elif kind < 0.17:
                n_extra = rng.choice([0, 1, 1, 2])
                w.record(cpu, CONTINUE_RUNNING, [(dom << 16) | vcpu, 5][:n_extra], tsc=tsc)
                if n_extra:
                    running = (dom, vcpu)
            elif kind < 0.25:
                n_extra = rng.choice([0, 3, 4, 4, 4, 5])
                # high halves of d3/d4 carry junk the attribution must mask off
                data = [rng.choice(DOMS), rng.randrange(4), (rng.getrandbits(16) << 16) | dom,
                        (rng.getrandbits(16) << 16) | vcpu, 77][:n_extra]
                w.record(cpu, SWITCH, data, tsc=tsc)  # the previous vCPU runs until its runstate record
            elif kind < 0.28:
                first = rng.randrange(0, t + 1)
                w.lost(cpu, rng.randrange(1, 1000), dom, vcpu, first_tsc=first, tsc=t)
                running = (dom, vcpu)  # Xen's insert_lost_records() names the vCPU current when it writes it
            elif kind < 0.33:
                w.wrap(cpu, rng.randrange(1, 10) * 4, garbage=rng.getrandbits(32))
            else:  # any other id, any payload length
                ev = rng.choice([0x00082013, 0x00081102, 0x0010F001, 0x0020100D, 0x0800F123,
                                 rng.randrange(0x00020000, 0x0FFFFFFF)])
                if ev in (CPU_CHANGE, WRAP, LOST):
                    ev = 0x00082013
                w.record(cpu, ev, [rng.getrandbits(32) for _ in range(rng.randrange(8))], tsc=tsc)
    return w, model


def truth_streams(w: CaptureWriter) -> dict[int, list[ref.RawRecord]]:
    """The writer's truth as reference RawRecords, per pCPU in stream order (CPU_CHANGE rows included)."""
    t = w.truth()
    streams = defaultdict(list)
    for i in range(len(t["cpu"])):
        n = int(t["n_extra"][i])
        streams[int(t["cpu"][i])].append(ref.RawRecord(
            cpu=int(t["cpu"][i]), offset=int(t["offset"][i]), event=int(t["event"][i]), n_extra=n,
            tsc=int(t["tsc"][i]) if t["has_tsc"][i] else None,
            data=tuple(int(x) for x in t["data"][i][:n])))
    return dict(streams)


def check_model_attribution(cols: dict, w: CaptureWriter, model: dict) -> int:
    """dom/vcpu of every generated record (not CPU_CHANGE, not LOST) equals the generator's model."""
    t = w.truth()
    # the truth lists records per pCPU in the order they were added, with a CPU_CHANGE row in front of each window
    # (the generator never adds a 0x1f003 record itself)
    index = {}
    counters: dict[int, int] = defaultdict(int)
    for cpu, ev, off in zip(t["cpu"].tolist(), t["event"].tolist(), t["offset"].tolist()):
        if ev == CPU_CHANGE:
            index[off] = None
        else:
            index[off] = (cpu, counters[cpu])
            counters[cpu] += 1
    n = 0
    for off, ev, dom, vcpu in zip(cols["offset"], cols["event"], cols["dom"], cols["vcpu"]):
        key = index[off]
        if key is None or ev == LOST:
            continue
        want = model[key]
        got = None if dom is None and vcpu is None else (dom, vcpu)
        assert got == want, f"offset {off} (pCPU {key[0]} record {key[1]}): dom/vcpu {got}, generator says {want}"
        n += 1
    return n


SEEDS = range(300)


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_decoder_equals_writer_truth(seed):
    w, model = generate(seed)
    blob = w.to_bytes()
    expected = ref.order_and_attribute(truth_streams(w))
    got = ref.decode(blob)
    diff = ref.first_difference(got, expected, ref.COLUMNS + ("_k",))
    assert diff is None, diff
    assert ref.order_violation(got) is None, ref.order_violation(got)
    check_model_attribution(got, w, model)


# -- the fast decoder --------------------------------------------------------------------------------------------
def read_fast(path, columns=None, **decode):
    # imported here so the reference tests above run even if the fast decoder is broken; these tests then fail
    from tracelens.options import DecodeOptions
    from tracelens.parsers.xentrace import read_xentrace

    return read_xentrace(path, DecodeOptions(**decode), columns=columns)


def columns_of(table) -> dict[str, list]:
    return {name: table.column(name).to_pylist() for name in table.column_names}


def check_schema(table):
    import pyarrow as pa

    want = {"cpu": pa.uint16(), "tsc": pa.uint64(), "has_tsc": pa.bool_(), "event": pa.uint32(),
            "n_extra": pa.uint8(), "offset": pa.uint64(), "dom": pa.uint16(), "vcpu": pa.uint16(),
            **{f"d{i}": pa.uint32() for i in range(1, 8)}}
    got = {f.name: f.type for f in table.schema}
    assert {k: got.get(k) for k in want} == want
    name = got["name"]
    if pa.types.is_dictionary(name):
        name = name.value_type
    assert pa.types.is_string(name) or pa.types.is_large_string(name), got["name"]


@pytest.mark.parametrize("seed", range(0, 300, 2))
def test_fast_decoder_equals_reference_and_writer_truth(seed, tmp_path):
    w, model = generate(seed)
    path = tmp_path / f"gen{seed}.xt"
    w.write(path)
    table = read_fast(path)
    check_schema(table)
    got = columns_of(table)
    expected = ref.order_and_attribute(truth_streams(w))
    diff = ref.first_difference(got, expected)
    assert diff is None, f"fast vs writer truth: {diff}"
    diff = ref.first_difference(got, ref.decode(path.read_bytes()))
    assert diff is None, f"fast vs reference: {diff}"
    assert ref.order_violation(got) is None, ref.order_violation(got)
    check_model_attribution(got, w, model)


def test_fast_decoder_time_ns(tmp_path):
    w, _ = generate(7)
    path = tmp_path / "gen.xt"
    w.write(path)
    import pyarrow as pa

    for hz in (2_400_000_000, 3_000_000_000, 1_000_000_007, 2.4e9):
        table = read_fast(path, cpu_hz=hz)
        assert table.schema.field("time_ns").type == pa.int64()
        got = columns_of(table)
        want = [t * 10**9 // int(hz) for t in got["tsc"]]
        assert len(got["time_ns"]) == len(want)
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(got["time_ns"], want)) if abs(a - b) > 1]
        assert not bad, bad[:5]
    assert "time_ns" not in read_fast(path).column_names


# -- damaged input: both decoders report the same byte offset ----------------------------------------------------
def _small_capture():
    """Two pCPUs, three windows, known layout: returns (bytes, truth)."""
    w = CaptureWriter(poll_period=100, max_window_records=2, shuffle=False)
    w.record(0, 0x00082013, (1,), tsc=10)        # 16 bytes
    w.record(0, 0x00082013, (2, 3))              # 12 bytes
    w.record(0, 0x00021101, (0x10002,), tsc=20)  # 16 bytes -> second window of pCPU 0
    w.record(1, 0x0002800A, (0, 1, 2, 3), tsc=15)  # 28 bytes
    return w.to_bytes(), w.truth()


def _hand_cases():
    good, t = _small_capture()
    n = len(good)
    cc = [int(o) for o, e in zip(t["offset"], t["event"]) if e == CPU_CHANGE]
    last_cc = max(cc)
    hdr = lambda cpu, size: struct.pack("<III", 0x2001F003, cpu, size)  # noqa: E731
    rng = random.Random(5)
    return [
        ("empty", b"", 0),
        ("elf", b"\x7fELF\x02\x01\x01\x00" + bytes(56), 0),
        ("text", b"#!/bin/sh\necho not a trace\n", 0),
        ("random", bytes(rng.getrandbits(8) for _ in range(4096)), 0),
        ("header-with-tsc-bit", struct.pack("<IIII", 0xA001F003, 0, 0, 0), 0),
        ("garbage-between-windows", good + bytes(4) + good, n),
        ("absurd-cpu", good + hdr(4096, 0), n),
        ("absurd-cpu-huge", good + hdr(0xFFFFFFFF, 0), n),
        ("size-not-multiple-of-4", good + hdr(0, 6) + bytes(8), n),
        ("absurd-size", good + hdr(0, 65535 * 4096 + 4), n),
        ("window-past-eof", good + hdr(0, 16) + bytes(12), n),
        ("file-cut-inside-last-window", good[:-4], last_cc),
        ("file-ends-inside-cpu-change", good + hdr(1, 0)[:8], n),
        ("stray-bytes-at-end", good + b"\x03\xf0", n),
        ("record-crosses-window-end",
         good + hdr(3, 12) + struct.pack("<II", 0x10082013, 9) + struct.pack("<I", 0x90082013), n + 20),
    ]


@pytest.mark.parametrize("name, blob, offset", _hand_cases(), ids=[c[0] for c in _hand_cases()])
def test_reference_reports_damage_at_the_expected_offset(name, blob, offset):
    with pytest.raises(ref.ReferenceFormatError) as e:
        ref.decode(blob)
    assert e.value.offset == offset, e.value


@pytest.mark.parametrize("name, blob, offset", _hand_cases(), ids=[c[0] for c in _hand_cases()])
def test_fast_decoder_reports_damage_at_the_expected_offset(name, blob, offset, tmp_path):
    from tracelens.errors import FormatError

    path = tmp_path / f"{name}.xt"
    path.write_bytes(blob)
    with pytest.raises(FormatError) as e:
        read_fast(path)
    assert e.value.offset == offset, str(e.value)
    assert e.value.path == str(path)
    assert str(e.value).startswith(f"{path}: at byte {offset}: ")
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 3


def _damage(blob: bytes, rng: random.Random) -> bytes:
    """One random injury: cut the file, overwrite a word, insert or delete bytes."""
    b = bytearray(blob)
    if len(b) < 4:  # an earlier injury left (almost) nothing: add a stray word
        return bytes(b) + struct.pack("<I", rng.getrandbits(32))
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(b[:rng.randrange(0, len(b))])
    if kind == 1:  # overwrite one aligned word with a random value or a plausible record header
        i = rng.randrange(0, len(b) // 4) * 4
        v = rng.choice([rng.getrandbits(32), 0x2001F003, 0xF0082013, 0x00082013 | (rng.randrange(8) << 28)])
        b[i:i + 4] = struct.pack("<I", v)
        return bytes(b)
    if kind == 2:  # change a byte anywhere
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 3:  # insert aligned garbage
        i = rng.randrange(0, len(b) // 4 + 1) * 4
        return bytes(b[:i]) + bytes(rng.getrandbits(8) for _ in range(4 * rng.randint(1, 3))) + bytes(b[i:])
    i = rng.randrange(0, len(b))
    return bytes(b[:i]) + bytes(b[i + rng.randint(1, 12):])


@pytest.mark.parametrize("seed", range(120))
def test_fast_decoder_agrees_with_reference_on_damaged_captures(seed, tmp_path):
    from tracelens.errors import FormatError

    rng = random.Random(10_000 + seed)
    w, _ = generate(seed)
    blob = _damage(w.to_bytes(), rng)
    path = tmp_path / "damaged.xt"
    path.write_bytes(blob)
    try:
        expected = ref.decode(blob)
    except ref.ReferenceFormatError as e:
        with pytest.raises(FormatError) as got:
            read_fast(path)
        assert got.value.offset == e.offset, f"fast: {got.value}; reference: {e}"
    else:
        diff = ref.first_difference(columns_of(read_fast(path)), expected)
        assert diff is None, diff


# -- hypothesis: small captures, shrunk to a minimal counterexample on failure -----------------------------------
_u32 = st.integers(0, 0xFFFFFFFF)
_ids = st.sampled_from([0x00082013, 0x0001F001, 0x00021101, 0x00021011, 0x00021021, 0x00021201, 0x00021002, 0x0002800A,
                        0x0010F001, 0x0800F001, 0x00021001, 0x00021031])
_record = st.one_of(
    st.tuples(st.just("rec"), _ids, st.lists(_u32, max_size=7), st.one_of(st.none(), st.integers(0, 2**64 - 1))),
    st.tuples(st.just("small"), _ids, st.lists(st.sampled_from([0x00070001, 0x7FFF0000, 0x000E0002, 0xFFFF0001, 0x0001FFFF]), max_size=5),
              st.one_of(st.none(), st.integers(0, 40))),
    st.tuples(st.just("wrap"), st.integers(1, 9)),
    st.tuples(st.just("lost"), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 40)),
)
_capture = st.tuples(
    st.dictionaries(st.sampled_from([0, 1, 2, 5, 4095]), st.lists(_record, min_size=1, max_size=12), min_size=1),
    st.integers(1, 5), st.integers(0, 3),
)


def _build(spec) -> CaptureWriter:
    streams, max_window, seed = spec
    w = CaptureWriter(poll_period=10, max_window_records=max_window, seed=seed)
    for cpu, recs in streams.items():
        for r in recs:
            if r[0] in ("rec", "small"):
                w.record(cpu, r[1], r[2], tsc=r[3])
            elif r[0] == "wrap":
                w.wrap(cpu, 4 * r[1])
            else:
                w.lost(cpu, 3, r[1], r[2], first_tsc=r[3], tsc=r[3])
    return w


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_capture)
def test_hypothesis_reference_equals_writer_truth(spec):
    w = _build(spec)
    got = ref.decode(w.to_bytes())
    diff = ref.first_difference(got, ref.order_and_attribute(truth_streams(w)))
    assert diff is None, diff
    assert ref.order_violation(got) is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(_capture)
def test_fast_hypothesis_equals_reference(tmp_path, spec):
    w = _build(spec)
    path = tmp_path / "h.xt"
    w.write(path)
    expected = ref.decode(path.read_bytes())
    diff = ref.first_difference(columns_of(read_fast(path)), expected)
    assert diff is None, diff
    diff = ref.first_difference(read_batches(path, batch_bytes=64), expected)  # a window or two per batch
    assert diff is None, f"batches: {diff}"


def test_fast_dom_ffff_is_a_value_not_null(tmp_path):
    w = CaptureWriter()
    w.record(0, 0x00021101, (0xFFFF0000,), tsc=1)  # runnable->running d65535v0
    w.record(0, 0x00082013, (1,), tsc=2)
    w.lost(0, 1, 0xFFFF, 0, first_tsc=0, tsc=3)
    w.record(0, CONTINUE_RUNNING, (0xFFFF0002,), tsc=4)
    w.record(0, 0x00082013, (1,), tsc=5)
    w.lost(0, 1, 0xFFFF, 0xFFFF, first_tsc=0, tsc=6)  # the state (0xFFFF << 16 | 0xFFFF) is not "unknown" (-1)
    w.record(0, 0x00082013, (1,), tsc=7)
    path = tmp_path / "ffff.xt"
    w.write(path)
    t = read_fast(path)
    # rows: CPU_CHANGE, runstate, marker, LOST, CONTINUE, marker, LOST, marker (TSCs distinct and increasing)
    assert list(zip(t.column("dom").to_pylist(), t.column("vcpu").to_pylist())) == [
        (None, None), (0xFFFF, 0), (0xFFFF, 0), (0xFFFF, 0), (0xFFFF, 0), (0xFFFF, 2), (0xFFFF, 0xFFFF),
        (0xFFFF, 0xFFFF)]


# -- tolerance: truncate and skip --------------------------------------------------------------------------------
def damage_of(table) -> list[tuple[int, int]]:
    """The byte ranges the fast decoder reports as not decoded (schema metadata ``tracelens.damage``)."""
    import json

    meta = (table.schema.metadata or {}).get(b"tracelens.damage")
    assert meta is not None, "no tracelens.damage metadata"
    return [(d["offset"], d["offset"] + d["length"]) for d in json.loads(meta)]


def _compare_tolerant(blob: bytes, path, tolerance: str, summary: bool = False):
    from tracelens.errors import FormatError

    path.write_bytes(blob)
    try:
        parsed = ref.parse_file(blob, tolerance)
    except ref.ReferenceFormatError as e:  # not a capture at all: every tolerance raises at 0
        assert e.offset == 0
        with pytest.raises(FormatError) as got:
            read_fast(path, tolerance=tolerance)
        assert got.value.offset == 0, str(got.value)
        return None
    expected = ref.order_and_attribute(ref.streams_by_cpu(parsed.records))
    table = read_fast(path, tolerance=tolerance)
    diff = ref.first_difference(columns_of(table), expected)
    assert diff is None, f"{tolerance}: {diff}"
    assert ref.merged_ranges(damage_of(table)) == ref.merged_ranges(parsed.skipped)
    if summary:
        from tracelens.options import DecodeOptions
        from tracelens.parsers.xentrace.decode import info

        s = info(path, DecodeOptions(tolerance=tolerance))
        problems = ref.summary_mismatches(expected, s, windows=len(parsed.windows))
        assert not problems, f"{tolerance}: {problems}"
        damage = [(d["offset"], d["offset"] + d["length"]) for d in s["damage"]]
        assert ref.merged_ranges(damage) == ref.merged_ranges(parsed.skipped)
    return parsed


@pytest.mark.parametrize("tolerance", ["truncate", "skip"])
@pytest.mark.parametrize("name, blob, offset", _hand_cases(), ids=[c[0] for c in _hand_cases()])
def test_fast_tolerant_decode_equals_reference_on_hand_cases(name, blob, offset, tolerance, tmp_path):
    parsed = _compare_tolerant(blob, tmp_path / f"{name}.xt", tolerance, summary=True)
    if parsed is not None:
        assert parsed.skipped and parsed.skipped[0][0] == offset  # the damage starts where strict mode reports it
        if tolerance == "truncate":
            assert parsed.skipped == [(offset, len(blob))]


@pytest.mark.parametrize("tolerance", ["truncate", "skip"])
@pytest.mark.parametrize("seed", range(60))
def test_fast_tolerant_decode_equals_reference_on_damaged_captures(seed, tolerance, tmp_path):
    rng = random.Random(20_000 + seed)
    w, _ = generate(seed)
    blob = w.to_bytes()
    for _ in range(rng.randint(1, 3)):  # several injuries in one file
        blob = _damage(blob, rng)
    _compare_tolerant(blob, tmp_path / "damaged.xt", tolerance, summary=seed % 4 == 0)


def test_fast_tolerant_decode_of_an_intact_capture_reports_no_damage(tmp_path):
    w, _ = generate(3)
    path = tmp_path / "ok.xt"
    w.write(path)
    for tolerance in ("strict", "truncate", "skip"):
        table = read_fast(path, tolerance=tolerance)
        assert damage_of(table) == []
        assert ref.first_difference(columns_of(table), ref.decode(path.read_bytes())) is None


# -- bounded-memory batches, thread counts and a large capture with many ties ------------------------------------
def read_batches(path, batch_bytes=128 << 20, columns=None, **decode) -> dict[str, list]:
    import pyarrow as pa

    from tracelens.options import DecodeOptions
    from tracelens.parsers.xentrace.decode import iter_batches

    tables = list(iter_batches(path, DecodeOptions(**decode), batch_bytes=batch_bytes, columns=columns))
    if not tables:
        return {c: [] for c in ref.COLUMNS}
    return columns_of(pa.concat_tables(tables))


@pytest.mark.parametrize("seed", range(0, 60, 5))
def test_fast_batches_concatenate_to_the_reference(seed, tmp_path):
    w, _ = generate(seed)
    path = tmp_path / "gen.xt"
    w.write(path)
    expected = ref.decode(path.read_bytes())
    for batch_bytes in (1 if seed < 10 else 64, 1000, 1 << 20):  # 1: every window is a batch of its own
        diff = ref.first_difference(read_batches(path, batch_bytes=batch_bytes), expected)
        assert diff is None, f"batch_bytes={batch_bytes}: {diff}"


def _many_ties(seed: int) -> CaptureWriter:
    """Several pCPUs, tens of thousands of records each, TSCs that mostly stand still (long runs of equal K across
    pCPUs, so merge partitions split inside ties) and sometimes step back."""
    rng = random.Random(seed)
    w = CaptureWriter(poll_period=50, max_window_records=300, seed=seed)
    for cpu in range(4):
        t = 0
        for i in range(12_000):
            r = rng.random()
            t = t + 10 if r < 0.1 else max(0, t - 100) if r < 0.102 else t
            k = rng.random()
            if k < 0.1:
                w.record(cpu, RUNSTATE_CHANGE | (rng.randrange(4) << 8) | (rng.randrange(4) << 4),
                         ((rng.randrange(3) << 16) | rng.randrange(4),), tsc=t)
            elif k < 0.101:
                w.lost(cpu, 5, 1, 1, first_tsc=t, tsc=t)
            elif k < 0.11:
                w.wrap(cpu, 4 * rng.randint(1, 9))
            else:
                w.record(cpu, 0x00082013, [i] * rng.randrange(8), tsc=t if rng.random() < 0.6 else None)
    return w


def test_fast_large_capture_with_ties_on_one_and_all_threads_and_in_batches(tmp_path):
    path = tmp_path / "ties.xt"
    _many_ties(1).write(path)
    expected = ref.decode(path.read_bytes())
    assert len(expected["cpu"]) > 45_000
    for threads in (1, None):
        diff = ref.first_difference(columns_of(read_fast(path, threads=threads)), expected)
        assert diff is None, f"threads={threads}: {diff}"
    diff = ref.first_difference(read_batches(path, batch_bytes=50_000), expected)
    assert diff is None, f"batches: {diff}"


# -- info (tracelens info): counts without a table ----------------------------------------------------------
def check_summary(path):
    from tracelens.parsers.xentrace.decode import info

    parsed = ref.parse_file(path.read_bytes())
    cols = ref.order_and_attribute(ref.streams_by_cpu(parsed.records))
    problems = ref.summary_mismatches(cols, info(path), windows=len(parsed.windows))
    assert not problems, problems


@pytest.mark.parametrize("seed", range(0, 40, 4))
def test_fast_summary_equals_reference_counts(seed, tmp_path):
    w, _ = generate(seed)
    path = tmp_path / "gen.xt"
    w.write(path)
    check_summary(path)


# -- edge cases the generators rarely or never produce -----------------------------------------------------------
def _rec(event: int, *data: int, tsc: int | None = None) -> bytes:
    h = (event & 0x0FFFFFFF) | (len(data) << 28) | (0x80000000 if tsc is not None else 0)
    t = struct.pack("<II", tsc & 0xFFFFFFFF, tsc >> 32) if tsc is not None else b""
    return struct.pack("<I", h) + t + struct.pack(f"<{len(data)}I", *data)


def _win(cpu: int, *records: bytes) -> bytes:
    body = b"".join(records)
    return struct.pack("<III", 0x2001F003, cpu, len(body)) + body


EDGE_CASES = {
    "empty-windows": _win(0) + _win(1, _rec(0x00082013, 1, tsc=5)) + _win(0),
    # a CPU_CHANGE-looking record inside a window is an ordinary record of that window's pCPU
    "cpu-change-inside-a-window": _win(2, _rec(0x00082013, 1, tsc=5), _rec(CPU_CHANGE, 7, 0), _rec(0x00082013, 2)),
    "largest-tsc-and-pcpu-4095": _win(4095, _rec(0x00082013, 1, tsc=2**64 - 1), _rec(0x00082013))
    + _win(0, _rec(0x00082013, 1, tsc=2**64 - 1)),
    "timed-records-at-tsc-0": _win(3, _rec(0x00082013, 1, tsc=0)) + _win(1, _rec(0x00082013, 1, tsc=0)),
    "lost-with-short-payloads": _win(0, _rec(0x00021101, 0x00050001, tsc=1), _rec(LOST, 3, tsc=2),
                                     _rec(0x00082013), _rec(LOST, tsc=3), _rec(0x00082013),
                                     _rec(LOST, 9, 0x00020001), _rec(0x00082013)),
    "wrap-first-in-window-and-alone": _win(0, _rec(WRAP, 1, 2), _rec(0x00082013, tsc=4))
    + _win(1, _rec(WRAP), _rec(WRAP, *range(6), tsc=9)),
    "runstate-with-5-words-and-odd-minor-bits": _win(0, _rec(0x00021201, 0x00030002, 1, 2, 3, 4, tsc=4),
                                                     _rec(0x00082013), _rec(0x00021F01, 0x00040002, tsc=5),
                                                     _rec(0x00082013), _rec(0x000210F1, 0x00040002, tsc=6),
                                                     _rec(0x00082013)),
    "other-gen-class-ids-and-max-id": _win(0, _rec(0x0001F004, 1, 2, 3, tsc=1), _rec(0x0001F000),
                                           _rec(0x0FFFFFFF, *range(7), tsc=2**63)),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_fast_decoder_equals_reference_on_edge_cases(name, tmp_path):
    path = tmp_path / f"{name}.xt"
    path.write_bytes(EDGE_CASES[name])
    expected = ref.decode(EDGE_CASES[name])
    diff = ref.first_difference(columns_of(read_fast(path)), expected)
    assert diff is None, diff
    for batch_bytes in (1, 40):
        diff = ref.first_difference(read_batches(path, batch_bytes=batch_bytes), expected)
        assert diff is None, f"batch_bytes={batch_bytes}: {diff}"
    check_summary(path)


def test_fast_summary_domain_counts_keep_all_16_bits_of_the_domid(tmp_path):
    from tracelens.parsers.xentrace.decode import info

    w = CaptureWriter()
    w.record(0, 0x00021101, (0x80010000,), tsc=1)  # runnable->running d0x8001 v0
    w.record(0, 0x00082013, (1,), tsc=2)           # runs under d0x8001
    w.lost(0, 1, 0xFFFF, 0, first_tsc=0, tsc=3)    # LOST names d0xFFFF
    w.record(0, 0x00082013, (1,), tsc=4)           # d0xFFFF runs after LOST
    w.record(0, 0x00021021, (0xFFFF0000,), tsc=5)  # d0xFFFF v0 running->blocked
    w.record(0, 0x00082013, (1,), tsc=6)           # unknown
    path = tmp_path / "dom.xt"
    w.write(path)
    # rows: CPU_CHANGE (unknown), runstate into running (d0x8001, the vCPU it starts), marker d0x8001, LOST d0xFFFF,
    # marker d0xFFFF, runstate out of running d0xFFFF, marker (unknown)
    assert info(path)["records_per_domain"] == {"unknown": 2, 0x8001: 2, 0xFFFF: 3}


def _guest_flood(path, cpus=(0,)):
    """A guest may write TRC_GUEST records 0x0800f000 | (12-bit number) with 0-7 words (spec §4.5), unprivileged:
    12,288 distinct (id, length) pairs here, then 5 HVM HLT records (0x00082013, a catalogued id)."""
    w = CaptureWriter(max_window_records=4096)
    t = 0
    for cpu in cpus:
        for n in range(3):
            for e in range(4096):
                t += 1
                w.record(cpu, 0x0800F000 | e, [e] * n, tsc=t)
        for _ in range(5):
            t += 1
            w.record(cpu, 0x00082013, (1,), tsc=t)
    w.write(path)


def test_fast_many_distinct_ids_do_not_lose_names_or_counts(tmp_path):
    from tracelens.parsers.xentrace.decode import info

    small = tmp_path / "small.xt"
    w = CaptureWriter()
    w.record(0, 0x00082013, (1,), tsc=1)
    w.write(small)
    t = read_fast(small)
    hlt_name = t.column("name").to_pylist()[t.column("event").to_pylist().index(0x00082013)]
    assert hlt_name != "UNKNOWN"

    flood = tmp_path / "flood.xt"
    _guest_flood(flood)
    expected = ref.decode(flood.read_bytes())
    t = read_fast(flood)
    assert ref.first_difference(columns_of(t), expected) is None  # the columns themselves are right
    names = {n for e, n in zip(t.column("event").to_pylist(), t.column("name").to_pylist()) if e == 0x00082013}
    s = info(flood)
    assert (names, sum(s["records_per_event"].values())) == ({hlt_name}, len(expected["cpu"]))


# -- the chunked passes, on small files ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_fast_chunked_passes_equal_reference(seed, tmp_path, monkeypatch):
    """The decoder walks and populates large captures in chunks (64 MiB); white-box: shrink the chunk to a few
    bytes and turn whole-file population off, so chunk boundaries fall inside windows, records and damage."""
    import tracelens.parsers.xentrace.decode as decode

    rng = random.Random(40_000 + seed)
    monkeypatch.setattr(decode, "CHUNK_BYTES", rng.choice([4, 12, 64, 1000]))
    monkeypatch.setattr(decode, "POPULATE_LIMIT", 0)
    w, _ = generate(seed)
    blob = w.to_bytes()
    path = tmp_path / "chunked.xt"
    if seed % 2:
        blob = _damage(blob, rng)
        for tolerance in ("skip", "truncate"):
            _compare_tolerant(blob, path, tolerance, summary=True)
        return
    path.write_bytes(blob)
    expected = ref.decode(blob)
    assert ref.first_difference(columns_of(read_fast(path)), expected) is None
    assert ref.first_difference(read_batches(path, batch_bytes=300), expected) is None
    check_summary(path)


@pytest.mark.parametrize("reuse", [1, 2])
@pytest.mark.parametrize("seed", [2, 9, 16])
def test_fast_batches_with_reused_buffers_equal_reference(seed, reuse, tmp_path):
    """iter_batches(reuse_buffers=N) overwrites a table N batches later: a consumer that reads each table before
    asking for the next must still see the reference rows, over many small batches."""
    from tracelens.parsers.xentrace.decode import iter_batches

    w, _ = generate(seed)
    path = tmp_path / "gen.xt"
    w.write(path)
    got = {c: [] for c in ref.COLUMNS}
    nbatches = 0
    for table in iter_batches(path, batch_bytes=200, reuse_buffers=reuse):
        nbatches += 1
        for c in ref.COLUMNS:
            got[c].extend(table.column(c).to_pylist())
    assert nbatches > 3
    diff = ref.first_difference(got, ref.decode(path.read_bytes()))
    assert diff is None, diff


@pytest.mark.parametrize("reuse", [0, 1, 2])
def test_null_payload_slots_hold_zero_whatever_the_buffers_held_before(reuse, tmp_path):
    """A d column's slots under a null are never read through Arrow, but an Arrow IPC file stores them: they must be
    0 in every batch, also when a reused buffer held a longer record's payload in that row before (so that the same
    capture always gives the same bytes)."""
    import numpy as np

    from tracelens.parsers.xentrace.decode import iter_batches

    w, _ = generate(5)
    path = tmp_path / "gen.xt"
    w.write(path)
    expected = ref.decode(path.read_bytes())
    seen = 0
    for table in iter_batches(path, batch_bytes=200, reuse_buffers=reuse):
        for j in range(1, 8):
            col = table.column(f"d{j}").combine_chunks()
            values = np.frombuffer(col.buffers()[1], np.uint32, count=len(col) + col.offset)[col.offset:]
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            assert not values[~valid].any(), f"d{j}: stale words under nulls"
            seen += int((~valid).sum())
    assert seen > 0 and seen == sum(v is None for j in range(1, 8) for v in expected[f"d{j}"])


@pytest.mark.parametrize("seed", [1, 4, 11])
def test_fast_projection_gives_the_reference_values_of_the_chosen_columns(seed, tmp_path):
    """read_xentrace/iter_batches(columns=...) build only some columns; those must hold the same values, in the same
    order, as in the full decode (subsets chosen so that validity bitmaps and dom/vcpu are built alone)."""
    w, _ = generate(seed)
    path = tmp_path / "gen.xt"
    w.write(path)
    expected = ref.decode(path.read_bytes())
    for cols in (["offset"], ["dom"], ["vcpu", "d3"], ["d7", "event", "tsc"], ["has_tsc", "cpu", "n_extra", "d1"]):
        t = read_fast(path, columns=cols)
        assert sorted(t.column_names) == sorted(cols)
        assert ref.first_difference(columns_of(t), expected, cols) is None, cols
        got = read_batches(path, batch_bytes=500, columns=cols)
        assert ref.first_difference(got, expected, cols) is None, f"batches {cols}"
