"""Tests of the pure-Python reference decoder itself, on tiny captures built byte by byte with expected rows
written out by hand (spec ../shared/spec/xentrace.md §1-2, §2.7, §4.3 and the decoder contract).

These do not use the project's capture writer or the fast decoder: they pin down the reference so that it can
serve as the oracle for both.
"""

from __future__ import annotations

import struct

import pytest

import xentrace_reference as ref
from xentrace_reference import CPU_CHANGE, LOST_RECORDS, WRAP_BUFFER, ReferenceFormatError


def rec(event: int, *data: int, tsc: int | None = None) -> bytes:
    """One t_rec, encoded by hand: header, optional TSC (low word first), payload words."""
    h = (event & 0x0FFFFFFF) | (len(data) << 28) | (0x80000000 if tsc is not None else 0)
    out = struct.pack("<I", h)
    if tsc is not None:
        out += struct.pack("<II", tsc & 0xFFFFFFFF, tsc >> 32)
    return out + struct.pack(f"<{len(data)}I", *data)


def window(cpu: int, *records: bytes) -> bytes:
    body = b"".join(records)
    return struct.pack("<III", 0x2001F003, cpu, len(body)) + body


def rows(cols: dict) -> list[tuple]:
    """Rows as (cpu, tsc, has_tsc, event, n_extra, d1..d7, offset, dom, vcpu) tuples."""
    return list(zip(*(cols[c] for c in ref.COLUMNS)))


N = None


# -- record layout (§1) -----------------------------------------------------------------------------------------
def test_header_bits_tsc_and_every_payload_length():
    # one window on pCPU 3 holding a record of each n_extra 0..7, alternating with and without TSC
    recs = [rec(0x00082000 + n, *range(100 + n * 10, 100 + n * 10 + n), tsc=(0x1_0000_0000 * n + 7) if n % 2 else None)
            for n in range(8)]
    buf = window(3, *recs)
    cols = ref.decode(buf)
    assert len(cols["cpu"]) == 9
    # record sizes: 4, 4+8+4, 4+8, 4+8+12, 4+16, 4+8+20, 4+24, 4+8+28 -> offsets after the 12-byte CPU_CHANGE
    assert cols["offset"] == [0, 12, 16, 32, 44, 68, 88, 120, 148]
    assert cols["event"] == [CPU_CHANGE] + [0x00082000 + n for n in range(8)]
    assert cols["n_extra"] == [2, 0, 1, 2, 3, 4, 5, 6, 7]
    assert cols["has_tsc"] == [False, False, True, False, True, False, True, False, True]
    # TSCs: n=1 -> 0x100000007, n=3 -> 0x300000007, ...; untimed records inherit; before any, 0
    assert cols["tsc"] == [0, 0, 0x1_0000_0007, 0x1_0000_0007, 0x3_0000_0007, 0x3_0000_0007,
                           0x5_0000_0007, 0x5_0000_0007, 0x7_0000_0007]
    assert cols["cpu"] == [3] * 9
    assert (cols["d1"][0], cols["d2"][0]) == (3, 176)  # CPU_CHANGE: d1 = pCPU, d2 = window size
    assert cols["d1"][1] is None
    assert [cols["d1"][i] for i in range(2, 9)] == [110, 120, 130, 140, 150, 160, 170]
    assert cols["d7"][:8] == [N] * 8 and cols["d7"][8] == 176
    assert [cols["d3"][i] for i in range(9)] == [N, N, N, N, 132, 142, 152, 162, 172]


def test_tsc_is_little_endian_low_word_first():
    buf = window(0, rec(0x00021002, 0x00000001, tsc=0x0123456789ABCDEF))
    assert buf[16:24] == bytes.fromhex("efcdab8967452301")
    assert ref.decode(buf)["tsc"] == [0, 0x0123456789ABCDEF]


def test_wrap_payload_is_null_but_length_is_honoured():
    buf = window(1,
                 rec(0x00082013, 5, tsc=100),
                 rec(WRAP_BUFFER, 0xDEADBEEF, 0xDEADBEEF, 0xDEADBEEF, 0xDEADBEEF, 0xDEADBEEF, 0xDEADBEEF,
                     tsc=150),  # 36 bytes: the longest WRAP, which needs a TSC to fill them (spec §2.4)
                 rec(WRAP_BUFFER, 0x11111111),
                 rec(0x00082013, 6))
    assert rows(ref.decode(buf)) == [
        (1, 0, False, CPU_CHANGE, 2, 1, 4 + 12 + 36 + 8 + 8, N, N, N, N, N, 0, N, N),
        (1, 100, True, 0x00082013, 1, 5, N, N, N, N, N, N, 12, N, N),
        (1, 150, True, WRAP_BUFFER, 6, N, N, N, N, N, N, N, 28, N, N),
        (1, 150, False, WRAP_BUFFER, 1, N, N, N, N, N, N, N, 64, N, N),
        (1, 150, False, 0x00082013, 1, 6, N, N, N, N, N, N, 72, N, N),
    ]


