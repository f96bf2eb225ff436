"""The kernel log from VMCOREINFO alone, for the three printk eras (shared/spec/vmcore.md §5; Linux
kernel/printk/printk.c and printk_ringbuffer.[ch]; output conventions of kexec-tools vmcore-dmesg and
makedumpfile --dump-dmesg).

* ``lockless`` (5.10+, SYMBOL(prb)): descriptors tail_id..head_id inclusive; committed/finalized slots whose
  state_var id matches; the text block found with the ``next - 1`` wrap rule (so a block ending exactly at the
  ring end, possible since the 2025 "don't needlessly wrap" change, is read right), minus its 8-byte id.
* ``structured`` (3.5-5.9, SYMBOL(log_first_idx)): ``struct printk_log`` records from log_first_idx to
  log_next_idx; a record with len 0 marks the wrap to the buffer start.
* ``plain`` (<= 3.4, SYMBOL(log_end)): the character ring, last min(log_end, log_buf_len) bytes.

Every offset and size comes from VMCOREINFO; every size read from the dump is checked before it is used
(ring sizes are capped, index walks are bounded). Rings whose indices contradict each other raise FormatError;
single unreadable records are kept with ``status`` saying why.

Renderers reproduce the reference tools byte for byte: ``vmcore-dmesg`` (escapes bytes that are neither printable
nor space as ``\\xNN``, prints data-less records and, in the structured era, the wrap marker as a bare timestamp)
and ``makedumpfile`` (1.7.x ``--dump-dmesg``: indents continuation lines under the timestamp, escapes through a
signed ``char`` so bytes >= 0x80 print as ``\\xffffffNN``, skips data-less records).
"""

from __future__ import annotations

import struct

from tracelens.errors import FormatError

from ._plain import Factory, plain

ID_MASK = (1 << 62) - 1
MAX_TEXT_RING_BITS = 28  # 256 MiB: far above CONFIG_LOG_BUF_SHIFT's maximum (25)
MAX_DESC_BITS = 24
MAX_LOG_BUF = 1 << 28
STYLES = ("vmcore-dmesg", "makedumpfile")

#: bytes C's isprint() || isspace() accept in the C locale
_PRINTABLE = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\n\v\f\r")
_PRINTABLE_BYTES = bytes(sorted(_PRINTABLE))


@plain
class Record:
    seq: int | None
    ts_nsec: int
    text: bytes
    level: int | None = None
    facility: int | None = None
    flags: int | None = None
    caller_id: int | None = None
    subsystem: str | None = None
    device: str | None = None
    dict_text: bytes | None = None
    has_data: bool = True  # False for lockless records without a data block
    status: str = "ok"
    wrap_marker: bool = False  # structured era: the len == 0 record (printed by vmcore-dmesg only)


@plain
class KernelLog:
    era: str
    records: list[Record] = Factory(list)
    raw: bytes | None = None  # plain era: the character ring in order

    def table(self):
        """One row per record (pyarrow Table): seq uint64 (null before 5.10), ts_nsec uint64 (local_clock ns),
        level/facility/flags uint8, caller_id uint32 and caller ("T<pid>"/"C<cpu>"), text, subsystem, device,
        dict, status ("ok", "truncated", "no-data", "lost", "invalid")."""
        import pyarrow as pa

        rows = [r for r in self.records if not r.wrap_marker]

        def caller(r):
            if r.caller_id is None:
                return None
            return ("C" if r.caller_id & 0x80000000 else "T") + str(r.caller_id & 0x7FFFFFFF)

        return pa.table(
            {
                "seq": pa.array([r.seq for r in rows], pa.uint64()),
                "ts_nsec": pa.array([r.ts_nsec for r in rows], pa.uint64()),
                "level": pa.array([r.level for r in rows], pa.uint8()),
                "facility": pa.array([r.facility for r in rows], pa.uint8()),
                "flags": pa.array([r.flags for r in rows], pa.uint8()),
                "caller_id": pa.array([r.caller_id for r in rows], pa.uint32()),
                "caller": pa.array([caller(r) for r in rows], pa.string()),
                "text": pa.array([r.text.decode("utf-8", "backslashreplace") for r in rows], pa.string()),
                "subsystem": pa.array([r.subsystem for r in rows], pa.string()),
                "device": pa.array([r.device for r in rows], pa.string()),
                "dict": pa.array([None if r.dict_text is None else r.dict_text.decode("utf-8", "backslashreplace") for r in rows], pa.string()),
                "status": pa.array([r.status for r in rows], pa.string()),
            }
        )

    def render(self, style: str = "vmcore-dmesg") -> bytes:
        """The log exactly as ``vmcore-dmesg`` or ``makedumpfile --dump-dmesg`` print it."""
        if style not in STYLES:
            raise ValueError(f"unknown dmesg style {style!r}; choose one of {', '.join(STYLES)}")
        if self.era == "plain":
            return self.raw or b""
        out = bytearray()
        for r in self.records:
            if style == "makedumpfile":
                if r.wrap_marker or not r.has_data:
                    continue
                out += _render_makedumpfile(r)
            else:
                out += _timestamp(r.ts_nsec) + _escape_vmcore_dmesg(r.text) + b"\n"
        return bytes(out)


