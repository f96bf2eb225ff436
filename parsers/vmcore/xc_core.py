"""Xen ``xl dump-core`` files (libxenguest xc_domain_dumpcore, "xc_core" ELF; shared/spec/vmcore.md §3.1 and
Xen docs/misc/dump-core-format.txt).

An ELF64 ET_CORE file with sections only, read by name: ``.note.Xen`` (DUMPCORE_HEADER: magic 0xF00FEBED PV or
0xF00FEBEE HVM, vCPU count, page count, page size), ``.xen_prstatus`` (one ``vcpu_guest_context`` per vCPU whose
context was fetched, compacted, no vCPU id), ``.xen_shared_info`` (optional), ``.xen_pfn`` (HVM: u64 pfn per page)
or ``.xen_p2m`` (PV: {u64 pfn, u64 gmfn}), and ``.xen_pages``. Entry i of the pfn table describes page i of
``.xen_pages``; entries are sorted by pfn; an all-ones pfn marks an unused trailing slot. Every page is stored raw,
so the page index has only ``present`` (and ``lost`` past the end of a truncated file).

PV page tables (and a PV vCPU's CR3) hold machine frames: ``pte_frames`` says so and ``machine_to_pfn`` inverts
the p2m for the kernel-virtual translator (addrxlat.py).

There is normally no VMCOREINFO: pass one to ``vmcore.open(..., vmcoreinfo=...)``, or the reader finds the
guest's own note page by a page-aligned scan for ``OSRELEASE=`` (``find_vmcoreinfo``).
"""

from __future__ import annotations

import numpy as np

from tracelens.errors import FormatError

from . import constants as C
from . import structs as S
from .dump import INDEX_BATCH, DumpReader, IndexBatch
from .elf import parse_ehdr, read_section_headers
from .notes import parse_notes
from .vmcoreinfo import VmcoreInfo

MAX_SECTION_NAMES = 1 << 20


