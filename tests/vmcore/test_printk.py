"""The kernel log of the three printk eras, from small dumps whose rings the test writers fill with known
records, rendered the way vmcore-dmesg and makedumpfile --dump-dmesg print them (shared/spec/vmcore.md §5)."""

from __future__ import annotations

import struct

import pytest
from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, add_plain_log, add_structured_log, standard_notes, write_elf, write_kdump

from tracelens.errors import FormatError
from tracelens.parsers import vmcore


def _dump(tmp_path, k: Kernel, fmt: str = "elf"):
    vmci = k.vmcoreinfo()
    p = tmp_path / f"d.{fmt}"
    if fmt == "elf":
        write_elf(p, k.mem, standard_notes(vmci))
    else:
        write_kdump(p, k.mem, standard_notes(vmci), codec="zlib", vmcoreinfo=vmci)
    return vmcore.open(p)


def _kernel():
    return Kernel(Memory(ram=[(0x100, 0x400)]))


def _line(ts_nsec: int, text: str) -> bytes:
    return f"[{ts_nsec // 10**9:5d}.{ts_nsec % 10**9 // 1000:06d}] {text}\n".encode()


# ---------------------------------------------------------------------------------------------------------------
# lockless ring (5.10+)
@pytest.mark.parametrize("fmt", ["elf", "kdump"])
def test_lockless_wrapped_ring_keeps_the_newest_records(tmp_path, fmt):
    k = _kernel()
    recs = [LogRec(1_500_000_000 + i * 1_000, (f"message number {i:02d} " + "x" * (i % 7)).encode()) for i in range(40)]
    kept = add_lockless_ring(k, recs, count_bits=4, size_bits=9)["kept"]
    assert 0 < kept[0] and kept[-1] == 39  # the writer really overwrote old records
    with _dump(tmp_path, k, fmt) as d:
        log = d.kernel_log()
    assert log.era == "lockless"
    assert [r.seq for r in log.records] == kept
    expect = b"".join(_line(recs[i].ts_nsec, recs[i].text.decode()) for i in kept)
    assert log.render("vmcore-dmesg") == expect
    assert log.render("makedumpfile") == expect
    t = log.table()
    assert t.column("seq").to_pylist() == kept
    assert t.column("caller").to_pylist() == ["T1"] * len(kept)
    assert set(t.column("level").to_pylist()) == {6}


def test_lockless_special_text_rendering(tmp_path):
    k = _kernel()
    recs = [
        LogRec(1_000_000_000, b"multi\nline", level=3),
        LogRec(2_000_000_000, b"bad\x01byte\xc3\tend", level=4, caller_id=0x80000001),
        LogRec(3_000_000_000, b"", no_data=3),  # an empty line: no data block
        LogRec(4_000_000_000, b"", no_data=1),  # data lost by the writer (FAILED_LPOS)
        LogRec(123_456_789_012_345, b"late"),
    ]
    add_lockless_ring(k, recs, count_bits=4, size_bits=10)
    with _dump(tmp_path, k) as d:
        log = d.kernel_log()
    assert log.render("vmcore-dmesg") == (
        b"[    1.000000] multi\nline\n"
        b"[    2.000000] bad\\x01byte\\xc3\tend\n"
        b"[    3.000000] \n"
        b"[    4.000000] \n"
        b"[123456.789012] late\n"
    )
    assert log.render("makedumpfile") == (
        b"[    1.000000] multi\n               line\n"
        b"[    2.000000] bad\\x01byte\\xffffffc3\tend\n"
        b"[123456.789012] late\n"
    )
    rows = log.table().to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "no-data", "lost", "ok"]
    assert rows[1]["caller"] == "C1" and rows[1]["level"] == 4
    assert rows[0]["text"] == "multi\nline"


def test_lockless_block_ending_exactly_at_the_ring_end(tmp_path):
    """Since the 2025 kernel change a block can end exactly at the ring end; it is a regular block, not a
    wrapped one (the reference tools' "begin > next" test would read it from offset 0)."""
    k = _kernel()
    recs = [LogRec(10**9, b"A" * 248), LogRec(2 * 10**9, b"B" * 248), LogRec(3 * 10**9, b"third")]
    add_lockless_ring(k, recs, count_bits=4, size_bits=9, new_wrap_rule=True)
    with _dump(tmp_path, k) as d:
        texts = [r.text for r in d.kernel_log().records]
    assert texts[-2] == b"B" * 248
    assert texts[-1] == b"third"


def test_lockless_ring_in_the_direct_map(tmp_path):
    """A log enlarged at boot (printk_rb_dynamic) lives in memblock memory: read through the page tables."""
    k = _kernel()
    recs = [LogRec(i, f"dyn {i}".encode()) for i in range(5)]
    add_lockless_ring(k, recs, dynamic=True)
    with _dump(tmp_path, k, "kdump") as d:
        assert [r.text for r in d.kernel_log().records] == [f"dyn {i}".encode() for i in range(5)]


def test_lockless_inconsistent_indices_are_a_format_error(tmp_path):
    k = _kernel()
    add_lockless_ring(k, [LogRec(i, b"x") for i in range(5)], count_bits=4)
    rb_va = int([ln for ln in k.lines if ln.startswith("SYMBOL(printk_rb_static)=")][0].split("=")[1], 16)
    k.mem.write(k.virt_to_phys(rb_va) + 32, struct.pack("<Q", 2**40))  # tail_id far from head_id
    with _dump(tmp_path, k) as d:
        with pytest.raises(FormatError, match="inconsistent indices"):
            d.kernel_log()


