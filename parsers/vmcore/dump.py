"""The dump object every reader returns: page index, physical and kernel-virtual reads, notes, registers, log.

Semantics shared by all formats (shared/spec/vmcore.md §1.9, §2.5-§2.7; docs/vmcore.md gives the reasons):

* The page index lists every pfn the dump knows about, in pfn order, with a state: ``present`` (bytes stored),
  ``zero`` (the kdump shared zero page), ``excluded`` (RAM the producer filtered out: 1st-bitmap bit without a
  2nd-bitmap bit, or the p_filesz..p_memsz tail of an ELF segment), ``lost`` (an incomplete dump: a descriptor of
  offset 0, or data past the end of a truncated file) and ``invalid`` (a descriptor that breaks the format's rules).
  Holes (no segment, no bitmap bit) are not listed.
* ``read_phys`` returns stored bytes and zeros for zero pages. Holes, excluded, lost and invalid pages raise
  ``PageUnavailable`` (a FormatError, exit 3) naming the address and the reason; ``zero_excluded=True`` reads
  excluded pages as zeros, as crash's ``zero_excluded`` and drgn do.
* A page that a segment covers only in part (``/proc/vmcore``'s PT_LOAD ending at 0x9fc00) is present; the bytes
  of that page outside every segment read as zeros, as libkdumpfile and crash do.

Reads go through a bounded LRU of decoded pages; a full scan (``iter_pages``) reads spans of the file and decodes
compressed pages on a thread pool (zlib, lzo, snappy and zstd release the GIL). Memory stays bounded by the batch
size and the cache, whatever the dump size.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from tracelens.errors import FormatError

from . import constants as C
from ._plain import plain
from .codecs import CodecUnavailable, PageCodecError, decode_page
from .notes import Note, notes_table, prstatus_table, qemu_cpu_table
from .vmcoreinfo import MISSING_VMCOREINFO_HINT, VmcoreInfo

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time of tracelens dmesg)
if TYPE_CHECKING:  # numpy is imported by the methods that need it (page reads and dmesg do not)
    import numpy as np

#: decoded pages kept by read_phys (per dump object), and at most this many bytes of them (1 MiB blocks)
PAGE_CACHE_PAGES = 256
PAGE_CACHE_BYTES = 16 << 20
#: rows of the page index handled at once by scans and by pages()
INDEX_BATCH = 65536
SCAN_BATCH = 2048
#: a scan batch holds at most this many bytes of pages (2048 pages of 4 KiB; fewer rows for bigger blocks)
SCAN_BATCH_BYTES = 8 << 20
#: the bytes a scan may decompress, as a multiple of the file size (and at least DECODE_BUDGET_MIN). Every
#: decoded page of a well-formed dump has its own descriptor (24 bytes) and frame (9+ bytes) in the file, so
#: real dumps stay far below (a 4 KiB page costs 33+ bytes of file: a ratio under 130); descriptors that share or
#: overlap frames can claim any number of decodes of the same bytes, and the rest of such a scan reports its
#: compressed pages as unreadable instead of running for hours.
DECODE_BUDGET_RATIO = 1024
DECODE_BUDGET_MIN = 1 << 30


class PageUnavailable(FormatError):
    """A physical page the dump cannot supply: a hole, or a page excluded, lost or damaged."""

    def __init__(self, path, offset, message, *, pfn: int, state: str):
        super().__init__(path, offset, message)
        self.pfn = pfn
        self.state = state


class CodecMissing(PageUnavailable):
    """A page compressed with a codec whose optional package is not installed (python-lzo): the dump may be sound,
    this install cannot decode the page; the message says what to install. Its state is ``invalid`` (unreadable)."""


@plain
class IndexBatch:
    """Rows of the page index as numpy arrays (pfn order). ``lead`` is internal: bytes at the start of the page
    that the file does not hold (ELF segments starting mid-page)."""

    pfn: np.ndarray  # uint64
    offset: np.ndarray  # int64, -1 when nothing is stored
    size: np.ndarray  # uint32, bytes stored
    compression: np.ndarray  # uint8, index into constants.COMPRESSION_NAMES
    state: np.ndarray  # uint8, index into constants.PAGE_STATES
    lead: np.ndarray | None = None  # uint32

    def __len__(self) -> int:
        return len(self.pfn)


@plain
class PageBatch:
    """A batch of readable pages from ``iter_pages``: ``data[i]`` is the page of ``pfn[i]``; ``ok[i]`` is False
    when that page failed to decode (``errors`` maps pfn -> reason) and its row is zeros."""

    pfn: np.ndarray
    state: np.ndarray
    data: np.ndarray  # uint8 [n, page_size]
    ok: np.ndarray
    errors: dict


class DumpReader:
    """Base class of the format readers (what tracelens.parsers.vmcore.open returns; the notebook-facing
    :class:`tracelens.dump.Dump` wraps one). Subclasses fill the attributes in ``__init__`` and implement
    ``_index_batches`` and ``_lookup``."""

    #: read_phys may read runs of whole uncompressed pages stored back to back in one call (formats whose pages
    #: are mostly compressed, and split sets, turn it off)
    _raw_runs = True

    kind = "dump"

    def __init__(self, source, *, vmcoreinfo: bytes | str | None = None):
        self.source = source
        self.path = source.path
        self.page_size = 4096
        self.notes: list[Note] = []
        self.vmcoreinfo = VmcoreInfo()
        self._user_vmcoreinfo = vmcoreinfo
        self.header: dict = {}
        self.complete = True
        self.compression = "none"
        self.page_offset_base: int | None = None
        self._header_phys_base: int | None = None
        self._ktext_phys_base: int | None = None
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._xlat = None

    # -- set-up helpers for subclasses ----------------------------------------------------------------------
    def _finish_init(self) -> None:
        if self._user_vmcoreinfo is not None:
            text = self._user_vmcoreinfo
            if isinstance(text, str):
                text = text.encode()
            self.vmcoreinfo = VmcoreInfo.parse(text)
        elif not self.vmcoreinfo:
            for n in self.notes:
                if n.name == "VMCOREINFO":
                    self.vmcoreinfo = VmcoreInfo.parse(n.desc)
                    break
        self.vmcoreinfo_source = "user" if self._user_vmcoreinfo is not None else ("note" if self.vmcoreinfo else None)
        #: Xen hypervisor dumps: Xen's own VMCOREINFO_XEN (NUL-padded), kept apart from the Linux one
        self.vmcoreinfo_xen = next((VmcoreInfo.parse(n.desc) for n in self.notes if n.name == "VMCOREINFO_XEN"), None)

    # -- format hooks ---------------------------------------------------------------------------------------
    def _index_batches(self, batch: int = INDEX_BATCH):  # pragma: no cover - abstract
        raise NotImplementedError

    def _lookup(self, pfn: int):  # pragma: no cover - abstract
        """-> (state, offset, size, compression, lead) or None for a hole."""
        raise NotImplementedError

    # -- page index -----------------------------------------------------------------------------------------
    def iter_page_index(self, batch: int = INDEX_BATCH):
        """The page index as pyarrow RecordBatches (columns pfn, offset, size, compression, state)."""
        import numpy as np
        import pyarrow as pa

        comp_dict = pa.array(C.COMPRESSION_NAMES)
        state_dict = pa.array(C.PAGE_STATES)
        for b in self._index_batches(batch):
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(b.pfn, pa.uint64()),
                    pa.array(b.offset, pa.int64()),
                    pa.array(b.size, pa.uint32()),
                    pa.DictionaryArray.from_arrays(pa.array(b.compression.astype(np.int8)), comp_dict),
                    pa.DictionaryArray.from_arrays(pa.array(b.state.astype(np.int8)), state_dict),
                ],
                names=["pfn", "offset", "size", "compression", "state"],
            )

    def pages(self):
        """The whole page index as one pyarrow Table (for huge dumps prefer ``iter_page_index``)."""
        import pyarrow as pa

        batches = list(self.iter_page_index())
        if not batches:
            return pa.Table.from_batches([], schema=_page_schema())
        return pa.Table.from_batches(batches)

    def page_counts(self) -> dict[str, int]:
        """Number of listed pfns per state (every state present as a key)."""
        import numpy as np

        counts = np.zeros(len(C.PAGE_STATES), np.int64)
        for b in self._index_batches():
            counts += np.bincount(b.state, minlength=len(C.PAGE_STATES))[: len(C.PAGE_STATES)]
        return {name: int(counts[i]) for i, name in enumerate(C.PAGE_STATES)}

    def page_runs(self) -> list[dict]:
        """The page index as runs of consecutive pfns with the same state and compression: first_pfn, last_pfn,
        pages, state, compression (``tracelens pages``); a few rows where the index has millions."""
        import numpy as np

        runs: list[dict] = []
        for b in self._index_batches():
            if not len(b):
                continue
            pfn = b.pfn.astype(np.int64)
            brk = np.flatnonzero((np.diff(pfn) != 1) | (np.diff(b.state) != 0) | (np.diff(b.compression) != 0)) + 1
            starts = np.concatenate([[0], brk])
            ends = np.concatenate([brk, [len(pfn)]])
            for s, e in zip(starts.tolist(), ends.tolist()):
                st, cp = C.PAGE_STATES[b.state[s]], C.COMPRESSION_NAMES[b.compression[s]]
                last = runs[-1] if runs else None
                if last and last["last_pfn"] + 1 == pfn[s] and last["state"] == st and last["compression"] == cp:
                    last["last_pfn"] = int(pfn[e - 1])
                    last["pages"] += e - s
                else:
                    runs.append({"first_pfn": int(pfn[s]), "last_pfn": int(pfn[e - 1]), "pages": e - s, "state": st,
                                 "compression": cp})
        return runs

    # -- physical reads -------------------------------------------------------------------------------------
    def _unavailable(self, pfn: int, state: str, offset=None, detail: str = "") -> PageUnavailable:
        addr = pfn * self.page_size
        reasons = {
            "hole": "is not in the dump (no segment or bitmap covers it: a hole, MMIO or reserved memory)",
            "excluded": "was excluded when the dump was written (filtered, e.g. makedumpfile -d); "
            "read it as zeros with zero_excluded=True (--zero-excluded)",
            "lost": "was lost: the dump is incomplete (truncated, or written until the disk filled)",
            "invalid": "has a damaged page descriptor or data",
        }
        msg = f"physical address 0x{addr:x} (pfn 0x{pfn:x}) {reasons[state]}"
        if detail:
            msg += f": {detail}"
        return PageUnavailable(self.path, offset, msg, pfn=pfn, state=state)

    def read_page(self, pfn: int, *, zero_excluded: bool = False) -> bytes:
        """The ``page_size`` bytes of page ``pfn``; raises PageUnavailable when the dump cannot supply them."""
        with self._cache_lock:
            page = self._cache.get(pfn)
            if page is not None:
                self._cache.move_to_end(pfn)
                return page
        hit = self._lookup(pfn)
        if hit is None:
            raise self._unavailable(pfn, "hole")
        state, offset, size, comp, lead = hit
        if state == C.STATE_ZERO:
            return bytes(self.page_size)
        if state == C.STATE_EXCLUDED:
            if zero_excluded:
                return bytes(self.page_size)
            raise self._unavailable(pfn, "excluded")
        if state == C.STATE_LOST:
            raise self._unavailable(pfn, "lost", offset if offset and offset > 0 else None)
        if state == C.STATE_INVALID:
            raise self._unavailable(pfn, "invalid", offset, self._invalid_reason(pfn, offset, size, comp))
        page = self._load(pfn, offset, size, comp, lead)
        with self._cache_lock:
            self._cache[pfn] = page
            if len(self._cache) > max(4, min(PAGE_CACHE_PAGES, PAGE_CACHE_BYTES // self.page_size)):
                self._cache.popitem(last=False)
        return page

    def _invalid_reason(self, pfn, offset, size, comp) -> str:
        return f"descriptor offset {offset}, size {size}"

    def _load(self, pfn: int, offset: int, size: int, comp: int, lead: int) -> bytes:
        data = self.source.pread(offset, size)
        if len(data) != size or not self.source.covered(offset, size):
            raise self._unavailable(pfn, "lost", offset, f"{size} bytes at byte {offset} are missing from the file")
        if comp == 0 and size != self.page_size:
            return bytes(lead) + data + bytes(self.page_size - lead - size)
        try:
            return decode_page(comp, data, self.page_size)
        except CodecUnavailable as e:
            raise CodecMissing(self.path, None, f"physical address 0x{pfn * self.page_size:x} (pfn 0x{pfn:x}): {e}",
                               pfn=pfn, state="invalid") from None
        except PageCodecError as e:
            raise self._unavailable(pfn, "invalid", offset, str(e)) from None

    def read_phys(self, addr: int, size: int, *, zero_excluded: bool = False) -> bytes:
        """``size`` bytes at physical address ``addr`` (may span pages)."""
        if size < 0:
            raise ValueError("size must be >= 0")
        if addr < 0:
            raise self._unavailable(0, "hole")
        ps = self.page_size
        out = bytearray()
        end = addr + size
        while addr < end:
            pfn, off = divmod(addr, ps)
            run, first = self._raw_run(pfn, -(-(end - pfn * ps) // ps)) if self._raw_runs and end - addr > ps - off else (0, 0)
            if run > 1:  # whole uncompressed pages stored back to back: one read for all of them
                n = min(run * ps - off, end - addr)
                data = self.source.pread(first + off, n)
                if len(data) == n and self.source.covered(first + off, n):
                    out += data
                    addr += n
                    continue
            n = min(ps - off, end - addr)
            page = self.read_page(pfn, zero_excluded=zero_excluded)
            out += page[off : off + n]
            addr += n
        return bytes(out)

    def _raw_run(self, pfn: int, most: int) -> tuple[int, int]:
        """(k, file offset of ``pfn``): the k pages from ``pfn`` (at most ``most``) are present, uncompressed, whole
        and stored at consecutive file offsets, none of them in the page cache (k = 0 when ``pfn`` itself is not)."""
        ps = self.page_size
        first = None
        k = 0
        while k < most:
            if pfn + k in self._cache:
                break
            hit = self._lookup(pfn + k)
            if hit is None:
                break
            state, offset, size, comp, lead = hit
            if state != C.STATE_PRESENT or comp != 0 or size != ps or lead != 0 or offset is None or offset < 0:
                break
            if first is None:
                first = offset
            elif offset != first + k * ps:
                break
            k += 1
        return k, first or 0

    # -- scans ----------------------------------------------------------------------------------------------
    def iter_pages(self, *, batch: int = SCAN_BATCH, threads: int | None = None, states=("present", "zero")):
        """Every readable page in pfn order, as PageBatch objects. Compressed pages decode on ``threads``
        threads (default: the CPU count). Damaged pages are flagged in ``ok``/``errors``, never raised."""
        import numpy as np

        want = np.zeros(256, bool)  # state code -> wanted (a lookup is cheaper than np.isin per batch)
        want[[C.STATE_CODE[s] for s in states]] = True
        threads = threads or os.cpu_count() or 1
        batch = max(1, min(batch, SCAN_BATCH_BYTES // self.page_size))
        # decoding work of this scan: frames that failed (a descriptor table can point thousands of pages at one
        # bad frame) and the bytes left to decompress (see DECODE_BUDGET_RATIO)
        budget = _DecodeBudget(max(DECODE_BUDGET_MIN, DECODE_BUDGET_RATIO * self.source.size))
        # the thread pool starts when a batch first needs decoding: raw (ELF, uncompressed kdump) scans never do
        pool = _LazyPool(threads) if threads > 1 else None
        try:
            for ib in self._index_batches(batch):
                keep = want[ib.state]
                if not keep.any():
                    continue
                page_batch, span = self._read_batch(ib, None if keep.all() else keep, pool, threads, budget)
                yield page_batch
                if span is not None:  # the caller is done with the batch: drop its mapped pages
                    self.source.release(*span)
        finally:
            if pool is not None:
                pool.shutdown()

    def _read_batch(self, ib: IndexBatch, keep, pool, threads: int, budget=None) -> tuple[PageBatch, tuple[int, int] | None]:
        """Decode the kept rows of ``ib`` (``keep`` None: all of them); also returns the file span it mapped
        (offset, size) or None. Rows whose (offset, size, codec) repeat an earlier row are copied, not decoded
        again; ``budget`` (a _DecodeBudget) bounds the bytes decompressed over a whole scan."""
        if budget is None:
            budget = _DecodeBudget(max(DECODE_BUDGET_MIN, DECODE_BUDGET_RATIO * self.source.size))
        import numpy as np

        ps = self.page_size
        if keep is None:
            pfn, state, offset, size, comp = ib.pfn, ib.state, ib.offset, ib.size.astype(np.int64), ib.compression
            lead = ib.lead if ib.lead is not None else np.zeros(len(pfn), np.uint32)
        else:
            pfn = ib.pfn[keep]
            state = ib.state[keep]
            offset = ib.offset[keep]
            size = ib.size[keep].astype(np.int64)
            comp = ib.compression[keep]
            lead = ib.lead[keep] if ib.lead is not None else np.zeros(len(pfn), np.uint32)
        n = len(pfn)
        ok = np.ones(n, bool)
        errors: dict = {}
        stored = state == C.STATE_PRESENT
        if not stored.any():
            return PageBatch(pfn, state, np.zeros((n, ps), np.uint8), ok, errors), None
        lo = int(offset[stored].min())
        hi = int((offset[stored] + size[stored]).max())
        span = None
        if hi - lo <= 2 * int(size[stored].sum()) + (1 << 20) and self.source.covered(lo, hi - lo):
            span = self.source.view(lo, hi - lo)
            if len(span) != hi - lo:
                span = None
        mapped = (lo, hi - lo) if span is not None else None
        raw = stored & (comp == 0) & (size == ps)
        if span is not None and raw.all() and (n == 1 or np.all(np.diff(offset) == ps)):
            # the common case (ELF, raw kdump runs): the batch is one contiguous span of the file; no copy
            return PageBatch(pfn, state, span.reshape(n, ps), ok, errors), mapped
        data = np.zeros((n, ps), np.uint8)
        rows = np.flatnonzero(raw) if span is not None else np.zeros(0, np.int64)
        if len(rows):
            starts = offset[rows] - lo
            # copy runs of rows whose file offsets follow each other in one slice each
            brk = np.flatnonzero((np.diff(rows) != 1) | (np.diff(starts) != ps)) + 1
            for a, b in zip(np.concatenate([[0], brk]).tolist(), np.concatenate([brk, [len(rows)]]).tolist()):
                s0 = int(starts[a])
                data[rows[a] : rows[a] + (b - a)] = span[s0 : s0 + ps * (b - a)].reshape(b - a, ps)
        todo = np.flatnonzero(stored & ~raw) if span is not None else np.flatnonzero(stored)
        if not len(todo):
            return PageBatch(pfn, state, data, ok, errors), mapped
        source = self.source
        offs, sizes, comps, leads = offset.tolist(), size.tolist(), comp.tolist(), lead.tolist()
        span_mv = memoryview(span) if span is not None else None

        def work(part):
            res = []
            flat = data.reshape(-1)
            for r in part:
                o, sz, c = offs[r], sizes[r], comps[r]
                try:
                    if span_mv is not None:
                        chunk = span_mv[o - lo : o - lo + sz]
                    else:
                        chunk = source.pread(o, sz)
                        if len(chunk) != sz or not source.covered(o, sz):
                            raise PageCodecError(f"{sz} bytes at byte {o} are missing from the file")
                    if c == 0:
                        ld = leads[r]
                        if ld + sz > ps:
                            raise PageCodecError(f"raw page of {sz} bytes, expected {ps}")
                        flat[r * ps + ld : r * ps + ld + sz] = np.frombuffer(chunk, np.uint8)
                    else:
                        flat[r * ps : (r + 1) * ps] = np.frombuffer(decode_page(c, chunk, ps), np.uint8)
                except PageCodecError as e:
                    res.append((r, str(e)))
            return res

        # one decode per distinct frame: well-formed dumps never share a compressed frame, damaged descriptor
        # tables can point every page at one
        first_of: dict = {}
        dups: list[tuple[int, int]] = []
        todo_list = []
        for r in todo.tolist():
            key = (offs[r], sizes[r], comps[r], leads[r])
            bad = budget.failed.get(key)
            if bad is not None:
                errors[int(pfn[r])] = bad
                ok[r] = False
                continue
            f = first_of.get(key)
            if f is None:
                first_of[key] = r
                if comps[r] != 0 and not budget.take(ps):
                    errors[int(pfn[r])] = budget.message(ps)
                    ok[r] = False
                    continue
                todo_list.append(r)
            else:
                dups.append((r, f))
        # zlib and zstd release the GIL and cost tens of microseconds a page: worth threads; lzo and snappy decode
        # a page in a few microseconds, where thread hand-off costs more than it saves
        slow = np.isin(comp[todo], (C.COMPRESSION_CODE["zlib"], C.COMPRESSION_CODE["zstd"])).mean() > 0.5
        if pool is not None and slow and len(todo_list) > 128:
            step = -(-len(todo_list) // threads)
            failed = [x for part in pool.get().map(work, [todo_list[i : i + step] for i in range(0, len(todo_list), step)]) for x in part]
        else:
            failed = work(todo_list)
        for r, err in failed:
            ok[r] = False
            data[r] = 0
            errors[int(pfn[r])] = err
            budget.fail((offs[r], sizes[r], comps[r], leads[r]), err)
        for r, f in dups:
            if ok[f]:
                data[r] = data[f]
            else:
                ok[r] = False
                errors[int(pfn[r])] = errors.get(int(pfn[f])) or budget.message(ps)
        return PageBatch(pfn, state, data, ok, errors), mapped

    # -- notes and registers ----------------------------------------------------------------------------------
    def notes_table(self):
        return notes_table(self.notes)

    def prstatus(self):
        """Per-CPU registers from NT_PRSTATUS (pyarrow Table)."""
        return prstatus_table(self.notes)

    def qemu_cpus(self):
        """QEMU's per-vCPU state notes (pyarrow Table; empty for non-QEMU dumps)."""
        return qemu_cpu_table(self.notes)

    def xen_notes(self):
        """Xen hypervisor kdump notes (CRASH_REGS per physical CPU, CRASH_INFO) as a pyarrow Table."""
        from .notes import xen_notes_table

        return xen_notes_table(self.notes)

    def require_vmcoreinfo(self) -> VmcoreInfo:
        """The VMCOREINFO in force; without a note, one page-aligned scan for ``OSRELEASE=`` (the kernel keeps the
        text at the start of a page) is tried once before giving up with a message saying how to get one."""
        if not self.vmcoreinfo and not getattr(self, "_vmcoreinfo_scanned", False):
            from .xc_core import find_vmcoreinfo

            self._vmcoreinfo_scanned = True
            found = find_vmcoreinfo(self)
            if found is not None:
                self.vmcoreinfo = found
                self.vmcoreinfo_source = "page scan"
                self._xlat = None
        if not self.vmcoreinfo:
            raise FormatError(self.path, None, MISSING_VMCOREINFO_HINT)
        return self.vmcoreinfo

    # -- address translation --------------------------------------------------------------------------------
    @property
    def phys_base(self) -> int | None:
        """phys_base: VMCOREINFO NUMBER(phys_base), else the kernel-text PT_LOAD, else the kdump sub-header."""
        pb = self.vmcoreinfo.phys_base if self.vmcoreinfo else None
        if pb is not None:
            return pb
        if self._ktext_phys_base is not None:
            return self._ktext_phys_base
        return self._header_phys_base

    def cr3_root(self) -> int | None:
        """A page-table root from a CPU register when VMCOREINFO gives none: CR3 of the first QEMU vCPU note."""
        from .structs import QEMU_CPU_STATE

        for n in self.notes:
            if n.name == "QEMU" and len(n.desc) >= QEMU_CPU_STATE.size:
                state = QEMU_CPU_STATE.unpack(n.desc)
                if state["version"] == 1 and state["cr3"]:
                    return state["cr3"]
        return None

    @property
    def translator(self):
        if self._xlat is None:
            from .addrxlat import KernelTranslator

            self._xlat = KernelTranslator(self)
        return self._xlat

    def virt_to_phys(self, vaddr: int) -> int:
        from .addrxlat import TranslationError

        try:
            return self.translator.to_phys(vaddr)
        except TranslationError as e:
            raise FormatError(self.path, e.offset, f"kernel virtual address 0x{vaddr & (2**64 - 1):x}: {e}") from None

    def read_virt(self, vaddr: int, size: int, *, zero_excluded: bool = False) -> bytes:
        """``size`` bytes at kernel virtual address ``vaddr`` (translated page by page; pages that are physically
        contiguous are read together)."""
        out = bytearray()
        end = vaddr + size
        while vaddr < end:
            n = min(self.page_size - (vaddr % self.page_size), end - vaddr)
            phys = self.virt_to_phys(vaddr)
            while vaddr + n < end and self.virt_to_phys(vaddr + n) == phys + n:  # extend the physical run
                n += min(self.page_size, end - vaddr - n)
            out += self.read_phys(phys, n, zero_excluded=zero_excluded)
            vaddr += n
        return bytes(out)

    # -- kernel log -----------------------------------------------------------------------------------------
    def kernel_log(self):
        """The kernel log as a printk.KernelLog (records table + exact renderers)."""
        from .printk import read_kernel_log

        return read_kernel_log(self)

    def dmesg(self):
        """The kernel log records (pyarrow Table: seq, ts_nsec, level, facility, flags, caller, text...)."""
        return self.kernel_log().table()

    # -- summary --------------------------------------------------------------------------------------------
    def cpu_count(self) -> int | None:
        n = self.header.get("nr_cpus")
        if n:
            return int(n)
        k = sum(1 for n in self.notes if n.name == "CORE" and n.type == C.NT_PRSTATUS)
        return k or None

    def info(self) -> dict:
        """A JSON-ready summary: format, compression, header version, page counts, VMCOREINFO essentials."""
        vi = self.vmcoreinfo
        kaslr = vi.kerneloffset if vi else None
        pb = self.phys_base
        return {
            "path": self.path,
            "format": self.kind,
            "container": getattr(self.source, "kind", "file"),
            "file_size": os.path.getsize(self.path),
            "complete": bool(self.complete),
            "compression": self.compression,
            "header_version": self.header.get("header_version"),
            "dump_level": self.header.get("dump_level"),
            "page_size": self.page_size,
            "pages": self.page_counts(),
            "osrelease": vi.osrelease if vi else None,
            "vmcoreinfo_page_size": vi.page_size if vi else None,
            "phys_base": pb,
            "phys_base_hex": None if pb is None else f"0x{pb & (2**64 - 1):x}",
            "kaslr_offset": None if kaslr is None else f"0x{kaslr:x}",
            "cpus": self.cpu_count(),
            "prstatus_notes": sum(1 for n in self.notes if n.name == "CORE" and n.type == C.NT_PRSTATUS),
            "crashtime": vi.crashtime if vi else None,
            "has_vmcoreinfo": bool(vi),
            "vmcoreinfo_source": getattr(self, "vmcoreinfo_source", None),
            "notes": len(self.notes),
        }

    def close(self) -> None:
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _DecodeBudget:
    """What one scan may still decompress (bytes), and the frames that failed already (bounded: the last 4096)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.left = limit
        self.failed: OrderedDict = OrderedDict()

    def take(self, n: int) -> bool:
        if self.left < n:
            return False
        self.left -= n
        return True

    def fail(self, key, err: str) -> None:
        self.failed[key] = err
        if len(self.failed) > 4096:
            self.failed.popitem(last=False)

    def message(self, ps: int) -> str:
        return (f"not decoded: this scan already decompressed {self.limit - self.left:,} bytes, more than "
                f"{DECODE_BUDGET_RATIO}x the file (page descriptors sharing or overlapping compressed data)")


class _LazyPool:
    """A ThreadPoolExecutor made on first use (importing concurrent.futures and starting threads costs a few ms
    that scans of raw pages never need back)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._pool = None

    def get(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _page_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("pfn", pa.uint64()),
            ("offset", pa.int64()),
            ("size", pa.uint32()),
            ("compression", pa.dictionary(pa.int8(), pa.string())),
            ("state", pa.dictionary(pa.int8(), pa.string())),
        ]
    )
