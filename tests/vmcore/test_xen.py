"""Xen: xl dump-core files (HVM and PV) built by the test writer, and the Xen views (log events, grant
frames, shared_info) on known content."""

from __future__ import annotations

import struct

import pytest
from vmcore_writers import PS, Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf, write_xc_core

from tracelens.errors import FormatError
from tracelens.parsers import vmcore
from tracelens.parsers.vmcore import xen

V1_FRAME_PFN = 0x1C0
V2_FRAME_PFN = 0x1C1
VMCI_PFN = 0x1D0


def _grant_v1() -> bytes:
    page = bytearray(PS)
    entries = {
        0: (0x1, 0, 0x1F0),  # console ring, permit_access to dom0
        1: (0x1, 0, 0x1F1),  # xenstore
        8: (0x1 | 0x8 | 0x10, 0, 0x150),  # mapped by the backend for reading and writing
        9: (0x1 | 0x4 | 0x8, 0, 0x151),  # read-only grant, mapped for reading
        10: (0x2, 0, 0),  # accept_transfer
        11: (0x1, 3, 0x152),  # granted to dom3, not mapped
    }
    for ref, (flags, domid, frame) in entries.items():
        struct.pack_into("<HHI", page, ref * 8, flags, domid, frame)
    return bytes(page)


def _grant_v2() -> bytes:
    page = bytearray(PS)
    struct.pack_into("<HHIQ", page, 0, 0x1, 0, 0, 0x123456789)  # full_page
    struct.pack_into("<HHHHQ", page, 16, 0x1 | 0x100, 1, 128, 256, 0x4242)  # sub_page
    struct.pack_into("<HHHHI", page, 32, 0x3, 2, 7, 0, 99)  # transitive: trans_domid 7, gref 99
    return bytes(page)