def test_lockless_overwritten_slots_are_skipped(tmp_path):
    """A descriptor whose state_var id does not match the id being read was reused: skipped, not garbage."""
    k = _kernel()
    add_lockless_ring(k, [LogRec(i, f"r{i}".encode()) for i in range(6)], corrupt_ids=True)
    with _dump(tmp_path, k) as d:
        assert d.kernel_log().records == []


def test_lockless_missing_offsets_name_the_key(tmp_path):
    k = _kernel()
    add_lockless_ring(k, [LogRec(1, b"x")])
    k.lines = [ln for ln in k.lines if not ln.startswith("SIZE(printk_info)")]
    with _dump(tmp_path, k) as d:
        with pytest.raises(FormatError, match=r"SIZE\(printk_info\)"):
            d.kernel_log()


# ---------------------------------------------------------------------------------------------------------------
# structured records (3.5 - 5.9)
@pytest.mark.parametrize("caller", [False, True])
def test_structured_log_with_wrap_marker(tmp_path, caller):
    k = _kernel()
    recs = [LogRec(2_000_000_000 + i * 1_000_000, f"structured line {i}".encode(), level=i % 8, facility=0, caller_id=100 + i)
            for i in range(30)]
    recs[-1] = LogRec(recs[-1].ts_nsec, b"two\nlines", dict_text=b"SUBSYSTEM=pci\0DEVICE=+pci:0000:00:01.0")
    lay = add_structured_log(k, recs, buf_len=512, caller=caller)
    assert ("wrap",) in lay["order"]
    with _dump(tmp_path, k) as d:
        log = d.kernel_log()
    assert log.era == "structured"
    vd = b""
    mk = b""
    for item in lay["order"]:
        if item[0] == "wrap":
            vd += b"[    0.000000] \n"  # vmcore-dmesg prints the zeroed wrap header as a record
            continue
        r = recs[item[1]]
        vd += _line(r.ts_nsec, r.text.decode())
        mk += _line(r.ts_nsec, r.text.decode().replace("\n", "\n" + " " * 15))
    assert log.render("vmcore-dmesg") == vd
    assert log.render("makedumpfile") == mk
    rows = log.table().to_pylist()
    kept = [i for kind, *rest in lay["order"] if kind == "rec" for i in rest]
    assert [r["text"] for r in rows] == [recs[i].text.decode() for i in kept]
    assert [r["level"] for r in rows] == [recs[i].level for i in kept]
    assert rows[-1]["dict"] == "SUBSYSTEM=pci\0DEVICE=+pci:0000:00:01.0"
    assert rows[0]["seq"] is None
    assert rows[0]["caller_id"] == (100 + kept[0] if caller else None)


def test_structured_log_with_inconsistent_indices(tmp_path):
    k = _kernel()
    lay = add_structured_log(k, [LogRec(i, b"hello") for i in range(4)], buf_len=512)
    k.mem.write(k.virt_to_phys(lay["syms"]["log_first_idx"]), struct.pack("<I", 2))  # mid-record
    with _dump(tmp_path, k) as d:
        with pytest.raises(FormatError, match="inconsistent|never reaches"):
            d.kernel_log()
    k.mem.write(k.virt_to_phys(lay["syms"]["log_first_idx"]), struct.pack("<I", 9999))  # past the buffer
    with _dump(tmp_path, k) as d:
        with pytest.raises(FormatError, match="inconsistent indices"):
            d.kernel_log()


# ---------------------------------------------------------------------------------------------------------------
# plain character ring (<= 3.4)
def test_plain_ring(tmp_path):
    k = _kernel()
    lines = [f"<{i % 8}>[{i:5d}.{i * 7:06d}] plain line {i}\n" for i in range(20)]
    text = "".join(lines).encode()
    add_plain_log(k, text, buf_len=256)
    with _dump(tmp_path, k) as d:
        log = d.kernel_log()
    assert log.era == "plain"
    assert log.render("vmcore-dmesg") == text[-256:]
    assert log.render("makedumpfile") == text[-256:]
    rows = log.table().to_pylist()
    assert rows[-1]["text"] == "plain line 19" and rows[-1]["level"] == 3
    assert rows[-1]["ts_nsec"] == 19 * 10**9 + 133 * 1000


def test_missing_vmcoreinfo_says_how_to_get_it(tmp_path):
    k = _kernel()
    p = tmp_path / "novmci.elf"
    write_elf(p, k.mem, standard_notes(None))
    with vmcore.open(p) as d:
        with pytest.raises(FormatError) as e:
            d.kernel_log()
    msg = str(e.value)
    assert "no VMCOREINFO" in msg and "-device vmcoreinfo" in msg and "makedumpfile" in msg


def test_implausible_vmcoreinfo_sizes_are_refused_before_reading(tmp_path):
    """A damaged SIZE() must not become a huge read."""
    k = _kernel()
    add_lockless_ring(k, [LogRec(1, b"x")])
    k.lines = [("SIZE(printk_ringbuffer)=999999999999" if ln.startswith("SIZE(printk_ringbuffer)") else ln) for ln in k.lines]
    with _dump(tmp_path, k) as d:
        with pytest.raises(FormatError, match=r"SIZE\(printk_ringbuffer\)=999999999999 is not a plausible"):
            d.kernel_log()
