"""The notebook API (tracelens.open; tracelens/capture.py, pushdown.py, dump.py, report.py, batch.py, query.py):
format detection, the lazy record scan and its pushdown, reports as frames, dumps. Expected values come from the
sample README (sample-traces/README.md, docs/analysis.md) or from pyarrow computations over the decoder's own
table, never from the API under test."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import tracelens
from tracelens.capture import Capture
from tracelens.dump import Dump
from tracelens.errors import FormatError, UsageError
from tracelens.options import DecodeOptions
from tracelens.pushdown import plan_predicate
from tracelens.report import Report

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample-traces"
PG = SAMPLES / "persistent-grants.xentrace"

sys.path.insert(0, str(ROOT / "tests" / "vmcore"))


@pytest.fixture(scope="module")
def table():
    return tracelens.read_xentrace(PG)


@pytest.fixture(scope="module")
def small_dump(tmp_path_factory):
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf

    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [
        LogRec(1_000, b"Hypervisor detected: Xen HVM"),
        LogRec(2_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7),
        LogRec(3_000, b"ordinary line"),
    ])
    mem.write(0x1F0 * 4096, b"tracelens-api-test")
    p = tmp_path_factory.mktemp("dump") / "small.elf"
    write_elf(p, mem, standard_notes(k.vmcoreinfo()))
    return p


def test_open_detects_the_format(small_dump, tmp_path):
    assert isinstance(tracelens.open(PG), Capture)
    d = tracelens.open(small_dump)
    assert isinstance(d, Dump) and d.format == "elf-vmcore"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a capture at all" * 10)
    with pytest.raises(FormatError):
        tracelens.open(junk)


def test_import_tracelens_stays_light():
    import subprocess

    code = ("import sys, tracelens; tracelens.open; "
            "print(sorted(m for m in ('polars', 'pyarrow', 'numba', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_records_equal_the_decoded_table(table):
    df = Capture(PG).records.collect()
    assert df.columns == table.column_names
    assert df.height == table.num_rows
    assert df["tsc"].to_list() == table.column("tsc").to_pylist()
    assert df["name"].cast(pl.String).to_list() == table.column("name").cast("string").to_pylist()


def test_projection_and_predicate_are_pushed_down(table):
    cap = Capture(PG)
    out = cap.records.filter(pl.col("cpu") == 1).select("tsc").collect()
    req = cap.scans[-1]
    # polars asked the reader for the filter's column and the selected one only, and handed it the filter
    assert sorted(req.columns) == ["cpu", "tsc"]
    assert req.predicate is not None and req.predicate.meta.root_names() == ["cpu"]
    expected = table.filter(pc.equal(table.column("cpu"), 1)).column("tsc").to_pylist()
    assert out.columns == ["tsc"] and out["tsc"].to_list() == expected


def test_reader_yields_only_the_projected_columns():
    cap = Capture(PG, batch_bytes=4096)
    frames = list(cap._scan(["tsc", "dom"], pl.col("dom") == 0, None, None))
    assert len(frames) >= 2  # several decoder batches
    assert all(f.columns == ["tsc", "dom"] for f in frames)
    assert all((f["dom"] == 0).all() for f in frames)
    frames = list(cap._scan(["tsc"], pl.col("dom") == 0, None, None))  # filter column not kept in the output
    assert all(f.columns == ["tsc"] for f in frames)


def test_batches_outside_the_tsc_bounds_are_skipped(table):
    cap = Capture(PG, batch_bytes=4096)
    n_batches = len(list(tracelens.iter_xentrace(PG, batch_bytes=4096)))
    assert n_batches >= 3
    last = max(table.column("tsc").to_pylist())
    df = cap.records.filter(pl.col("tsc") > last - 1000).collect()
    req = cap.scans[-1]
    assert req.tsc_range == (last - 999, None)
    assert req.batches == n_batches and req.batches_skipped >= 1
    expected = table.filter(pc.greater(table.column("tsc"), last - 1000)).num_rows
    assert df.height == expected > 0


def test_batches_without_the_cpu_are_skipped():
    cap = Capture(PG, batch_bytes=4096)
    assert cap.records.filter(pl.col("cpu").is_in([7, 9])).collect().height == 0
    req = cap.scans[-1]
    assert req.batches >= 3 and req.batches_skipped == req.batches


def _skipping_cases(table):
    """(filter, the same filter on the pyarrow table) for every form the planner reads."""
    tsc = table.column("tsc")
    first, last = min(tsc.to_pylist()), max(tsc.to_pylist())
    t = pl.col("tsc")
    ge, le = pc.greater_equal, pc.less_equal
    return [
        (t > last - 1000, lambda: pc.greater(tsc, last - 1000)),
        (t >= last - 999, lambda: ge(tsc, last - 999)),
        (t < first + 1000, lambda: pc.less(tsc, first + 1000)),
        (t <= first + 999, lambda: le(tsc, first + 999)),
        (t == first, lambda: pc.equal(tsc, first)),
        (pl.lit(first + 999) >= t, lambda: le(tsc, first + 999)),
        (t > pl.lit(last - 1000, dtype=pl.UInt64), lambda: pc.greater(tsc, last - 1000)),
        (t.is_between(first, first + 1000), lambda: pc.and_(ge(tsc, first), le(tsc, first + 1000))),
        (t.is_between(first, first + 1000, closed="none"),
         lambda: pc.and_(pc.greater(tsc, first), pc.less(tsc, first + 1000))),
        ((t >= last - 999) & (pl.col("dom") == 0) & (t <= last),
         lambda: pc.and_(ge(tsc, last - 999), pc.equal(table.column("dom"), 0))),
        (pl.col("cpu") == 7, lambda: pc.equal(table.column("cpu"), 7)),
        (pl.col("cpu").is_in([7, 9]) & (t > 0), lambda: pc.is_in(table.column("cpu"), pa.array([7, 9], pa.uint16()))),
    ]


def test_every_form_the_planner_reads_skips_batches_on_the_installed_polars(table):
    """A polars release that serializes filters in another form must fail here (the reader would silently stop
    skipping batches otherwise)."""
    from tracelens.pushdown import planner_works

    assert planner_works()
    for expr, expected in _skipping_cases(table):
        cap = Capture(PG, batch_bytes=4096)
        df = cap.records.filter(expr).collect()
        req = cap.scans[-1]
        assert req.batches >= 3 and req.batches_skipped >= 1, f"{expr}: no batch skipped"
        want = table.filter(pc.fill_null(expected(), False))
        assert df["offset"].to_list() == want.column("offset").to_pylist(), str(expr)


def test_a_filter_polars_cannot_serialize_is_applied_without_skipping(table):
    import threading

    lock = threading.Lock()  # cannot be pickled: polars cannot serialize the expression
    last = max(table.column("tsc").to_pylist())
    udf = pl.col("tsc").map_elements(lambda v: bool(lock) and v > last - 1000, return_dtype=pl.Boolean)
    assert plan_predicate(udf) == ((None, None), [])
    cap = Capture(PG, batch_bytes=4096)  # the reader, as a scan of records would call it
    frames = list(cap.iter_records(predicate=udf & (pl.col("tsc") > 0)))
    assert cap.scans[-1].batches_skipped == 0 and cap.scans[-1].tsc_range == (None, None)
    assert sum(f.height for f in frames) == table.filter(pc.greater(table.column("tsc"), last - 1000)).num_rows > 0


def test_a_polars_that_serializes_filters_otherwise_warns_and_skips_nothing(table, monkeypatch):
    from tracelens import pushdown

    monkeypatch.setattr(pushdown, "_tree", lambda expr: {"SomethingNew": {}})
    pushdown.planner_works.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="skip no batch"):
            assert plan_predicate(pl.col("tsc") > 5) == ((None, None), [])
        cap = Capture(PG, batch_bytes=4096)
        last = max(table.column("tsc").to_pylist())
        df = cap.records.filter(pl.col("tsc") > last - 1000).collect()
        assert cap.scans[-1].batches_skipped == 0
        assert df.height == table.filter(pc.greater(table.column("tsc"), last - 1000)).num_rows > 0
    finally:
        pushdown.planner_works.cache_clear()


def test_row_limit_stops_decoding():
    cap = Capture(PG, batch_bytes=4096)
    df = cap.records.head(3).collect()
    assert df.height == 3
    assert cap.scans[-1].batches == 1


@pytest.mark.parametrize("expr, bounds, n_cpu_terms", [
    (pl.col("tsc") >= 5, (5, None), 0),
    ((pl.col("tsc") < 10) & (pl.col("cpu") == 1), (None, 9), 1),
    (pl.col("tsc").is_between(3, 8, closed="left"), (3, 7), 0),
    ((pl.col("dom") == 0) & (pl.lit(20) >= pl.col("tsc")), (None, 20), 0),
    ((pl.col("tsc") % 2) == 0, (None, None), 0),  # not a simple bound: left to the row filter
    ((pl.col("cpu") == 1) | (pl.col("tsc") > 4), (None, None), 0),  # a disjunction bounds nothing
    (None, (None, None), 0),
])
def test_plan_predicate(expr, bounds, n_cpu_terms):
    got_bounds, cpu_terms = plan_predicate(expr)
    assert got_bounds == bounds and len(cpu_terms) == n_cpu_terms


def test_report_frames_match_the_sample_readme():
    rep = tracelens.open(PG).analyze()
    assert isinstance(rep, Report)
    b = rep.boundaries.to_dicts()
    assert [(x["domid"], x["epoch"], x["kind"], x["tsc"]) for x in b] == [(1, 0, "soft_reset", 12807307)]
    f = rep.findings.sort("rule")
    assert f.select("rule", "severity", "domid", "epoch", "object").rows() == [
        ("TL-GNT-001", "error", 1, 0, "mapper:d0"), ("TL-GNT-002", "warning", 1, 1, "mapper:d0")]
    g = rep.grants.filter(pl.col("epoch") == 0).row(0, named=True)
    assert (g["mapper"], g["granter"], g["maps"], g["unmaps"], g["outstanding_at_boundary"]) == (0, 1, 16, 10, 6)
    assert rep.balloon.height == 0 and "pages" in rep.balloon.columns
    s = rep.grant_series
    assert s.height == 16 + 10 + 4 + 6  # maps and unmaps of the README scenario
    assert s.filter(pl.col("tsc") <= 12807307)["delta"].sum() == 6
    assert rep.safety.filter(pl.col("epoch") == 0)["verdict"].to_list() == ["unsafe"]


def test_report_frames_have_columns_when_empty():
    rep = tracelens.open(SAMPLES / "clean-soft-reset.xentrace").analyze()
    assert rep.findings.height == 0
    assert {"rule", "severity", "domid", "epoch", "message"} <= set(rep.findings.columns)
    assert rep.findings.schema["tsc"] == pl.UInt64


def test_dump_wrapper(small_dump):
    with tracelens.open(small_dump) as d:
        assert d.info()["format"] == "elf-vmcore"
        log = d.dmesg()
        assert log["text"].to_list() == ["Hypervisor detected: Xen HVM", "xen: --> pirq=16 -> irq=8 (gsi=8)",
                                         "ordinary line"]
        assert log["ts_nsec"].to_list() == [1000, 2000, 3000]
        ev = d.xen_events()
        assert ev.filter(pl.col("event") == "pirq_mapped").select("pirq", "irq", "gsi").row(0) == (16, 8, 8)
        assert d.pages.height == 0x100
        assert d.read_phys(0x1F0 * 4096, 18) == b"tracelens-api-test"
        assert d.vmcoreinfo.osrelease == "6.1.0-test"


def test_reprs(small_dump):
    cap = tracelens.open(PG)
    assert "persistent-grants.xentrace" in repr(cap)
    html = cap._repr_html_()
    assert "<table" in html and "514" in html
    rep = cap.analyze()
    assert "TL-GNT-001" in repr(rep) and "TL-GNT-001" in rep._repr_html_()
    assert "TL-GNT-001" in repr(rep.findings) and "#c62828" in rep.findings._repr_html_()
    assert rep.findings.filter(pl.col("rule") == "TL-GNT-002").height == 1  # still a polars frame
    with tracelens.open(small_dump) as d:
        assert "elf-vmcore" in repr(d) and "6.1.0-test" in d._repr_html_()


def test_html_escapes_capture_strings():
    from tracelens.display import FindingsFrame

    df = pl.DataFrame({"rule": ["<x>"], "severity": ["error"], "domid": [1], "epoch": [0], "object": ["a&b"],
                       "tsc": [1], "message": ["<script>"]})
    html = FindingsFrame.wrap(df)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&amp;b" in html


def test_guest_ledger_frames():
    rep = tracelens.open(SAMPLES / "instrumented-guest.xentrace").analyze()
    # README: PIRQs 34 and 35 bound, 34 unbound before the kexec; refs 8-15 granted, 8-14 ended
    assert rep.pirqs_open.select("domid", "epoch", "pirq").rows() == [(1, 0, 35)]
    assert rep.grefs_open.select("domid", "epoch", "ref", "grantee").rows() == [(1, 0, 15, 0)]
    assert tracelens.open(PG).analyze().pirqs_open.height == 0


def test_small_batches_keep_names_and_time():
    cap = Capture(PG, DecodeOptions(cpu_hz=2e9), batch_bytes=4096)
    t = tracelens.read_xentrace(PG, DecodeOptions(cpu_hz=2e9))
    df = cap.records.collect()
    assert cap.scans[-1].batches >= 3
    assert df["name"].cast(pl.String).to_list() == t.column("name").cast("string").to_pylist()
    assert df["time_ns"].to_list() == t.column("time_ns").to_pylist()
    n_maps = cap.records.filter(pl.col("name") == "MEM_PAGE_GRANT_MAP").select(pl.len()).collect().item()
    assert n_maps == 20  # README: 16 maps before the boundary, 4 after


def test_pushdown_on_a_real_capture(real_xentrace_dir):
    path = real_xentrace_dir / "hvm-credit2-8cpu.bin"
    t = tracelens.read_xentrace(path)
    tsc = t.column("tsc")
    lo = pc.min(pc.filter(tsc, pc.greater(tsc, 0))).as_py()
    hi = pc.max(tsc).as_py()
    cut = lo + (hi - lo) // 10
    cap = Capture(path, batch_bytes=256 << 10)
    got = cap.records.filter((pl.col("tsc") < cut) & (pl.col("cpu") == 3)).select("tsc", "event").collect()
    req = cap.scans[-1]
    assert req.batches > 2 and req.batches_skipped >= 1
    mask = pc.and_(pc.less(tsc, cut), pc.equal(t.column("cpu"), 3))
    exp = t.filter(mask)
    assert got["tsc"].to_list() == exp.column("tsc").to_pylist()
    assert got["event"].to_list() == exp.column("event").to_pylist()


def test_time_column_is_computed_only_when_asked(monkeypatch):
    from tracelens.parsers.xentrace import decode

    asked = []
    real = decode.iter_batches

    def spy(path, decode=None, **kw):
        asked.append(decode.cpu_hz)
        return real(path, decode, **kw)

    monkeypatch.setattr(decode, "iter_batches", spy)
    cap = Capture(PG, DecodeOptions(cpu_hz=2e9))
    assert cap.records.select("tsc", "cpu").collect().columns == ["tsc", "cpu"]
    assert cap.records.filter(pl.col("time_ns") > 0).select("tsc").collect().height > 0
    assert cap.records.select("time_ns").collect()["time_ns"].to_list() == \
        tracelens.read_xentrace(PG, DecodeOptions(cpu_hz=2e9)).column("time_ns").to_pylist()
    assert asked == [None, 2e9, 2e9]


def test_overview_of_the_samples(tmp_path, small_dump):
    paths = sorted(SAMPLES.glob("*.xentrace"))
    damaged = tmp_path / "damaged.xentrace"
    damaged.write_bytes((SAMPLES / "clean-soft-reset.xentrace").read_bytes()[:1000])
    ov = tracelens.overview([*paths, damaged, small_dump], on_error="record")
    by = {Path(r["capture"]).name: r for r in ov.iter_rows(named=True)}
    # expected findings and boundary kinds: sample-traces/README.md
    expected_rules = {
        "clean-soft-reset.xentrace": [], "persistent-grants.xentrace": ["TL-GNT-001", "TL-GNT-002"],
        "balloon-before-kexec.xentrace": ["TL-BAL-001"], "foreign-map.xentrace": ["TL-GNT-003"],
        "instrumented-guest.xentrace": ["TL-GST-001", "TL-GST-002"], "lost-across-boundary.xentrace": ["TL-GNT-001", "TL-LOST-001"],
        "crash-kdump.xentrace": ["TL-GNT-001", "TL-GNT-002"],
    }
    assert {n: by[n]["rules"] for n in expected_rules} == expected_rules
    assert by["crash-kdump.xentrace"]["boundary_kinds"] == ["crash"]
    assert by["clean-soft-reset.xentrace"]["kexec_verdict"] == "safe"
    assert by["lost-across-boundary.xentrace"]["kexec_verdict"] == "inconclusive"
    assert by["persistent-grants.xentrace"]["kexec_verdict"] == "unsafe"
    assert by["foreign-map.xentrace"]["pcpus"] == 3 and by["persistent-grants.xentrace"]["records"] == 514
    assert by["damaged.xentrace"]["error"] and by["damaged.xentrace"]["records"] is None
    assert "not a xentrace capture" in by["small.elf"]["error"]
    assert all(by[n]["error"] is None for n in expected_rules)
    with pytest.raises(FormatError):
        tracelens.overview([PG, damaged])  # default policy: raise
    with pytest.raises(UsageError):
        tracelens.overview([PG], on_error="ignore")