def _shared_info() -> bytes:
    page = bytearray(PS)
    page[0] = 1  # vcpu 0 upcall pending
    page[64 + 1] = 1  # vcpu 1 upcall masked
    struct.pack_into("<Q", page, 8, 0b11)  # vcpu 0 pending_sel
    struct.pack_into("<I4xQQI", page, 32, 6, 1_000_000, 2_000_000_000, 0x80000000)
    struct.pack_into("<bB", page, 60, -1, 1)
    pend = 2048
    mask = 2560
    for port in (3, 64):
        page[pend + port // 8] |= 1 << (port % 8)
    for port in (5, 64):
        page[mask + port // 8] |= 1 << (port % 8)
    struct.pack_into("<IIII", page, 3072, 2, 1700000000, 500, 0)
    struct.pack_into("<Q", page, 3088, 0x40000)
    return bytes(page)


@pytest.fixture(scope="module")
def guest():
    mem = Memory(ram=[(0x100, 0x200), (0x300, 0x310)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0)
    add_lockless_ring(k, [
        LogRec(1_000, b"Hypervisor detected: Xen HVM"),
        LogRec(2_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7),
        LogRec(3_000, b"xen:grant_table: Grant tables using version 1 layout"),
        LogRec(4_000, b"xen:balloon: Initialising balloon driver"),
        LogRec(5_000, b"xen:events: Using FIFO-based ABI"),
        LogRec(6_000, b"xen map irq failed -22", level=4),
        LogRec(7_000, b"xen:manage: Ignoring shutdown request: halt"),
        LogRec(8_000, b"Kernel panic - not syncing: sysrq triggered crash", level=0),
        LogRec(9_000, b"ordinary line"),
    ])
    for pfn in range(0x300, 0x310):
        mem.write(pfn * PS, bytes((pfn * 3 + i) & 0xFF for i in range(PS)))
    mem.write(V1_FRAME_PFN * PS, _grant_v1())
    mem.write(V2_FRAME_PFN * PS, _grant_v2())
    return mem, k


@pytest.mark.parametrize("hvm", [True, False])
def test_xc_core_roundtrip(guest, tmp_path, hvm):
    mem, k = guest
    p = tmp_path / "guest.core"
    write_xc_core(p, mem, hvm=hvm, vcpus=((0xFFFFFFFF81000010, k.pgd_pa), (0xFFFFFFFF81000020, k.pgd_pa)), shared_info=_shared_info())
    assert vmcore.dump_kind(p.read_bytes()[:4096]) == "xc_core"
    with vmcore.open(p) as d:
        assert d.kind == "xc_core" and d.guest_type == ("HVM" if hvm else "PV")
        assert d.header["xen_version"] == "4.17.3-pre"
        assert d.page_counts() == {"present": 0x110, "zero": 0, "excluded": 0, "lost": 0, "invalid": 0}
        for pfn in mem.ram_pfns():
            assert d.read_page(pfn) == mem.content(pfn)
        with pytest.raises(vmcore.PageUnavailable):
            d.read_page(0x250)  # between the two RAM ranges
        v = d.vcpus().to_pylist()
        assert [r["rip"] for r in v] == [0xFFFFFFFF81000010, 0xFFFFFFFF81000020]
        assert all(r["online"] and r["cr3"] == k.pgd_pa for r in v)
        assert d.shared_info_page == _shared_info()
        if hvm:
            assert d.p2m() is None
            # no VMCOREINFO: the HVM vCPU's CR3 is the page-table root
            assert d.read_virt(k.VMALLOC_VA, 8) == mem.read(k.vmalloc_target_pa, 8)
        else:
            p2m = d.p2m().to_pylist()
            assert p2m[0] == {"pfn": 0x100, "gmfn": 0x100 + 0x100000}
        info = d.info()
        assert info["guest_type"] == d.guest_type and info["vcpus"] == 2 and info["shared_info"] is True


def test_xc_core_dmesg_through_a_vmcoreinfo_page_scan(guest, tmp_path):
    mem, k = guest
    mem2 = Memory(ram=list(mem.ram), pages={p: bytearray(v) for p, v in mem.pages.items()})
    mem2.write(VMCI_PFN * PS, k.vmcoreinfo(crashtime=None))
    p = tmp_path / "guest.core"
    write_xc_core(p, mem2, vcpus=((0xFFFFFFFF81000010, k.pgd_pa),))
    with vmcore.open(p) as d:
        assert not d.vmcoreinfo
        log = d.kernel_log()
        assert d.vmcoreinfo.osrelease == "6.1.0-test" and d.vmcoreinfo_source == "page scan"
    assert log.render().splitlines()[0] == b"[    0.000001] Hypervisor detected: Xen HVM"


def test_xc_core_damage(guest, tmp_path):
    mem, k = guest
    p = tmp_path / "guest.core"
    write_xc_core(p, mem)
    good = p.read_bytes()
    p.write_bytes(good[: len(good) - 3 * PS - 5])
    with vmcore.open(p) as d:
        assert d.complete is False
        assert d.page_counts()["lost"] == 4
    bad = bytearray(good)
    notes_off = good.index(b"Xen\0", 64) - 12  # the first note header
    # corrupt the DUMPCORE_HEADER magic
    hdr = good.index(struct.pack("<Q", 0xF00FEBEE))
    bad[hdr : hdr + 8] = struct.pack("<Q", 0x1234)
    p.write_bytes(bad)
    with pytest.raises(FormatError, match="magic 0x1234"):
        vmcore.open(p)
    assert notes_off > 0
    # a fuzzing find: a .xen_pages sh_offset near 2^64 overflowed numpy's int64 while listing pages
    p.write_bytes(good)
    with vmcore.open(p) as d:
        sh_offset_at = d.sections[".xen_pages"]["header_offset"] + 24
    bad = bytearray(good)
    struct.pack_into("<Q", bad, sh_offset_at, 0xFFFFFFFF00002000)
    p.write_bytes(bad)
    with pytest.raises(FormatError, match="not a file offset") as e:
        vmcore.open(p)
    assert e.value.offset == sh_offset_at


def test_log_events(guest, tmp_path):
    mem, k = guest
    vmci = k.vmcoreinfo()
    p = tmp_path / "g.elf"
    write_elf(p, mem, standard_notes(vmci))
    with vmcore.open(p) as d:
        ev = xen.log_events(d).to_pylist()
    assert [e["event"] for e in ev] == ["hypervisor_detected", "pirq_mapped", "grant_table_version", "balloon_init",
                                        "evtchn_abi", "pirq_map_failed", "shutdown_request", "panic"]
    pirq = ev[1]
    assert (pirq["pirq"], pirq["irq"], pirq["gsi"], pirq["level"], pirq["category"]) == (16, 8, 8, 7, "pirq")
    assert ev[2]["version"] == 2 - 1 and ev[2]["category"] == "grant-table"
    assert ev[4]["detail"] == "abi=FIFO-based"
    assert ev[5]["rc"] == -22 and ev[5]["category"] == "pirq-error"
    assert ev[0]["detail"] == "mode=HVM"
    assert ev[6]["detail"] == "message=Ignoring shutdown request: halt"


@pytest.mark.parametrize("text, event", [
    ("xen:grant_table: Grant tables using version 2 layout", "grant_table_version"),
    ("Grant tables using version 1 layout.", "grant_table_version"),
    ("xen_balloon: Initialising balloon driver.", "balloon_init"),
    ("xen:balloon: Cannot add additional memory (-17)", "balloon"),
    ("xen:events: Failed to bind pirq 17", "evtchn_error"),
    ("xen: registering gsi 9 triggering 0 polarity 0", "gsi_registered"),
    ("Xen HVM callback vector for event delivery is enabled", "hvm_callback_vector"),
    ("Booting paravirtualized kernel on Xen HVM", "booting_on_xen"),
    ("kexec_core: Starting new kernel", "kexec"),
    ("xenbus_probe_frontend: Device with no driver: device/vkbd/0", "xenbus"),
    ("ACPI: Interpreter disabled.", None),
    ("xenial is not a xen line", None),
])
def test_message_shapes(text, event):
    hit = xen.classify(text)
    assert (hit[0] if hit else None) == event


def test_grant_frames_decode_and_scan(guest, tmp_path):
    mem, k = guest
    p = tmp_path / "g.elf"
    write_elf(p, mem, standard_notes(k.vmcoreinfo()))
    with vmcore.open(p) as d:
        assert xen.find_grant_frames(d) == [V1_FRAME_PFN]
        g = xen.grant_entries(d, [V1_FRAME_PFN]).to_pylist()
        by_ref = {e["ref"]: e for e in g}
        assert sorted(by_ref) == [0, 1, 8, 9, 10, 11]
        assert by_ref[8]["in_use"] and by_ref[8]["reading"] and by_ref[8]["writing"] and not by_ref[8]["readonly"]
        assert by_ref[9]["in_use"] and by_ref[9]["readonly"] and not by_ref[9]["writing"]
        assert not by_ref[11]["in_use"] and by_ref[11]["domid"] == 3 and by_ref[11]["frame"] == 0x152
        assert by_ref[10]["type"] == "accept_transfer" and not by_ref[10]["in_use"]
        assert by_ref[0]["frame"] == 0x1F0 and by_ref[0]["type"] == "permit_access"
        g2 = xen.grant_entries(d, [V1_FRAME_PFN, V2_FRAME_PFN], version=2).to_pylist()
        v2 = [e for e in g2 if e["pfn"] == V2_FRAME_PFN]
        assert [e["ref"] for e in v2] == [256, 257, 258]  # frame 1 of a v2 table starts at ref 256
        assert v2[0]["frame"] == 0x123456789 and v2[0]["page_off"] is None
        assert (v2[1]["page_off"], v2[1]["length"], v2[1]["frame"]) == (128, 256, 0x4242)
        assert v2[2]["type"] == "transitive" and v2[2]["frame"] == 99
        assert not any(e["in_use"] for e in v2)  # v2 keeps reading/writing in separate status frames


def test_shared_info_decode(guest, tmp_path):
    mem, k = guest
    p = tmp_path / "guest.core"
    write_xc_core(p, mem, shared_info=_shared_info())
    with vmcore.open(p) as d:
        si = xen.shared_info(d.shared_info_page)
    v = si["vcpus"].to_pylist()
    assert (v[0]["upcall_pending"], v[0]["upcall_mask"], v[0]["pending_sel"]) == (1, 0, 3)
    assert (v[0]["time_version"], v[0]["tsc_timestamp"], v[0]["system_time_ns"], v[0]["tsc_to_system_mul"], v[0]["tsc_shift"]) == (6, 1_000_000, 2_000_000_000, 0x80000000, -1)
    assert (v[1]["upcall_pending"], v[1]["upcall_mask"]) == (0, 1)
    assert si["ports"].to_pylist() == [
        {"port": 3, "pending": True, "masked": False},
        {"port": 5, "pending": False, "masked": True},
        {"port": 64, "pending": True, "masked": True},
    ]
    assert si["wallclock"] == {"version": 2, "sec": 1700000000, "nsec": 500, "updating": False}
    assert si["arch"]["max_pfn"] == 0x40000
    with pytest.raises(ValueError):
        xen.shared_info(b"short")


def test_cli_dmesg_xen_events(guest, tmp_path, capsys):
    import json

    from tracelens import cli
    mem, k = guest
    p = tmp_path / "g.elf"
    write_elf(p, mem, standard_notes(k.vmcoreinfo()))
    assert cli.main(["dmesg", str(p), "--xen", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in rows][:2] == ["hypervisor_detected", "pirq_mapped"]
    assert rows[1]["pirq"] == 16
    assert cli.main(["dmesg", str(p), "--xen"]) == 0
    assert "pirq_mapped" in capsys.readouterr().out


def test_docs_list_every_recognised_shape():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "vmcore.md").read_text()
    for name, category, _ in xen.LOG_EVENTS:
        assert f"| `{name}` | {category} |" in doc, name


def test_xen_hypervisor_kdump_notes(guest, tmp_path):
    """A Xen crash dump: per physical CPU CORE + Xen CRASH_REGS notes, CRASH_INFO (80-byte version) on CPU 0,
    VMCOREINFO_XEN padded with NULs."""
    from vmcore_writers import note, prstatus

    mem, k = guest
    info = struct.pack("<8Q", 4, 17, 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0) + struct.pack("<QQ", 0x80000000, 0x12345)
    notes = (prstatus(0, {"rip": 1}) + note(b"Xen", 0x1000002, struct.pack("<4Q", 0x80050033, 0, 0x7FF000, 0x3506F0))
             + note(b"Xen", 0x1000001, info)
             + prstatus(0, {"rip": 2}) + note(b"Xen", 0x1000002, struct.pack("<4Q", 0x80050033, 0x10, 0x7FE000, 0x3506F0))
             + note(b"VMCOREINFO_XEN", 0, b"PAGESIZE=4096\nSYMBOL(domain_list)=ffff82d080500000\n" + bytes(4000)))
    p = tmp_path / "xen.elf"
    write_elf(p, mem, notes)
    with vmcore.open(p) as d:
        t = d.xen_notes().to_pylist()
        names = [n.type_name for n in d.notes]
        assert d.vmcoreinfo_xen.symbol("domain_list") == 0xFFFF82D080500000 and not d.vmcoreinfo
    assert names.count("XEN_ELFNOTE_CRASH_REGS") == 2 and "VMCOREINFO_XEN" in names
    regs = [r for r in t if r["note"] == "CRASH_REGS"]
    assert [(r["cpu"], r["cr3"]) for r in regs] == [(0, 0x7FF000), (1, 0x7FE000)]
    ci = [r for r in t if r["note"] == "CRASH_INFO"][0]
    assert (ci["xen_major_version"], ci["xen_minor_version"], ci["xen_phys_start"], ci["dom0_pfn_to_mfn_frame_list_list"]) == (4, 17, 0x80000000, 0x12345)
