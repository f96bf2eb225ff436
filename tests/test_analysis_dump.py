"""``analyze --vmcore``: a guest dump built with the vmcore test writers (tests/vmcore/vmcore_writers.py), analysed
together with the crash-kdump sample capture. Expectations are the hand-written contents of the dump."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "vmcore"))
import vmcore_writers as vw  # noqa: E402

from tracelens.analysis.analyze import AnalysisConfig, analyze  # noqa: E402
from tracelens.cli import main  # noqa: E402

SAMPLE = TESTS.parent / "sample-traces" / "crash-kdump.xentrace"
GRANT_PFN, VMCI_PFN = 0x1C0, 0x1D0


def _guest():
    mem = vw.Memory(ram=[(0x100, 0x200)])
    k = vw.Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    vw.add_lockless_ring(k, [
        vw.LogRec(1_000, b"Hypervisor detected: Xen HVM"),
        vw.LogRec(2_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7),
        vw.LogRec(3_000, b"xen:grant_table: Grant tables using version 1 layout"),
        vw.LogRec(4_000, b"an ordinary line"),
        vw.LogRec(5_000, b"Kernel panic - not syncing: sysrq triggered crash", level=0),
    ])
    page = bytearray(vw.PS)
    for ref, (flags, domid, frame) in {
        0: (0x1, 0, 0x1F0), 1: (0x1, 0, 0x1F1),  # console and xenstore: reserved refs, not counted
        8: (0x1 | 0x8 | 0x10, 0, 0x150), 9: (0x1 | 0x4 | 0x8, 0, 0x151),  # mapped by dom0 (Xen's reading/writing)
        11: (0x1, 3, 0x152), 12: (0x1, 0, 0x153),  # granted, not mapped
    }.items():
        struct.pack_into("<HHI", page, ref * 8, flags, domid, frame)
    mem.write(GRANT_PFN * vw.PS, bytes(page))
    return mem, k


def _shared_info() -> bytes:
    page = bytearray(vw.PS)
    for port in (3, 64):  # pending
        page[2048 + port // 8] |= 1 << (port % 8)
    for port in (5, 64):  # masked
        page[2560 + port // 8] |= 1 << (port % 8)
    return bytes(page)


def test_kdump_elf_dump_with_the_crash_capture(tmp_path):
    mem, k = _guest()
    dump = tmp_path / "d1.vmcore"
    vw.write_elf(dump, mem, vw.standard_notes(k.vmcoreinfo()))
    a = analyze(SAMPLE, AnalysisConfig(vmcore=str(dump)))
    got = {(f.rule, f.domid, f.epoch, f.object) for f in a.findings}
    assert got == {("TL-GNT-001", 1, 0, "mapper:d0"), ("TL-GNT-002", 1, 1, "mapper:d0"),
                   ("TL-DMP-001", 1, 0, "mapper:d0"), ("TL-DMP-002", 1, 0, "pirq:16")}
    dv = a.dump
    assert (dv["domid"], dv["epoch"], dv["kind"]) == (1, 0, "elf-vmcore")
    assert "crash boundary" in dv["assumption"]
    assert [e["event"] for e in dv["log_events"]] == ["hypervisor_detected", "pirq_mapped", "grant_table_version",
                                                       "panic"]
    assert dv["grant_frames"] == [GRANT_PFN] and dv["grants_granted"] == 4
    assert [g["ref"] for g in dv["grants_in_use"]] == [8, 9]
    f1 = next(f for f in a.findings if f.rule == "TL-DMP-001")
    assert f1.evidence["in_use"] == 2 and f1.evidence["trace_outstanding"] == 2 and "as the trace shows" in f1.message
    f2 = next(f for f in a.findings if f.rule == "TL-DMP-002")
    assert (f2.evidence["gsi"], f2.evidence["irq"], f2.evidence["physdev_op_after"]) == (8, 8, 0)
    assert any("shared_info" in n for n in dv["notes"])  # an ELF vmcore has none
    from tracelens.analysis.report import check, to_json_obj

    assert check(json.loads(json.dumps(to_json_obj(a)))) == []


def test_xl_dump_core_pending_ports_and_cli(tmp_path, capsys):
    mem, k = _guest()
    core = tmp_path / "d1.core"
    vw.write_xc_core(core, mem, vcpus=((0xFFFFFFFF81000010, k.pgd_pa),), shared_info=_shared_info())
    out = tmp_path / "r.json"
    assert main(["analyze", str(SAMPLE), "--format", "json", "-o", str(out), "--vmcore", str(core),
                 "--vmcore-dom", "1"]) == 0
    doc = json.loads(out.read_text())
    from tracelens.analysis.report import check

    assert check(doc) == []  # the dump member as the JSON contract has it
    assert doc["dump"]["kind"] == "xc_core" and doc["dump"]["pending_ports"] == [3]
    assert "given with --vmcore-dom" in doc["dump"]["assumption"]
    rules = {(f["rule"], f["object"]) for f in doc["findings"]}
    assert ("TL-DMP-003", "event-channels") in rules and ("TL-DMP-001", "mapper:d0") in rules
    # without VMCOREINFO the kernel log is out of reach: noted, not fatal, and no PIRQ finding
    assert ("TL-DMP-002", "pirq:16") not in rules
    assert any("kernel log" in n for n in doc["dump"]["notes"])
    assert main(["analyze", str(SAMPLE), "--format", "md", "--vmcore", str(core), "--vmcore-dom", "1"]) == 0
    assert "## Dump (--vmcore)" in capsys.readouterr().out


def test_dump_needs_a_domain_when_ambiguous(tmp_path):
    mem, k = _guest()
    dump = tmp_path / "d.vmcore"
    vw.write_elf(dump, mem, vw.standard_notes(k.vmcoreinfo()))
    other = TESTS.parent / "sample-traces" / "foreign-map.xentrace"  # one soft-reset boundary (d2): its last epoch
    a = analyze(other, AnalysisConfig(vmcore=str(dump)))
    assert a.dump["domid"] == 2 and a.dump["epoch"] == 1 and "no crash boundary" in a.dump["assumption"]
    # d2's grants are not the ones in the dump's table (granted to d0), and the trace has no d0 maps of d2
    f = next(f for f in a.findings if f.rule == "TL-DMP-001")
    assert f.evidence["trace_outstanding"] is None

def test_only_format_errors_become_notes(tmp_path, monkeypatch, capsys):
    """A dump whose kernel log is damaged (a FormatError, the readers' documented error) is a note and the grant
    evidence still counts; an error of any other type is a bug in tracelens: it is not turned into a note that
    silently drops the TL-DMP findings, it reaches the CLI's choke point (exit 70)."""
    from tracelens.cli import main
    from tracelens.errors import EXIT_INTERNAL
    from tracelens.parsers.vmcore import xen

    mem, k = _guest()
    dump = tmp_path / "d1.vmcore"
    vw.write_elf(dump, mem, vw.standard_notes(k.vmcoreinfo()))
    # the damage: a VMCOREINFO that exports no printk buffer (the kernel log is out of reach)
    vmci = k.vmcoreinfo()
    assert b"SYMBOL(prb)=" in vmci
    vmci = vmci.replace(b"SYMBOL(prb)=", b"SYMBOL(prb_gone)=")
    damaged = tmp_path / "damaged.vmcore"
    vw.write_elf(damaged, mem, vw.standard_notes(vmci))
    a = analyze(SAMPLE, AnalysisConfig(vmcore=str(damaged)))
    assert any(n.startswith("kernel log not readable: ") for n in a.dump["notes"]), a.dump["notes"]
    assert {f.rule for f in a.findings} >= {"TL-DMP-001"} and a.dump["log_events"] == []

    def bug(*_a, **_k):
        raise KeyError("a bug")

    for name in ("log_events", "find_grant_frames"):
        with monkeypatch.context() as m:
            m.setattr(xen, name, bug)
            with pytest.raises(KeyError):
                analyze(SAMPLE, AnalysisConfig(vmcore=str(dump)))
            capsys.readouterr()
            assert main(["analyze", str(SAMPLE), "--vmcore", str(dump)]) == EXIT_INTERNAL
            err = capsys.readouterr().err
            assert err.startswith("tracelens: internal error: KeyError") and err.count("\n") == 1