def _timestamp(ts_nsec: int) -> bytes:
    sec, rem = divmod(ts_nsec, 1_000_000_000)
    return b"[%5d.%06d] " % (sec, rem // 1000)


def _escape_vmcore_dmesg(text: bytes) -> bytes:
    if not text.translate(None, _PRINTABLE_BYTES):
        return text
    return b"".join(bytes((c,)) if c in _PRINTABLE else b"\\x%02x" % c for c in text)


def _render_makedumpfile(r: Record) -> bytes:
    head = _timestamp(r.ts_nsec)
    indent = b"\n" + b" " * len(head)
    if not r.text.translate(None, _PRINTABLE_BYTES):
        return head + r.text.replace(b"\n", indent) + b"\n"
    out = bytearray(head)
    for c in r.text:
        if c == 0x0A:
            out += indent
        elif c in _PRINTABLE:
            out.append(c)
        elif c >= 0x80:  # makedumpfile passes a signed char to "%02x"
            out += b"\\x%08x" % (c | 0xFFFFFF00)
        else:
            out += b"\\x%02x" % c
    out += b"\n"
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------------
def read_kernel_log(dump) -> KernelLog:
    vi = dump.require_vmcoreinfo()
    era = _read_lockless if vi.symbol("prb") is not None else (
        _read_structured if vi.symbol("log_first_idx") is not None else (
            _read_plain if vi.symbol("log_end") is not None else None))
    if era is not None:
        try:
            return era(dump, vi)
        except (struct.error, IndexError) as e:  # an OFFSET() past its SIZE(), a field past the buffer read
            raise FormatError(dump.path, None, f"the kernel log structures do not fit the sizes and offsets VMCOREINFO "
                                               f"gives ({e}): damaged VMCOREINFO or printk ring") from None
    raise FormatError(dump.path, None, "VMCOREINFO exports no printk buffer (neither SYMBOL(prb), SYMBOL(log_first_idx) nor SYMBOL(log_end))")


def _need(vi, path, getter, name):
    v = getter(name)
    if v is None:
        raise FormatError(path, None, f"VMCOREINFO lacks {getter.__name__.upper()}({name}), needed to read the kernel log")
    return v


_UNPACK = {f: struct.Struct(f).unpack_from for f in ("<Q", "<I", "<H", "<B", "<q", "<i")}


def _u(fmt, buf, off):
    return _UNPACK[fmt](buf, off)[0]


MAX_STRUCT = 4096  # no printk structure is near a page; a larger SIZE() is damage


def _read_lockless(dump, vi) -> KernelLog:
    path = dump.path

    def S(name):
        v = _need(vi, path, vi.size, name)
        if not 0 < v <= MAX_STRUCT:
            raise FormatError(path, None, f"VMCOREINFO SIZE({name})={v} is not a plausible structure size")
        return v

    def O(name):
        v = _need(vi, path, vi.offset, name)
        if not 0 <= v < MAX_STRUCT:
            raise FormatError(path, None, f"VMCOREINFO OFFSET({name})={v} is not a plausible member offset")
        return v

    rb_addr = _u("<Q", dump.read_virt(vi.symbol("prb"), 8), 0)
    rb = dump.read_virt(rb_addr, S("printk_ringbuffer"))
    counter = vi.offset("atomic_long_t.counter") or 0
    dr = O("printk_ringbuffer.desc_ring")
    tr = O("printk_ringbuffer.text_data_ring")
    count_bits = _u("<I", rb, dr + O("prb_desc_ring.count_bits"))
    size_bits = _u("<I", rb, tr + O("prb_data_ring.size_bits"))
    where = f"printk ring at 0x{rb_addr:x}"
    if count_bits > MAX_DESC_BITS or size_bits > MAX_TEXT_RING_BITS or size_bits < 3:
        raise FormatError(path, None, f"{where}: implausible sizes (2^{count_bits} descriptors, 2^{size_bits} text bytes)")
    n_desc = 1 << count_bits
    ring = 1 << size_bits
    descs_addr = _u("<Q", rb, dr + O("prb_desc_ring.descs"))
    infos_addr = _u("<Q", rb, dr + O("prb_desc_ring.infos"))
    data_addr = _u("<Q", rb, tr + O("prb_data_ring.data"))
    head_id = _u("<Q", rb, dr + O("prb_desc_ring.head_id") + counter)
    tail_id = _u("<Q", rb, dr + O("prb_desc_ring.tail_id") + counter)
    span = (head_id - tail_id) & ID_MASK
    if span >= n_desc:
        raise FormatError(
            path, None,
            f"{where}: inconsistent indices: tail_id {tail_id} .. head_id {head_id} spans {span + 1} records "
            f"but the ring has {n_desc} descriptors",
        )
    dsz, isz = S("prb_desc"), S("printk_info")
    descs = dump.read_virt(descs_addr, n_desc * dsz)
    infos = dump.read_virt(infos_addr, n_desc * isz)
    data = dump.read_virt(data_addr, ring)
    sv_off = O("prb_desc.state_var") + counter
    lpos = O("prb_desc.text_blk_lpos")
    b_off, n_off = lpos + O("prb_data_blk_lpos.begin"), lpos + O("prb_data_blk_lpos.next")
    seq_off, ts_off, tl_off = O("printk_info.seq"), O("printk_info.ts_nsec"), O("printk_info.text_len")
    caller_off = vi.offset("printk_info.caller_id")
    dev_off = vi.offset("printk_info.dev_info")
    sub_off, devn_off = vi.offset("dev_printk_info.subsystem"), vi.offset("dev_printk_info.device")
    sub_len = vi.length("printk_info_subsystem") or 16
    devn_len = vi.length("printk_info_device") or 48
    log = KernelLog("lockless")
    mask64 = (1 << 64) - 1
    rid = tail_id
    for _ in range(span + 1):
        i = rid % n_desc
        d = i * dsz
        sv = _u("<Q", descs, d + sv_off)
        state = sv >> 62
        if (sv & ID_MASK) == rid and state in (1, 2):
            inf = i * isz
            begin = _u("<Q", descs, d + b_off)
            nxt = _u("<Q", descs, d + n_off)
            text_len = _u("<H", infos, inf + tl_off)
            fl = infos[inf + tl_off + 3]
            rec = Record(
                seq=_u("<Q", infos, inf + seq_off),
                ts_nsec=_u("<Q", infos, inf + ts_off),
                text=b"",
                level=fl >> 5,
                facility=infos[inf + tl_off + 2],
                flags=fl & 0x1F,
                caller_id=_u("<I", infos, inf + caller_off) if caller_off is not None else None,
            )
            if dev_off is not None and sub_off is not None and devn_off is not None:
                rec.subsystem = _cstr(infos, inf + dev_off + sub_off, sub_len) or None
                rec.device = _cstr(infos, inf + dev_off + devn_off, devn_len) or None
            if begin & 1 and nxt & 1:
                rec.has_data = False
                rec.status = "lost" if begin == 1 else "no-data"
            else:
                blk = (nxt - begin) & mask64
                b_idx, n_idx = begin % ring, nxt % ring
                if blk == 0 or blk > 2 * ring:
                    rec.status = "invalid"
                elif b_idx + blk <= ring:  # regular block: wraps(begin) == wraps(next - 1)
                    rec.text, rec.status = _block_text(data, b_idx, blk, text_len)
                elif n_idx <= blk and n_idx > 0:  # wrapped: the data restarts at the ring start
                    rec.text, rec.status = _block_text(data, 0, n_idx, text_len)
                else:
                    rec.status = "invalid"
            log.records.append(rec)
        rid = (rid + 1) & ID_MASK
    return log


def _block_text(data: bytes, start: int, size: int, text_len: int) -> tuple[bytes, str]:
    if size < 8:
        return b"", "invalid"
    n = min(text_len, size - 8)
    return data[start + 8 : start + 8 + n], ("truncated" if n < text_len else "ok")


def _cstr(buf: bytes, off: int, n: int) -> str:
    if off >= len(buf) or not buf[off]:  # the usual case: no device info (and nothing past the buffer)
        return ""
    return buf[off : off + n].split(b"\0")[0].decode("utf-8", "backslashreplace")


def _read_structured(dump, vi) -> KernelLog:
    path = dump.path
    hdr = vi.size("printk_log") or vi.size("log")
    if hdr is None:
        raise FormatError(path, None, "VMCOREINFO lacks SIZE(printk_log), needed to read the kernel log")
    if not 8 <= hdr <= MAX_STRUCT:
        raise FormatError(path, None, f"VMCOREINFO SIZE(printk_log)={hdr} is not a plausible structure size")

    def off(member):
        v = vi.offset(f"printk_log.{member}")
        return v if v is not None else vi.offset(f"log.{member}")

    ts_off, len_off, tl_off, dl_off = off("ts_nsec"), off("len"), off("text_len"), off("dict_len")
    if None in (ts_off, len_off, tl_off):
        raise FormatError(path, None, "VMCOREINFO lacks OFFSET(printk_log.ts_nsec/len/text_len)")
    if dl_off is None:
        dl_off = tl_off + 2
    buf_addr = _u("<Q", dump.read_virt(vi.symbol("log_buf"), 8), 0)
    buf_len = _u("<I", dump.read_virt(_need(vi, path, vi.symbol, "log_buf_len"), 4), 0)
    first = _u("<I", dump.read_virt(vi.symbol("log_first_idx"), 4), 0)
    nxt = _u("<I", dump.read_virt(_need(vi, path, vi.symbol, "log_next_idx"), 4), 0)
    where = f"printk log_buf at 0x{buf_addr:x}"
    if buf_len > MAX_LOG_BUF or buf_len < hdr:
        raise FormatError(path, None, f"{where}: implausible log_buf_len {buf_len}")
    if first >= buf_len or nxt > buf_len:
        raise FormatError(path, None, f"{where}: inconsistent indices: log_first_idx {first}, log_next_idx {nxt}, log_buf_len {buf_len}")
    buf = dump.read_virt(buf_addr, buf_len)
    caller_off = 16 if hdr == 20 else None  # CONFIG_PRINTK_CALLER: the offset is not exported (spec §5.2)
    log = KernelLog("structured")
    idx = first
    wrapped = False
    for _ in range(buf_len // 4 + 2):
        if idx == nxt:
            return log
        if idx + hdr > buf_len:
            raise FormatError(path, None, f"{where}: record header at index {idx} runs past log_buf_len {buf_len}")
        ln = _u("<H", buf, idx + len_off)
        ts = _u("<Q", buf, idx + ts_off)
        tl = _u("<H", buf, idx + tl_off)
        if ln == 0:
            if wrapped and idx == 0:
                break
            marker_text = buf[idx + hdr : idx + hdr + tl] if idx + hdr + tl <= buf_len else b""
            log.records.append(Record(None, ts, marker_text, wrap_marker=True))
            idx, wrapped = 0, True
            continue
        if ln < hdr or idx + ln > buf_len:
            raise FormatError(path, None, f"{where}: record at index {idx} has len {ln} (header {hdr}, buffer {buf_len}): inconsistent ring")
        dl = _u("<H", buf, idx + dl_off)
        status = "ok"
        if hdr + tl > ln:
            tl, status = ln - hdr, "truncated"
        fl = buf[idx + tl_off + 5] if tl_off + 5 < hdr else 0
        rec = Record(
            seq=None, ts_nsec=ts, text=buf[idx + hdr : idx + hdr + tl],
            level=fl >> 5, facility=buf[idx + tl_off + 4] if tl_off + 4 < hdr else None, flags=fl & 0x1F,
            caller_id=_u("<I", buf, idx + caller_off) if caller_off is not None else None,
            dict_text=buf[idx + hdr + tl : idx + hdr + tl + dl] if dl and hdr + tl + dl <= ln else None,
            status=status,
        )
        log.records.append(rec)
        idx += ln
    raise FormatError(path, None, f"{where}: the record walk from log_first_idx {first} never reaches log_next_idx {nxt}: inconsistent ring")


def _read_plain(dump, vi) -> KernelLog:
    path = dump.path
    buf_addr = _u("<Q", dump.read_virt(_need(vi, path, vi.symbol, "log_buf"), 8), 0)
    log_end = _u("<I", dump.read_virt(vi.symbol("log_end"), 4), 0)
    buf_len = _u("<i", dump.read_virt(_need(vi, path, vi.symbol, "log_buf_len"), 4), 0)
    if buf_len <= 0 or buf_len > MAX_LOG_BUF:
        raise FormatError(path, None, f"printk log_buf at 0x{buf_addr:x}: implausible log_buf_len {buf_len}")
    data = dump.read_virt(buf_addr, buf_len)
    cut = log_end % buf_len
    ordered = data[cut:] + data[:cut]
    logged = min(log_end, buf_len)
    raw = ordered[buf_len - logged :]
    log = KernelLog("plain", raw=raw)
    for line in raw.split(b"\n"):
        if not line:
            continue
        level = None
        if len(line) >= 3 and line[0:1] == b"<" and line[2:3] == b">" and line[1:2].isdigit():
            level, line = int(line[1:2]), line[3:]
        ts = 0
        if line.startswith(b"[") and b"]" in line[:20]:
            stamp, _, rest = line[1:].partition(b"]")
            try:
                s, _, us = stamp.strip().partition(b".")
                ts = int(s) * 1_000_000_000 + int(us.ljust(6, b"0")[:6]) * 1000
                line = rest[1:] if rest.startswith(b" ") else rest
            except ValueError:
                ts = 0
        log.records.append(Record(None, ts, line, level=level))
    return log
