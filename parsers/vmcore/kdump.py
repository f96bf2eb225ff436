"""makedumpfile kdump-compressed ("KDUMP   ", and the older "DISKDUMP") reader (shared/spec/vmcore.md §2;
makedumpfile diskdump_mod.h).

Layout: disk_dump_header (block 0), kdump_sub_header + ELF notes (block 1..), the 1st bitmap (RAM pfns) and the
2nd bitmap (dumpable pfns), one 24-byte page_desc per set 2nd-bitmap bit in pfn order, then page data. A pfn's
descriptor is ``page_desc_start + 24 * (rank(pfn) - rank(start_pfn))``; ranks come from a prefix popcount kept
every 4096 pfns (the 2nd bitmap stays in memory, the descriptor table is read in chunks through a bounded cache).

Page states: a 2nd-bitmap bit -> the descriptor decides (offset 0 or data past EOF: ``lost``; pointing at the
shared zero page at the start of the data area: ``zero``; size 0, size > block, a raw page not a block long, more
than one codec bit, or data inside the headers: ``invalid``; else ``present``). A 1st-bitmap bit without a 2nd:
``excluded``. Neither bit: a hole. The header checks (block size, bitmap size vs max_mapnr, every region inside the
file, the first data offset vs the descriptor count) raise FormatError with the offending byte offset.
"""

from __future__ import annotations

from collections import OrderedDict

from tracelens.errors import FormatError

from . import constants as C
from . import structs as S
from .dump import INDEX_BATCH, DumpReader, IndexBatch
from .notes import parse_notes

#: pfns per prefix-count block (crash's BITMAP_SECT_LEN)
RANK_BLOCK = 4096
DESC_CHUNK = 4096
DESC_CACHE_CHUNKS = 16
MAX_NOTES = 64 << 20


_DESC_STRUCT = S.PAGE_DESC.struct  # offset, size, flags, page_flags: tuples on the per-page path


def rank_prefix(bitmap: bytes) -> list[int]:
    """Set bits of ``bitmap`` (LSB-first bytes) before each RANK_BLOCK-pfn block: entry k = rank(k * RANK_BLOCK).
    Pure Python (int.bit_count), so opening a dump and reading pages needs no numpy."""
    step = RANK_BLOCK // 8
    out = [0]
    total = 0
    for i in range(0, len(bitmap), step):
        total += int.from_bytes(bitmap[i : i + step], "little").bit_count()
        out.append(total)
    return out


def _desc_dtype():
    return S.PAGE_DESC.dtype()


def parse_header(source) -> dict:
    path = source.path
    if source.pread(0, 8) not in (C.KDUMP_SIGNATURE, C.DISKDUMP_SIGNATURE):
        raise FormatError(path, 0, "not a kdump-compressed file (no 'KDUMP   ' signature)")
    h = S.read_struct(source, S.DISK_DUMP_HEADER, 0)
    uts = {k: h[k].split(b"\0")[0].decode("ascii", "replace") for k in S.UTSNAME_FIELDS}
    return dict(
        signature=h["signature"].decode("ascii"), header_version=h["header_version"], utsname=uts,
        timestamp=h["tv_sec"], status=h["status"], block_size=h["block_size"], sub_hdr_size=h["sub_hdr_size"],
        bitmap_blocks=h["bitmap_blocks"], max_mapnr=h["max_mapnr"], nr_cpus=h["nr_cpus"], current_cpu=h["current_cpu"],
    )


def _header_error(source, member: str, message: str):
    """A bad disk_dump_header member, reported at its offset."""
    return S.member_error(source, S.DISK_DUMP_HEADER, 0, member, message)


def _sub_header_error(source, block_size: int, member: str, message: str):
    """A bad kdump_sub_header member (block 1), reported at its offset."""
    return S.member_error(source, S.KDUMP_SUB_HEADER, block_size, member, message)


