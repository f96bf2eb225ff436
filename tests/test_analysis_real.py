"""The analysis on the two real captures of ../shared/samples/xentrace-real (skipped when absent).

Facts from their README and spec §7: neither holds grant, balloon or soft-reset activity; the HVM capture has
VMMCALL eax 24 (vcpu_op) x1697 and 32 (event_channel_op) x106, from its only HVM guest, domain 14. Neither has a
MEM record (the RTDS one was recorded with ``-e 0x0002f000``), so no guest can be called safe: ``not covered``,
unless the mask they were recorded with is declared."""

from __future__ import annotations

from tracelens.analysis.analyze import AnalysisConfig, analyze


def test_hvm_capture(real_xentrace_dir):
    a = analyze(real_xentrace_dir / "hvm-credit2-8cpu.bin")
    assert a.records == 180_680 and a.lost.shape[0] == 0
    assert a.boundaries == [] and a.findings == [] and a.balloon == [] and a.grants.rows == []
    got = {(h["source"], h["op"], h["domid"]): h["count"] for h in a.hypercalls}
    assert got == {("hvm", 24, 14): 1697, ("hvm", 32, 14): 106}
    assert [(s["domid"], s["epoch"], s["verdict"], s["not_covered"]) for s in a.safety] == [
        (14, 0, "not covered", ["MEM"])]
    assert a.coverage["uncovered"] == ["MEM"]
    cls = {c["class"]: c["records"] for c in a.coverage["classes"]}
    assert cls["MEM"] == cls["PV"] == 0 and cls["HVM"] > 0 and cls["SCHED"] > 0
    declared = analyze(real_xentrace_dir / "hvm-credit2-8cpu.bin", AnalysisConfig(trace_mask="0x0ffff000"))
    assert [s["verdict"] for s in declared.safety] == ["safe"] and declared.coverage["uncovered"] == []


def test_sched_only_capture(real_xentrace_dir):
    a = analyze(real_xentrace_dir / "sched-rtds-pre48.bin")
    assert a.records == 5_730
    assert a.boundaries == [] and a.findings == [] and a.hypercalls == []
    # guest d2 runs (runstate records) but nothing about its memory could be recorded
    assert [(s["domid"], s["verdict"]) for s in a.safety] == [(2, "not covered")]
    assert {c["class"] for c in a.coverage["classes"] if c["records"]} == {"GEN", "SCHED"}
    # the mask it was really recorded with (sched only) does not make it covered
    assert analyze(real_xentrace_dir / "sched-rtds-pre48.bin",
                   AnalysisConfig(trace_mask="sched")).safety[0]["verdict"] == "not covered"
