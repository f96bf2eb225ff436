"""Dump-format constants as data (shared/spec/vmcore.md §1-§5).

Every number here is a format fact from the spec: ELF note types (§1.5), the kdump-compressed header flags (§2.3),
makedumpfile dump levels (§2.9), the flattened format's signature and block (§2.12), the xc_core note types and
magics (§3.1) and the x86_64 kernel address map (§4.2). Readers look them up; they never restate them in if-chains.
The binary layouts (structure members and their offsets) are in structs.py.
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

NT_PRSTATUS = 1
# Xen's note types: hypervisor kdump (§3.2) and xl dump-core's .note.Xen (§3.1)
XEN_ELFNOTE_CRASH_INFO = 0x1000001
XEN_ELFNOTE_CRASH_REGS = 0x1000002
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003

#: (name, type) -> human name of the note, for the notes table
NOTE_TYPES = {
    ("CORE", 1): "NT_PRSTATUS",
    ("CORE", 2): "NT_PRFPREG",
    ("CORE", 3): "NT_PRPSINFO",
    ("CORE", 4): "NT_TASKSTRUCT",
    ("VMCOREINFO", 0): "VMCOREINFO",
    ("VMCOREINFO_XEN", 0): "VMCOREINFO_XEN",
    ("QEMU", 0): "QEMUCPUState",
    ("LINUX", 0x700): "NT_VMCOREDD",
    ("ERASEINFO", 0): "ERASEINFO",
}
NOTE_TYPES.update({("Xen", v): k for k, v in list(globals().items()) if k.startswith("XEN_ELFNOTE_")})

# ---------------------------------------------------------------------------------------------------------------
# kdump-compressed (§2)
KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"

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
FLAT_HEADER_SIZE = 4096  # the header block: makedumpfile_header, padded; the records follow it
FLAT_TYPE = 1
FLAT_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------
# Xen xl dump-core (§3.1)
XC_CORE_MAGIC_PV = 0xF00FEBED
XC_CORE_MAGIC_HVM = 0xF00FEBEE

# ---------------------------------------------------------------------------------------------------------------
# x86_64 kernel address map (§4.2, §4.3)
START_KERNEL_MAP = 0xFFFFFFFF80000000
KERNEL_IMAGE_SIZE_DEFAULT = 1 << 30  # the KASLR window; NUMBER(KERNEL_IMAGE_SIZE) overrides
PAGE_OFFSET_DEFAULTS = (0xFFFF888000000000, 0xFFFF880000000000, 0xFFFF810000000000)
PTE_ADDR_MASK = 0x000FFFFFFFFFF000
PTE_PRESENT = 0x1
PTE_PSE = 0x80
