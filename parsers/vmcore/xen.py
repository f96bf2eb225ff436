"""Xen guest state in a dump: Xen-related kernel log events, grant table frames, the shared_info page
(shared/spec/vmcore.md §6; Xen xen/include/public/grant_table.h and xen.h; message formats from Linux
arch/x86/pci/xen.c, arch/x86/xen/*.c and drivers/xen/*.c, whose pr_fmt prefixes are ``"xen:" KBUILD_MODNAME ": "``).

* ``log_events(dump)``: one row per kernel log record whose text matches a shape in ``LOG_EVENTS`` (the catalog
  below is the documentation of what is recognised), with the numbers the message carries as columns.
* ``grant_entries(dump, frames, version)``: grant table v1 (8-byte) or v2 (16-byte) entries of the given guest
  frames; ``find_grant_frames(dump)`` scans the dump for pages shaped like v1 grant frames.
* ``shared_info(data)`` / ``shared_info_from_frame(dump, pfn)``: vcpu_info slots and the 2-level event channel
  pending/mask bitmaps of a shared_info page.
"""

from __future__ import annotations

import re

import numpy as np

from . import structs as S

# ---------------------------------------------------------------------------------------------------------------
# kernel log events. (event, category, regex over the record text); named groups become columns.
LOG_EVENTS: tuple[tuple[str, str, str], ...] = (
    # arch/x86/pci/xen.c: KERN_DEBUG "xen: --> pirq=%d -> irq=%d (gsi=%d)"
    ("pirq_mapped", "pirq", r"^xen: --> pirq=(?P<pirq>-?\d+) -> irq=(?P<irq>-?\d+) \(gsi=(?P<gsi>-?\d+)\)"),
    # arch/x86/pci/xen.c: "xen: registering gsi %u triggering %d polarity %d"
    ("gsi_registered", "pirq", r"^xen: registering gsi (?P<gsi>\d+) triggering (?P<trigger>-?\d+) polarity (?P<polarity>-?\d+)"),
    # arch/x86/pci/xen.c: "xen: sci override: global_irq=%d trigger=%d polarity=%d", "xen: acpi sci %d"
    ("sci_override", "pirq", r"^xen: sci override: global_irq=(?P<gsi>\d+) trigger=(?P<trigger>\d+) polarity=(?P<polarity>\d+)"),
    ("acpi_sci", "pirq", r"^xen: acpi sci (?P<gsi>-?\d+)"),
    # arch/x86/pci/xen.c: KERN_WARNING "xen map irq failed %d"
    ("pirq_map_failed", "pirq-error", r"^xen map irq failed (?P<rc>-?\d+)"),
    # drivers/xen/grant-table.c (pr_fmt "xen:grant_table: "): "Grant tables using version %d layout"
    ("grant_table_version", "grant-table", r"^(?:xen:grant_table: )?Grant tables? using version (?P<version>\d+) layout\.?$"),
    ("grant_table_initialized", "grant-table", r"^(?:xen:grant_table: )?Grant table initialized"),
    ("grant_table_error", "grant-table", r"^(?:xen:grant_table: )(?P<message>.*(?:[Ff]ail|[Ee]rror|[Uu]nable|leak|still in use).*)"),
    # drivers/xen/balloon.c: "xen:balloon: Initialising balloon driver" (older: "xen_balloon: ", "xen_mem: ")
    ("balloon_init", "balloon", r"^(?:xen:balloon: |xen_balloon: |xen_mem: )Initialising balloon driver\.?$"),
    ("balloon", "balloon", r"^(?:xen:balloon: |xen_balloon: |xen_mem: )(?P<message>.*)"),
    # drivers/xen/events (pr_fmt "xen:events: "): "Using FIFO-based ABI" / "Using 2-level ABI"
    ("evtchn_abi", "evtchn", r"^xen:events: Using (?P<abi>FIFO-based|2-level) ABI"),
    ("evtchn_error", "evtchn-error", r"^xen:events: (?P<message>.*(?:[Ff]ail|[Ee]rror|[Uu]nable|[Ii]nvalid|[Bb]ad).*)"),
    ("evtchn", "evtchn", r"^xen:events: (?P<message>.*)"),
    # arch/x86/xen/enlighten_hvm.c and friends
    ("hvm_callback_vector", "platform", r"^Xen HVM callback vector for event delivery is enabled"),
    ("hypervisor_detected", "platform", r"^Hypervisor detected: Xen(?: (?P<mode>HVM|PV|PVH))?"),
    ("booting_on_xen", "platform", r"^Booting (?:paravirtualized )?kernel on Xen(?: (?P<mode>HVM|PVH|PV))?"),
    ("xen_version", "platform", r"^Xen version:? (?P<xen_version>\d+\.\d+[^\s]*?)\.?$"),
    ("xen_platform_pci", "platform", r"^xen:platform_pci: (?P<message>.*)|^xen_platform_pci (?P<device>\S+): (?P<message2>.*)"),
    # drivers/xen/manage.c (pr_fmt "xen:manage: "): shutdown, reboot, suspend, sysrq requests
    ("shutdown_request", "shutdown", r"^xen:manage: (?P<message>.*)"),
    # kexec/kdump across the Xen boundary (soft reset is requested before the jump)
    ("kexec", "kexec", r"^(?:kexec_core|kexec|kdump): (?P<message>.*)|^(?P<message2>Starting crashdump kernel.*|Loaded crash kernel.*)"),
    ("panic", "kexec", r"^Kernel panic - not syncing: (?P<reason>.*)"),
    # frontends and xenbus
    ("xenbus", "xenbus", r"^(?:xenbus|xenbus_probe|xenbus_probe_frontend|xen_netfront|xen-blkfront|blkfront|xen:xenbus|xenbus_probe_backend): (?P<message>.*)"),
    # anything else said by Xen code
    ("xen_other", "xen", r"^(?:xen|Xen|XEN)[:_ ](?P<message>.*)"),
)

