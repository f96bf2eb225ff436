"""Kernel virtual -> physical translation on x86_64 without debug info (shared/spec/vmcore.md §4.2-§4.3).

Three recipes, tried in this order:

1. kernel image: VA in [__START_KERNEL_map, + KERNEL_IMAGE_SIZE) -> ``VA - __START_KERNEL_map + phys_base``
   (phys_base from NUMBER(phys_base), else from a kernel-text PT_LOAD, else the kdump sub-header);
2. a 4- or 5-level page-table walk from SYMBOL(init_top_pgt) (or swapper_pg_dir / init_level4_pgt), the root
   turned into a physical address with recipe 1; entries masked with bits 12-51 minus NUMBER(sme_mask);
3. the direct map ``VA - page_offset_base`` when page_offset_base is known from the ELF PT_LOADs and the walk
   cannot be done (no page-table root).

Without VMCOREINFO the walk starts from a CPU's CR3 (QEMU's CPU note, an HVM xl dump-core vCPU), PCID bits off.

Units: addresses are plain Python ints (unsigned 64-bit).
"""

from __future__ import annotations

import struct

from tracelens.errors import FormatError

from . import constants as C

MASK64 = (1 << 64) - 1


class TranslationError(Exception):
    """The address has no mapping (or the page tables needed to find one are not in the dump)."""


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
        if vi:
            for name in ("init_top_pgt", "swapper_pg_dir", "init_level4_pgt"):
                sym = vi.symbol(name)
                if sym is not None and self.in_ktext(sym) and self.phys_base is not None:
                    self.root = self.ktext_to_phys(sym)
                    break
        if self.root is None:
            cr3 = dump.cr3_root()
            if cr3 is not None:
                self.root = cr3 & C.PTE_ADDR_MASK  # PCID bits off
        self.page_offset = dump.page_offset_base

    def in_ktext(self, va: int) -> bool:
        return C.START_KERNEL_MAP <= va < C.START_KERNEL_MAP + self.ktext_size

    def ktext_to_phys(self, va: int) -> int:
        return (va - C.START_KERNEL_MAP + self.phys_base) & MASK64

    def walk(self, va: int) -> int:
        """Page-table walk; raises TranslationError when a level is not present."""
        if self.root is None:
            raise TranslationError("no page-table root (VMCOREINFO lacks SYMBOL(init_top_pgt) or phys_base)")
        table = self.root & self.pte_mask
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        for level, shift in enumerate(shifts):
            idx = (va >> shift) & 0x1FF
            try:
                raw = self.dump.read_phys(table + idx * 8, 8)
            except FormatError as e:
                raise TranslationError(f"page table at 0x{table:x} unreadable: {e.reason}") from None
            entry = struct.unpack("<Q", raw)[0]
            if not entry & C.PTE_PRESENT:
                raise TranslationError(f"0x{va:x} is not mapped (level-{len(shifts) - level} entry not present)")
            remaining = len(shifts) - level
            if entry & C.PTE_PSE and remaining in (2, 3):  # 1 GiB (PUD) or 2 MiB (PMD) page
                page_mask = (1 << shift) - 1
                return ((entry & self.pte_mask) & ~page_mask) | (va & page_mask)
            table = entry & self.pte_mask
        return table | (va & 0xFFF)

    def to_phys(self, va: int) -> int:
        va &= MASK64
        if self.phys_base is not None and self.in_ktext(va):
            return self.ktext_to_phys(va)
        if self.root is not None:
            return self.walk(va)
        if self.page_offset is not None and va >= self.page_offset:
            return va - self.page_offset
        raise TranslationError(f"cannot translate 0x{va:x}: no page-table root and not a kernel-image address")
