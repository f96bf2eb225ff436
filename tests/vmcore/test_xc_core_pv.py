"""Kernel-virtual reads on Xen PV ``xl dump-core`` files: the guest's page tables hold machine frames (MFNs), the
dump is addressed by pfn, and .xen_p2m maps pfn -> MFN. The page tables below are built by hand, entry by entry,
with MFNs from a scrambled (but known) p2m, so a reader that used the frames as pfns, or the p2m the wrong way
round, reads the wrong page or fails."""

from __future__ import annotations

import struct

import pytest
from vmcore_writers import PS, START_KERNEL_MAP, Memory, write_xc_core

from tracelens.errors import FormatError
from tracelens.parsers import vmcore

RAM = (0x100, 0x140)
PGD, PUD, PMD, PTE, PMD_BAD = 0x100, 0x101, 0x102, 0x103, 0x104  # page-table pages (pfns)
DATA = {0x120: b"first PV page", 0x121: b"second PV page", 0x130: b"2 MiB page target"}
VA = 0xFFFFC90000000000  # vmalloc: PGD 402, PUD 0, PMD 0, PTE 0/1
VA_UNMAPPED = VA + 2 * PS  # PTE slot 2 is empty
VA_FOREIGN = VA + 3 * PS  # PTE slot 3 holds an MFN the dump does not have
VA_BAD_TABLE = VA + (1 << 21)  # PMD slot 1 -> a page table at an unknown MFN
VA_LARGE = VA + (2 << 21)  # PMD slot 2 -> a 2 MiB page at machine frames 0x80000..0x801ff
LARGE_BASE_MFN = 0x80000  # 512-frame aligned, as a PSE entry requires
FOREIGN_MFN = 0xDEAD0
CR3_PCID = 0x5  # low CR3 bits (PCID) that must be masked


def mfn_of(pfn: int) -> int:
    """A bijection of the RAM pfns onto scattered MFNs (37 is prime to 64, so no two pfns share a frame); pfn
    0x130 is the 6th frame of the 2 MiB machine page."""
    if pfn == 0x130:
        return LARGE_BASE_MFN + 5
    i = pfn - RAM[0]
    return 0x5000 + ((i * 37) % 64) * 3


def entry(mfn: int, flags: int = 0x63) -> bytes:
    return struct.pack("<Q", (mfn << 12) | flags)


def build(tmp_path, *, name="pv.core", cr3_mfn=None):
    mem = Memory(ram=[RAM])
    p2m = {pfn: mfn_of(pfn) for pfn in range(*RAM)}
    w = lambda pfn, idx, data: mem.write(pfn * PS + idx * 8, data)  # noqa: E731
    w(PGD, (VA >> 39) & 0x1FF, entry(mfn_of(PUD)))
    w(PUD, (VA >> 30) & 0x1FF, entry(mfn_of(PMD)))
    w(PMD, (VA >> 21) & 0x1FF, entry(mfn_of(PTE)))
    w(PMD, (VA_BAD_TABLE >> 21) & 0x1FF, entry(FOREIGN_MFN + 1))
    w(PMD, (VA_LARGE >> 21) & 0x1FF, entry(LARGE_BASE_MFN, 0xE3))  # PSE
    w(PTE, 0, entry(mfn_of(0x120)))
    w(PTE, 1, entry(mfn_of(0x121)))
    w(PTE, 3, entry(FOREIGN_MFN))
    for pfn, text in DATA.items():
        mem.write(pfn * PS, text)
    # the kernel's own view of pfn 0x122 (through its image mapping, pseudo-physical like the PV __pa)
    mem.write(0x122 * PS, b"kernel image bytes")
    cr3 = ((cr3_mfn if cr3_mfn is not None else mfn_of(PGD)) << 12) | CR3_PCID
    p = tmp_path / name
    write_xc_core(p, mem, hvm=False, vcpus=((0xFFFFFFFF81000010, cr3),), p2m=p2m)
    return p, mem, p2m


