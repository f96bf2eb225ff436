"""The two real xentrace captures in ../shared/samples/xentrace-real/ against the facts stated in its README and in
spec ../shared/spec/xentrace.md §2.2, §2.4 and §7: checked on the reference decoder and on the fast decoder.

Every expected number below is copied from those documents, not computed by either decoder.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

import xentrace_reference as ref
from tracelens.options import DecodeOptions

CPU_CHANGE, WRAP, LOST = 0x0001F003, 0x0001F002, 0x0001F001
HVM_VMENTRY, HVM_VMEXIT64, HVM_VMMCALL = 0x00081001, 0x00081102, 0x00082012
SWITCH_INFPREV, SWITCH_INFNEXT = 0x0002800E, 0x0002800F
RUNSTATE_MASK, RUNSTATE_CHANGE = 0x0FFFF00F, 0x00021001
IDLE = 0x7FFF

# README + spec §7
FACTS = {
    "hvm-credit2-8cpu.bin": dict(
        size=3_896_732,
        sha256="4ff084b1ee9e619dc015e19f9fbe42bfc371a166bc22fb7e669e8667d8679edf",
        records=180_680, windows=187, cpus=set(range(8)), wrap=27, lost=0,
        decreasing_window_starts=66,  # spec §2.2
    ),
    "sched-rtds-pre48.bin": dict(
        size=117_544,
        sha256="d4b3e39ca08c4c9531ac1342f5a7fddb79548b4448063e22c9d69b7e76f35328",
        records=5_730, windows=24, cpus=set(range(8)), wrap=0, lost=0,
        decreasing_window_starts=8,  # spec §2.2
    ),
}


def real_path(directory, name):
    path = directory / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module", params=sorted(FACTS))
def capture(request, real_xentrace_dir):
    return request.param, real_path(real_xentrace_dir, request.param)


_ref_cache: dict = {}


def reference(path):
    """Reference decode of a real capture: (raw parse, output columns); cached, the decode takes about a second."""
    if path not in _ref_cache:
        buf = path.read_bytes()
        parsed = ref.parse_file(buf)
        _ref_cache[path] = (parsed, ref.order_and_attribute(ref.streams_by_cpu(parsed.records)))
    return _ref_cache[path]


# -- the bytes are the ones the facts were stated about ----------------------------------------------------------
def test_capture_is_the_documented_file(capture):
    name, path = capture
    blob = path.read_bytes()
    assert len(blob) == FACTS[name]["size"]
    assert hashlib.sha256(blob).hexdigest() == FACTS[name]["sha256"]


# -- reference decoder against the README facts ------------------------------------------------------------------
def test_reference_counts_match_the_readme(capture):
    name, path = capture
    f = FACTS[name]
    parsed, cols = reference(path)
    events = Counter(cols["event"])
    assert len(cols["event"]) == f["records"]
    assert len(parsed.windows) == f["windows"]
    assert events[CPU_CHANGE] == f["windows"]
    assert events[WRAP] == f["wrap"]
    assert events[LOST] == f["lost"]
    assert set(cols["cpu"]) == f["cpus"]
    assert {w[1] for w in parsed.windows} == f["cpus"]


def test_reference_every_window_ends_on_a_record_boundary_and_so_does_the_file(capture):
    # parse_file raises on any record crossing a window end or any window past EOF; here we also check that the
    # windows tile the file exactly.
    name, path = capture
    parsed, _ = reference(path)
    pos = 0
    for off, _cpu, size in parsed.windows:
        assert off == pos
        pos = off + 12 + size
    assert pos == FACTS[name]["size"]


def test_reference_window_start_tscs_are_not_monotonic_in_file_order(capture):
    name, path = capture
    parsed, _ = reference(path)
    firsts = []
    for r in parsed.records:
        if r.event == CPU_CHANGE:
            firsts.append(None)
        elif firsts[-1] is None and r.tsc is not None:
            firsts[-1] = r.tsc
    assert None not in firsts
    assert sum(b < a for a, b in zip(firsts, firsts[1:])) == FACTS[name]["decreasing_window_starts"]


def test_reference_tsc_is_monotonic_per_pcpu_and_output_is_time_ordered(capture):
    _, path = capture
    parsed, cols = reference(path)
    for cpu, stream in ref.streams_by_cpu(parsed.records).items():
        ts = [r.tsc for r in stream if r.tsc is not None]
        assert all(a <= b for a, b in zip(ts, ts[1:])), f"pCPU {cpu}"
    # per-pCPU TSC is monotonic, so the running maximum is the TSC itself and the output is sorted by it
    assert cols["_k"] == cols["tsc"]
    assert all(a <= b for a, b in zip(cols["tsc"], cols["tsc"][1:]))
    assert ref.order_violation(cols) is None


def test_reference_hvm_capture_contents(real_xentrace_dir):
    """spec §7: VMMCALL eax 24 (vcpu_op) x1697 and 32 (event_channel_op) x106; VMEXIT64 is the pre-4.19 shared
    0x00081102; domains 0, 14 and idle; no MEM records; WRAP records of 4-32 bytes (§2.4)."""
    path = real_path(real_xentrace_dir, "hvm-credit2-8cpu.bin")
    parsed, cols = reference(path)
    recs = parsed.records
    assert Counter(r.data[0] for r in recs if r.event == HVM_VMMCALL) == {24: 1697, 32: 106}
    events = set(cols["event"])
    assert {HVM_VMENTRY, HVM_VMEXIT64, 0x0008200E, 0x00082021, 0x00082016, 0x00082216, 0x00082013} <= events
    assert 0x00081003 not in events and 0x00081103 not in events  # no 4.19 SVM exit ids
    assert any(0x00022201 <= e <= 0x000223FF for e in events)  # credit2 scheduler (spec §3.5: sched id 1)
    assert not [e for e in events if e >> 16 == 0x0010]  # no MEM/grant records
    assert {r.data[0] >> 16 for r in recs if (r.event & RUNSTATE_MASK) == RUNSTATE_CHANGE} == {0, 14, IDLE}
    assert {d for d in cols["dom"] if d is not None} == {0, 14, IDLE}
    sizes = {4 + 8 * r.has_tsc + 4 * r.n_extra for r in recs if r.event == WRAP}
    assert sizes == {4, 8, 12, 16, 20, 24, 32}


def test_reference_vmexits_run_in_the_hvm_guest(real_xentrace_dir):
    """Attribution (spec §2.7) on real data: VMENTRY/VMEXIT (0x00081xxx) only happen while an HVM vCPU runs, and
    the only HVM guest here is domain 14, so every such record is attributed to d14, except (null) before the
    first scheduling record of its pCPU."""
    path = real_path(real_xentrace_dir, "hvm-credit2-8cpu.bin")
    _, cols = reference(path)
    doms = Counter(d for e, d in zip(cols["event"], cols["dom"]) if e >> 12 == 0x00081)
    assert set(doms) <= {14, None}
    assert doms[None] <= 8 and doms[14] > 10_000


def test_reference_rtds_capture_contents(real_xentrace_dir):
    """README/spec §7: captured with mask 0x0002f000 (scheduler only) and pre-4.8 2-word INFPREV, 3-word INFNEXT;
    credit and RTDS class events (spec §3.5: credit 0x00022001.., RTDS 0x00022801..)."""
    path = real_path(real_xentrace_dir, "sched-rtds-pre48.bin")
    parsed, cols = reference(path)
    events = Counter(cols["event"])
    assert {e >> 16 for e in events if e != CPU_CHANGE} == {0x0002}
    assert {r.n_extra for r in parsed.records if r.event == SWITCH_INFPREV} == {2}
    assert {r.n_extra for r in parsed.records if r.event == SWITCH_INFNEXT} == {3}
    assert any(0x00022001 <= e <= 0x000221FF for e in events)  # credit
    assert any(0x00022801 <= e <= 0x000229FF for e in events)  # RTDS


# -- the fast decoder: the same facts, and row-by-row equality with the reference ---------------------------------
_fast_cache: dict = {}


def fast(path) -> dict[str, list]:
    if path not in _fast_cache:
        from tracelens.parsers.xentrace import read_xentrace

        table = read_xentrace(path)
        _fast_cache[path] = {name: table.column(name).to_pylist() for name in table.column_names}
    return _fast_cache[path]


def test_fast_counts_match_the_readme(capture):
    name, path = capture
    f = FACTS[name]
    cols = fast(path)
    events = Counter(cols["event"])
    assert len(cols["event"]) == f["records"]
    assert events[CPU_CHANGE] == f["windows"]
    assert events[WRAP] == f["wrap"]
    assert events[LOST] == f["lost"]
    assert set(cols["cpu"]) == f["cpus"]
    assert set(cols["d1"][i] for i, e in enumerate(cols["event"]) if e == CPU_CHANGE) == f["cpus"]
    # every window's bytes: CPU_CHANGE d2 sizes plus 12-byte headers tile the file
    assert sum(12 + cols["d2"][i] for i, e in enumerate(cols["event"]) if e == CPU_CHANGE) == f["size"]


def test_fast_is_time_ordered(capture):
    _, path = capture
    cols = fast(path)
    assert all(a <= b for a, b in zip(cols["tsc"], cols["tsc"][1:]))  # per-pCPU TSC is monotonic in both files
    assert ref.order_violation(cols) is None, ref.order_violation(cols)


def test_fast_equals_reference_row_by_row(capture):
    _, path = capture
    _, expected = reference(path)
    diff = ref.first_difference(fast(path), expected)
    assert diff is None, diff


def test_fast_hvm_capture_contents(real_xentrace_dir):
    """spec §7 facts on the fast decoder's output: VMMCALL eax 24 x1697 and 32 x106, no MEM records, domains
    0, 14 and idle."""
    cols = fast(real_path(real_xentrace_dir, "hvm-credit2-8cpu.bin"))
    assert Counter(d for e, d in zip(cols["event"], cols["d1"]) if e == HVM_VMMCALL) == {24: 1697, 32: 106}
    assert not [e for e in set(cols["event"]) if e >> 16 == 0x0010]
    assert {d for d in cols["dom"] if d is not None} == {0, 14, IDLE}


def test_fast_rtds_capture_contents(real_xentrace_dir):
    cols = fast(real_path(real_xentrace_dir, "sched-rtds-pre48.bin"))
    assert {n for e, n in zip(cols["event"], cols["n_extra"]) if e == SWITCH_INFPREV} == {2}
    assert {n for e, n in zip(cols["event"], cols["n_extra"]) if e == SWITCH_INFNEXT} == {3}
    assert {e >> 16 for e in cols["event"] if e != CPU_CHANGE} == {0x0002}


def test_fast_batches_and_one_thread_equal_reference(capture):
    import pyarrow as pa

    from tracelens.parsers.xentrace import read_xentrace
    from tracelens.parsers.xentrace.decode import iter_batches

    _, path = capture
    _, expected = reference(path)
    t = read_xentrace(path, DecodeOptions(threads=1))
    diff = ref.first_difference({c: t.column(c).to_pylist() for c in ref.COLUMNS}, expected)
    assert diff is None, f"threads=1: {diff}"
    t = pa.concat_tables(list(iter_batches(path, batch_bytes=64 << 10)))
    diff = ref.first_difference({c: t.column(c).to_pylist() for c in ref.COLUMNS}, expected)
    assert diff is None, f"batches of 64 KiB: {diff}"


def test_fast_summary_equals_reference_counts(capture):
    from tracelens.parsers.xentrace.decode import info

    _, path = capture
    parsed, expected = reference(path)
    problems = ref.summary_mismatches(expected, info(path), windows=len(parsed.windows))
    assert not problems, problems


def _switch_prev_check(cols):
    """Xen names the outgoing vCPU in every SWITCH record (d1 prev domid, d2 prev unit; spec §4.3). The running
    vCPU rebuilt from the earlier records of that pCPU (spec §2.7) must be that vCPU whenever it is known, and it
    may be unknown only before a pCPU's first scheduling record (at most once per pCPU)."""
    agree = unknown = 0
    for e, n, d1, d2, dom, vcpu, cpu in zip(cols["event"], cols["n_extra"], cols["d1"], cols["d2"], cols["dom"],
                                            cols["vcpu"], cols["cpu"]):
        if e == 0x0002800A and n >= 4:
            if dom is None:
                unknown += 1
            else:
                assert (dom, vcpu) == (d1 & 0xFFFF, d2 & 0xFFFF), f"pCPU {cpu}: ran d{dom}v{vcpu}, SWITCH says prev {d1}/{d2}"
                agree += 1
    assert agree > 700 and unknown <= 8


