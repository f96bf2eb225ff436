"""The analysis on the two real captures of ../shared/samples/xentrace-real (skipped when absent).

Facts from their README and spec §7: neither holds grant, balloon or soft-reset activity; the HVM capture has
VMMCALL eax 24 (vcpu_op) x1697 and 32 (event_channel_op) x106, from its only HVM guest, domain 14."""

from __future__ import annotations

from tracelens.analysis.api import analyze


def test_hvm_capture(real_xentrace_dir):
    a = analyze(real_xentrace_dir / "hvm-credit2-8cpu.bin")
    assert a.records == 180_680 and a.lost.shape[0] == 0
    assert a.boundaries == [] and a.findings == [] and a.balloon == [] and a.grants.rows == []
    got = {(h["source"], h["op"], h["domid"]): h["count"] for h in a.hypercalls}
    assert got == {("hvm", 24, 14): 1697, ("hvm", 32, 14): 106}
    assert [(s["domid"], s["epoch"], s["verdict"]) for s in a.safety] == [(14, 0, "safe")]


def test_sched_only_capture(real_xentrace_dir):
    a = analyze(real_xentrace_dir / "sched-rtds-pre48.bin")
    assert a.records == 5_730
    assert a.boundaries == [] and a.findings == [] and a.hypercalls == [] and a.safety == []