_COMPILED = [(name, cat, re.compile(rx)) for name, cat, rx in LOG_EVENTS]
_INT_FIELDS = ("pirq", "irq", "gsi", "trigger", "polarity", "rc", "version")


def classify(text: str) -> tuple[str, str, dict] | None:
    """(event, category, fields) of the first catalog entry matching ``text``, or None."""
    for name, cat, rx in _COMPILED:
        m = rx.match(text)
        if m:
            fields = {k.rstrip("2"): v for k, v in m.groupdict().items() if v is not None}
            return name, cat, fields
    return None


def log_events(dump_or_log):
    """Xen-related kernel log events (pyarrow Table): seq, ts_nsec, level, event, category, pirq, irq, gsi,
    trigger, polarity, rc, version (int64, null when the message has none), detail (other captured text), text."""
    import pyarrow as pa

    table = dump_or_log.dmesg() if hasattr(dump_or_log, "dmesg") else dump_or_log
    rows = []
    for r in table.to_pylist():
        hit = classify(r["text"])
        if hit is None:
            continue
        name, cat, fields = hit
        row = {"seq": r["seq"], "ts_nsec": r["ts_nsec"], "level": r["level"], "event": name, "category": cat}
        for f in _INT_FIELDS:
            row[f] = int(fields[f]) if f in fields else None
        rest = {k: v for k, v in fields.items() if k not in _INT_FIELDS}
        row["detail"] = " ".join(f"{k}={v}" for k, v in rest.items()) or None
        row["text"] = r["text"]
        rows.append(row)
    schema = pa.schema([("seq", pa.uint64()), ("ts_nsec", pa.uint64()), ("level", pa.uint8()), ("event", pa.string()),
                        ("category", pa.string())] + [(f, pa.int64()) for f in _INT_FIELDS] + [("detail", pa.string()), ("text", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------------------------------------------------------
# grant tables (spec §6.1)
GTF_TYPE_MASK = 0x3
GTF_TYPES = {0: "invalid", 1: "permit_access", 2: "accept_transfer", 3: "transitive"}
GTF_READONLY = 0x4
GTF_READING = 0x8
GTF_WRITING = 0x10
GTF_SUB_PAGE = 0x100
GTF_KNOWN = 0x1FF
RESERVED_REFS = 8


def decode_grant_frame(data: bytes, version: int = 1, first_ref: int = 0) -> dict[str, list]:
    """Entries of one grant frame as columns: ref, flags, type, domid, frame, readonly, reading, writing,
    in_use (v1: a permit_access grant Xen reports mapped for reading or writing), plus v2's page_off/length."""
    if version not in (1, 2):
        raise ValueError("grant table version must be 1 or 2")
    entry = S.GRANT_ENTRY_V1 if version == 1 else S.GRANT_ENTRY_V2
    n = len(data) // entry.size
    cols: dict[str, list] = {k: [] for k in ("ref", "flags", "type", "domid", "frame", "readonly", "reading", "writing", "in_use", "page_off", "length")}
    for i in range(n):
        if version == 1:
            flags, domid, frame = entry.struct.unpack_from(data, i * entry.size)
            page_off = length = None
        else:
            flags, domid, a, b, frame = entry.struct.unpack_from(data, i * entry.size)
            page_off, length = (a, b) if flags & GTF_SUB_PAGE else (None, None)
            if flags & GTF_TYPE_MASK == 3:  # transitive: trans_domid at 4, the gref in place of the frame
                frame = S.GRANT_ENTRY_V2_TRANSITIVE.unpack(data, i * entry.size)["gref"]
        t = flags & GTF_TYPE_MASK
        cols["ref"].append(first_ref + i)
        cols["flags"].append(flags)
        cols["type"].append(GTF_TYPES[t])
        cols["domid"].append(domid)
        cols["frame"].append(frame)
        cols["readonly"].append(bool(flags & GTF_READONLY) and t in (1, 3))
        reading = bool(flags & GTF_READING) and t in (1, 3) and version == 1
        writing = bool(flags & GTF_WRITING) and t in (1, 3) and version == 1
        cols["reading"].append(reading)
        cols["writing"].append(writing)
        cols["in_use"].append(t == 1 and (reading or writing))
        cols["page_off"].append(page_off)
        cols["length"].append(length)
    return cols


def grant_entries(dump, frames, version: int = 1, *, skip_empty: bool = True):
    """Grant entries of the guest frames ``frames`` (pfns, in grant-frame order: frame k holds refs
    k*entries_per_frame ...). pyarrow Table with one row per non-empty entry (all entries with skip_empty=False)."""
    import pyarrow as pa

    ps = dump.page_size
    per = ps // (S.GRANT_ENTRY_V1 if version == 1 else S.GRANT_ENTRY_V2).size
    out: dict[str, list] = {}
    for k, pfn in enumerate(frames):
        cols = decode_grant_frame(dump.read_phys(int(pfn) * ps, ps), version, first_ref=k * per)
        cols["gframe"] = [k] * len(cols["ref"])
        cols["pfn"] = [int(pfn)] * len(cols["ref"])
        keep = [i for i in range(len(cols["ref"])) if not skip_empty or cols["flags"][i] or cols["domid"][i] or cols["frame"][i]]
        for key, vals in cols.items():
            out.setdefault(key, []).extend(vals[i] for i in keep)
    types = {"ref": pa.uint32(), "flags": pa.uint16(), "type": pa.string(), "domid": pa.uint16(), "frame": pa.uint64(),
             "readonly": pa.bool_(), "reading": pa.bool_(), "writing": pa.bool_(), "in_use": pa.bool_(),
             "page_off": pa.uint16(), "length": pa.uint16(), "gframe": pa.uint32(), "pfn": pa.uint64()}
    return pa.table({k: pa.array(out.get(k, []), t) for k, t in types.items()})


def find_grant_frames(dump, *, min_entries: int = 4, max_frame: int | None = None) -> list[int]:
    """Pfns of pages shaped like v1 grant frames: every non-empty 8-byte entry has only known GTF bits, a
    valid type, a domid below DOMID_FIRST_RESERVED (0x7ff0) and a frame below ``max_frame`` (default: the
    dump's highest pfn + 1), at least ``min_entries`` permit_access entries, and nothing else in the page."""
    if max_frame is None:
        max_frame = 1 + max((int(b.pfn[-1]) for b in dump._index_batches() if len(b)), default=0)
    limit = np.uint64(max_frame)
    found = []
    for b in dump.iter_pages(states=("present",)):
        ent = b.data.view("<u2").reshape(len(b.pfn), -1, 4)  # flags, domid, frame lo, frame hi
        flags = ent[:, :, 0]
        domid = ent[:, :, 1]
        frame = ent[:, :, 2].astype(np.uint64) | (ent[:, :, 3].astype(np.uint64) << np.uint64(16))
        nonempty = (flags != 0) | (domid != 0) | (frame != 0)
        ok = ((flags & ~np.uint16(GTF_KNOWN)) == 0) & ((flags & GTF_TYPE_MASK) != 0) & (domid < 0x7FF0) & (frame < limit) & ((frame > 0) | ((flags & GTF_TYPE_MASK) != 1))
        bad = (nonempty & ~ok).any(axis=1)
        permits = (nonempty & ok & ((flags & GTF_TYPE_MASK) == 1)).sum(axis=1)
        hits = np.flatnonzero(~bad & (permits >= min_entries))
        found.extend(int(p) for p in b.pfn[hits])
    return found


# ---------------------------------------------------------------------------------------------------------------
# shared_info (spec §6.3)
SHARED_INFO_VCPUS = 32  # MAX_VIRT_CPUS vcpu_info slots open the page
EVTCHN_PENDING_OFF = S.EVTCHN_PENDING_OFF
EVTCHN_MASK_OFF = S.EVTCHN_MASK_OFF
WC_OFF = S.SHARED_INFO_TAIL.offset_of("wc_version")


def shared_info(data: bytes) -> dict:
    """Decode a shared_info page: {"vcpus": pyarrow Table, "ports": pyarrow Table of ports pending or masked,
    "wallclock": {...}, "arch": {...}}. vcpu_info slots go stale once Linux registers per-CPU copies."""
    import pyarrow as pa

    if len(data) < S.SHARED_INFO_TAIL.size:
        raise ValueError(f"a shared_info page needs {S.SHARED_INFO_TAIL.size} bytes, got {len(data)}")
    vc = [dict(vcpu=v, **S.VCPU_INFO.unpack(data, v * S.VCPU_INFO.size)) for v in range(SHARED_INFO_VCPUS)]
    pending = np.frombuffer(data[EVTCHN_PENDING_OFF:EVTCHN_MASK_OFF], "<u8")
    masked = np.frombuffer(data[EVTCHN_MASK_OFF:WC_OFF], "<u8")
    pbits = np.unpackbits(pending.view(np.uint8), bitorder="little").astype(bool)
    mbits = np.unpackbits(masked.view(np.uint8), bitorder="little").astype(bool)
    ports = np.flatnonzero(pbits | mbits)
    tail = S.SHARED_INFO_TAIL.unpack(data)
    wc_version, wc_sec, wc_nsec, wc_sec_hi = (tail.pop(k) for k in ("wc_version", "wc_sec", "wc_nsec", "wc_sec_hi"))
    arch = tail  # arch_shared_info
    return {
        "vcpus": pa.Table.from_pylist(vc),
        "ports": pa.table({"port": pa.array(ports, pa.uint32()), "pending": pa.array(pbits[ports]), "masked": pa.array(mbits[ports])}),
        "wallclock": {"version": wc_version, "sec": (wc_sec_hi << 32) | wc_sec, "nsec": wc_nsec, "updating": bool(wc_version & 1)},
        "arch": arch,
    }


def shared_info_from_frame(dump, pfn: int) -> dict:
    """``shared_info()`` of the guest frame ``pfn`` (for xl dump-core files, ``dump.shared_info_page`` holds
    the live page Xen saved)."""
    return shared_info(dump.read_phys(int(pfn) * dump.page_size, dump.page_size))
