"""Writers of small synthetic dumps for the vmcore tests (layouts from shared/spec/vmcore.md §1-§3, §5).

A ``Memory`` is a sparse guest-physical memory (pfn -> 4096 bytes) with RAM ranges; ``Kernel`` lays out a tiny
x86_64 kernel in it (page tables, printk buffers of one era, VMCOREINFO). The format writers turn a Memory into
an ELF vmcore, a kdump-compressed file (each codec, any header version, incomplete), a flattened stream or an
xl dump-core file. Everything is written from the spec, independently of the reader under test.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

PS = 4096
START_KERNEL_MAP = 0xFFFFFFFF80000000
PAGE_OFFSET = 0xFFFF888000000000


# ---------------------------------------------------------------------------------------------------------------
# memory and kernel
@dataclass
class Memory:
    ram: list[tuple[int, int]]  # [start_pfn, end_pfn)
    pages: dict[int, bytearray] = field(default_factory=dict)

    def page(self, pfn: int) -> bytearray:
        p = self.pages.get(pfn)
        if p is None:
            p = self.pages[pfn] = bytearray(PS)
        return p

    def write(self, pa: int, data: bytes) -> None:
        while data:
            pfn, off = divmod(pa, PS)
            n = min(PS - off, len(data))
            self.page(pfn)[off : off + n] = data[:n]
            data = data[n:]
            pa += n

    def read(self, pa: int, n: int) -> bytes:
        out = bytearray()
        while n:
            pfn, off = divmod(pa, PS)
            k = min(PS - off, n)
            out += bytes(self.pages.get(pfn, bytes(PS)))[off : off + k]
            n -= k
            pa += k
        return bytes(out)

    def ram_pfns(self):
        for a, b in self.ram:
            yield from range(a, b)

    def content(self, pfn: int) -> bytes:
        return bytes(self.pages.get(pfn, bytes(PS)))


class Kernel:
    """A toy kernel image: phys_base, page tables (direct map with 1 GiB pages, kernel text with 2 MiB pages, one
    4 KiB "vmalloc" mapping), and a bump allocator for kernel objects in the image (.data) and in the direct map."""

    VMALLOC_VA = 0xFFFFC90000000000

    def __init__(self, mem: Memory, *, phys_base: int = 0, image_pa: int = 0x200000, heap_pa: int = 0x300000,
                 osrelease: str = "6.1.0-test", pt_pa: int = 0x180000):
        self.mem = mem
        self.phys_base = phys_base
        self.image_pa = image_pa
        self._img = image_pa
        self._heap = heap_pa
        self.osrelease = osrelease
        self.lines: list[str] = [f"OSRELEASE={osrelease}", "PAGESIZE=4096"]
        self._build_page_tables(pt_pa)
        self.vmcoreinfo_extra: list[str] = []
        # init_uts_ns: makedumpfile checks the release there against OSRELEASE
        uts_pa, uts_va = self.alloc_image(65 * 6)
        for i, uts_field in enumerate((b"Linux", b"testhost", osrelease.encode(), b"#1 SMP", b"x86_64", b"(none)")):
            mem.write(uts_pa + 65 * i, uts_field)
        stext_pa, stext_va = self.alloc_image(16)
        # a FLATMEM mem_map pointer: makedumpfile wants to know the memory model before it prints the log
        mm_pa, mm_va = self.alloc_image(8)
        mem.write(mm_pa, struct.pack("<Q", self.direct_va(heap_pa)))
        self.lines += [f"SYMBOL(init_uts_ns)={uts_va:x}", "OFFSET(uts_namespace.name)=0", f"SYMBOL(_stext)={stext_va:x}",
                       f"SYMBOL(mem_map)={mm_va:x}", "SIZE(page)=64", "OFFSET(page.flags)=0",
                       "OFFSET(page._refcount)=52", "OFFSET(page.mapping)=24"]

    # addresses ------------------------------------------------------------------------------------------------
    def ktext_va(self, pa: int) -> int:
        return pa - self.phys_base + START_KERNEL_MAP

    def direct_va(self, pa: int) -> int:
        return PAGE_OFFSET + pa

    def alloc_image(self, size: int, align: int = 8) -> tuple[int, int]:
        """(pa, va) of a zeroed object in the kernel image."""
        self._img = -(-self._img // align) * align
        pa = self._img
        self._img += size
        return pa, self.ktext_va(pa)

    def alloc_heap(self, size: int, align: int = 8) -> tuple[int, int]:
        self._heap = -(-self._heap // align) * align
        pa = self._heap
        self._heap += size
        return pa, self.direct_va(pa)

    def _build_page_tables(self, pt_pa: int) -> None:
        pgd, pud_dm, pud_k, pmd_k, pud_v, pmd_v, pte_v = (pt_pa + i * PS for i in range(7))
        w = lambda table, idx, val: self.mem.write(table + idx * 8, struct.pack("<Q", val))  # noqa: E731
        # direct map: PGD slot of PAGE_OFFSET -> PUD with 1 GiB pages
        w(pgd, (PAGE_OFFSET >> 39) & 0x1FF, pud_dm | 0x63)
        for i in range(4):
            w(pud_dm, ((PAGE_OFFSET >> 30) & 0x1FF) + i, (i << 30) | 0xE3)
        # kernel text: PGD 511 -> PUD 510 -> PMD with 2 MiB pages mapping phys_base..
        w(pgd, 511, pud_k | 0x63)
        w(pud_k, 510, pmd_k | 0x63)
        for i in range(8):
            w(pmd_k, i, (self.phys_base + (i << 21)) | 0xE3)
        # one 4 KiB page in the vmalloc area -> the page after the page tables
        self.vmalloc_target_pa = pt_pa + 8 * PS
        w(pgd, (self.VMALLOC_VA >> 39) & 0x1FF, pud_v | 0x63)
        w(pud_v, (self.VMALLOC_VA >> 30) & 0x1FF, pmd_v | 0x63)
        w(pmd_v, (self.VMALLOC_VA >> 21) & 0x1FF, pte_v | 0x63)
        w(pte_v, (self.VMALLOC_VA >> 12) & 0x1FF, self.vmalloc_target_pa | 0x63)
        self.pgd_pa = pgd

    def vmcoreinfo(self, *, crashtime: int | None = 1700000000) -> bytes:
        lines = list(self.lines)
        lines.append(f"SYMBOL(init_top_pgt)={self.ktext_va(self.pgd_pa):x}")
        lines.append(f"SYMBOL(swapper_pg_dir)={self.ktext_va(self.pgd_pa):x}")
        lines.append(f"NUMBER(phys_base)={self.phys_base}")
        lines.append("KERNELOFFSET=0")
        lines.append("NUMBER(pgtable_l5_enabled)=0")
        lines += self.vmcoreinfo_extra
        if crashtime is not None:
            lines.append(f"CRASHTIME={crashtime}")
        return ("\n".join(lines) + "\n").encode()

    def ptr(self, va_var: int, value: int) -> None:
        self.mem.write(self.virt_to_phys(va_var), struct.pack("<Q", value))

    def virt_to_phys(self, va: int) -> int:
        if va >= START_KERNEL_MAP:
            return va - START_KERNEL_MAP + self.phys_base
        return va - PAGE_OFFSET


# ---------------------------------------------------------------------------------------------------------------
# printk rings
@dataclass
class LogRec:
    ts_nsec: int
    text: bytes
    level: int = 6
    facility: int = 0
    caller_id: int = 1
    dict_text: bytes = b""
    no_data: int | None = None  # lockless: 3 (EMPTY_LINE_LPOS) or 1 (FAILED_LPOS) for data-less records


def add_lockless_ring(k: Kernel, records: list[LogRec], *, count_bits: int = 4, size_bits: int = 9,
                      dynamic: bool = False, new_wrap_rule: bool = True, corrupt_ids: bool = False) -> dict:
    """A 5.10+ printk_ringbuffer holding ``records`` (the oldest are overwritten as the kernel would).
    Returns {"kept": [indices of the records still in the ring]}."""
    N, S = 1 << count_bits, 1 << size_bits
    M64 = (1 << 64) - 1
    descs = bytearray(24 * N)
    infos = bytearray(88 * N)
    data = bytearray(S)
    lpos = (-S) & M64  # BLK0_LPOS
    blocks = []  # (id, begin, next)
    for rid, r in enumerate(records):
        if r.no_data is not None:
            blocks.append((rid, r.no_data, r.no_data))
            continue
        size = -(-(8 + len(r.text)) // 8) * 8
        begin = lpos
        nxt = (begin + size) & M64
        last = (nxt - 1) if new_wrap_rule else nxt
        if (begin >> size_bits) != ((last & M64) >> size_bits):  # wraps: data restarts at the next ring start
            start = ((begin >> size_bits) + 1) << size_bits
            nxt = (start + size) & M64
            data[0:8] = struct.pack("<Q", rid)
            data[8 : 8 + len(r.text)] = r.text
            data[begin % S : begin % S + 8] = struct.pack("<Q", rid)[: S - begin % S]
        else:
            data[begin % S : begin % S + 8] = struct.pack("<Q", rid)
            data[begin % S + 8 : begin % S + 8 + len(r.text)] = r.text
        lpos = nxt
        blocks.append((rid, begin, nxt))
    head = len(records) - 1
    # the tail: oldest record whose slot and data were not reused
    tail = head
    while tail > 0:
        cand = tail - 1
        if head - cand >= N:
            break
        b = blocks[cand]
        if b[1] & 1 == 0 and (lpos - b[1]) & M64 > S:
            break
        tail = cand
    for rid, begin, nxt in blocks:
        slot = rid % N
        r = records[rid]
        state = 2 if rid >= tail else 3
        sid = rid if not corrupt_ids else rid + 1
        struct.pack_into("<QQQ", descs, slot * 24, (state << 62) | sid, begin, nxt)
        inf = slot * 88
        infos[inf : inf + 88] = bytes(88)
        struct.pack_into("<QQHBBI", infos, inf, rid, r.ts_nsec, len(r.text), r.facility, (r.level << 5) | 2, r.caller_id)
    alloc = k.alloc_heap if dynamic else k.alloc_image
    descs_pa, descs_va = alloc(len(descs))
    infos_pa, infos_va = alloc(len(infos))
    data_pa, data_va = alloc(S)
    k.mem.write(descs_pa, bytes(descs))
    k.mem.write(infos_pa, bytes(infos))
    k.mem.write(data_pa, bytes(data))
    rb = bytearray(80)
    struct.pack_into("<IxxxxQQQQ", rb, 0, count_bits, descs_va, infos_va, head, tail)
    struct.pack_into("<IxxxxQQQ", rb, 40, size_bits, data_va, lpos, lpos)
    rb_pa, rb_va = alloc(80)
    k.mem.write(rb_pa, bytes(rb))
    prb_pa, prb_va = k.alloc_image(8)
    k.mem.write(prb_pa, struct.pack("<Q", rb_va))
    k.lines += [
        f"SYMBOL(prb)={prb_va:x}", f"SYMBOL(printk_rb_static)={rb_va:x}",
        "SIZE(printk_ringbuffer)=80", "OFFSET(printk_ringbuffer.desc_ring)=0",
        "OFFSET(printk_ringbuffer.text_data_ring)=40", "OFFSET(printk_ringbuffer.fail)=72",
        "SIZE(prb_desc_ring)=40", "OFFSET(prb_desc_ring.count_bits)=0", "OFFSET(prb_desc_ring.descs)=8",
        "OFFSET(prb_desc_ring.infos)=16", "OFFSET(prb_desc_ring.head_id)=24", "OFFSET(prb_desc_ring.tail_id)=32",
        "SIZE(prb_desc)=24", "OFFSET(prb_desc.state_var)=0", "OFFSET(prb_desc.text_blk_lpos)=8",
        "SIZE(prb_data_blk_lpos)=16", "OFFSET(prb_data_blk_lpos.begin)=0", "OFFSET(prb_data_blk_lpos.next)=8",
        "SIZE(printk_info)=88", "OFFSET(printk_info.seq)=0", "OFFSET(printk_info.ts_nsec)=8",
        "OFFSET(printk_info.text_len)=16", "OFFSET(printk_info.caller_id)=20", "OFFSET(printk_info.dev_info)=24",
        "SIZE(dev_printk_info)=64", "OFFSET(dev_printk_info.subsystem)=0", "LENGTH(printk_info_subsystem)=16",
        "OFFSET(dev_printk_info.device)=16", "LENGTH(printk_info_device)=48",
        "SIZE(prb_data_ring)=32", "OFFSET(prb_data_ring.size_bits)=0", "OFFSET(prb_data_ring.data)=8",
        "OFFSET(prb_data_ring.head_lpos)=16", "OFFSET(prb_data_ring.tail_lpos)=24",
        "SIZE(atomic_long_t)=8", "OFFSET(atomic_long_t.counter)=0",
    ]
    return {"kept": list(range(tail, head + 1)), "tail": tail, "head": head}


def add_structured_log(k: Kernel, records: list[LogRec], *, buf_len: int = 512, caller: bool = False) -> dict:
    """A 3.5-5.9 ``struct printk_log`` ring. Returns {"order": [("rec", i) | ("wrap", ts, text_len)] as a walk
    from log_first_idx meets them}."""
    hdr = 20 if caller else 16
    buf = bytearray(buf_len)
    live: list[tuple[int, int, object]] = []  # (pos, size, ("rec", i) | ("wrap",))
    nxt = 0
    for i, r in enumerate(records):
        size = -(-(hdr + len(r.text) + len(r.dict_text)) // 4) * 4
        assert size + hdr <= buf_len, "record larger than the test ring"
        if nxt + size + hdr > buf_len:
            buf[nxt : nxt + hdr] = bytes(hdr)  # the wrap marker (len 0)
            live = [e for e in live if not (e[0] < nxt + hdr and nxt < e[0] + e[1])]
            live.append((nxt, hdr, ("wrap",)))
            nxt = 0
        # the kernel keeps room for one more header after a record: drop what overlaps that too
        live = [e for e in live if not (e[0] < nxt + size + hdr and nxt < e[0] + e[1])]
        rec = bytearray(size)
        struct.pack_into("<QHHHBB", rec, 0, r.ts_nsec, size, len(r.text), len(r.dict_text), r.facility, (r.level << 5) | 2)
        if caller:
            struct.pack_into("<I", rec, 16, r.caller_id)
        rec[hdr : hdr + len(r.text)] = r.text
        rec[hdr + len(r.text) : hdr + len(r.text) + len(r.dict_text)] = r.dict_text
        buf[nxt : nxt + size] = rec
        live.append((nxt, size, ("rec", i)))
        nxt += size
    while live and live[0][2][0] == "wrap":
        live.pop(0)
    first = live[0][0] if live else nxt
    order = []
    for pos, size, what in live:
        order.append(("rec", what[1]) if what[0] == "rec" else ("wrap",))
    buf_pa, buf_va = k.alloc_heap(buf_len)
    k.mem.write(buf_pa, bytes(buf))
    syms = {}
    for name, fmt, val in (("log_buf", "<Q", buf_va), ("log_buf_len", "<I", buf_len), ("log_first_idx", "<I", first), ("log_next_idx", "<I", nxt)):
        pa, va = k.alloc_image(8)
        k.mem.write(pa, struct.pack(fmt, val))
        syms[name] = va
    k.lines += [f"SYMBOL({n})={v:x}" for n, v in syms.items()]
    k.lines += [f"SIZE(printk_log)={hdr}", "OFFSET(printk_log.ts_nsec)=0", "OFFSET(printk_log.len)=8",
                "OFFSET(printk_log.text_len)=10", "OFFSET(printk_log.dict_len)=12"]
    return {"order": order, "first": first, "next": nxt, "syms": syms}


def add_plain_log(k: Kernel, text: bytes, *, buf_len: int = 256) -> dict:
    """A <= 3.4 character ring after ``text`` was printed into it."""
    buf = bytearray(buf_len)
    for i, c in enumerate(text):
        buf[i % buf_len] = c
    buf_pa, buf_va = k.alloc_heap(buf_len)
    k.mem.write(buf_pa, bytes(buf))
    syms = {}
    for name, fmt, val in (("log_buf", "<Q", buf_va), ("log_end", "<I", len(text)), ("log_buf_len", "<i", buf_len), ("logged_chars", "<I", min(len(text), buf_len))):
        pa, va = k.alloc_image(8)
        k.mem.write(pa, struct.pack(fmt, val))
        syms[name] = va
    k.lines += [f"SYMBOL({n})={v:x}" for n, v in syms.items()]
    return syms


# ---------------------------------------------------------------------------------------------------------------
# notes
def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name0 = name + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)


def prstatus(pid: int, regs: dict[str, int]) -> bytes:
    order = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss fs_base "
             "gs_base ds es fs gs").split()
    d = bytearray(336)
    struct.pack_into("<i", d, 32, pid)
    for i, r in enumerate(order):
        struct.pack_into("<Q", d, 112 + 8 * i, regs.get(r, 0))
    return note(b"CORE", 1, bytes(d))


def qemu_cpu_note(rip: int, cr3: int) -> bytes:
    d = bytearray(432)
    struct.pack_into("<II", d, 0, 1, 432)
    struct.pack_into("<Q", d, 136, rip)
    struct.pack_into("<Q", d, 416, cr3)
    return note(b"QEMU", 0, bytes(d))


def standard_notes(vmcoreinfo: bytes | None, cpus=((0, 0xFFFFFFFF81000010), (1, 0xFFFFFFFF81000020))) -> bytes:
    out = b"".join(prstatus(pid, {"rip": rip, "rsp": 0xFFFFC90000001000 + pid, "cs": 0x10}) for pid, rip in cpus)
    if vmcoreinfo is not None:
        out += note(b"VMCOREINFO", 0, vmcoreinfo)
    return out


# ---------------------------------------------------------------------------------------------------------------
# ELF vmcore
def write_elf(path, mem: Memory, notes: bytes, *, excluded: set[int] = frozenset(), ktext: tuple[int, int, int] | None = None,
              qemu: bool = False, pn_xnum: bool = False, incomplete: bool = False, vaddr_of=None, truncate_to: int | None = None,
              extra_loads: list[tuple[int, int, int]] = (), note_copies: int = 1) -> None:
    """``note_copies`` PT_NOTE headers over the one note area (more than one: a hostile file). One PT_LOAD per RAM range (runs of ``excluded`` pfns at the end of a range become p_memsz > p_filesz, as
    makedumpfile -E writes them); ``ktext`` = (paddr, vaddr, size) adds a kernel-text PT_LOAD. ``qemu``: section
    headers before the program headers (e_phoff 192), p_vaddr 0, one extra empty segment with p_offset all-ones."""
    segs = []
    for a, b in mem.ram:
        end = b
        while end > a and (end - 1) in excluded:
            end -= 1
        segs.append((a * PS, (b - a) * PS, (end - a) * PS, None if qemu else (vaddr_of(a * PS) if vaddr_of else PAGE_OFFSET + a * PS)))
    if ktext:
        segs.insert(0, (ktext[0], ktext[2], ktext[2], ktext[1]))
    # QEMU paging mode: more PT_LOADs (paddr, vaddr, size) over memory other segments already hold
    segs += [(pa, size, size, va) for pa, va, size in extra_loads]
    nload = len(segs) + (1 if qemu else 0)
    phnum = note_copies + nload
    ehsize = 64
    shdr_area = 64 * 2 if (qemu or pn_xnum) else 0
    phoff = ehsize + shdr_area
    notes_off = phoff + phnum * 56
    data_off = -(-(notes_off + len(notes)) // PS) * PS
    body = bytearray()
    phdrs = bytearray(struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(notes), len(notes), 4) * note_copies)
    off = data_off
    for paddr, memsz, filesz, vaddr in segs:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr or 0, paddr, filesz, memsz, PS)
        body += b"".join(mem.content(p) for p in range(paddr // PS, (paddr + filesz) // PS))
        off += filesz
    if qemu:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, 0xFFFFFFFFFFFFFFFF, 0, 0xFD000000, 0, 0x100000, 0)
    e_phnum = 0xFFFF if pn_xnum else phnum
    ehdr = bytearray(64)
    ehdr[0:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, phoff, 64 if shdr_area else 0, 1 if incomplete else 0,
                     64, 56, e_phnum, 64 if shdr_area else 0, 2 if shdr_area else 0, 0)
    shdrs = b""
    if shdr_area:
        sh0 = bytearray(64)
        struct.pack_into("<I", sh0, 44, phnum)  # sh_info: the real phnum
        shdrs = bytes(sh0) + bytes(64)
    out = bytes(ehdr) + shdrs + bytes(phdrs) + notes
    out += bytes(data_off - len(out)) + bytes(body)
    if truncate_to is not None:
        out = out[:truncate_to]
    with open(path, "wb") as f:
        f.write(out)


# ---------------------------------------------------------------------------------------------------------------
# kdump-compressed
CODEC_FLAGS = {"none": 0, "zlib": 0x01, "lzo": 0x02, "snappy": 0x04, "zstd": 0x20}


def compress(codec: str, page: bytes) -> bytes:
    if codec == "zlib":
        return zlib.compress(page, 1)
    if codec == "lzo":
        import lzo

        return lzo.compress(page, 1, False)
    if codec == "snappy":
        import cramjam

        return bytes(cramjam.snappy.compress_raw(page))
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(page)
    return page


def write_kdump(path, mem: Memory, notes: bytes, *, codec: str = "zlib", version: int = 6, excluded=frozenset(),
                exclude_zero: bool = True, incomplete_after: int | None = None, dump_level: int = 31,
                vmcoreinfo: bytes | None = None, phys_base: int = 0, nr_cpus: int = 2, max_mapnr: int | None = None,
                tamper=None, split: tuple[int, int] | None = None) -> dict:
    """A makedumpfile-style kdump-compressed file. ``incomplete_after=k`` writes only the first k pages (the
    rest of the descriptors stay zero, the file ends early) and sets DUMP_DH_COMPRESSED_INCOMPLETE. ``tamper`` is
    called with the layout dict and the bytearray before writing (for corrupt-file tests). ``split=(start, end)``
    writes one part of a ``makedumpfile --split`` set: full bitmaps, descriptors and data for [start, end) only."""
    bs = PS
    ram = sorted(set(mem.ram_pfns()))
    max_mapnr = max_mapnr or (ram[-1] + 1)
    zero = bytes(bs)
    all_dumpable = [p for p in ram if p not in excluded]
    dumpable = [p for p in all_dumpable if split is None or split[0] <= p < split[1]]
    sub = bytearray(104)
    note_off = bs + 104
    size_note = len(notes) if version >= 4 else 0
    sub_blocks = -(-(104 + (len(notes) if version >= 3 else 0)) // bs)
    bitmap_bytes = -(-max_mapnr // 8)
    bm_blocks_each = -(-bitmap_bytes // bs)
    bm_blocks = 2 * bm_blocks_each
    bm1 = bytearray(bm_blocks_each * bs)
    bm2 = bytearray(bm_blocks_each * bs)
    for p in ram:
        bm1[p >> 3] |= 1 << (p & 7)
    for p in all_dumpable:
        bm2[p >> 3] |= 1 << (p & 7)
    desc_off = (1 + sub_blocks + bm_blocks) * bs
    data_off = desc_off + 24 * len(dumpable)
    descs = bytearray(24 * len(dumpable))
    data = bytearray()
    if exclude_zero:
        data += zero
    pos = data_off + len(data)
    written = 0
    for i, p in enumerate(dumpable):
        content = mem.content(p)
        if incomplete_after is not None and written >= incomplete_after:
            break
        if exclude_zero and content == zero:
            struct.pack_into("<qIIQ", descs, 24 * i, data_off, bs, 0, 0)
        else:
            c = compress(codec, content)
            flags = CODEC_FLAGS[codec]
            if len(c) >= bs:
                c, flags = content, 0
            struct.pack_into("<qIIQ", descs, 24 * i, pos, len(c), flags, 0)
            data += c
            pos += len(c)
        written += 1
    status = CODEC_FLAGS[codec] | (0x08 if incomplete_after is not None else 0)
    hdr = bytearray(bs)
    hdr[0:8] = b"KDUMP   "
    struct.pack_into("<i", hdr, 8, version)
    for i, s in enumerate((b"Linux", b"testhost", b"6.1.0-test", b"#1", b"x86_64", b"(none)")):
        hdr[12 + 65 * i : 12 + 65 * i + len(s)] = s
    struct.pack_into("<qq", hdr, 408, 1700000000, 0)
    struct.pack_into("<IiiIIIIIIi", hdr, 424, status, bs, sub_blocks, bm_blocks, max_mapnr & 0xFFFFFFFF, 0, 0, 0, 0, nr_cpus)
    vmci_off = vmci_size = 0
    if vmcoreinfo is not None:
        k = notes.find(vmcoreinfo)
        if k >= 0:
            vmci_off, vmci_size = note_off + k, len(vmcoreinfo)
    struct.pack_into("<qii", sub, 0, phys_base, dump_level, 1 if split else 0)
    if split:
        struct.pack_into("<QQ", sub, 16, split[0], split[1])
    if version >= 3:
        struct.pack_into("<QQ", sub, 32, vmci_off, vmci_size)
    if version >= 4:
        struct.pack_into("<QQ", sub, 48, note_off, size_note)
    if version >= 6:
        struct.pack_into("<QQQ", sub, 80, *(split or (0, 0)), max_mapnr)
    subblk = bytearray(sub_blocks * bs)
    subblk[0:104] = sub
    if version >= 3:
        subblk[104 : 104 + len(notes)] = notes
    out = bytearray(hdr + subblk + bm1 + bm2 + descs + data)
    layout = dict(desc_off=desc_off, data_off=data_off, dumpable=dumpable, bitmap_off=(1 + sub_blocks) * bs,
                  bm_bytes_each=bm_blocks_each * bs, sub_blocks=sub_blocks)
    if tamper is not None:
        out = tamper(layout, out) or out
    with open(path, "wb") as f:
        f.write(out)
    return layout


# ---------------------------------------------------------------------------------------------------------------
# flattened
def write_flattened(path, payload: bytes, *, chunk: int = 8192, shuffle: bool = False, end_marker: bool = True,
                    overlap: bool = False, drop_after: int | None = None) -> None:
    """Wrap ``payload`` in makedumpfile's flattened format: 4096-byte header, (offset, size) BE records."""
    head = bytearray(4096)
    head[0:12] = b"makedumpfile"
    struct.pack_into(">qq", head, 16, 1, 1)
    recs = [(o, payload[o : o + chunk]) for o in range(0, len(payload), chunk)]
    # sparse like makedumpfile's seeks: all-zero chunks are not written, except the last one (it sets the size)
    recs = [r for i, r in enumerate(recs) if any(r[1]) or i == len(recs) - 1]
    if shuffle:
        recs = recs[1::2] + recs[0::2]
    if overlap:  # a stale record first, overwritten by the real one later in the stream
        recs = [(0, b"\xee" * min(64, len(payload)))] + recs
    if drop_after is not None:
        recs = recs[:drop_after]
    out = bytearray(head)
    for o, data in recs:
        out += struct.pack(">qq", o, len(data)) + data
    if end_marker:
        out += b"\xff" * 16
    with open(path, "wb") as f:
        f.write(out)


