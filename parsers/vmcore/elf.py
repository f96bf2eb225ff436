"""ELF64 vmcore reader: kernel /proc/vmcore (kexec-tools or kexec_file_load headers), makedumpfile -E, QEMU
dump-guest-memory (shared/spec/vmcore.md §1; ELF64 ehdr/phdr layouts from the ELF gABI).

* Program headers are found through e_phoff (QEMU puts section headers first: e_phoff 192), and e_phnum ==
  PN_XNUM (0xffff) means the count is in section header 0's sh_info.
* PT_LOAD [p_paddr, p_paddr + p_memsz) maps physical memory; bytes past p_filesz are *excluded* (makedumpfile -E
  filtering). Segments with p_offset = all-ones or p_filesz = p_memsz = 0 hold nothing (QEMU non-RAM blocks,
  the zeroed phdrs after a makedumpfile ENOSPC).
* The kernel-text PT_LOAD (p_vaddr >= __START_KERNEL_map) overlaps a RAM segment with the same bytes; RAM segments
  win, the text segment only fills pfns no RAM segment covers. It also gives phys_base
  (``p_paddr - (p_vaddr - __START_KERNEL_map)``). Direct-map RAM segments give page_offset_base
  (``p_vaddr - p_paddr``; QEMU writes p_vaddr = p_paddr or 0 there, which is never used as a VA).
* e_flags bit 0 (DUMP_ELF_INCOMPLETE) marks an incomplete makedumpfile dump; data past the end of a truncated file
  is *lost*.
"""

from __future__ import annotations

import bisect

from tracelens.errors import FormatError

from . import constants as C
from . import structs as S
from .dump import INDEX_BATCH, DumpReader, IndexBatch
from .notes import MAX_NOTE_BYTES, MAX_NOTES, parse_notes

#: largest note area accepted, all PT_NOTE segments together (notes.MAX_NOTE_BYTES)
MAX_NOTE_AREA = MAX_NOTE_BYTES
#: physical addresses above 2^52 do not exist on x86_64
MAX_PHYS = 1 << 52
#: a dump may list any number of pages up to this (4 GiB of 4 KiB pages) ...
MAX_PLAIN_PAGES = 1 << 20
#: ... and beyond it at most this many pages per page of file: an unfiltered dump stores every page it lists, and
#: makedumpfile -E -d 31 of a big host leaves out most of memory, but not a thousand pages for each one it keeps
#: (the real -d 31 sample keeps one page in three). A larger claim is a damaged p_memsz, and listing it page by
#: page would not end.
EXCLUDED_RATIO = 1024


def parse_ehdr(source) -> dict:
    """The ELF64 header (structs.ELF64_EHDR members) of a core file."""
    path = source.path
    ident = source.pread(0, S.ELF_IDENT.size)
    if len(ident) < S.ELF_IDENT.size or not ident.startswith(C.ELF_MAGIC):
        raise FormatError(path, 0, "not an ELF file")
    ei = S.ELF_IDENT.unpack(ident)
    if ei["ei_class"] == C.ELFCLASS32:
        raise S.member_error(source, S.ELF_IDENT, 0, "ei_class",
                             "32-bit ELF dumps (ELFCLASS32, e.g. QEMU dumps of 32-bit guests) are not supported")
    if ei["ei_class"] != C.ELFCLASS64:
        raise S.member_error(source, S.ELF_IDENT, 0, "ei_class", f"unknown ELF class {ei['ei_class']}")
    if ei["ei_data"] != C.ELFDATA2LSB:
        raise S.member_error(source, S.ELF_IDENT, 0, "ei_data",
                             "big-endian ELF dumps are not supported (x86_64 dumps are little-endian)")
    eh = S.read_struct(source, S.ELF64_EHDR, 0)
    if eh["e_type"] != C.ET_CORE:
        raise S.member_error(source, S.ELF64_EHDR, 0, "e_type", f"ELF type {eh['e_type']} is not ET_CORE (4): not a core dump")
    return eh


