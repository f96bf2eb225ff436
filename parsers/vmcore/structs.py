"""Binary layouts of the dump formats, as data (shared/spec/vmcore.md §1-§3, §6), and the one place where the
readers turn file bytes into a structure.

Each layout is a table like the spec's: the C structure's name, its size, and its members as (byte offset, name,
``struct`` code), little-endian unless said otherwise. :class:`Struct` checks that the members fit where the table
puts them and compiles the table once into a ``struct.Struct``. Readers ask :func:`read_struct` /
:func:`read_structs` for the members of a layout at a file offset: a file too short there is a FormatError naming
the file, the offset and what was being read. A member that holds a bad value is reported at its own offset
(:meth:`Struct.offset_of`), so no reader writes a byte offset out.

Sections follow the spec: ELF (§1.1, §1.5-§1.7), kdump-compressed (§2.2, §2.4, §2.6), flattened (§2.12), xl
dump-core (§3.1), Xen hypervisor notes (§3.2), Xen guest structures (§6: grant entries, shared_info).
"""

from __future__ import annotations

import struct


class Struct:
    """A C structure as data: ``name``, ``size`` in bytes, and ``members``, (offset, name, struct code) in offset
    order, one value each; bytes no member covers are padding. ``order`` is the struct byte-order prefix."""

    __slots__ = ("name", "size", "names", "offsets", "codes", "struct")

    def __init__(self, name: str, size: int, members, order: str = "<"):
        fmt = [order]
        at = 0
        self.names: tuple[str, ...] = tuple(m[1] for m in members)
        self.offsets: dict[str, int] = {}
        self.codes: dict[str, str] = {}
        for off, member, code in members:
            if off < at:
                raise ValueError(f"{name}.{member} at byte {off} overlaps the member before it (which ends at {at})")
            if off > at:
                fmt.append(f"{off - at}x")
            fmt.append(code)
            self.offsets[member] = off
            self.codes[member] = code
            at = off + struct.calcsize(order + code)
        if at > size:
            raise ValueError(f"{name}: the members end at byte {at}, past its size {size}")
        if size > at:
            fmt.append(f"{size - at}x")
        self.name = name
        self.size = size
        self.struct = struct.Struct("".join(fmt))  # the hot paths unpack tuples with it directly

    def unpack(self, buf, offset: int = 0) -> dict:
        """The members at ``offset`` of ``buf`` (bytes in memory, at least ``size`` of them from there)."""
        return dict(zip(self.names, self.struct.unpack_from(buf, offset)))

    def offset_of(self, member: str) -> int:
        """Byte offset of ``member`` in the structure."""
        return self.offsets[member]

    def dtype(self):
        """The layout as a numpy structured dtype (for arrays of the structure)."""
        import numpy as np

        order = self.struct.format[0]
        formats = [f"S{c[:-1] or 1}" if c.endswith("s") else order + c for c in self.codes.values()]
        return np.dtype({"names": list(self.names), "offsets": list(self.offsets.values()), "formats": formats,
                         "itemsize": self.size})

    def __repr__(self) -> str:
        return f"<Struct {self.name} ({self.size} bytes)>"


def read_struct(source, layout: Struct, offset: int, what: str | None = None) -> dict:
    """The members of ``layout`` at byte ``offset`` of ``source`` (a dump source), or a FormatError naming the file,
    the offset and ``what`` (default: the layout's name) when the file ends before the structure does."""
    return layout.unpack(source.read_exact(offset, layout.size, what or layout.name))


def read_structs(source, layout: Struct, offset: int, count: int, what: str | None = None) -> list[dict]:
    """``count`` consecutive structures from ``offset`` (a table: program headers, section headers), or a
    FormatError as :func:`read_struct` when the file ends before the table does."""
    raw = source.read_exact(offset, count * layout.size, what or f"{layout.name} table ({count} entries)")
    return [layout.unpack(raw, i * layout.size) for i in range(count)]