def test_pv_walk_from_cr3(tmp_path):
    p, mem, p2m = build(tmp_path)
    with vmcore.open(p) as d:
        assert d.guest_type == "PV" and d.pte_frames == "machine"
        assert d.machine_to_pfn(mfn_of(0x120)) == 0x120 and d.machine_to_pfn(FOREIGN_MFN) is None
        assert d.read_virt(VA, 13) == b"first PV page"
        assert d.read_virt(VA + PS + 7, 7) == b"PV page"
        # a read spanning the two pages: each translated on its own
        assert d.read_virt(VA + PS - 3, 8) == mem.read(0x120 * PS + PS - 3, 3) + mem.read(0x121 * PS, 5)
        assert d.virt_to_phys(VA + 5) == 0x120 * PS + 5
        # a 2 MiB page: the target is the 4 KiB machine frame at that offset, mapped back to its pfn
        assert d.read_virt(VA_LARGE + 5 * PS, 17) == b"2 MiB page target"
        with pytest.raises(FormatError, match=f"machine frame 0x{LARGE_BASE_MFN:x}"):
            d.read_virt(VA_LARGE, 8)  # the first frame of that machine page is in no pfn of the dump


def test_pv_errors(tmp_path):
    p, _, _ = build(tmp_path)
    with vmcore.open(p) as d:
        with pytest.raises(FormatError, match="not mapped"):
            d.read_virt(VA_UNMAPPED, 8)
        with pytest.raises(FormatError, match=f"machine frame 0x{FOREIGN_MFN:x}.*not in the dump") as e:
            d.read_virt(VA_FOREIGN, 8)
        # the offset names the PTE in the file: the PTE page's slot in .xen_pages, entry 3
        pte_page = d._lookup(PTE)[1]
        assert e.value.offset == pte_page + 3 * 8
        raw = p.read_bytes()
        assert raw[e.value.offset : e.value.offset + 8] == entry(FOREIGN_MFN)
        with pytest.raises(FormatError, match=f"machine frame 0x{FOREIGN_MFN + 1:x}"):
            d.read_virt(VA_BAD_TABLE, 8)


def test_pv_cr3_not_in_the_dump(tmp_path):
    p, _, _ = build(tmp_path, cr3_mfn=0x77777)
    with vmcore.open(p) as d:
        with pytest.raises(FormatError, match="CR3 machine frame 0x77777"):
            d.read_virt(VA, 8)


def test_pv_with_vmcoreinfo_root_and_kernel_image(tmp_path):
    """With VMCOREINFO the root is SYMBOL(init_top_pgt) through the kernel-image mapping (pseudo-physical); the
    entries are still machine frames; kernel-image addresses need no page tables."""
    p, mem, _ = build(tmp_path)
    vmci = (f"OSRELEASE=6.1.0-pv\nPAGESIZE=4096\nSYMBOL(init_top_pgt)={START_KERNEL_MAP + PGD * PS:x}\n"
            "NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=0\n")
    with vmcore.open(p, vmcoreinfo=vmci) as d:
        assert d.read_virt(VA + PS, 14) == b"second PV page"
        assert d.read_virt(START_KERNEL_MAP + 0x122 * PS, 18) == b"kernel image bytes"


def test_hvm_is_unchanged(tmp_path):
    """HVM entries are guest-physical: the same hand-built tables read as pfns give other pages (or none)."""
    mem = Memory(ram=[RAM])
    w = lambda pfn, idx, data: mem.write(pfn * PS + idx * 8, data)  # noqa: E731
    w(PGD, (VA >> 39) & 0x1FF, entry(PUD))
    w(PUD, (VA >> 30) & 0x1FF, entry(PMD))
    w(PMD, (VA >> 21) & 0x1FF, entry(PTE))
    w(PTE, 0, entry(0x120))
    mem.write(0x120 * PS, b"hvm page")
    p = tmp_path / "hvm.core"
    write_xc_core(p, mem, hvm=True, vcpus=((0xFFFFFFFF81000010, PGD * PS),))
    with vmcore.open(p) as d:
        assert d.pte_frames == "physical"
        assert d.read_virt(VA, 8) == b"hvm page"


def test_cli_read_virtual_pv(tmp_path, capsysbinary):
    from tracelens import cli
    p, _, _ = build(tmp_path)
    rc = cli.main(["read", str(p), hex(VA), "13", "--virtual", "--raw"])
    out, err = capsysbinary.readouterr()
    assert rc == 0 and out == b"first PV page", err
    rc = cli.main(["read", str(p), hex(VA_FOREIGN), "8", "--virtual"])
    out, err = capsysbinary.readouterr()
    assert rc == 3 and err.count(b"\n") == 1 and b"Traceback" not in err
    assert err.startswith(f"tracelens: error: {p}: at byte ".encode()) and b"not in the dump" in err
