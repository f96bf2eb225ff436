"""tests/synth.py (the scenario simulator) and the committed sample captures.

Oracles: the simulator's truth (kept while it emits, independently of the decoder), hand-written facts from the
spec (§4.3 soft-reset sequence, §4.4 hypercall encodings, §4.1 balloon layouts), and the committed bytes of
sample-traces/ for reproducibility.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

import synth
import tracelens

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample-traces"
CPU_CHANGE = 0x0001F003


def _load_generate():
    spec = importlib.util.spec_from_file_location("sample_generate", SAMPLES / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _decode(sim, tmp_path, name="c.xentrace", **kw):
    path = tmp_path / name
    sim.write(path)
    return tracelens.read_xentrace(path, **kw).to_pydict()


def _rows(cols):
    n = len(cols["cpu"])
    return [{k: cols[k][i] for k in cols} for i in range(n)]


# -- the committed samples ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(synth.SCENARIOS))
def test_sample_is_committed_reproducible_and_decodes(name):
    path = SAMPLES / f"{name}.xentrace"
    assert path.is_file(), f"{path} missing: run sample-traces/generate.py"
    blob = path.read_bytes()
    assert len(blob) < 1 << 20
    gen = _load_generate()
    assert gen.build(name) == blob, "regenerating the sample changed its bytes"
    assert gen.build(name) == blob  # and again: no hidden state between runs
    cols = tracelens.read_xentrace(path).to_pydict()
    sim = synth.SCENARIOS[name]()
    got = Counter(e for e in cols["event"] if e != CPU_CHANGE)
    assert got == sim.truth.event_counts
    assert len(sim.truth.boundaries) >= 1


def test_generate_check_mode(tmp_path):
    gen = _load_generate()
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / "crash-kdump.xentrace"
    victim.write_bytes(victim.read_bytes()[:-4])
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1


def test_samples_readme_names_every_sample():
    text = (SAMPLES / "README.md").read_text()
    for name in synth.SCENARIOS:
        assert f"{name}.xentrace" in text


# -- round trip on random hosts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(25))
def test_random_capture_round_trips(seed, tmp_path):
    sim = synth.random_scenario(seed)
    cols = _decode(sim, tmp_path)
    rows = [r for r in _rows(cols) if r["event"] != CPU_CHANGE]
    # record counts per event id
    assert Counter(r["event"] for r in rows) == sim.truth.event_counts
    # per-pCPU order: each pCPU's records, in file order, are the simulator's emission order on that pCPU
    for cpu, expected in sim.truth.per_cpu.items():
        mine = sorted((r for r in rows if r["cpu"] == cpu), key=lambda r: r["offset"])
        assert [r["event"] for r in mine] == [e for e, _ in expected]
        assert [r["tsc"] for r in mine if r["has_tsc"]] == [t for _, t in expected if t is not None]
    # one global clock: timed records come out of the merge in strictly increasing TSC order
    timed = [r["tsc"] for r in rows if r["has_tsc"]]
    assert all(a < b for a, b in zip(timed, timed[1:]))
    # grant records: TSC, pCPU, the mapper the decoder attributes (running vCPU's domain) and the granter (d1)
    got = sorted((r["tsc"], r["cpu"], r["event"], r["dom"], r["d1"]) for r in rows
                 if r["event"] in (synth.MEM_GRANT_MAP, synth.MEM_GRANT_UNMAP))
    assert got == sorted(sim.truth.grant_records)
    # LOST_RECORDS: count and first_tsc as simulated
    lost = sorted((r["cpu"], r["d3"] | (r["d4"] << 32), r["tsc"], r["d1"]) for r in rows if r["event"] == synth.LOST_RECORDS)
    assert lost == sorted(sim.truth.lost)


def test_random_hosts_cover_every_feature():
    """Across the seeds the tests use, every lifecycle kind, losses and both balloon layouts occur."""
    kinds, lost, layouts, guests = Counter(), 0, set(), 0
    for seed in range(25):
        sim = synth.random_scenario(seed)
        kinds.update(b["kind"] for b in sim.truth.boundaries)
        lost += len(sim.truth.lost)
        if sim.truth.balloon:
            layouts.add(sim.pre_418)
        guests += sum(1 for e in sim.truth.event_counts if e & 0x0FFFF000 == synth.TRC_GUEST)
    assert kinds["soft_reset"] and kinds["crash"] and kinds["recreate"]
    assert lost and guests
    assert layouts == {True, False}


# -- hand-written facts ------------------------------------------------------------------------------------------
def test_soft_reset_follows_spec_4_3(tmp_path):
    """Guest d1 (HVM, pCPU 1): VMMCALL sched_op, SHUTDOWN reason 5, SLEEP, running->offline, backend unmaps on
    pCPU 0, dom0's domctl, WAKE, offline->runnable, SWITCH to d1 and runnable->running -- the same domid."""
    sim = synth.scenario_clean_soft_reset()
    rows = [r for r in _rows(_decode(sim, tmp_path)) if r["event"] != CPU_CHANGE]
    i_sd = next(i for i, r in enumerate(rows) if r["event"] == 0x00028007)
    sd = rows[i_sd]
    assert (sd["d1"], sd["d2"], sd["d3"], sd["dom"]) == (1, 0, 5, 1)
    before = [r for r in rows[:i_sd] if r["cpu"] == 1][-2:]
    assert before[0]["event"] == 0x00081102 and before[0]["d1"] == 18  # VMX exit reason VMCALL
    assert before[1]["event"] == 0x00082012 and before[1]["d1"] == 29 and not before[1]["has_tsc"]
    after = rows[i_sd + 1:]
    seq = [r["event"] for r in after if r["cpu"] == 1][:12]
    assert seq[0] == 0x00028003  # SLEEP
    assert 0x00021031 in seq  # running -> offline
    i_wake = next(i for i, r in enumerate(after) if r["event"] == 0x00028004 and r["d1"] == 1)
    unmaps = [r for r in after[:i_wake] if r["event"] == 0x0010F002]
    assert len(unmaps) == 8 and {(r["dom"], r["d1"], r["cpu"]) for r in unmaps} == {(0, 1, 0)}
    assert any(r["event"] == 0x0020100D and r["d1"] == 36 and r["dom"] == 0 for r in after[:i_wake])  # domctl
    rest = after[i_wake:]
    assert rest[1]["event"] == 0x00021311 and rest[1]["d1"] == 1 << 16  # offline -> runnable, d1v0
    sw = next(r for r in rest if r["event"] == 0x0002800A)
    assert (sw["d3"], sw["d4"]) == (1, 0)
    assert sim.truth.boundaries == [{"domid": 1, "epoch": 0, "kind": "soft_reset", "tsc": sw["tsc"],
                                     "shutdown_tsc": sd["tsc"]}]
    assert not any(r["event"] in (0x00041001, 0x00041002, 0x00028001, 0x00028002) for r in rows)


