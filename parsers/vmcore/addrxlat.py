"""Kernel virtual -> physical translation on x86_64 without debug info (shared/spec/vmcore.md §4.2-§4.3).

Three recipes, tried in this order:

1. kernel image: VA in [__START_KERNEL_map, + KERNEL_IMAGE_SIZE) -> ``VA - __START_KERNEL_map + phys_base``
   (phys_base from NUMBER(phys_base), else from a kernel-text PT_LOAD, else the kdump sub-header);
2. a 4- or 5-level page-table walk from SYMBOL(init_top_pgt) (or swapper_pg_dir / init_level4_pgt), the root
   turned into a physical address with recipe 1; entries masked with bits 12-51 minus NUMBER(sme_mask);
3. the direct map ``VA - page_offset_base`` when page_offset_base is known from the ELF PT_LOADs and the walk
   cannot be done (no page-table root).

Without VMCOREINFO the walk starts from a CPU's CR3 (QEMU's CPU note, an xl dump-core vCPU), PCID bits off.

Xen PV guests (xl dump-core with ``.xen_p2m``): the guest's page-table entries and its CR3 hold *machine* frames
(MFNs), while the dump is addressed by pseudo-physical frame (pfn). The dump then says ``pte_frames ==
"machine"`` and supplies ``machine_to_pfn(mfn)`` (the inverted p2m); every frame read from an entry (and a CR3
root) is turned back into a pfn before it is read, and a frame the p2m does not list is a TranslationError naming
the entry's byte offset in the file. The kernel-image and direct-map recipes stay pseudo-physical, as the PV
kernel's own ``__pa`` is.

Units: addresses are plain Python ints (unsigned 64-bit).
"""

from __future__ import annotations

from tracelens.errors import FormatError

from . import constants as C

MASK64 = (1 << 64) - 1


class TranslationError(Exception):
    """The address has no mapping (or the page tables needed to find one are not in the dump). ``offset``: the
    byte offset in the dump file of the entry at fault, when known."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


class KernelTranslator:
    def __init__(self, dump):
        self.dump = dump
        vi = dump.vmcoreinfo
        self.phys_base = dump.phys_base  # may be None
        size = vi.number("KERNEL_IMAGE_SIZE") if vi else None
        self.ktext_size = size or C.KERNEL_IMAGE_SIZE_DEFAULT
        self.levels = 5 if (vi and vi.number("pgtable_l5_enabled") == 1) else 4
        sme = vi.number("sme_mask") if vi else None
        self.pte_mask = C.PTE_ADDR_MASK & ~(sme or 0)
        self.root = None
        #: True when page-table entries hold machine frames (Xen PV): translate them through the inverted p2m
        self.machine = getattr(dump, "pte_frames", "physical") == "machine"
        if vi:
            for name in ("init_top_pgt", "swapper_pg_dir", "init_level4_pgt"):
                sym = vi.symbol(name)
                if sym is not None and self.in_ktext(sym) and self.phys_base is not None:
                    self.root = self.ktext_to_phys(sym)
                    break
        if self.root is None:
            cr3 = dump.cr3_root()
            if cr3 is not None:
                cr3 &= C.PTE_ADDR_MASK  # PCID bits off
                if self.machine:  # a PV CR3 is a machine address (xen_pfn_to_cr3: mfn << 12 on x86_64)
                    pfn = dump.machine_to_pfn(cr3 >> 12)
                    if pfn is not None:
                        self.root = pfn << 12
                    else:
                        self._root_error = f"the vCPU's CR3 machine frame 0x{cr3 >> 12:x} is not in the dump's p2m"
                else:
                    self.root = cr3
        self.page_offset = dump.page_offset_base

    def in_ktext(self, va: int) -> bool:
        return C.START_KERNEL_MAP <= va < C.START_KERNEL_MAP + self.ktext_size

    def ktext_to_phys(self, va: int) -> int:
        return (va - C.START_KERNEL_MAP + self.phys_base) & MASK64

    def walk(self, va: int) -> int:
        """Page-table walk; raises TranslationError when a level is not present."""
        if self.root is None:
            raise TranslationError(getattr(self, "_root_error", None)
                                   or "no page-table root (VMCOREINFO lacks SYMBOL(init_top_pgt) or phys_base)")
        table = self.root & self.pte_mask
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        for level, shift in enumerate(shifts):
            idx = (va >> shift) & 0x1FF
            try:
                raw = self.dump.read_phys(table + idx * 8, 8)
            except FormatError as e:
                raise TranslationError(f"page table at 0x{table:x} unreadable: {e.reason}") from None
            entry = int.from_bytes(raw, "little")  # a u64 page-table entry
            remaining = len(shifts) - level
            if not entry & C.PTE_PRESENT:
                raise TranslationError(f"0x{va:x} is not mapped (level-{remaining} entry not present)")
            entry_pa = table + idx * 8
            if entry & C.PTE_PSE and remaining in (2, 3):  # 1 GiB (PUD) or 2 MiB (PMD) page
                page_mask = (1 << shift) - 1
                target = ((entry & self.pte_mask) & ~page_mask) | (va & page_mask)
                return self._machine_to_phys(target, entry_pa, remaining) if self.machine else target
            table = entry & self.pte_mask
            if self.machine:
                table = self._machine_to_phys(table, entry_pa, remaining)
        return table | (va & 0xFFF)

    def _machine_to_phys(self, maddr: int, entry_pa: int, level: int) -> int:
        """A machine address read from the level-``level`` entry at pseudo-physical ``entry_pa`` -> pseudo-physical."""
        pfn = self.dump.machine_to_pfn(maddr >> 12)
        if pfn is None:
            hit = self.dump._lookup(entry_pa >> 12)
            where = hit[1] + (entry_pa & 0xFFF) if hit and hit[1] is not None and hit[1] >= 0 else None
            raise TranslationError(
                f"the level-{level} page-table entry at pseudo-physical 0x{entry_pa:x} holds machine frame "
                f"0x{maddr >> 12:x}, which the dump's p2m (.xen_p2m) does not list: that frame is not in the dump",
                where,
            )
        return (pfn << 12) | (maddr & 0xFFF)

    def to_phys(self, va: int) -> int:
        va &= MASK64
        if self.phys_base is not None and self.in_ktext(va):
            return self.ktext_to_phys(va)
        if self.root is not None:
            return self.walk(va)
        if self.page_offset is not None and va >= self.page_offset:
            return va - self.page_offset
        why = getattr(self, "_root_error", None) or "no page-table root"
        raise TranslationError(f"cannot translate 0x{va:x}: {why}, and not a kernel-image address")