def member_error(source, layout: Struct, base: int, member: str, message: str):
    """A FormatError for a bad value of ``member`` of the structure at ``base``: it names the file and the member's
    own byte offset. Raise what it returns."""
    from tracelens.errors import FormatError

    return FormatError(source.path, base + layout.offset_of(member), message)


# -- ELF (§1.1, §1.5) -------------------------------------------------------------------------------------------
#: e_ident and the start of the ELF header, which every class shares (enough to tell the class and byte order)
ELF_IDENT = Struct("e_ident", 16, [(0, "magic", "4s"), (4, "ei_class", "B"), (5, "ei_data", "B")])
ELF64_EHDR = Struct("ELF header", 64, [
    (16, "e_type", "H"), (18, "e_machine", "H"), (20, "e_version", "I"), (24, "e_entry", "Q"), (32, "e_phoff", "Q"),
    (40, "e_shoff", "Q"), (48, "e_flags", "I"), (52, "e_ehsize", "H"), (54, "e_phentsize", "H"), (56, "e_phnum", "H"),
    (58, "e_shentsize", "H"), (60, "e_shnum", "H"), (62, "e_shstrndx", "H"),
])
#: the members of a 32-bit ELF header that format detection reads
ELF32_EHDR = Struct("ELF32 header", 52, [(16, "e_type", "H"), (44, "e_phnum", "H"), (46, "e_shentsize", "H"),
                                         (48, "e_shnum", "H")])
ELF64_PHDR = Struct("program header", 56, [
    (0, "p_type", "I"), (4, "p_flags", "I"), (8, "p_offset", "Q"), (16, "p_vaddr", "Q"), (24, "p_paddr", "Q"),
    (32, "p_filesz", "Q"), (40, "p_memsz", "Q"), (48, "p_align", "Q"),
])
ELF64_SHDR = Struct("section header", 64, [
    (0, "sh_name", "I"), (4, "sh_type", "I"), (8, "sh_flags", "Q"), (16, "sh_addr", "Q"), (24, "sh_offset", "Q"),
    (32, "sh_size", "Q"), (40, "sh_link", "I"), (44, "sh_info", "I"), (48, "sh_addralign", "Q"), (56, "sh_entsize", "Q"),
])
#: an ELF note's header; the name follows, then the desc, each padded to 4 bytes (§1.4)
NOTE_HEADER = Struct("note header", 12, [(0, "namesz", "I"), (4, "descsz", "I"), (8, "type", "I")])
#: pr_reg of elf_prstatus on x86_64: struct user_regs_struct, 27 u64 in this order (§1.6)
PRSTATUS_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)
#: struct elf_prstatus on x86_64 (§1.6): pr_pid, then pr_reg at 112
ELF_PRSTATUS = Struct("elf_prstatus", 336, [(32, "pr_pid", "i")]
                      + [(112 + 8 * i, reg, "Q") for i, reg in enumerate(PRSTATUS_REGS)])
#: QEMUCPUState version 1 (§1.7): general registers, then the segment bases and control registers read here
QEMU_CPU_STATE = Struct("QEMUCPUState", 432, [
    (0, "version", "I"), (4, "size", "I"),
    (8, "rax", "Q"), (16, "rbx", "Q"), (24, "rcx", "Q"), (32, "rdx", "Q"), (40, "rsi", "Q"), (48, "rdi", "Q"),
    (56, "rsp", "Q"), (64, "rbp", "Q"), (72, "r8", "Q"), (80, "r9", "Q"), (88, "r10", "Q"), (96, "r11", "Q"),
    (104, "r12", "Q"), (112, "r13", "Q"), (120, "r14", "Q"), (128, "r15", "Q"), (136, "rip", "Q"), (144, "rflags", "Q"),
    (360, "gdt_base", "Q"), (384, "idt_base", "Q"), (392, "cr0", "Q"), (408, "cr2", "Q"), (416, "cr3", "Q"),
    (424, "cr4", "Q"),
])
#: the QEMUCPUState members that are registers (all but version and size)
QEMU_CPU_REGS = QEMU_CPU_STATE.names[2:]

