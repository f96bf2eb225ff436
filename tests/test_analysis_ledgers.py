"""Boundaries and ledgers against the simulator's truth (tests/synth.py) and, for the grant ledger kernel, against
the pure-Python reference in analysis_reference.py, on many generated captures."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import analysis_reference as ref
import synth
import tracelens
from tracelens.analysis import ledgers as L
from tracelens.analysis.boundaries import find_boundaries, parse_boundary
from tracelens.analysis.records import columns, lost_intervals
from tracelens.errors import UsageError

SEEDS = range(40)


def _decode(sim, tmp_path, name="c.xentrace"):
    path = tmp_path / name
    sim.write(path)
    table = tracelens.read_xentrace(path)
    return table, columns(table)


def _truth_grants(sim):
    out = {}
    for (m, g, e), row in sim.truth.grants.items():
        out[(m, g, e)] = {"maps": row["maps"], "unmaps": row["unmaps"], "late": row["late"]}
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_boundaries_and_grant_ledger_match_truth_and_reference(seed, tmp_path):
    sim = synth.random_scenario(seed)
    table, rec = _decode(sim, tmp_path)
    ep = find_boundaries(rec)
    got_b = [(b.domid, b.epoch, b.kind, b.tsc) for b in ep.boundaries]
    want_b = sorted((b["domid"], b["epoch"], b["kind"], b["tsc"]) for b in sim.truth.boundaries)
    assert got_b == want_b

    led = L.grant_ledger(rec, ep)
    fast = {(r["mapper"], r["granter"], r["epoch"]): r for r in led.rows}
    rows = table.to_pylist()
    slow = ref.grant_ledger(rows, [(b["domid"], b["tsc"]) for b in sim.truth.boundaries])
    assert set(fast) == set(slow)
    for k, s in slow.items():
        f = fast[k]
        assert (f["maps"], f["unmaps"], f["late_unmaps"], f["outstanding_at_boundary"]) == (
            s["maps"], s["unmaps"], s["late"], s["outstanding_at_boundary"]), k
    # the simulator's own counts (kept while emitting)
    truth = _truth_grants(sim)
    for k, t in truth.items():
        f = fast.get(k, {"maps": 0, "unmaps": 0, "late_unmaps": 0})
        assert (f["maps"], f["unmaps"], f["late_unmaps"]) == (t["maps"], t["unmaps"], t["late"]), k
    for k, row in fast.items():
        if row["maps"] or row["unmaps"]:
            assert k in truth
    for (m, g, e), out in sim.truth.outstanding.items():
        assert fast[(m, g, e)]["outstanding_at_boundary"] == out
    # the series ends at each pair's final balance
    s = led.series
    for (m, g, e), row in fast.items():
        if row["outstanding_at_end"] is not None:
            idx = np.flatnonzero((s["mapper"] == (-1 if m is None else m)) & (s["granter"] == g))
            if idx.size:
                assert s["outstanding"][idx[-1]] == row["outstanding_at_end"]


@pytest.mark.parametrize("seed", SEEDS)
def test_balloon_hypercalls_guest_objects_match_truth(seed, tmp_path):
    sim = synth.random_scenario(seed)
    _, rec = _decode(sim, tmp_path)
    ep = find_boundaries(rec)
    hc = L.hypercall_counts(rec, ep)
    got_hc = Counter()
    for h in hc:
        got_hc[(h["domid"], h["epoch"], h["source"], h["op"], h["cmd"])] += h["count"]
    assert got_hc == +sim.truth.hypercalls

    bal = L.balloon_ledger(rec, ep, hypercalls=hc)
    got = {(b["domid"], b["epoch"]): b for b in bal}
    assert set(got) == set(sim.truth.balloon)
    for k, t in sim.truth.balloon.items():
        b = got[k]
        assert (b["extents"], b["pages"]) == (t["extents"], t["pages"])
        assert b["layout"] == ("<4.18" if sim.pre_418 else ">=4.18")
        covered = set()
        for a, z in b["gfn_ranges"]:
            covered.update(range(a, z))
        want = set()
        for gfn, order in t["gfns"]:
            want.update(range(gfn, gfn + (1 << order)))
        assert covered == want

    gl = L.guest_ledger(rec, ep)
    got_refs = {}
    for r in gl.grefs:
        got_refs.setdefault((r["domid"], r["epoch"]), []).append(r["ref"])
    got_pirqs = {}
    for r in gl.pirqs:
        got_pirqs.setdefault((r["domid"], r["epoch"]), []).append(r["pirq"])
    bounded = {(b["domid"], b["epoch"]) for b in sim.truth.boundaries}
    assert {k: sorted(v) for k, v in got_refs.items() if k in bounded} == sim.truth.guest_grefs
    assert {k: sorted(v) for k, v in got_pirqs.items() if k in bounded} == sim.truth.guest_pirqs


def test_lost_intervals_match_truth(tmp_path):
    n = 0
    for seed in SEEDS:
        sim = synth.random_scenario(seed)
        _, rec = _decode(sim, tmp_path, f"{seed}.xentrace")
        got = sorted(map(tuple, lost_intervals(rec).tolist()))
        assert got == sorted(sim.truth.lost)
        n += len(got)
    assert n > 0


# -- boundary rules on hand-built captures ------------------------------------------------------------------------
def _host():
    s = synth.Sim(ncpus=2, seed=3)
    s.add_domain(0, "pv", homes=[0])
    s.add_domain(1, "hvm", homes=[1])
    return s


def test_poweroff_and_reboot_are_not_boundaries(tmp_path):
    s = _host()
    s.shutdown(1, 0)  # poweroff
    s.resume(1)  # (a toolstack that restarts it anyway)
    s.shutdown(1, 1)  # reboot
    s.truth.boundaries.clear()
    s.finish()
    _, rec = _decode(s, tmp_path)
    assert find_boundaries(rec).boundaries == []


def test_shutdown_code_overrides_reason(tmp_path):
    s = _host()
    s.crash(1, code_first=True)  # SHUTDOWN_CODE(3) then SHUTDOWN(0): Xen uses the stored crash code
    s.finish()
    _, rec = _decode(s, tmp_path)
    (b,) = find_boundaries(rec).boundaries
    assert (b.kind, b.evidence["shutdown_record_reason"], b.evidence["reason"]) == ("crash", 0, 3)
    assert b.tsc == s.truth.boundaries[0]["tsc"]


def test_shutdown_then_destroy_is_recreate_not_reset(tmp_path):
    s = _host()
    s.shutdown(1, 5)
    s.destroy(1)
    t = s.create(1, "hvm")
    s.hypercall(1, synth.HC_XEN_VERSION)
    s.finish()
    _, rec = _decode(s, tmp_path)
    bs = find_boundaries(rec).boundaries
    assert [(b.domid, b.epoch, b.kind, b.tsc) for b in bs] == [(1, 0, "recreate", t)]


def test_user_boundaries_are_numbered_with_the_others(tmp_path):
    s = _host()
    s.hypercall(1, synth.HC_XEN_VERSION)
    t0 = s.now
    s.hypercall(1, synth.HC_XEN_VERSION)
    tb = s.soft_reset(1)
    s.finish()
    _, rec = _decode(s, tmp_path)
    ep = find_boundaries(rec, user=[(1, t0), (0, 5)])
    assert [(b.domid, b.epoch, b.kind) for b in ep.boundaries] == [(0, 0, "user"), (1, 0, "user"), (1, 1, "soft_reset")]
    assert ep.of(np.array([1, 1, 1, 7]), np.array([t0 - 1, t0, tb, tb], np.uint64)).tolist() == [0, 1, 2, 0]


def test_parse_boundary():
    assert parse_boundary("3@1000") == (3, 1000)
    assert parse_boundary("0x3@0x10") == (3, 16)
    assert parse_boundary("2@1.5ms", cpu_hz=2.0e9) == (2, 3_000_000)
    assert parse_boundary("2@2s", cpu_hz=1e9) == (2, 2_000_000_000)
    for bad in ("3", "x@5", "3@", "3@abc", "70000@5", "3@-4"):
        with pytest.raises(UsageError):
            parse_boundary(bad)
    with pytest.raises(UsageError, match="needs cpu_hz") as e:
        parse_boundary("1@5ms")
    assert e.value.params == ("boundaries", "cpu_hz")  # the CLI shows them as --boundary and --cpu-hz


def test_pre_418_balloon_layout_without_version_hint(tmp_path):
    sim = synth.scenario_balloon_before_kexec(xen_version="4.17")
    _, rec = _decode(sim, tmp_path)
    ep = find_boundaries(rec)
    (row,) = L.balloon_ledger(rec, ep)
    assert (row["domid"], row["epoch"], row["extents"], row["pages"], row["layout"]) == (1, 0, 7, 518, "<4.18")
    assert row["extents_by_order"] == {"0": 6, "9": 1}
    assert row["gfn_ranges"] == [(0x12340, 0x12346), (0x40000, 0x40200)]


@pytest.mark.parametrize("version, label, orders", [("4.17", "<4.18", {"0": 6, "9": 1}),
                                                    ("4.20", ">=4.18", {"0": 6, "9": 1})])
def test_balloon_layout_from_payloads_alone(version, label, orders, tmp_path):
    """A table without the decoder's layout metadata: the ledger guesses from the DECREASE_RESERVATION payloads with
    the decoder's own rule, and reads domid and order through the catalog's layout of that release."""
    sim = synth.scenario_balloon_before_kexec(xen_version=version)
    _, rec = _decode(sim, tmp_path)
    rec.meta = {}
    assert rec.layout_version is None
    (row,) = L.balloon_ledger(rec, find_boundaries(rec))
    assert (row["domid"], row["extents"], row["pages"], row["layout"]) == (1, 7, 518, label)
    assert row["extents_by_order"] == orders
    assert row["gfn_ranges"] == [(0x12340, 0x12346), (0x40000, 0x40200)]
    # a release given by the caller wins over the payloads: the other packing reads other domids and orders
    other = (4, 18) if label == "<4.18" else (4, 17)
    (row2, *_) = L.balloon_ledger(rec, find_boundaries(rec), xen_version=other)
    assert row2["layout"] != label


@pytest.mark.parametrize("seed", SEEDS)
def test_vector_ledger_matches_truth(seed, tmp_path):
    sim = synth.random_scenario(seed)
    _, rec = _decode(sim, tmp_path)
    got = {r["irq"]: r for r in L.vector_ledger(rec)}
    assert set(got) == set(sim.truth.vectors)
    for irq, t in sim.truth.vectors.items():
        g = got[irq]
        assert (g["assigns"], g["clears"], g["last_vector"], g["handled"]) == (
            t["assigns"], t["clears"], t["last_vector"], t["handled"])


def test_vector_ledger_unpacks_irq_and_vector(tmp_path):
    """Hand-built: irq 0x123 gets vector 0x41, then 0x52 (a move), then is cleared; irq 9 is only delivered."""
    from tracelens.parsers.xentrace.writer import CaptureWriter

    w = CaptureWriter()
    w.record(0, 0x00802006, [0x123 | 0x41 << 16, 1, 0, 0, 0, 0, 0], tsc=100)
    w.record(0, 0x00802006, [0x123 | 0x52 << 16, 2, 0, 0, 0, 0, 0], tsc=200)
    w.record(1, 0x00802008, [9, 5, 6], tsc=250)
    w.record(0, 0x00802004, [0x123 | 0x52 << 16, 2, 0, 0, 0, 0, 0], tsc=300)
    w.write(tmp_path / "v.xentrace")
    rec = columns(tracelens.read_xentrace(tmp_path / "v.xentrace"))
    assert L.vector_ledger(rec) == [
        {"irq": 9, "assigns": 0, "clears": 0, "last_vector": None, "assigned_at_end": False, "handled": 1},
        {"irq": 0x123, "assigns": 2, "clears": 1, "last_vector": 0x52, "assigned_at_end": False, "handled": 0},
    ]


def test_grant_records_after_a_loss_keep_their_mapper(tmp_path):
    """Hand-built: a MAP before any scheduling record has no mapper and is counted apart; dom0 then runs on pCPU 0
    and maps 2 grants of d5; records are lost; the LOST record names dom0's vCPU (Xen's insert_lost_records()
    writes `current`), so the next MAP, before any scheduling record, is still dom0's (docs/xentrace.md rule 4)."""
    from tracelens.parsers.xentrace.writer import CaptureWriter

    w = CaptureWriter()
    w.record(0, 0x0010F001, [5], tsc=5)              # no vCPU known yet
    w.record(0, 0x00021101, [0 << 16 | 0], tsc=10)  # d0v0 runnable -> running
    w.record(0, 0x0010F001, [5], tsc=20)
    w.record(0, 0x0010F001, [5], tsc=30)
    w.lost(0, 7, 0, 0, first_tsc=35, tsc=40)
    w.record(0, 0x0010F001, [5], tsc=50)
    w.record(0, 0x00021002, [0 << 16 | 0], tsc=60)  # continue_running d0v0
    w.record(0, 0x0010F002, [5], tsc=70)
    w.write(tmp_path / "l.xentrace")
    rec = columns(tracelens.read_xentrace(tmp_path / "l.xentrace"))
    ep = find_boundaries(rec)
    led = L.grant_ledger(rec, ep)
    assert led.unattributed == 1
    rows = {(r["mapper"], r["granter"]): (r["maps"], r["unmaps"], r["outstanding_at_end"]) for r in led.rows}
    assert rows == {(0, 5): (3, 1, 2), (None, 5): (1, 0, 1)}