# ---------------------------------------------------------------------------------------------------------------
# Xen xl dump-core
def write_xc_core(path, mem: Memory, *, hvm: bool = True, vcpus=((0xFFFFFFFF81000010, 0x1000),), shared_info: bytes | None = None,
                  pfns: list[int] | None = None, p2m: dict[int, int] | None = None) -> None:
    """Sections .shstrtab, .note.Xen, .xen_prstatus, [.xen_shared_info], .xen_pfn (HVM) or .xen_p2m (PV),
    .xen_pages (page aligned), as libxenguest's xc_domain_dumpcore lays them out (spec §3.1). PV: ``p2m`` maps
    pfn -> gmfn (machine frame) for the .xen_p2m entries (default gmfn = pfn + 0x100000); each vCPU's cr3 is
    written as given (for PV, a machine address)."""
    pfns = sorted(pfns if pfns is not None else mem.ram_pfns())
    names = [b"", b".shstrtab", b".note.Xen", b".xen_prstatus"] + ([b".xen_shared_info"] if shared_info is not None else []) + [
        b".xen_pfn" if hvm else b".xen_p2m", b".xen_pages"]
    strtab = b"\0".join(names[1:])
    strtab = b"\0" + strtab + b"\0"
    name_off = {}
    for n in names[1:]:
        name_off[n] = strtab.index(b"\0" + n + b"\0") + 1
    hdr_desc = struct.pack("<QQQQ", 0xF00FEBEE if hvm else 0xF00FEBED, len(vcpus), len(pfns), PS)
    ver = bytearray(1280)
    struct.pack_into("<QQ", ver, 0, 4, 17)
    ver[16:22] = b".3-pre"
    notes = note(b"Xen", 0x2000000, b"") + note(b"Xen", 0x2000001, hdr_desc) + note(b"Xen", 0x2000002, bytes(ver)) + note(b"Xen", 0x2000003, struct.pack("<Q", 1))
    ctx = bytearray()
    for rip, cr3 in vcpus:
        c = bytearray(5168)
        struct.pack_into("<Q", c, 512, 32 | 4)
        struct.pack_into("<Q", c, 520 + 128, rip)
        struct.pack_into("<Q", c, 520 + 152, 0xFFFFC90000002000)
        struct.pack_into("<Q", c, 5008, cr3)
        ctx += c
    gmfn = (lambda p: p2m[p]) if p2m is not None else (lambda p: p + 0x100000)  # noqa: E731
    table = b"".join(struct.pack("<Q", p) for p in pfns) if hvm else b"".join(struct.pack("<QQ", p, gmfn(p)) for p in pfns)
    pages = b"".join(mem.content(p) for p in pfns)
    nsec = len(names)
    shoff = 64
    pos = shoff + 64 * nsec
    sections = []
    for n, content, stype, entsize, align in (
        (b".shstrtab", strtab, 3, 0, 1), (b".note.Xen", notes, 7, 0, 4), (b".xen_prstatus", bytes(ctx), 1, 5168, 8),
        *(((b".xen_shared_info", shared_info, 1, PS, PS),) if shared_info is not None else ()),
        ((b".xen_pfn" if hvm else b".xen_p2m"), table, 1, 8 if hvm else 16, 8), (b".xen_pages", pages, 1, PS, PS),
    ):
        pos = -(-pos // align) * align
        sections.append((n, pos, content, stype, entsize, align))
        pos += len(content)
    out = bytearray(pos)
    ehdr = bytearray(64)
    ehdr[0:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, nsec, 1)
    out[0:64] = ehdr
    sh = bytearray(64 * nsec)
    for i, (n, off, content, stype, entsize, align) in enumerate(sections, start=1):
        struct.pack_into("<IIQQQQIIQQ", sh, 64 * i, name_off[n], stype, 0, 0, off, len(content), 0, 0, align, entsize)
        out[off : off + len(content)] = content
    out[shoff : shoff + len(sh)] = sh
    with open(path, "wb") as f:
        f.write(out)