# -- Xen hypervisor kdump notes (§3.2) --------------------------------------------------------------------------
XEN_CRASH_REGS = Struct("XEN_ELFNOTE_CRASH_REGS", 32, [(0, "cr0", "Q"), (8, "cr2", "Q"), (16, "cr3", "Q"),
                                                     (24, "cr4", "Q")])
#: crash_xen_info_t: 8 u64, then a version-dependent tail told apart by the desc size (64, 72 or 80 bytes)
XEN_CRASH_INFO = Struct("crash_xen_info_t", 64, [(8 * i, f, "Q") for i, f in enumerate((
    "xen_major_version", "xen_minor_version", "xen_extra_version", "xen_changeset", "xen_compiler",
    "xen_compile_date", "xen_compile_time", "tainted"))])
XEN_CRASH_INFO_72 = Struct("crash_xen_info_t tail (72 bytes)", 72, [(64, "dom0_pfn_to_mfn_frame_list_list", "Q")])
XEN_CRASH_INFO_80 = Struct("crash_xen_info_t tail (80 bytes)", 80, [(64, "xen_phys_start", "Q"),
                                                                    (72, "dom0_pfn_to_mfn_frame_list_list", "Q")])

# -- kdump-compressed (§2.2, §2.4, §2.6; makedumpfile diskdump_mod.h) ------------------------------------------
DISK_DUMP_HEADER = Struct("disk_dump_header", 464, [
    (0, "signature", "8s"), (8, "header_version", "i"),
    (12, "sysname", "65s"), (77, "nodename", "65s"), (142, "release", "65s"), (207, "version", "65s"),
    (272, "machine", "65s"), (337, "domainname", "65s"),
    (408, "tv_sec", "q"), (416, "tv_usec", "q"), (424, "status", "I"), (428, "block_size", "i"),
    (432, "sub_hdr_size", "i"), (436, "bitmap_blocks", "I"), (440, "max_mapnr", "I"), (444, "total_ram_blocks", "I"),
    (448, "device_blocks", "I"), (452, "written_blocks", "I"), (456, "current_cpu", "I"), (460, "nr_cpus", "i"),
])
UTSNAME_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
#: kdump_sub_header; each member is valid from the header_version in KDUMP_SUB_HEADER_SINCE
KDUMP_SUB_HEADER = Struct("kdump_sub_header", 104, [
    (0, "phys_base", "q"), (8, "dump_level", "i"), (12, "split", "i"), (16, "start_pfn", "Q"), (24, "end_pfn", "Q"),
    (32, "offset_vmcoreinfo", "Q"), (40, "size_vmcoreinfo", "Q"), (48, "offset_note", "Q"), (56, "size_note", "Q"),
    (64, "offset_eraseinfo", "Q"), (72, "size_eraseinfo", "Q"), (80, "start_pfn_64", "Q"), (88, "end_pfn_64", "Q"),
    (96, "max_mapnr_64", "Q"),
])
KDUMP_SUB_HEADER_SINCE = {"phys_base": 1, "dump_level": 1, "split": 2, "start_pfn": 2, "end_pfn": 2,
                          "offset_vmcoreinfo": 3, "size_vmcoreinfo": 3, "offset_note": 4, "size_note": 4,
                          "offset_eraseinfo": 5, "size_eraseinfo": 5, "start_pfn_64": 6, "end_pfn_64": 6,
                          "max_mapnr_64": 6}
PAGE_DESC = Struct("page_desc", 24, [(0, "offset", "q"), (8, "size", "I"), (12, "flags", "I"),
                                     (16, "page_flags", "Q")])

# -- makedumpfile flattened (§2.12): big-endian ------------------------------------------------------------------
FLAT_HEADER = Struct("makedumpfile_header", 32, [(0, "signature", "16s"), (16, "type", "q"), (24, "version", "q")],
                     order=">")
FLAT_RECORD_HEADER = Struct("makedumpfile_data_header", 16, [(0, "offset", "q"), (8, "size", "q")], order=">")