# -- windows, streams and TSC inheritance (§2.2, rules 1-2) -----------------------------------------------------
def test_tsc_inheritance_is_per_pcpu_and_crosses_windows_of_the_same_pcpu():
    buf = (window(0, rec(0x00082013, 1, tsc=1000), rec(0x00082013, 2))
           + window(1, rec(0x00082013, 3))  # no timed record on pCPU 1 yet: inherits 0, not pCPU 0's 1000
           + window(0, rec(0x00082013, 4)))  # pCPU 0's second window: inherits 1000 from its first window
    cols = ref.decode(buf)
    got = sorted(zip(cols["offset"], cols["cpu"], cols["tsc"], cols["has_tsc"]))
    assert got == [
        (0, 0, 0, False),  # CPU_CHANGE of pCPU 0: nothing timed yet
        (12, 0, 1000, True),
        (28, 0, 1000, False),
        (36, 1, 0, False),  # CPU_CHANGE pCPU 1
        (48, 1, 0, False),
        (56, 0, 1000, False),  # CPU_CHANGE pCPU 0, second window
        (68, 0, 1000, False),
    ]


# -- merge order (rule 3) ----------------------------------------------------------------------------------------
def test_merge_by_tsc_across_windows_out_of_file_order():
    # pCPU 2's window is written first but is later in time; pCPU 0's second window overlaps pCPU 1's.
    buf = (window(2, rec(0x00082013, 20, tsc=500), rec(0x00082013, 21, tsc=600))
           + window(0, rec(0x00082013, 1, tsc=100), rec(0x00082013, 2, tsc=300))
           + window(1, rec(0x00082013, 10, tsc=200), rec(0x00082013, 11, tsc=400))
           + window(0, rec(0x00082013, 3, tsc=350)))
    cols = ref.decode(buf)
    # CPU_CHANGE rows carry the inherited TSC: 0 for each pCPU's first window (ties: lower pCPU first),
    # 300 for pCPU 0's second window (after its record at 300, before 350)
    assert list(zip(cols["cpu"], cols["tsc"], cols["d1"])) == [
        (0, 0, 0), (1, 0, 1), (2, 0, 2),
        (0, 100, 1), (1, 200, 10), (0, 300, 2), (0, 300, 0), (0, 350, 3), (1, 400, 11), (2, 500, 20), (2, 600, 21),
    ]


def test_ties_go_to_the_lower_pcpu_and_keep_stream_order():
    buf = (window(5, rec(0x00082013, 50, tsc=700), rec(0x00082013, 51, tsc=700))
           + window(4, rec(0x00082013, 40, tsc=700), rec(0x00082013, 41)))
    cols = ref.decode(buf)
    assert list(zip(cols["cpu"], cols["d1"])) == [(4, 4), (5, 5), (4, 40), (4, 41), (5, 50), (5, 51)]


def test_a_backwards_tsc_stays_right_after_its_predecessor():
    # pCPU 0 goes 100 -> 900 -> 200 (skew); the record at 200 keeps K = 900 and so sorts after pCPU 1's 500
    buf = (window(0, rec(0x00082013, 1, tsc=100), rec(0x00082013, 2, tsc=900), rec(0x00082013, 3, tsc=200),
                  rec(0x00082013, 4, tsc=950))
           + window(1, rec(0x00082013, 10, tsc=500), rec(0x00082013, 11, tsc=900), rec(0x00082013, 12, tsc=920)))
    cols = ref.decode(buf)
    assert list(zip(cols["cpu"], cols["d1"], cols["tsc"])) == [
        (0, 0, 0), (1, 1, 0), (0, 1, 100), (1, 10, 500), (0, 2, 900), (0, 3, 200), (1, 11, 900), (1, 12, 920),
        (0, 4, 950),
    ]
    assert cols["_k"] == [0, 0, 100, 500, 900, 900, 900, 920, 950]


# -- dom/vcpu attribution (§2.7, §4.3, rule 4) -------------------------------------------------------------------
def dv(dom, vcpu):
    return (dom << 16) | vcpu