def test_pv_grant_hypercall_encoding(tmp_path):
    """§4.4: grant_table_op records A0 = cmd and A2 = count as 32-bit values: d1 = 0x01100014."""
    sim = synth.scenario_persistent_grants()
    rows = _rows(_decode(sim, tmp_path))
    gt = [r for r in rows if r["event"] == 0x0020100D and r["d1"] & 0xFFFFF == 20]
    assert gt and all(r["d1"] == 0x01100014 and r["n_extra"] == 3 for r in gt)
    assert (gt[0]["d2"], gt[0]["d3"]) == (0, 16)  # map_grant_ref of 16 entries
    assert {r["d2"] for r in gt} == {0, 1}
    sched = [r for r in rows if r["event"] == 0x0020100D and r["d1"] & 0xFFFFF == 29]
    assert all(r["d1"] == 0x0010001D for r in sched)


@pytest.mark.parametrize("version", ["4.20", "4.17"])
def test_balloon_layouts(version, tmp_path):
    sim = synth.scenario_balloon_before_kexec(xen_version=version)
    rows = [r for r in _rows(_decode(sim, tmp_path, f"b{version}.xentrace")) if r["event"] == 0x0010F005]
    assert len(rows) == 7 and all(not r["has_tsc"] and r["dom"] == 1 for r in rows)
    assert [r["d1"] for r in rows] == [0x12340 + i for i in range(6)] + [0x40000]
    if version == "4.20":
        assert [(r["d3"], r["d4"]) for r in rows] == [(1, 0)] * 6 + [(1, 9)]
    else:  # domid | order << 16 in d3, stale stack bytes in d4
        assert [r["d3"] for r in rows] == [1] * 6 + [1 | 9 << 16]
        assert all(r["d4"] > 18 for r in rows)
    b = sim.truth.balloon[(1, 0)]
    assert (b["extents"], b["pages"]) == (7, 6 + 512)


def test_guest_tracepoints_have_no_tsc_and_follow_hvm_op(tmp_path):
    sim = synth.scenario_instrumented_guest()
    rows = [r for r in _rows(_decode(sim, tmp_path)) if r["event"] != CPU_CHANGE]
    for i, r in enumerate(rows):
        if r["event"] & 0x0FFFF000 == 0x0800F000:
            assert not r["has_tsc"] and r["dom"] == 1
            assert rows[i - 1]["event"] == 0x00082012 and rows[i - 1]["d1"] == 34  # VMMCALL hvm_op
    hello = [r for r in rows if r["event"] == 0x0800F100]
    assert len(hello) == 2 and hello[0]["d1"] == 0x544C4754
    grants = [r["d1"] for r in rows if r["event"] == 0x0800F101]
    ends = [r["d1"] for r in rows if r["event"] == 0x0800F102]
    assert grants == list(range(8, 16)) and ends == list(range(8, 15))