def test_reference_running_vcpu_matches_the_switch_records(capture):
    _switch_prev_check(reference(capture[1])[1])


def test_fast_running_vcpu_matches_the_switch_records(capture):
    _switch_prev_check(fast(capture[1]))


@pytest.mark.parametrize("xen_version", ["4.7", "4.17", "4.20"])
def test_fast_xen_version_changes_names_not_records(capture, xen_version):
    from tracelens.parsers.xentrace import read_xentrace

    _, path = capture
    _, expected = reference(path)
    t = read_xentrace(path, DecodeOptions(xen_version=xen_version))
    diff = ref.first_difference({c: t.column(c).to_pylist() for c in ref.COLUMNS}, expected)
    assert diff is None, f"xen_version={xen_version}: {diff}"



@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_cli_decode_in_1_mib_batches_writes_the_reference_rows(capture, suffix, tmp_path, capsys, request):
    """`tracelens decode --batch-mb 1` streams batches through reused buffers into row groups; what lands in the
    file must still be the reference's rows (the hvm capture is ~3.7 MiB: several batches)."""
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from tracelens.cli import main

    name, path = capture
    _, expected = reference(path)
    out = tmp_path / f"out{suffix}"
    assert main(["decode", str(path), "-o", str(out), "--batch-mb", "1"]) == 0
    t = pq.read_table(out) if suffix == ".parquet" else feather.read_table(out)
    diff = ref.first_difference({c: t.column(c).to_pylist() for c in ref.COLUMNS}, expected)
    assert diff is None, diff