def test_runstate_switch_continue_and_lost_drive_dom_vcpu():
    t = iter(range(10, 10_000, 10))
    buf = window(
        6,
        rec(0x00082013, 0, tsc=next(t)),                                # unknown yet
        rec(0x00021101, dv(3, 1), tsc=next(t)),                          # runnable->running: the vCPU it starts
        rec(0x00082013, 0, tsc=next(t)),                                # d3v1
        rec(0x00021011, dv(4, 0), tsc=next(t)),                          # running->runnable of another vCPU: keep
        rec(0x00021211, dv(3, 1), tsc=next(t)),                          # blocked->runnable (not out of running)
        rec(0x00082013, 0, tsc=next(t)),                                # still d3v1
        rec(0x00021021, dv(3, 1), tsc=next(t)),                          # running->blocked d3v1: clears
        rec(0x00082013, 0, tsc=next(t)),                                # unknown
        rec(0x00021002, dv(0x7FFF, 2), tsc=next(t)),                     # CONTINUE_RUNNING idle v2
        rec(0x00082013, 0),                                             # d32767v2 (no TSC)
        rec(0x0002800A, 0x7FFF, 2, 0x10005, 0xABCD0007, tsc=next(t)),    # SWITCH to d5v7: no change, the previous
        rec(0x00082013, 0, tsc=next(t)),                                # vCPU runs until its runstate record
        rec(LOST_RECORDS, 12, dv(9, 8), 1, 0, tsc=next(t)),               # LOST: own payload dom = d2&0xffff = 8,
        rec(0x00082013, 0, tsc=next(t)),                                # vcpu = d2>>16 = 9, which still runs
        rec(0x00021301, dv(2, 3), tsc=next(t)),                          # offline->running d2v3
        rec(0x00021001),                                                # runstate without payload: no change
        rec(0x0002800A, 1, 2, 3, tsc=next(t)),                           # SWITCH with 3 words: no change
        rec(0x00021002, tsc=next(t)),                                   # CONTINUE without payload: no change
        rec(0x00082013, 0, tsc=next(t)),                                # d2v3
        rec(0x00021031, dv(2, 3), 0xFFFF, tsc=next(t)),                  # running->offline d2v3 (2 words): clears
        rec(0x00082013, 0, tsc=next(t)),                                # unknown
    )
    cols = ref.decode(buf)
    assert list(zip(cols["dom"], cols["vcpu"])) == [
        (N, N),  # CPU_CHANGE
        (N, N), (3, 1), (3, 1), (3, 1), (3, 1), (3, 1), (3, 1), (N, N), (N, N), (0x7FFF, 2), (0x7FFF, 2),
        (0x7FFF, 2), (8, 9), (8, 9), (2, 3), (2, 3), (2, 3), (2, 3), (2, 3), (2, 3), (N, N),
    ]


def test_running_vcpu_state_is_per_pcpu_and_survives_window_boundaries():
    buf = (window(0, rec(0x00021101, dv(1, 0), tsc=10))
           + window(1, rec(0x00082013, 0, tsc=15), rec(0x00021201, dv(2, 5), tsc=16))
           + window(0, rec(0x00082013, 0, tsc=20))
           + window(1, rec(0x00082013, 0, tsc=25)))
    cols = ref.decode(buf)
    got = sorted(zip(cols["offset"], cols["cpu"], cols["dom"], cols["vcpu"]))
    assert got == [
        (0, 0, N, N), (12, 0, 1, 0),  # a runstate change into running belongs to the vCPU it starts
        (28, 1, N, N), (40, 1, N, N), (56, 1, 2, 5),
        (72, 0, 1, 0), (84, 0, 1, 0),  # pCPU 0's second window: CPU_CHANGE and record run under d1v0
        (100, 1, 2, 5), (112, 1, 2, 5),
    ]


# -- errors (contract rule 5) ------------------------------------------------------------------------------------
GOOD = window(0, rec(0x00082013, 1, tsc=5)) + window(1, rec(0x00082013, 2))  # 28 + 20 bytes


