"""``tracelens gate CAPTURE --vmcore DUMP``: the dump's TL-DMP-* findings are gated like the capture's; a dump that
cannot be read makes the result unreadable (exit 3). The dump is built with the vmcore test writers."""

from __future__ import annotations

import json
import struct
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from test_gate_support import CLEAN, invoke, sample

sys.path.insert(0, str(Path(__file__).resolve().parent / "vmcore"))
import vmcore_writers as vw  # noqa: E402

GRANT_PFN = 0x1C0


def guest_dump(path: Path) -> Path:
    """An ELF vmcore of d1 whose kernel mapped PIRQ 16 and whose grant table has refs 8 and 9 mapped by dom0."""
    mem = vw.Memory(ram=[(0x100, 0x200)])
    k = vw.Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    vw.add_lockless_ring(k, [vw.LogRec(1_000, b"Hypervisor detected: Xen HVM"),
                             vw.LogRec(2_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7)])
    page = bytearray(vw.PS)
    for ref, (flags, domid, frame) in {
        0: (0x1, 0, 0x1F0), 1: (0x1, 0, 0x1F1),  # console and xenstore: reserved refs
        8: (0x1 | 0x8 | 0x10, 0, 0x150), 9: (0x1 | 0x4 | 0x8, 0, 0x151),  # mapped by dom0 (reading/writing)
        11: (0x1, 3, 0x152), 12: (0x1, 0, 0x153),  # granted, not mapped
    }.items():
        struct.pack_into("<HHI", page, ref * 8, flags, domid, frame)
    mem.write(GRANT_PFN * vw.PS, bytes(page))
    vw.write_elf(path, mem, vw.standard_notes(k.vmcoreinfo()))
    return path


def test_dump_findings_are_gated(tmp_path, capsys):
    cap = sample(tmp_path, "crash-kdump.xentrace")
    dump = guest_dump(tmp_path / "d1.vmcore")
    out = tmp_path / "g.jsonl"
    code, text, _ = invoke(["--vmcore", dump, "--json", out, cap], capsys)
    assert code == 1
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    got = {(r["rule"], r["domid"], r["epoch"], r["object"], r["blocking"]) for r in rows if r["type"] == "finding"}
    assert got == {("TL-GNT-001", 1, 0, "mapper:d0", True), ("TL-GNT-002", 1, 1, "mapper:d0", False),
                   ("TL-DMP-001", 1, 0, "mapper:d0", True), ("TL-DMP-002", 1, 0, "pirq:16", False)}
    assert "crash boundary" in text  # the dump's attribution is shown
    import junitparser
    code, _, _ = invoke(["--vmcore", dump, "--junit", tmp_path / "g.xml", cap], capsys)
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "g.xml"))
    case = {c.name.split(":")[0]: c for c in suite}
    assert [type(r) for r in case["TL-DMP-001"].result] == [junitparser.Failure]  # checked, with --vmcore
    assert case["TL-DMP-003"].is_passed and case["TL-DMP-002"].is_passed
    # the policy applies to dump findings as to any other
    pol = tmp_path / "p.toml"
    until = (date.today() + timedelta(days=5)).isoformat()
    pol.write_text("".join(f'[[gate.allow]]\nrule = "{r}"\ndomid = 1\nreason = "known blkback leak"\n'
                           f"expires = {until}\n" for r in ("TL-GNT-001", "TL-DMP-001")))
    assert invoke(["--policy", pol, "--vmcore", dump, cap], capsys)[0] == 0
    assert invoke(["--policy", pol, "--vmcore", dump, "--fail-on", "warning", cap], capsys)[0] == 1


def test_unreadable_dump_is_exit_3(tmp_path, capsys):
    junk = tmp_path / "junk.vmcore"
    junk.write_bytes(b"\x7fELF" + b"\x00" * 60)
    code, text, _ = invoke(["--vmcore", junk, sample(tmp_path, CLEAN)], capsys)
    assert code == 3 and "UNREADABLE" in text and "junk.vmcore" in text
    code, text, _ = invoke(["--vmcore", tmp_path / "absent.vmcore", sample(tmp_path, CLEAN)], capsys)
    assert code == 3 and "absent.vmcore" in text and "UNREADABLE" in text


def test_vmcore_usage(tmp_path, capsys):
    dump = guest_dump(tmp_path / "d1.vmcore")
    code, _, err = invoke(["--vmcore", dump, sample(tmp_path, CLEAN), sample(tmp_path, "crash-kdump.xentrace")],
                          capsys)
    assert code == 2 and "--vmcore goes with one capture" in err
    code, _, err = invoke(["--vmcore-dom", "1", sample(tmp_path, CLEAN)], capsys)
    assert code == 2 and "--vmcore-dom needs --vmcore" in err
