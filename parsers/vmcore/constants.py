"""Dump-format constants as data (shared/spec/vmcore.md §1-§5).

Every number here is a format fact from the spec: ELF note types and the NT_PRSTATUS register order (§1.5, §1.6),
the kdump-compressed header flags (§2.3), makedumpfile dump levels (§2.9), the flattened-format layout (§2.12),
the xc_core note types (§3.1) and the x86_64 kernel address map (§4.2). Readers look them up; they never restate
them in if-chains.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------------------
# ELF (§1.1, §1.5)
ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
EM_386 = 3
EM_X86_64 = 62
SHT_NOTE = 7
ELF_INCOMPLETE_FLAG = 0x1  # makedumpfile DUMP_ELF_INCOMPLETE in e_flags

EHDR64_SIZE = 64
PHDR64_SIZE = 56
SHDR64_SIZE = 64

#: (name, type) -> human name of the note, for the notes table
NOTE_TYPES = {
    ("CORE", 1): "NT_PRSTATUS",
    ("CORE", 2): "NT_PRFPREG",
    ("CORE", 3): "NT_PRPSINFO",
    ("CORE", 4): "NT_TASKSTRUCT",
    ("VMCOREINFO", 0): "VMCOREINFO",
    ("VMCOREINFO_XEN", 0): "VMCOREINFO_XEN",
    ("QEMU", 0): "QEMUCPUState",
    ("Xen", 0x1000001): "XEN_ELFNOTE_CRASH_INFO",
    ("Xen", 0x1000002): "XEN_ELFNOTE_CRASH_REGS",
    ("Xen", 0x2000000): "XEN_ELFNOTE_DUMPCORE_NONE",
    ("Xen", 0x2000001): "XEN_ELFNOTE_DUMPCORE_HEADER",
    ("Xen", 0x2000002): "XEN_ELFNOTE_DUMPCORE_XEN_VERSION",
    ("Xen", 0x2000003): "XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION",
    ("LINUX", 0x700): "NT_VMCOREDD",
    ("ERASEINFO", 0): "ERASEINFO",
}
NT_PRSTATUS = 1

#: struct elf_prstatus on x86_64 (§1.6)
PRSTATUS_SIZE = 336
PRSTATUS_PID_OFF = 32
PRSTATUS_REG_OFF = 112
PRSTATUS_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)

#: QEMUCPUState v1 (§1.7): field -> desc offset
QEMU_CPU_STATE_SIZE = 432
QEMU_CPU_FIELDS = {
    "rax": 8, "rbx": 16, "rcx": 24, "rdx": 32, "rsi": 40, "rdi": 48, "rsp": 56, "rbp": 64,
    "r8": 72, "r9": 80, "r10": 88, "r11": 96, "r12": 104, "r13": 112, "r14": 120, "r15": 128,
    "rip": 136, "rflags": 144, "gdt_base": 360, "idt_base": 384,
    "cr0": 392, "cr2": 408, "cr3": 416, "cr4": 424,
}

# ---------------------------------------------------------------------------------------------------------------
# kdump-compressed (§2)
KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
KDUMP_HEADER_SIZE = 464
KDUMP_SUB_HEADER_SIZE = 104
PAGE_DESC_SIZE = 24

DUMP_DH_COMPRESSED_ZLIB = 0x01
DUMP_DH_COMPRESSED_LZO = 0x02
DUMP_DH_COMPRESSED_SNAPPY = 0x04
DUMP_DH_COMPRESSED_INCOMPLETE = 0x08
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20

#: codec bit -> codec name; the page_desc flags and the header status share these bits (§2.3)
CODEC_BITS = {
    DUMP_DH_COMPRESSED_ZLIB: "zlib",
    DUMP_DH_COMPRESSED_LZO: "lzo",
    DUMP_DH_COMPRESSED_SNAPPY: "snappy",
    DUMP_DH_COMPRESSED_ZSTD: "zstd",
}
CODEC_MASK = DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY | DUMP_DH_COMPRESSED_ZSTD

#: compression codes used in the page index (uint8) and their names (dictionary order of the Arrow column)
COMPRESSION_NAMES = ("none", "zlib", "lzo", "snappy", "zstd")
COMPRESSION_CODE = {name: i for i, name in enumerate(COMPRESSION_NAMES)}
CODEC_BIT_TO_CODE = {bit: COMPRESSION_CODE[name] for bit, name in CODEC_BITS.items()}

#: makedumpfile -d bits (§2.9)
DUMP_LEVEL_BITS = {
    1: "zero pages",
    2: "page cache without private data",
    4: "page cache with private data",
    8: "user process data",
    16: "free pages",
}

# ---------------------------------------------------------------------------------------------------------------
# page states of the page index (one per pfn listed; holes are simply absent)
PAGE_STATES = ("present", "zero", "excluded", "lost", "invalid")
STATE_CODE = {name: i for i, name in enumerate(PAGE_STATES)}
STATE_PRESENT = STATE_CODE["present"]
STATE_ZERO = STATE_CODE["zero"]
STATE_EXCLUDED = STATE_CODE["excluded"]
STATE_LOST = STATE_CODE["lost"]
STATE_INVALID = STATE_CODE["invalid"]

# ---------------------------------------------------------------------------------------------------------------
# flattened format (§2.12)
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
FLAT_TYPE = 1
FLAT_VERSION = 1
FLAT_RECORD_HEADER_SIZE = 16

# ---------------------------------------------------------------------------------------------------------------
# Xen xl dump-core (§3.1)
XC_CORE_NOTE_NONE = 0x2000000
XC_CORE_NOTE_HEADER = 0x2000001
XC_CORE_NOTE_XEN_VERSION = 0x2000002
XC_CORE_NOTE_FORMAT_VERSION = 0x2000003
XC_CORE_MAGIC_PV = 0xF00FEBED
XC_CORE_MAGIC_HVM = 0xF00FEBEE
VCPU_GUEST_CONTEXT_SIZE = 5168
#: vcpu_guest_context x86_64 (§3.1): field -> offset
VCPU_CONTEXT_FIELDS = {
    "flags": 512,
    "r15": 520, "r14": 528, "r13": 536, "r12": 544, "rbp": 552, "rbx": 560, "r11": 568, "r10": 576,
    "r9": 584, "r8": 592, "rax": 600, "rcx": 608, "rdx": 616, "rsi": 624, "rdi": 632,
    "rip": 648, "rflags": 664, "rsp": 672,
    "cr0": 4984, "cr2": 5000, "cr3": 5008, "cr4": 5016,
    "fs_base": 5144, "gs_base_kernel": 5152, "gs_base_user": 5160,
}

# ---------------------------------------------------------------------------------------------------------------
# x86_64 kernel address map (§4.2, §4.3)
START_KERNEL_MAP = 0xFFFFFFFF80000000
KERNEL_IMAGE_SIZE_DEFAULT = 1 << 30  # the KASLR window; NUMBER(KERNEL_IMAGE_SIZE) overrides
PAGE_OFFSET_DEFAULTS = (0xFFFF888000000000, 0xFFFF880000000000, 0xFFFF810000000000)
PTE_ADDR_MASK = 0x000FFFFFFFFFF000
PTE_PRESENT = 0x1
PTE_PSE = 0x80