@pytest.mark.parametrize("buf, offset", [
    (b"", 0),                                                            # empty
    (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56, 0),                       # not a capture
    (b"hello, world\n", 0),                                              # text
    (GOOD + b"\x00\x00\x00\x00" + GOOD, 48),                              # garbage where a window header belongs
    (GOOD + struct.pack("<III", 0x2001F003, 4096, 0), 48),                # absurd pCPU
    (GOOD + struct.pack("<III", 0x2001F003, 0, 6) + b"\0" * 8, 48),        # size not a multiple of 4
    (GOOD + struct.pack("<III", 0x2001F003, 0, 65535 * 4096 + 4), 48),    # absurd size
    (GOOD + struct.pack("<III", 0x2001F003, 0, 16) + b"\0" * 12, 48),      # window past end of file
    (GOOD + window(2, rec(0x00082013, 1), rec(0x00082013, 1, 2))[:-4], 48),  # window cut short: past EOF
    (GOOD + struct.pack("<II", 0x2001F003, 1), 48),                       # file ends inside CPU_CHANGE
    (GOOD + b"\x03\xf0", 48),                                              # 2 stray bytes
    (GOOD + struct.pack("<III", 0x2001F003, 3, 12) + rec(0x00082013, 1)
     + struct.pack("<I", 0x00082013 | (1 << 28) | (1 << 31)), 68),         # last record crosses the window end
    (GOOD + struct.pack("<III", 0x2001F003, 3, 4) + struct.pack("<I", 0x10082013) + b"\0" * 4, 60),
])
def test_damage_is_reported_at_the_contract_offset(buf, offset):
    with pytest.raises(ReferenceFormatError) as e:
        ref.decode(buf)
    assert e.value.offset == offset


def test_a_window_may_be_empty_and_a_file_may_be_one_window():
    cols = ref.decode(window(7))
    assert rows(cols) == [(7, 0, False, CPU_CHANGE, 2, 7, 0, N, N, N, N, N, 0, N, N)]


# -- tolerance (reference semantics: see parse_file) -------------------------------------------------------------
def test_skip_resynchronises_after_garbage_and_truncate_stops_there():
    buf = GOOD + b"\xff" * 8 + GOOD  # garbage at 48..56, then two more windows at 56 and 84
    parsed = ref.parse_file(buf, "skip")
    assert parsed.skipped == [(48, 56)]
    assert [w[0] for w in parsed.windows] == [0, 28, 56, 84]
    assert [r.offset for r in parsed.records] == [0, 12, 28, 40, 56, 68, 84, 96]
    parsed = ref.parse_file(buf, "truncate")
    assert parsed.skipped == [(48, 104)] and parsed.stopped_at == 48
    assert [r.offset for r in parsed.records] == [0, 12, 28, 40]


def test_a_record_crossing_its_window_end_loses_only_the_rest_of_that_window():
    damaged = window(2, rec(0x00082013, 7), rec(0x00082013, 8))
    damaged = damaged[:20] + struct.pack("<I", 0x30082013) + damaged[24:]  # the 2nd record now claims 16 bytes
    buf = GOOD + damaged + window(0, rec(0x00082013, 9))  # damaged window at 48..76, next window at 76
    parsed = ref.parse_file(buf, "skip")
    assert parsed.skipped == [(68, 76)]
    assert [(r.offset, r.cpu, r.data) for r in parsed.records][4:] == [
        (48, 2, (2, 16)), (60, 2, (7,)), (76, 0, (0, 8)), (88, 0, (9,))]
    parsed = ref.parse_file(buf, "truncate")
    assert parsed.skipped == [(68, 96)]
    assert [r.offset for r in parsed.records] == [0, 12, 28, 40, 48, 60]


def test_skip_scans_to_a_plausible_header_and_reports_stray_tail_bytes():
    # an absurd-pCPU header, then 4 bytes that look like the magic but are cut short, then a good window
    buf = GOOD + struct.pack("<III", 0x2001F003, 5000, 0) + GOOD + b"\x01\x02"
    parsed = ref.parse_file(buf, "skip")
    assert parsed.skipped == [(48, 60), (108, 110)]
    assert [w[0] for w in parsed.windows] == [0, 28, 60, 88]


@pytest.mark.parametrize("tolerance", ["strict", "truncate", "skip"])
@pytest.mark.parametrize("buf", [b"", b"\x03\xf0\x01\x20", struct.pack("<II", 0x2001F003, 0), b"GIF89a" + bytes(20)])
def test_a_file_that_does_not_start_with_a_cpu_change_is_not_a_capture_whatever_the_tolerance(buf, tolerance):
    with pytest.raises(ReferenceFormatError) as e:
        ref.parse_file(buf, tolerance)
    assert e.value.offset == 0


def test_a_cpu_change_record_inside_a_window_is_an_ordinary_record_of_that_window():
    buf = window(2, rec(0x00082013, 1, tsc=5), rec(CPU_CHANGE, 7, 0), rec(0x00082013, 2))
    assert list(zip(ref.decode(buf)["cpu"], ref.decode(buf)["event"], ref.decode(buf)["d1"])) == [
        (2, CPU_CHANGE, 2), (2, 0x00082013, 1), (2, CPU_CHANGE, 7), (2, 0x00082013, 2)]