# -- xl dump-core (§3.1; Xen docs/misc/dump-core-format.txt) ---------------------------------------------------
DUMPCORE_HEADER = Struct("DUMPCORE_HEADER", 32, [(0, "magic", "Q"), (8, "nr_vcpus", "Q"), (16, "nr_pages", "Q"),
                                                 (24, "page_size", "Q")])
DUMPCORE_XEN_VERSION = Struct("DUMPCORE_XEN_VERSION", 32, [(0, "major", "Q"), (8, "minor", "Q"), (16, "extra", "16s")])
#: an entry of .xen_pfn (HVM) and of .xen_p2m (PV)
XEN_PFN_ENTRY = Struct(".xen_pfn entry", 8, [(0, "pfn", "Q")])
XEN_P2M_ENTRY = Struct(".xen_p2m entry", 16, [(0, "pfn", "Q"), (8, "gmfn", "Q")])
#: vcpu_guest_context on x86_64: the members read here
VCPU_GUEST_CONTEXT = Struct("vcpu_guest_context", 5168, [
    (512, "flags", "Q"),
    (520, "r15", "Q"), (528, "r14", "Q"), (536, "r13", "Q"), (544, "r12", "Q"), (552, "rbp", "Q"), (560, "rbx", "Q"),
    (568, "r11", "Q"), (576, "r10", "Q"), (584, "r9", "Q"), (592, "r8", "Q"), (600, "rax", "Q"), (608, "rcx", "Q"),
    (616, "rdx", "Q"), (624, "rsi", "Q"), (632, "rdi", "Q"), (648, "rip", "Q"), (664, "rflags", "Q"), (672, "rsp", "Q"),
    (4984, "cr0", "Q"), (5000, "cr2", "Q"), (5008, "cr3", "Q"), (5016, "cr4", "Q"),
    (5144, "fs_base", "Q"), (5152, "gs_base_kernel", "Q"), (5160, "gs_base_user", "Q"),
])
#: VGCF_online: the vCPU was up when its context was saved
VGCF_ONLINE = 32

# -- Xen guest structures (§6; xen/include/public/grant_table.h, xen.h, arch-x86/xen.h) ------------------------
GRANT_ENTRY_V1 = Struct("grant_entry_v1", 8, [(0, "flags", "H"), (2, "domid", "H"), (4, "frame", "I")])
#: grant_entry_v2: the header, then a union (full_page.frame, sub_page {page_off, length, frame}, transitive
#: {trans_domid, gref})
GRANT_ENTRY_V2 = Struct("grant_entry_v2", 16, [(0, "flags", "H"), (2, "domid", "H"), (4, "page_off", "H"),
                                               (6, "length", "H"), (8, "frame", "Q")])
GRANT_ENTRY_V2_TRANSITIVE = Struct("grant_entry_v2 (transitive)", 16, [(8, "gref", "I")])
#: vcpu_info (64 bytes; MAX_VIRT_CPUS of them open shared_info) and its vcpu_time_info at 32
VCPU_INFO = Struct("vcpu_info", 64, [
    (0, "upcall_pending", "B"), (1, "upcall_mask", "B"), (8, "pending_sel", "Q"), (16, "cr2", "Q"),
    (32, "time_version", "I"), (40, "tsc_timestamp", "Q"), (48, "system_time_ns", "Q"), (56, "tsc_to_system_mul", "I"),
    (60, "tsc_shift", "b"), (61, "time_flags", "B"),
])
#: shared_info after the vcpu_info slots: the event channel bitmaps, the wallclock and arch_shared_info (x86_64)
SHARED_INFO_TAIL = Struct("shared_info", 3136, [
    (3072, "wc_version", "I"), (3076, "wc_sec", "I"), (3080, "wc_nsec", "I"), (3084, "wc_sec_hi", "I"),
    (3088, "max_pfn", "Q"), (3096, "pfn_to_mfn_frame_list_list", "Q"), (3104, "nmi_reason", "Q"), (3112, "p2m_cr3", "Q"),
    (3120, "p2m_vaddr", "Q"), (3128, "p2m_generation", "Q"),
])
EVTCHN_PENDING_OFF = 2048
EVTCHN_MASK_OFF = 2560