def test_loss_hides_records_and_the_lost_record_names_the_running_vcpu(tmp_path):
    sim = synth.scenario_lost_across_boundary()
    rows = [r for r in _rows(_decode(sim, tmp_path)) if r["event"] != CPU_CHANGE]
    lost = [r for r in rows if r["event"] == 0x0001F001]
    assert len(lost) == 1 and lost[0]["cpu"] == 0 and lost[0]["d1"] > 0
    first = lost[0]["d3"] | lost[0]["d4"] << 32
    b = sim.truth.boundaries[0]
    assert first < b["shutdown_tsc"] < b["tsc"] < lost[0]["tsc"]  # the loss spans the whole kexec
    # no backend activity on pCPU 0 inside the loss
    assert not [r for r in rows if r["cpu"] == 0 and first <= r["tsc"] < lost[0]["tsc"] and r["has_tsc"]]
    # the LOST record names dom0's vCPU 0 (Xen's `current` when it wrote it), and the records after it run there
    # although no scheduling record comes first
    assert (lost[0]["d2"] & 0xFFFF, lost[0]["d2"] >> 16) == (0, 0) and (lost[0]["dom"], lost[0]["vcpu"]) == (0, 0)
    nxt = [r for r in rows if r["cpu"] == 0 and r["offset"] > lost[0]["offset"]]
    assert (nxt[0]["dom"], nxt[0]["vcpu"]) == (0, 0) and nxt[0]["event"] >> 12 != 0x21
    assert {r["dom"] for r in rows if r["event"] == 0x0010F001 and r["tsc"] > lost[0]["tsc"]} == {0}
    # visible maps: 8 before the loss and 4 after; the 9th map and the teardown unmaps fell into the loss
    assert sum(1 for r in rows if r["event"] == 0x0010F001) == 12
    assert sum(1 for r in rows if r["event"] == 0x0010F002) == 0


def _is_runstate_into_running(event: int) -> bool:
    return (event & 0x0FFFF00F) == 0x00021001 and (event >> 4) & 0xF == 0


def _attribution_against_truth(sim, tmp_path) -> int:
    """Every record's dom/vcpu equals the vCPU the simulated Xen had current when it wrote it (``truth.running``),
    except the documented one (docs/xentrace.md rule 4): a runstate change into running goes to the vCPU it starts.
    Returns how many records came after a LOST_RECORDS record and before the next scheduling record."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = sorted((r for r in _rows(_decode(sim, tmp_path)) if r["event"] != CPU_CHANGE), key=lambda r: r["offset"])
    after_loss = 0
    for cpu, truth in sim.truth.running.items():
        got = [r for r in rows if r["cpu"] == cpu]
        assert [r["event"] for r in got] == [e for e, _t in sim.truth.per_cpu[cpu]]
        assert len(truth) == len(got)
        since_lost = False
        for i, (r, want) in enumerate(zip(got, truth)):
            if _is_runstate_into_running(r["event"]):
                want = (r["d1"] >> 16, r["d1"] & 0xFFFF)
            assert (r["dom"], r["vcpu"]) == want, f"pCPU {cpu} record {i} (0x{r['event']:08x} at {r['offset']})"
            if r["event"] >> 12 == 0x21:
                since_lost = False
            elif since_lost:
                after_loss += 1
            if r["event"] == 0x0001F001:
                since_lost = True
    return after_loss


def test_attribution_equals_the_simulated_truth_across_a_loss(tmp_path):
    assert _attribution_against_truth(synth.scenario_lost_across_boundary(), tmp_path) > 10


def test_attribution_equals_the_simulated_truth_on_random_hosts(tmp_path):
    lossy = after_loss = 0
    for seed in range(12):
        sim = synth.random_scenario(seed)
        after_loss += _attribution_against_truth(sim, tmp_path / str(seed))
        lossy += bool(sim.truth.lost)
    assert lossy >= 3 and after_loss > 10  # the seeds do exercise records right after a loss


def test_destroy_and_recreate_sequence(tmp_path):
    s = synth.Sim(ncpus=2, seed=9)
    s.add_domain(0, "pv", homes=[0])
    s.add_domain(4, "pv", homes=[1])
    s.hypercall(4, synth.HC_XEN_VERSION)
    s.destroy(4)
    t = s.create(4, "hvm")
    s.hypercall(4, synth.HC_MEMORY_OP)
    s.finish()
    rows = [r for r in _rows(_decode(s, tmp_path)) if r["event"] != CPU_CHANGE]
    ev = [(r["event"], r["d1"]) for r in rows if r["event"] in (0x00041001, 0x00041002, 0x00028001, 0x00028002)]
    assert ev == [(0x00041002, 4), (0x00028002, 4), (0x00041001, 4), (0x00028001, 4)]
    add = next(r for r in rows if r["event"] == 0x00041001)
    assert add["tsc"] == t and add["dom"] == 0
    assert s.truth.boundaries[0]["kind"] == "recreate" and s.truth.boundaries[0]["tsc"] == t
    assert s.truth.hypercalls[(4, 0, "pv", synth.HC_XEN_VERSION, None)] == 1
    assert s.truth.hypercalls[(4, 1, "hvm", synth.HC_MEMORY_OP, None)] == 1


def test_pv_guest_cannot_write_trace_records():
    s = synth.Sim(ncpus=1)
    s.add_domain(3, "pv", homes=[0])
    with pytest.raises(ValueError):
        s.guest_trace(3, synth.GT_HELLO, [synth.GT_MAGIC, 1])
