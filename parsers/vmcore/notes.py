"""ELF notes of a dump: the note walk, NT_PRSTATUS registers and QEMU CPU state (shared/spec/vmcore.md §1.4-§1.7).

A note is (namesz u32, descsz u32, type u32), the name padded to 4 bytes, the desc padded to 4 bytes (Linux, QEMU
and Xen all pad to 4 even in ELF64 files). The walk stops at an all-zero header (the kernel's per-CPU buffers end
with one) and at anything that would run past the note area. The n-th NT_PRSTATUS is *not* necessarily CPU n
(CPUs that saved nothing add no note): the table keeps the note order and each note's pr_pid.

The walk is bounded whatever the headers claim: a dump holds at most MAX_NOTES notes in all (a note can be a bare
12-byte header, and each becomes a Python object: 200 PT_NOTE headers over one 1 MiB area made 17.5 M of them)
and the readers bound the note bytes of the whole file (MAX_NOTE_BYTES) and refuse overlapping note areas.
"""

from __future__ import annotations

from tracelens.errors import FormatError

from . import constants as C
from . import structs as S
from ._plain import plain

#: notes in one dump, all areas together (a host with 4096 CPUs writes about 3 per CPU)
MAX_NOTES = 1 << 16
#: bytes of note areas in one dump, all areas together (the kernel's are a few pages; QEMU's grow with vCPUs)
MAX_NOTE_BYTES = 64 << 20