class KdumpDump(DumpReader):
    kind = "kdump"

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        path = self.path
        h = parse_header(source)
        self.header = h
        bs = h["block_size"]
        if bs < 512 or bs > (1 << 20) or bs & (bs - 1):
            raise _header_error(source, "block_size", f"block_size {bs} is not a power of two between 512 and 1 MiB")
        self.page_size = bs
        fsize = source.size
        if h["sub_hdr_size"] < 0 or (1 + h["sub_hdr_size"]) * bs > fsize:
            raise _header_error(source, "sub_hdr_size",
                                f"sub_hdr_size {h['sub_hdr_size']} blocks runs past the end of the file ({fsize} bytes)")
        if h["signature"] == "KDUMP   ":
            self.complete = not (h["status"] & C.DUMP_DH_COMPRESSED_INCOMPLETE) and source.complete
            codec_bits = h["status"] & C.CODEC_MASK
            self.compression = "+".join(name for bit, name in C.CODEC_BITS.items() if codec_bits & bit) or "none"
        else:  # old RH diskdump: status 1 = incomplete, 8 = compressed (zlib)
            self.complete = not (h["status"] & 1) and source.complete
            self.compression = "zlib" if h["status"] & 8 else "none"
        self._raw_runs = self.compression == "none"  # see DumpReader.read_phys: compressed pages are read one by one
        self._read_sub_header(h)
        max_mapnr = h["max_mapnr_64"] if h.get("max_mapnr_64") else h["max_mapnr"]
        self.max_mapnr = max_mapnr
        self._setup_bitmaps(h)
        self._setup_descriptors(h)
        self._finish_init()

    # -- headers ----------------------------------------------------------------------------------------------
    def _read_sub_header(self, h) -> None:
        path, bs, v = self.path, h["block_size"], h["header_version"]
        # a sub-header cut short by the end of the file reads as zeros (its members then say "nothing there")
        sub = S.KDUMP_SUB_HEADER.unpack(self.source.pread(bs, S.KDUMP_SUB_HEADER.size).ljust(S.KDUMP_SUB_HEADER.size, b"\0"))
        for name, value in sub.items():
            if v >= S.KDUMP_SUB_HEADER_SINCE[name]:
                h[name] = value
        if v >= 1:
            self._header_phys_base = h["phys_base"]
        if v >= 6 and h.get("split"):
            h["start_pfn"], h["end_pfn"] = h["start_pfn_64"], h["end_pfn_64"]
        fsize = self.source.size
        if v >= 4 and h.get("size_note"):
            off, size = h["offset_note"], h["size_note"]
            if off + size > fsize or size > MAX_NOTES:
                raise _sub_header_error(self.source, bs, "offset_note",
                                        f"ELF notes ({size} bytes at byte {off}) run past the end of the file")
            self.notes, bad = parse_notes(self.source.pread(off, size), off, path=path)
            if bad is not None and not self.notes:
                raise FormatError(path, off + bad, "damaged ELF note header in the kdump sub-header notes")
        elif v >= 3 and h.get("size_vmcoreinfo"):
            off, size = h["offset_vmcoreinfo"], h["size_vmcoreinfo"]
            if off + size > fsize or size > MAX_NOTES:
                raise _sub_header_error(self.source, bs, "offset_vmcoreinfo",
                                        f"VMCOREINFO ({size} bytes at byte {off}) runs past the end of the file")
            from .vmcoreinfo import VmcoreInfo

            self.vmcoreinfo = VmcoreInfo.parse(self.source.pread(off, size))
        self.eraseinfo = b""
        if v >= 5 and h.get("size_eraseinfo"):
            off, size = h["offset_eraseinfo"], h["size_eraseinfo"]
            if off + size <= fsize and size <= MAX_NOTES:
                self.eraseinfo = self.source.pread(off, size)

    def _setup_bitmaps(self, h) -> None:
        path, bs = self.path, h["block_size"]
        max_mapnr = self.max_mapnr
        bm_blocks = h["bitmap_blocks"]
        self.bitmap_offset = (1 + h["sub_hdr_size"]) * bs
        src = self.source
        if bm_blocks == 0:
            raise _header_error(src, "bitmap_blocks", "bitmap_blocks is 0: no page bitmap")
        if max_mapnr <= 0:
            raise _header_error(src, "max_mapnr", "max_mapnr is 0: the dump describes no memory")
        if self.bitmap_offset + bm_blocks * bs > self.source.size:
            raise _header_error(src, "bitmap_blocks", f"the bitmaps ({bm_blocks} blocks at byte {self.bitmap_offset}) run "
                                                      f"past the end of the file ({self.source.size} bytes)")
        need = -(-max_mapnr // 8)
        both = bm_blocks >= 2 * -(-need // bs)
        half = bm_blocks * bs // 2 if both else bm_blocks * bs
        if need > half:
            raise _header_error(src, "max_mapnr",
                                f"max_mapnr {max_mapnr} needs a {need}-byte bitmap but each bitmap has {half} bytes")
        self._bm1b = self.source.pread(self.bitmap_offset, need)
        self._bm2_rel = half if both else 0  # the 2nd bitmap's offset from the 1st
        self._bm2b = self.source.pread(self.bitmap_offset + self._bm2_rel, need)
        self.desc_start = (1 + h["sub_hdr_size"] + bm_blocks) * bs
        self._prefix = rank_prefix(self._bm2b)
        if h.get("split"):
            self.start_pfn = int(h.get("start_pfn") or 0)
            self.end_pfn = min(int(h.get("end_pfn") or max_mapnr), max_mapnr)
        else:
            self.start_pfn, self.end_pfn = 0, max_mapnr

    def _rank(self, pfn: int) -> int:
        """Set bits of the 2nd bitmap below ``pfn``."""
        blk = min(pfn // RANK_BLOCK, len(self._prefix) - 1)
        r = self._prefix[blk]
        b0 = blk * (RANK_BLOCK // 8)
        b1 = pfn >> 3
        if b1 > b0:
            r += int.from_bytes(self._bm2b[b0:b1], "little").bit_count()
        if (pfn & 7) and b1 < len(self._bm2b):
            r += (self._bm2b[b1] & ((1 << (pfn & 7)) - 1)).bit_count()
        return r

    def _setup_descriptors(self, h) -> None:
        path = self.path
        self._rank_base = self._rank(self.start_pfn)
        self.num_dumpable = self._rank(self.end_pfn) - self._rank_base
        self.data_start = self.desc_start + S.PAGE_DESC.size * self.num_dumpable
        self._desc_cache: OrderedDict[int, bytes] = OrderedDict()
        fsize = self.source.size
        if self.desc_start > fsize:
            raise FormatError(path, self.desc_start, "the page descriptor table starts past the end of the file")
        if self.data_start > fsize:
            self.complete = False  # the descriptor table itself is cut: the missing descriptors are lost pages
        self.zero_page_offset = None
        first = list(_DESC_STRUCT.iter_unpack(self._desc_chunk(0))) if self.num_dumpable else []
        offs = [d[0] for d in first if self.desc_start <= d[0] < fsize]
        if offs:
            lowest = min(offs)
            # makedumpfile and QEMU put the first page data right after the last descriptor. One damaged
            # descriptor pointing into the table is that page's problem; many, or none at data_start, mean the
            # 2nd bitmap does not count the descriptors that were written.
            inside = sum(1 for o in offs if o < self.data_start)
            if lowest > self.data_start or inside > 1:
                fits = (lowest - self.desc_start) // S.PAGE_DESC.size
                raise FormatError(
                    path, self.desc_start,
                    f"bitmap and page descriptors disagree: the 2nd bitmap has {self.num_dumpable} set bits, so page "
                    f"data should start at byte {self.data_start}, but the first page data is at byte {lowest} "
                    f"(room for {fits} descriptors)",
                )
            if any(d[0] == self.data_start and d[2] == 0 and d[1] == self.page_size for d in first):
                page = self.source.pread(self.data_start, self.page_size)
                if len(page) == self.page_size and not any(page):
                    self.zero_page_offset = self.data_start

    def _desc_chunk(self, c: int) -> bytes:
        """Raw descriptors of chunk ``c`` (DESC_CHUNK ranks), through a bounded cache. Descriptors past the end
        of the file (a cut table) read as zero, i.e. lost."""
        raw = self._desc_cache.get(c)
        if raw is None:
            lo = c * DESC_CHUNK
            hi = min(self.num_dumpable, lo + DESC_CHUNK)
            want = (hi - lo) * S.PAGE_DESC.size
            raw = self.source.pread(self.desc_start + lo * S.PAGE_DESC.size, want)
            raw = raw[: len(raw) - len(raw) % S.PAGE_DESC.size].ljust(want, b"\0")
            self._desc_cache[c] = raw
            if len(self._desc_cache) > DESC_CACHE_CHUNKS:
                self._desc_cache.popitem(last=False)
        else:
            self._desc_cache.move_to_end(c)
        return raw

    def _desc_one(self, r: int) -> tuple[int, int, int, int]:
        c, i = divmod(r, DESC_CHUNK)
        return _DESC_STRUCT.unpack_from(self._desc_chunk(c), i * S.PAGE_DESC.size)

    def _descs(self, r0: int, r1: int):
        """Descriptors of ranks [r0, r1) as a numpy structured array (offset, size, flags, page_flags)."""
        import numpy as np

        dt = _desc_dtype()
        if r1 <= r0:
            return np.zeros(0, dt)
        c0, c1 = r0 // DESC_CHUNK, (r1 - 1) // DESC_CHUNK
        raw = b"".join(self._desc_chunk(c) for c in range(c0, c1 + 1))
        base = c0 * DESC_CHUNK
        return np.frombuffer(raw, dt)[r0 - base : r1 - base]

    def _classify(self, d):
        """-> (state, compression code) arrays for descriptors ``d``."""
        import numpy as np

        ps = self.page_size
        n = len(d)
        state = np.full(n, C.STATE_PRESENT, np.uint8)
        comp = np.zeros(n, np.uint8)
        flags = d["flags"]
        codec = flags & C.CODEC_MASK
        for bit, code in C.CODEC_BIT_TO_CODE.items():
            comp[codec == bit] = code
        multi = (codec != 0) & ((codec & (codec - 1)) != 0)
        size = d["size"].astype(np.int64)
        off = d["offset"]
        bad = multi | (size == 0) | (size > ps) | ((codec == 0) & (size != ps)) | ((off > 0) & (off < self.data_start))
        bad |= (flags & ~np.uint32(C.CODEC_MASK)) != 0
        state[bad] = C.STATE_INVALID
        if self.zero_page_offset is not None:
            state[~bad & (off == self.zero_page_offset) & (codec == 0) & (size == ps)] = C.STATE_ZERO
        lost = (off == 0) | (~bad & (off > 0) & (off + size > self.source.size))
        if not self.source.complete and self.source.kind == "flattened":
            # an incomplete stream: data no record delivered is lost
            for i in np.flatnonzero(~lost & (off > 0)).tolist():
                lost[i] = not self.source.covered(int(off[i]), int(size[i]))
        state[lost] = C.STATE_LOST
        return state, comp

    # -- hooks ------------------------------------------------------------------------------------------------
    def _index_batches(self, batch: int = INDEX_BATCH):
        import numpy as np

        bm1 = np.frombuffer(self._bm1b, np.uint8)
        bm2 = np.frombuffer(self._bm2b, np.uint8)
        bpb = max(1, batch // 8)  # bitmap bytes per batch
        b_start = self.start_pfn >> 3
        b_end = -(-self.end_pfn // 8)
        rank = self._rank(self.start_pfn & ~7) - self._rank_base
        for b0 in range(b_start, b_end, bpb):
            b1 = min(b_end, b0 + bpb)
            bits1 = np.unpackbits(bm1[b0:b1], bitorder="little").astype(bool)
            bits2 = np.unpackbits(bm2[b0:b1], bitorder="little").astype(bool)
            base = b0 * 8
            pfn_all = np.arange(base, base + len(bits2), dtype=np.uint64)
            inrange = (pfn_all >= self.start_pfn) & (pfn_all < self.end_pfn)
            # ranks below start_pfn inside the first byte are not this file's
            pre = int(np.count_nonzero(bits2 & (pfn_all < self.start_pfn)))
            bits1 &= inrange
            bits2 &= inrange
            listed = bits1 | bits2
            k = int(np.count_nonzero(bits2))
            r0 = rank + pre
            rank += pre + k
            if not listed.any():
                continue
            pfn = pfn_all[listed]
            dumpable = bits2[listed]
            n = len(pfn)
            offset = np.full(n, -1, np.int64)
            size = np.zeros(n, np.uint32)
            comp = np.zeros(n, np.uint8)
            state = np.full(n, C.STATE_EXCLUDED, np.uint8)
            if k:
                d = self._descs(r0, r0 + k)
                st, cp = self._classify(d)
                idx = np.flatnonzero(dumpable)
                offset[idx] = d["offset"]
                size[idx] = d["size"]
                comp[idx] = cp
                state[idx] = st
            yield IndexBatch(pfn, offset, size, comp, state, None)

    def _lookup(self, pfn: int):
        if pfn < self.start_pfn or pfn >= self.end_pfn:
            return None
        byte, bit = pfn >> 3, pfn & 7
        if not (self._bm2b[byte] >> bit) & 1:
            if (self._bm1b[byte] >> bit) & 1:
                return C.STATE_EXCLUDED, -1, 0, 0, 0
            return None
        r = self._rank(pfn) - self._rank_base
        off, size, flags, _ = self._desc_one(r)
        return self._classify_one(off, size, flags) + (off, size, C.CODEC_BIT_TO_CODE.get(flags & C.CODEC_MASK, 0), 0)

    def _classify_one(self, off: int, size: int, flags: int) -> tuple[int]:
        """The state of one descriptor (the scalar twin of ``_classify``; test_kdump_state_twins compares them)."""
        ps = self.page_size
        codec = flags & C.CODEC_MASK
        bad = (codec & (codec - 1)) != 0 or size == 0 or size > ps or (codec == 0 and size != ps) or 0 < off < self.data_start or flags & ~C.CODEC_MASK
        if off == 0:
            return (C.STATE_LOST,)
        if not bad and off + size > self.source.size:
            return (C.STATE_LOST,)
        if not bad and not self.source.complete and self.source.kind == "flattened" and not self.source.covered(off, size):
            return (C.STATE_LOST,)
        if bad:
            return (C.STATE_INVALID,)
        if self.zero_page_offset is not None and off == self.zero_page_offset and codec == 0 and size == ps:
            return (C.STATE_ZERO,)
        return (C.STATE_PRESENT,)

    def _invalid_reason(self, pfn, offset, size, comp) -> str:
        r = self._rank(pfn) - self._rank_base
        d_off, d_size, d_flags, _ = self._desc_one(r)
        where = self.desc_start + S.PAGE_DESC.size * r
        if d_size > self.page_size:
            why = f"size {d_size} is larger than a block ({self.page_size}): refused (decompression bomb?)"
        elif d_size == 0:
            why = "size 0"
        elif (d_flags & C.CODEC_MASK) == 0 and d_size != self.page_size:
            why = f"raw page of {d_size} bytes, expected {self.page_size}"
        elif 0 < d_off < self.data_start:
            why = f"data offset {d_off} points into the headers"
        else:
            why = f"flags 0x{d_flags:x} are not one codec bit"
        return f"page descriptor at byte {where}: {why}"

    def info(self) -> dict:
        out = super().info()
        h = self.header
        out.update(
            signature=h["signature"], dump_level=h.get("dump_level"), status=h["status"],
            max_mapnr=self.max_mapnr, dumpable_pages=self.num_dumpable, utsname=h["utsname"],
            split=bool(h.get("split")), start_pfn=self.start_pfn, end_pfn=self.end_pfn,
            header_phys_base=self._header_phys_base,
        )
        return out


def _split_field_offset(part: KdumpDump, name: str) -> int:
    """File offset of a kdump_sub_header field of ``part`` (spec §2.4): where the split range is recorded (the
    64-bit members from header_version 6)."""
    if name != "split" and part.header.get("header_version", 0) >= 6:
        name += "_64"
    return part.page_size + S.KDUMP_SUB_HEADER.offset_of(name)


def check_split_set(parts: list[KdumpDump]) -> None:
    """Raise FormatError (file and byte offset) unless ``parts`` are all the files of one ``makedumpfile --split``
    set, in any order: every part has split = 1, the same block size, max_mapnr, bitmaps and VMCOREINFO (the
    bitmaps describe the whole memory and are copied into every part, so they identify the dump), and the parts' [start_pfn,
    end_pfn) ranges tile [0, max_mapnr) with no gap (a missing part) and no overlap (a part given twice).
    makedumpfile gives the first part start_pfn 0 and the last end_pfn = max_mapnr."""
    for p in parts:
        if not p.header.get("split"):
            raise FormatError(p.path, _split_field_offset(p, "split"),
                              "not part of a --split set (its kdump sub-header has split = 0): open it alone")
    ref = parts[0]
    for p in parts[1:]:
        if p.page_size != ref.page_size:
            raise _header_error(p.source, "block_size",
                                f"block size {p.page_size} differs from {ref.path}'s {ref.page_size}: not the same dump")
        if p.max_mapnr != ref.max_mapnr:
            raise _header_error(p.source, "max_mapnr",
                                f"max_mapnr {p.max_mapnr} differs from {ref.path}'s {ref.max_mapnr}: not the same dump")
        for mine, theirs, base, label in ((p._bm1b, ref._bm1b, p.bitmap_offset, "1st"),
                                          (p._bm2b, ref._bm2b, p.bitmap_offset + p._bm2_rel, "2nd")):
            if mine != theirs:
                i = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
                raise FormatError(p.path, base + i, f"its {label} bitmap differs from {ref.path}'s (pfn {i * 8:#x}..): "
                                  "a part of another dump, not of this --split set")
        if p.vmcoreinfo and ref.vmcoreinfo and p.vmcoreinfo.raw != ref.vmcoreinfo.raw:
            raise FormatError(p.path, p.header.get("offset_vmcoreinfo") or p.page_size,
                              f"its VMCOREINFO differs from {ref.path}'s: a part of another dump, not of this --split set")
    parts = sorted(parts, key=lambda p: (p.start_pfn, p.end_pfn))
    expect = 0
    prev = None
    for p in parts:
        if p.start_pfn > expect:
            where = f"after {prev.path} (which ends at pfn {expect:#x})" if prev else "before it (the set must start at pfn 0)"
            raise FormatError(p.path, _split_field_offset(p, "start_pfn"),
                              f"starts at pfn {p.start_pfn:#x}: the part for pfns [{expect:#x}, {p.start_pfn:#x}) is missing "
                              f"{where}; give every file of the --split set")
        if p.start_pfn < expect:
            raise FormatError(p.path, _split_field_offset(p, "start_pfn"),
                              f"pfn range [{p.start_pfn:#x}, {p.end_pfn:#x}) overlaps {prev.path}'s [{prev.start_pfn:#x}, "
                              f"{prev.end_pfn:#x}) (the same part given twice?)")
        expect = p.end_pfn
        prev = p
    if expect < ref.max_mapnr:
        raise FormatError(prev.path, _split_field_offset(prev, "end_pfn"),
                          f"ends at pfn {expect:#x} but max_mapnr is {ref.max_mapnr:#x}: the part for pfns "
                          f"[{expect:#x}, {ref.max_mapnr:#x}) is missing; give every file of the --split set")


class KdumpSplitSet(DumpReader):
    """A ``makedumpfile --split`` set: N kdump-compressed files with split = 1, each holding the descriptors and
    data of its own [start_pfn, end_pfn) (spec §2.7). Reads dispatch by pfn; notes and VMCOREINFO come from the
    first part; the page index is the parts' indexes in pfn order."""

    kind = "kdump"

    def __init__(self, parts: list[KdumpDump]):
        if not parts:
            raise FormatError("(no files)", None, "a split set needs at least one kdump-compressed part")
        check_split_set(parts)
        parts = sorted(parts, key=lambda p: p.start_pfn)
        first = parts[0]
        super().__init__(first.source)
        self.parts = parts
        self.path = first.path
        self.page_size = first.page_size
        self.notes = first.notes
        self.vmcoreinfo = first.vmcoreinfo
        self.vmcoreinfo_source = getattr(first, "vmcoreinfo_source", None)
        self.header = dict(first.header, parts=len(parts))
        self.compression = first.compression
        self._raw_runs = False  # pages live in several files: read_phys goes page by page, through each part
        self.complete = all(p.complete for p in parts)
        self._header_phys_base = first._header_phys_base
        self._starts = [p.start_pfn for p in parts]

    def _part(self, pfn: int) -> KdumpDump | None:
        import bisect

        i = bisect.bisect_right(self._starts, pfn) - 1
        if i < 0 or pfn >= self.parts[i].end_pfn:
            return None
        return self.parts[i]

    def _index_batches(self, batch: int = INDEX_BATCH):
        for p in self.parts:
            yield from p._index_batches(batch)

    def _lookup(self, pfn: int):
        p = self._part(pfn)
        return None if p is None else p._lookup(pfn)

    def read_page(self, pfn: int, *, zero_excluded: bool = False) -> bytes:
        p = self._part(pfn)
        if p is None:
            raise self._unavailable(pfn, "hole")
        return p.read_page(pfn, zero_excluded=zero_excluded)

    def iter_pages(self, **kw):
        for p in self.parts:
            yield from p.iter_pages(**kw)

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def info(self) -> dict:
        out = super().info()
        out.update(split=True, parts=[{"path": p.path, "start_pfn": p.start_pfn, "end_pfn": p.end_pfn} for p in self.parts])
        return out
