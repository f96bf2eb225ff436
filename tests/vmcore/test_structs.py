"""The dump formats' binary layouts (parsers/vmcore/structs.py) against the spec's tables, and the one read path
(``read_struct``): a structure the file cuts short is a FormatError naming the file and the offset."""

from __future__ import annotations

import random
import struct

import pytest

from tracelens.errors import FormatError
from tracelens.parsers.vmcore import structs as S
from tracelens.parsers.vmcore.source import FileSource

# (layout, size, {member: offset}) as shared/spec/vmcore.md and the C headers give them, written out here on purpose
SPEC = [
    (S.ELF64_EHDR, 64, {"e_type": 16, "e_machine": 18, "e_phoff": 32, "e_shoff": 40, "e_flags": 48,
                        "e_phentsize": 54, "e_phnum": 56, "e_shentsize": 58, "e_shnum": 60, "e_shstrndx": 62}),
    (S.ELF64_PHDR, 56, {"p_type": 0, "p_offset": 8, "p_vaddr": 16, "p_paddr": 24, "p_filesz": 32, "p_memsz": 40}),
    (S.ELF64_SHDR, 64, {"sh_name": 0, "sh_type": 4, "sh_offset": 24, "sh_size": 32, "sh_info": 44, "sh_entsize": 56}),
    (S.ELF_PRSTATUS, 336, {"pr_pid": 32, "r15": 112, "rip": 240, "rsp": 264, "gs": 320}),
    (S.QEMU_CPU_STATE, 432, {"version": 0, "size": 4, "rax": 8, "rsp": 56, "rip": 136, "rflags": 144,
                             "idt_base": 384, "cr0": 392, "cr3": 416, "cr4": 424}),
    (S.DISK_DUMP_HEADER, 464, {"header_version": 8, "sysname": 12, "machine": 272, "tv_sec": 408, "status": 424,
                               "block_size": 428, "sub_hdr_size": 432, "bitmap_blocks": 436, "max_mapnr": 440,
                               "current_cpu": 456, "nr_cpus": 460}),
    (S.KDUMP_SUB_HEADER, 104, {"phys_base": 0, "dump_level": 8, "split": 12, "start_pfn": 16, "end_pfn": 24,
                               "offset_vmcoreinfo": 32, "offset_note": 48, "size_note": 56, "offset_eraseinfo": 64,
                               "start_pfn_64": 80, "end_pfn_64": 88, "max_mapnr_64": 96}),
    (S.PAGE_DESC, 24, {"offset": 0, "size": 8, "flags": 12, "page_flags": 16}),
    (S.FLAT_HEADER, 32, {"signature": 0, "type": 16, "version": 24}),
    (S.FLAT_RECORD_HEADER, 16, {"offset": 0, "size": 8}),
    (S.DUMPCORE_HEADER, 32, {"magic": 0, "nr_vcpus": 8, "nr_pages": 16, "page_size": 24}),
    (S.VCPU_GUEST_CONTEXT, 5168, {"flags": 512, "rip": 648, "rsp": 672, "cr3": 5008, "gs_base_user": 5160}),
    (S.GRANT_ENTRY_V1, 8, {"flags": 0, "domid": 2, "frame": 4}),
    (S.GRANT_ENTRY_V2, 16, {"flags": 0, "domid": 2, "frame": 8}),
    (S.VCPU_INFO, 64, {"pending_sel": 8, "time_version": 32, "tsc_timestamp": 40, "tsc_shift": 60}),
    (S.SHARED_INFO_TAIL, 3136, {"wc_version": 3072, "max_pfn": 3088, "p2m_generation": 3128}),
]


@pytest.mark.parametrize("layout, size, offsets", SPEC, ids=[s[0].name for s in SPEC])
def test_layouts_match_the_spec(layout, size, offsets):
    assert layout.size == layout.struct.size == size
    assert {m: layout.offset_of(m) for m in offsets} == offsets


def test_flattened_layouts_are_big_endian():
    raw = struct.pack(">qq", 0x1234, 4096)
    assert S.FLAT_RECORD_HEADER.unpack(raw) == {"offset": 0x1234, "size": 4096}


def test_a_layout_refuses_members_that_do_not_fit():
    with pytest.raises(ValueError, match="overlaps"):
        S.Struct("x", 16, [(0, "a", "Q"), (4, "b", "I")])
    with pytest.raises(ValueError, match="past its size"):
        S.Struct("x", 8, [(4, "a", "Q")])


def test_numpy_view_is_the_same_layout():
    rnd = random.Random(5)
    raw = rnd.randbytes(S.PAGE_DESC.size * 50)
    arr = __import__("numpy").frombuffer(raw, S.PAGE_DESC.dtype())
    for i, (off, size, flags, page_flags) in enumerate(S.PAGE_DESC.struct.iter_unpack(raw)):
        assert (int(arr["offset"][i]), int(arr["size"][i]), int(arr["flags"][i]), int(arr["page_flags"][i])) == (
            off, size, flags, page_flags)


def test_read_struct_names_the_file_and_the_offset(tmp_path):
    p = tmp_path / "short"
    p.write_bytes(bytes(100))
    src = FileSource(p)
    try:
        assert S.read_struct(src, S.PAGE_DESC, 76)["size"] == 0  # 76 + 24 = 100: fits exactly
        with pytest.raises(FormatError) as e:
            S.read_struct(src, S.PAGE_DESC, 80)
        assert e.value.offset == 80 and str(e.value).startswith(f"{p}: at byte 80: page_desc (24 bytes)")
        with pytest.raises(FormatError) as e:
            S.read_structs(src, S.ELF64_PHDR, 0, 2, "program header table")
        assert e.value.offset == 0 and "program header table (112 bytes)" in str(e.value)
        err = S.member_error(src, S.DISK_DUMP_HEADER, 0, "block_size", "bad block size")
        assert (err.path, err.offset) == (str(p), 428)
    finally:
        src.close()