class XcCoreDump(DumpReader):
    kind = "xc_core"

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        path = self.path
        eh = parse_ehdr(source)
        shdrs = read_section_headers(source, eh)
        if not shdrs:
            raise S.member_error(source, S.ELF64_EHDR, 0, "e_shoff", "xc_core file without section headers")
        strndx = eh["e_shstrndx"]
        if strndx >= len(shdrs):
            raise S.member_error(source, S.ELF64_EHDR, 0, "e_shstrndx",
                                 f"e_shstrndx {strndx} is not a section (there are {len(shdrs)})")

        def section_error(sh, message):  # a section's extent: reported at its sh_offset
            return S.member_error(source, S.ELF64_SHDR, sh["header_offset"], "sh_offset", message)

        st = shdrs[strndx]
        if st["sh_offset"] + st["sh_size"] > source.size or st["sh_size"] > MAX_SECTION_NAMES:
            raise section_error(st, "section name table runs past the end of the file")
        names = source.pread(st["sh_offset"], st["sh_size"])
        self.sections: dict[str, dict] = {}
        for sh in shdrs:
            end = names.find(b"\0", sh["sh_name"])
            name = names[sh["sh_name"] : end if end >= 0 else len(names)].decode("ascii", "replace")
            sh["name"] = name
            self.sections[name] = sh

        def section(name, required=True):
            sh = self.sections.get(name)
            if sh is None:
                if required:
                    raise FormatError(path, eh["e_shoff"], f"xc_core file without a {name} section")
                return None
            return sh

        note_sh = section(".note.Xen")
        if note_sh["sh_offset"] + note_sh["sh_size"] > source.size or note_sh["sh_size"] > 1 << 20:
            raise section_error(note_sh, ".note.Xen runs past the end of the file")
        self.notes, _ = parse_notes(source.pread(note_sh["sh_offset"], note_sh["sh_size"]), note_sh["sh_offset"], path=path)
        hdr = next((n for n in self.notes if n.name == "Xen" and n.type == C.XEN_ELFNOTE_DUMPCORE_HEADER), None)
        if hdr is None or len(hdr.desc) < S.DUMPCORE_HEADER.size:
            raise FormatError(path, note_sh["sh_offset"], ".note.Xen has no DUMPCORE_HEADER note")
        dh = S.DUMPCORE_HEADER.unpack(hdr.desc)
        magic, nr_vcpus, nr_pages, page_size = dh["magic"], dh["nr_vcpus"], dh["nr_pages"], dh["page_size"]
        if magic not in (C.XC_CORE_MAGIC_PV, C.XC_CORE_MAGIC_HVM):
            raise FormatError(path, hdr.offset, f"DUMPCORE_HEADER magic 0x{magic:x} is neither PV ({C.XC_CORE_MAGIC_PV:#x}) "
                                              f"nor HVM ({C.XC_CORE_MAGIC_HVM:#x})")
        if page_size not in (4096, 8192, 16384, 65536):
            raise FormatError(path, hdr.offset, f"DUMPCORE_HEADER page size {page_size}")
        self.page_size = page_size
        self.guest_type = "HVM" if magic == C.XC_CORE_MAGIC_HVM else "PV"
        self.header = {"magic": magic, "nr_vcpus": nr_vcpus, "nr_pages": nr_pages, "guest_type": self.guest_type,
                       "nr_cpus": nr_vcpus}
        ver = next((n for n in self.notes if n.name == "Xen" and n.type == C.XEN_ELFNOTE_DUMPCORE_XEN_VERSION), None)
        if ver is not None and len(ver.desc) >= S.DUMPCORE_XEN_VERSION.size:
            xv = S.DUMPCORE_XEN_VERSION.unpack(ver.desc)
            extra = xv["extra"].split(b"\0")[0].decode("ascii", "replace")
            self.header["xen_version"] = f"{xv['major']}.{xv['minor']}{extra}"

        pages_sh = section(".xen_pages")
        table_sh = section(".xen_pfn", False) or section(".xen_p2m", False)
        if table_sh is None:
            raise FormatError(path, eh["e_shoff"], "xc_core file without a .xen_pfn or .xen_p2m section")
        entry = S.XEN_PFN_ENTRY if table_sh["name"] == ".xen_pfn" else S.XEN_P2M_ENTRY
        if table_sh["sh_offset"] + table_sh["sh_size"] > source.size:
            raise section_error(table_sh, f"{table_sh['name']} runs past the end of the file")
        n_entries = table_sh["sh_size"] // entry.size
        if pages_sh["sh_offset"] % page_size:
            raise section_error(pages_sh, ".xen_pages is not page aligned")
        if pages_sh["sh_offset"] > 1 << 62:  # past the end of a truncated file is "lost"; this far is damage
            raise section_error(pages_sh, f".xen_pages sh_offset 0x{pages_sh['sh_offset']:x} is not a file offset")
        n_pages = min(n_entries, pages_sh["sh_size"] // page_size)
        raw = np.frombuffer(source.pread(table_sh["sh_offset"], n_pages * entry.size), entry.dtype())
        pfns = raw["pfn"].copy()
        self.gmfns = raw["gmfn"].copy() if "gmfn" in entry.names else None
        used = pfns != np.uint64(0xFFFFFFFFFFFFFFFF)
        order = np.flatnonzero(used)
        if len(order) > 1 and np.any(np.diff(pfns[order].astype(np.int64)) <= 0):
            # the format promises ascending pfns; keep working on an unsorted table, but sort it first
            order = order[np.argsort(pfns[order], kind="stable")]
        self._pfn = pfns[order]
        self._slot = order.astype(np.int64)
        self._m2p = None  # PV: (sorted gmfns, their pfns), built on first use
        self.pages_offset = pages_sh["sh_offset"]
        self.complete = source.complete and pages_sh["sh_offset"] + n_pages * page_size <= source.size
        # vCPU contexts
        self.vcpu_contexts: list[bytes] = []
        pr = self.sections.get(".xen_prstatus")
        if pr is not None:
            esz = pr["sh_entsize"] or S.VCPU_GUEST_CONTEXT.size
            if pr["sh_offset"] + pr["sh_size"] <= source.size and esz >= S.VCPU_GUEST_CONTEXT.size:
                blob = source.pread(pr["sh_offset"], pr["sh_size"])
                self.vcpu_contexts = [blob[i : i + esz] for i in range(0, len(blob) - esz + 1, esz)]
        si = self.sections.get(".xen_shared_info")
        self.shared_info_page = source.pread(si["sh_offset"], min(si["sh_size"], page_size)) if si is not None else None
        self._finish_init()

    # -- page index -------------------------------------------------------------------------------------------
    def _rows(self, i0: int, i1: int) -> IndexBatch:
        ps = self.page_size
        pfn = self._pfn[i0:i1]
        offset = (self.pages_offset + self._slot[i0:i1] * ps).astype(np.int64)
        state = np.where(offset + ps <= self.source.size, C.STATE_PRESENT, C.STATE_LOST).astype(np.uint8)
        n = len(pfn)
        return IndexBatch(pfn, offset, np.full(n, ps, np.uint32), np.zeros(n, np.uint8), state, None)

    def _index_batches(self, batch: int = INDEX_BATCH):
        for i in range(0, len(self._pfn), batch):
            yield self._rows(i, min(len(self._pfn), i + batch))

    def _lookup(self, pfn: int):
        i = int(np.searchsorted(self._pfn, np.uint64(pfn)))
        if i >= len(self._pfn) or int(self._pfn[i]) != pfn:
            return None
        r = self._rows(i, i + 1)
        return int(r.state[0]), int(r.offset[0]), self.page_size, 0, 0

    # -- Xen specifics ------------------------------------------------------------------------------------------
    def vcpus(self):
        """vCPU registers from .xen_prstatus (pyarrow Table). ``index`` is the position in the section: the
        format keeps no vCPU id, and offline vCPUs are left out."""
        import pyarrow as pa

        rows = [S.VCPU_GUEST_CONTEXT.unpack(ctx) for ctx in self.vcpu_contexts]
        cols = {"index": pa.array(range(len(rows)), pa.int32())}
        for k in S.VCPU_GUEST_CONTEXT.names:
            cols[k] = pa.array([r[k] for r in rows], pa.uint64())
        cols["online"] = pa.array([bool(r["flags"] & S.VGCF_ONLINE) for r in rows], pa.bool_())
        return pa.table(cols)

    @property
    def pte_frames(self) -> str:
        """What the guest's page-table entries and CR3 hold: ``"physical"`` (HVM/PVH: guest-physical frames, the
        dump's own pfns) or ``"machine"`` (PV: machine frames, turned back into pfns with ``machine_to_pfn``)."""
        return "machine" if self.gmfns is not None else "physical"

    def machine_to_pfn(self, mfn: int) -> int | None:
        """PV: the pfn whose .xen_p2m entry holds machine frame ``mfn`` (the inverted p2m), or None when no page
        of the dump has that frame."""
        if self._m2p is None:
            gm = self.gmfns[self._slot]
            order = np.argsort(gm, kind="stable")
            self._m2p = (gm[order], self._pfn[order])
        keys, pfns = self._m2p
        i = int(np.searchsorted(keys, np.uint64(mfn)))
        if i < len(keys) and int(keys[i]) == mfn:
            return int(pfns[i])
        return None

    def cr3_root(self) -> int | None:
        """The page-table root of the first online vCPU (a fallback when VMCOREINFO gives none): for HVM a
        guest-physical address; for PV a machine address (xen_pfn_to_cr3, mfn << 12 on x86_64) that the
        translator maps back through ``machine_to_pfn``."""
        for ctx in self.vcpu_contexts:
            regs = S.VCPU_GUEST_CONTEXT.unpack(ctx)
            if regs["flags"] & S.VGCF_ONLINE:
                return regs["cr3"]
        return None

    def p2m(self):
        """PV guests: pfn -> gmfn (pyarrow Table); None for HVM (auto-translated) guests."""
        if self.gmfns is None:
            return None
        import pyarrow as pa

        return pa.table({"pfn": pa.array(self._pfn, pa.uint64()), "gmfn": pa.array(self.gmfns[self._slot], pa.uint64())})

    def info(self) -> dict:
        out = super().info()
        out.update(guest_type=self.guest_type, xen_version=self.header.get("xen_version"),
                   nr_pages=self.header["nr_pages"], vcpus=len(self.vcpu_contexts),
                   shared_info=self.shared_info_page is not None)
        return out


def find_vmcoreinfo(dump, max_pages: int | None = None) -> VmcoreInfo | None:
    """Scan present pages for one that starts with ``OSRELEASE=`` (the kernel keeps its VMCOREINFO text at the
    start of a page) and parse it. Returns the first found, or None."""
    seen = 0
    for b in dump.iter_pages(states=("present",)):
        hits = np.flatnonzero((b.data[:, :10] == np.frombuffer(b"OSRELEASE=", np.uint8)).all(axis=1))
        for h in hits.tolist():
            vi = VmcoreInfo.parse(b.data[h].tobytes())
            if vi.page_size and vi.osrelease:
                return vi
        seen += len(b.pfn)
        if max_pages is not None and seen >= max_pages:
            break
    return None