def test_resume_is_the_first_run_after_the_pause(tmp_path):
    """Hand-built: after d1's SHUTDOWN(soft_reset) its vCPU 1 still gets switched in on pCPU 1 (tsc 25) before the
    pause takes it offline (27); the resume is the SWITCH to d1v0 at tsc 40, not the run at 25."""
    from tracelens.parsers.xentrace.writer import CaptureWriter

    w = CaptureWriter()
    w.record(0, 0x00021101, [1 << 16], tsc=10)
    w.record(0, 0x00028007, [1, 0, 5], tsc=20)
    w.record(1, 0x0002800A, [0x7FFF, 1, 1, 1], tsc=25)
    w.record(1, 0x00021031, [1 << 16 | 1], tsc=27)
    w.record(0, 0x0002800A, [0x7FFF, 0, 1, 0], tsc=40)
    w.write(tmp_path / "r.xentrace")
    (b,) = find_boundaries(columns(tracelens.read_xentrace(tmp_path / "r.xentrace"))).boundaries
    assert (b.domid, b.kind, b.tsc, b.evidence["shutdown_tsc"]) == (1, "soft_reset", 40, 20)
    assert "note" not in b.evidence


def test_resume_without_a_visible_pause_is_noted(tmp_path):
    from tracelens.parsers.xentrace.writer import CaptureWriter

    w = CaptureWriter()
    w.record(0, 0x00021101, [1 << 16], tsc=10)
    w.record(0, 0x00028007, [1, 0, 3], tsc=20)
    w.record(0, 0x00021002, [1 << 16], tsc=30)  # continue_running d1v0: no offline transition in between
    w.write(tmp_path / "n.xentrace")
    (b,) = find_boundaries(columns(tracelens.read_xentrace(tmp_path / "n.xentrace"))).boundaries
    assert (b.kind, b.tsc) == ("crash", 30) and "no offline transition" in b.evidence["note"]