def read_section_headers(source, eh: dict) -> list[dict]:
    """The section headers (structs.ELF64_SHDR members, plus ``header_offset``: where each header is)."""
    if eh["e_shoff"] == 0:
        return []
    if eh["e_shentsize"] != S.ELF64_SHDR.size:
        raise S.member_error(source, S.ELF64_EHDR, 0, "e_shentsize",
                             f"e_shentsize {eh['e_shentsize']}, expected {S.ELF64_SHDR.size}")
    shnum = eh["e_shnum"]
    if shnum == 0:  # real count in sh_size of section 0 (> 0xff00 sections)
        shnum = S.read_struct(source, S.ELF64_SHDR, eh["e_shoff"], "section header 0")["sh_size"]
    if shnum * S.ELF64_SHDR.size > source.size:
        raise S.member_error(source, S.ELF64_EHDR, 0, "e_shnum",
                             f"{shnum} section headers cannot fit in a file of {source.size} bytes")
    out = S.read_structs(source, S.ELF64_SHDR, eh["e_shoff"], shnum, "section header table")
    for i, sh in enumerate(out):
        sh["header_offset"] = eh["e_shoff"] + i * S.ELF64_SHDR.size
    return out


class ElfDump(DumpReader):
    kind = "elf-vmcore"

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        path = self.path
        eh = parse_ehdr(source)
        self.header = {"e_machine": eh["e_machine"], "e_flags": eh["e_flags"], "e_phoff": eh["e_phoff"]}
        self.complete = not (eh["e_flags"] & C.ELF_INCOMPLETE_FLAG) and source.complete
        phnum = eh["e_phnum"]
        if phnum == C.PN_XNUM:
            shdrs = read_section_headers(source, eh)
            if not shdrs:
                raise S.member_error(source, S.ELF64_EHDR, 0, "e_phnum",
                                     "e_phnum is PN_XNUM but there is no section header 0 with the count")
            phnum = shdrs[0]["sh_info"]
        if phnum == 0:
            raise S.member_error(source, S.ELF64_EHDR, 0, "e_phnum",
                                 "no program headers: not a vmcore (an xl dump-core file has sections only)")
        if eh["e_phentsize"] != S.ELF64_PHDR.size:
            raise S.member_error(source, S.ELF64_EHDR, 0, "e_phentsize",
                                 f"e_phentsize {eh['e_phentsize']}, expected {S.ELF64_PHDR.size}")
        phdrs = S.read_structs(source, S.ELF64_PHDR, eh["e_phoff"], phnum, f"program header table ({phnum} entries)")
        loads = []
        note_areas: list[tuple[int, int, int]] = []  # [start, end) and the phdr's offset, of each PT_NOTE
        note_bytes = 0
        for i, ph in enumerate(phdrs):
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = (
                ph["p_type"], ph["p_offset"], ph["p_vaddr"], ph["p_paddr"], ph["p_filesz"], ph["p_memsz"])
            where = eh["e_phoff"] + i * S.ELF64_PHDR.size

            def field_error(member, message):
                return S.member_error(source, S.ELF64_PHDR, where, member, message)

            if p_type == C.PT_NOTE:
                if p_offset + p_filesz > source.size or p_filesz > MAX_NOTE_AREA:
                    raise field_error("p_offset", f"PT_NOTE of {p_filesz} bytes at byte {p_offset} runs past the end of the file")
                # the limits hold for the file, not per PT_NOTE: 200 headers over one area are 200 times the notes
                if p_filesz:
                    j = bisect.bisect_right(note_areas, (p_offset, 1 << 64))
                    for a, b, w in note_areas[max(0, j - 1) : j + 1]:  # the areas are disjoint and sorted
                        if p_offset < b and a < p_offset + p_filesz:
                            raise field_error("p_offset", f"PT_NOTE [{p_offset}, {p_offset + p_filesz}) overlaps the "
                                                  f"PT_NOTE at byte {w} [{a}, {b}): a damaged program header")
                    note_areas.insert(j, (p_offset, p_offset + p_filesz, where))
                note_bytes += p_filesz
                if note_bytes > MAX_NOTE_AREA:
                    raise field_error("p_filesz", f"PT_NOTE segments hold {note_bytes:,} bytes of notes, more than "
                                          f"{MAX_NOTE_AREA:,}: a damaged program header table")
                notes, bad = parse_notes(source.pread(p_offset, p_filesz), p_offset, path=path,
                                         max_notes=MAX_NOTES - len(self.notes))
                self.notes.extend(notes)
                if bad is not None and not notes:
                    raise FormatError(path, p_offset + bad, "damaged ELF note header (name or desc runs past the PT_NOTE)")
            elif p_type == C.PT_LOAD:
                if p_memsz == 0 and p_filesz == 0:
                    continue  # zeroed phdr (makedumpfile ENOSPC) or an empty block
                if p_offset == 0xFFFFFFFFFFFFFFFF:
                    continue  # QEMU: a block not backed by RAM in the file
                if p_filesz > p_memsz:  # the ELF rule every producer follows (readelf reports it as an error)
                    raise field_error("p_filesz", f"PT_LOAD p_filesz 0x{p_filesz:x} is larger than its p_memsz "
                                          f"0x{p_memsz:x}: a damaged program header")
                if p_paddr + p_memsz > MAX_PHYS:
                    raise field_error("p_paddr", f"PT_LOAD at physical 0x{p_paddr:x} + 0x{p_memsz:x} is beyond 2^52")
                if p_offset > (1 << 62):
                    raise field_error("p_offset", f"PT_LOAD p_offset 0x{p_offset:x} is not a file offset")
                loads.append((p_paddr, p_memsz, p_offset, p_filesz, p_vaddr))
        if not loads:
            raise FormatError(path, eh["e_phoff"], "no PT_LOAD segments: the dump holds no memory")
        # memory past p_filesz is listed page by page (excluded); a p_memsz that claims far more memory than any
        # filtering leaves out is damage, and would make the page index endless
        claimed = sum(-(-m // self.page_size) for _p, m, _o, _f, _v in loads)
        limit = max(MAX_PLAIN_PAGES, EXCLUDED_RATIO * -(-source.size // self.page_size))
        if claimed > limit:
            big = max(range(phnum), key=lambda i: phdrs[i]["p_memsz"] if phdrs[i]["p_type"] == C.PT_LOAD else -1)
            raise S.member_error(source, S.ELF64_PHDR, eh["e_phoff"] + big * S.ELF64_PHDR.size, "p_memsz",
                                 f"PT_LOAD segments claim {claimed:,} pages of memory for a file of {source.size:,} bytes "
                                 f"(more than {EXCLUDED_RATIO}x the file and more than {MAX_PLAIN_PAGES:,} pages): a damaged p_memsz")
        self.segments = loads
        ktext = [s for s in loads if s[4] >= C.START_KERNEL_MAP]
        ram = [s for s in loads if s[4] < C.START_KERNEL_MAP]
        if ktext:
            s = ktext[0]
            self._ktext_phys_base = (s[0] - (s[4] - C.START_KERNEL_MAP)) & (2**64 - 1)
            if self._ktext_phys_base >= 1 << 63:
                self._ktext_phys_base -= 1 << 64
        # direct map: the p_vaddr - p_paddr shared by the most memory (QEMU paging-mode dumps also carry
        # vmalloc and vmemmap mappings, whose deltas differ; kexec-tools' RAM segments all share one)
        weight: dict[int, int] = {}
        for s in ram:
            if s[4] >= (1 << 63) and s[4] != s[0]:
                weight[s[4] - s[0]] = weight.get(s[4] - s[0], 0) + s[1]
        if weight:
            self.page_offset_base = max(weight, key=weight.get)
        self._build_runs(ram, ktext)
        self._finish_init()

    def _build_runs(self, ram, ktext) -> None:
        """Paint pfn runs -> segment, RAM segments first (earlier wins), then kernel-text segments."""
        ps = self.page_size
        covered_lo: list[int] = []
        covered_hi: list[int] = []
        runs: list[tuple[int, int, tuple]] = []
        for seg in sorted(ram, key=lambda s: s[0]) + ktext:
            paddr, memsz = seg[0], seg[1]
            lo, hi = paddr // ps, -(-(paddr + memsz) // ps)
            pieces = [(lo, hi)]
            i = bisect.bisect_right(covered_hi, lo)
            while i < len(covered_lo) and covered_lo[i] < hi:
                clo, chi = covered_lo[i], covered_hi[i]
                new = []
                for a, b in pieces:
                    if chi <= a or clo >= b:
                        new.append((a, b))
                        continue
                    if a < clo:
                        new.append((a, clo))
                    if chi < b:
                        new.append((chi, b))
                pieces = new
                i += 1
            for a, b in pieces:
                if a < b:
                    j = bisect.bisect_left(covered_lo, a)
                    covered_lo.insert(j, a)
                    covered_hi.insert(j, b)
                    runs.append((a, b, seg))
        runs.sort(key=lambda r: r[0])
        self._runs = runs
        self._run_starts = [r[0] for r in runs]

    def _rows(self, lo: int, hi: int, seg) -> IndexBatch:
        import numpy as np

        ps = self.page_size
        paddr, memsz, p_offset, filesz, _ = seg
        pfn = np.arange(lo, hi, dtype=np.uint64)
        start = pfn.astype(np.int64) * ps
        file_end = paddr + filesz
        s_lo = np.maximum(start, paddr)
        s_hi = np.minimum(start + ps, file_end)
        size = np.maximum(s_hi - s_lo, 0)
        stored = size > 0
        offset = np.where(stored, p_offset + (s_lo - paddr), -1).astype(np.int64)
        state = np.where(stored, C.STATE_PRESENT, C.STATE_EXCLUDED).astype(np.uint8)
        lost = stored & (offset + size > self.source.size)
        state[lost] = C.STATE_LOST
        lead = np.where(stored, s_lo - start, 0).astype(np.uint32)
        return IndexBatch(pfn, offset, size.astype(np.uint32), np.zeros(len(pfn), np.uint8), state, lead)

    def _index_batches(self, batch: int = INDEX_BATCH):
        for lo, hi, seg in self._runs:
            for a in range(lo, hi, batch):
                yield self._rows(a, min(hi, a + batch), seg)

    def _lookup(self, pfn: int):
        i = bisect.bisect_right(self._run_starts, pfn) - 1
        if i < 0:
            return None
        lo, hi, seg = self._runs[i]
        if pfn >= hi:
            return None
        return self._row_one(pfn, seg)

    def _row_one(self, pfn: int, seg):
        """The scalar twin of ``_rows`` for one pfn (page reads need no numpy): (state, offset, size, 0, lead)."""
        ps = self.page_size
        paddr, memsz, p_offset, filesz, _ = seg
        start = pfn * ps
        s_lo = max(start, paddr)
        size = max(min(start + ps, paddr + filesz) - s_lo, 0)
        if not size:
            return C.STATE_EXCLUDED, -1, 0, 0, 0
        offset = p_offset + (s_lo - paddr)
        state = C.STATE_LOST if offset + size > self.source.size else C.STATE_PRESENT
        return state, offset, size, 0, s_lo - start

    def _load(self, pfn, offset, size, comp, lead):
        if not self.source.covered(offset, size):
            raise self._unavailable(pfn, "lost", offset, "its bytes are missing from the file")
        return super()._load(pfn, offset, size, comp, lead)

    def segments_table(self):
        """PT_LOAD segments: paddr, memsz, offset, filesz, vaddr (pyarrow Table, uint64)."""
        import pyarrow as pa

        cols = list(zip(*self.segments)) if self.segments else [[]] * 5
        return pa.table({name: pa.array(col, pa.uint64()) for name, col in zip(("paddr", "memsz", "offset", "filesz", "vaddr"), cols)})