@plain(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes
    offset: int  # absolute offset of the note header in the (reassembled) file, -1 when unknown

    @property
    def type_name(self) -> str:
        return C.NOTE_TYPES.get((self.name, self.type), f"0x{self.type:x}")


def parse_notes(blob: bytes, base_offset: int = -1, *, path=None, max_notes: int = MAX_NOTES) -> tuple[list[Note], int | None]:
    """Walk a note area. Returns the notes and the offset (within ``blob``) where the walk stopped early on
    damage, or None when it ended cleanly. More than ``max_notes`` notes (what is left of the dump's MAX_NOTES)
    raise FormatError naming ``path`` and the offset of the first note too many."""
    notes: list[Note] = []
    pos = 0
    n = len(blob)
    head = S.NOTE_HEADER.struct.unpack_from
    while pos + S.NOTE_HEADER.size <= n:
        if len(notes) >= max_notes:
            raise FormatError(path if path is not None else "(notes)", (base_offset + pos) if base_offset >= 0 else None,
                              f"more than {MAX_NOTES:,} ELF notes in the dump: a damaged note area")
        namesz, descsz, ntype = head(blob, pos)
        if namesz == 0 and descsz == 0:
            if ntype == 0:
                # padding/terminator: skip over zero headers (merged per-CPU buffers can leave some)
                pos += S.NOTE_HEADER.size
                continue
        name_off = pos + S.NOTE_HEADER.size
        desc_off = name_off + ((namesz + 3) & ~3)
        end = desc_off + ((descsz + 3) & ~3)
        if desc_off + descsz > n or namesz > 4096:
            return notes, pos
        name = blob[name_off : name_off + namesz].rstrip(b"\0").decode("ascii", "replace")
        desc = bytes(blob[desc_off : desc_off + descsz])
        notes.append(Note(name, ntype, desc, (base_offset + pos) if base_offset >= 0 else -1))
        pos = end
    return notes, None


def notes_table(notes: list[Note]):
    """One row per note: index, name, type, type_name, desc_size, offset (pyarrow Table)."""
    import pyarrow as pa

    return pa.table(
        {
            "index": pa.array(range(len(notes)), pa.int32()),
            "name": [n.name for n in notes],
            "type": pa.array([n.type for n in notes], pa.uint32()),
            "type_name": [n.type_name for n in notes],
            "desc_size": pa.array([len(n.desc) for n in notes], pa.uint32()),
            "offset": pa.array([n.offset for n in notes], pa.int64()),
        }
    )


def decode_prstatus(desc: bytes) -> dict | None:
    """x86_64 ``struct elf_prstatus`` -> {pid, r15..gs}; None when the desc is too short to hold the registers
    (the last 8 bytes, pr_fpvalid and padding, are not needed)."""
    if len(desc) < S.ELF_PRSTATUS.offset_of(S.PRSTATUS_REGS[-1]) + 8:
        return None
    row = S.ELF_PRSTATUS.unpack(desc.ljust(S.ELF_PRSTATUS.size, b"\0"))
    row["pid"] = row.pop("pr_pid")
    return row


def prstatus_table(notes: list[Note]):
    """Per-CPU registers from CORE/NT_PRSTATUS notes (uint64 columns; ``note_index`` is the note order, which is
    the CPU number only when every CPU saved a note)."""
    import pyarrow as pa

    rows = []
    for i, n in enumerate(notes):
        if n.name == "CORE" and n.type == C.NT_PRSTATUS:
            r = decode_prstatus(n.desc)
            if r is not None:
                r["note_index"] = len(rows)
                rows.append(r)
    cols = {"note_index": pa.array([r["note_index"] for r in rows], pa.int32()), "pid": pa.array([r["pid"] for r in rows], pa.int32())}
    for reg in S.PRSTATUS_REGS:
        cols[reg] = pa.array([r[reg] for r in rows], pa.uint64())
    return pa.table(cols)


def qemu_cpu_table(notes: list[Note]):
    """QEMU per-vCPU state (QEMUCPUState v1): general registers plus cr0..cr4, gdt/idt bases."""
    import pyarrow as pa

    rows = []
    for n in notes:
        if n.name == "QEMU" and len(n.desc) >= S.QEMU_CPU_STATE.size:
            state = S.QEMU_CPU_STATE.unpack(n.desc)
            if state["version"] != 1:
                continue
            rows.append(state)
    cols = {"vcpu": pa.array(range(len(rows)), pa.int32())}
    for k in S.QEMU_CPU_REGS:
        cols[k] = pa.array([r[k] for r in rows], pa.uint64())
    return pa.table(cols)


def xen_notes_table(notes: list[Note]):
    """Xen hypervisor kdump notes: one row per ``Xen`` CRASH_REGS (cr0, cr2, cr3, cr4 of each physical CPU, in
    note order) and CRASH_INFO (version numbers; the string fields are physical addresses of strings; the tail is
    dom0_pfn_to_mfn_frame_list_list, preceded by xen_phys_start in the 80-byte version). pyarrow Table."""
    import pyarrow as pa

    rows = []
    cpu = 0
    for n in notes:
        if n.name != "Xen":
            continue
        if n.type == C.XEN_ELFNOTE_CRASH_REGS and len(n.desc) >= S.XEN_CRASH_REGS.size:
            rows.append({"note": "CRASH_REGS", "cpu": cpu, **S.XEN_CRASH_REGS.unpack(n.desc)})
            cpu += 1
        elif n.type == C.XEN_ELFNOTE_CRASH_INFO and len(n.desc) >= S.XEN_CRASH_INFO.size:
            vals = S.XEN_CRASH_INFO.unpack(n.desc)
            row = {"note": "CRASH_INFO", "xen_major_version": vals["xen_major_version"], "xen_minor_version": vals["xen_minor_version"],
                   "tainted": vals["tainted"]}
            for tail in (S.XEN_CRASH_INFO_80, S.XEN_CRASH_INFO_72):  # told apart by the desc size
                if len(n.desc) >= tail.size:
                    row.update(tail.unpack(n.desc))
                    break
            rows.append(row)
    cols = ("note", "cpu", "cr0", "cr2", "cr3", "cr4", "xen_major_version", "xen_minor_version", "tainted",
            "xen_phys_start", "dom0_pfn_to_mfn_frame_list_list")
    types = {"note": pa.string(), "cpu": pa.int32()}
    return pa.table({c: pa.array([r.get(c) for r in rows], types.get(c, pa.uint64())) for c in cols})
