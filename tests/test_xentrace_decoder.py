"""The fast decoder against the writer's truth, the streaming path, the CLI's errors and the catalog.

Expected values come from the writer (what was written) or from the spec, never from the decoder.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tracelens.cli import main
from tracelens.errors import FormatError, UsageError
from tracelens.options import DecodeOptions
from tracelens.parsers.xentrace import iter_batches, read_xentrace
from tracelens.parsers.xentrace.catalog import format_fields, hypercall_args, load_catalog
from tracelens.parsers.xentrace.writer import CPU_CHANGE, CaptureWriter


def _every_record_type(seed: int, ncpu: int = 3, n: int = 400) -> CaptureWriter:
    """Random records of every word count, with and without TSC, WRAP and LOST, on ``ncpu`` pCPUs."""
    rng = random.Random(seed)
    w = CaptureWriter(poll_period=50_000, max_window_records=rng.randint(3, 40), seed=seed)
    cat = load_catalog()
    ids = sorted(cat.events) + [0x0800F123, 0x00022205, 0x0FF0_0001]
    t = {c: rng.randint(1, 10_000) for c in range(ncpu)}
    for _ in range(n):
        c = rng.randrange(ncpu)
        kind = rng.random()
        t[c] += rng.randint(0, 3000)
        if kind < 0.03:
            w.wrap(c, 4 * rng.randint(1, 9))
        elif kind < 0.05:
            w.lost(c, rng.randint(1, 500), rng.randint(0, 5), rng.randint(0, 3), t[c] - 100, t[c])
        else:
            ev = rng.choice(ids)
            data = [rng.getrandbits(32) for _ in range(rng.randint(0, 7))]
            w.record(c, ev, data, tsc=t[c] if rng.random() < 0.7 else None)
    return w


def _expected_rows(truth: dict):
    """Rows in output order, from the writer's per-pCPU truth and the documented rules (inherit TSC, running max)."""
    rows = []
    for c in np.unique(truth["cpu"]):
        idx = np.nonzero(truth["cpu"] == c)[0]
        last = 0
        key = 0
        for seq, i in enumerate(idx):
            if truth["has_tsc"][i]:
                last = int(truth["tsc"][i])
                key = max(key, last)
            rows.append((key, int(c), seq, last, int(truth["event"][i]), int(truth["offset"][i]), int(i)))
    rows.sort()
    return rows


@pytest.mark.parametrize("seed", range(12))
def test_round_trip_every_record_type(tmp_path, seed):
    w = _every_record_type(seed)
    path = tmp_path / "c.bin"
    w.write(path)
    truth = w.truth()
    t = read_xentrace(path)
    exp = _expected_rows(truth)
    assert t.num_rows == len(exp)
    assert t["offset"].to_pylist() == [r[5] for r in exp]
    assert t["tsc"].to_pylist() == [r[3] for r in exp]
    assert t["event"].to_pylist() == [r[4] for r in exp]
    assert t["cpu"].to_pylist() == [r[1] for r in exp]
    order = [r[6] for r in exp]
    assert t["has_tsc"].to_pylist() == [bool(truth["has_tsc"][i]) for i in order]
    assert t["n_extra"].to_pylist() == [int(truth["n_extra"][i]) for i in order]
    for j in range(7):
        col = t[f"d{j + 1}"].to_pylist()
        want = [None if (truth["n_extra"][i] <= j or truth["event"][i] == 0x0001F002) else int(truth["data"][i][j]) for i in order]
        assert col == want, f"d{j + 1}"


def test_streaming_equals_whole_table(tmp_path):
    w = _every_record_type(99, ncpu=5, n=3000)
    path = tmp_path / "c.bin"
    w.write(path)
    whole = read_xentrace(path)
    for batch in (64, 1000, 20_000):
        parts = list(iter_batches(path, batch_bytes=batch))
        joined = pa.concat_tables(parts)
        assert joined.drop_columns(["name"]).equals(whole.drop_columns(["name"]))
        assert joined["name"].to_pylist() == whole["name"].to_pylist()


def test_dom_vcpu_attribution_follows_runstates(tmp_path):
    """docs/xentrace.md rule 4, on the sequence Xen's sched_switch_units() writes (SWITCH, then the runstate
    changes of the previous and the next vCPU, all before the context switch) and after a LOST_RECORDS record."""
    w = CaptureWriter(shuffle=False)
    w.record(0, 0x0010F001, [7], tsc=10)                 # before any schedule record: unknown
    w.record(0, 0x00021101, [(0 << 16) | 1], tsc=20)     # d0v1 runnable->running: the vCPU it starts
    w.record(0, 0x0010F001, [7], tsc=30)                 # mapped by d0v1
    w.record(0, 0x0002800A, [0, 1, 5, 2], tsc=40)        # switch d0v1 -> d5v2, written while d0v1 runs
    w.record(0, 0x00021021, [(0 << 16) | 1], tsc=45)     # d0v1 running->blocked, written by d0v1: then cleared
    w.record(0, 0x00021101, [(5 << 16) | 2], tsc=50)     # d5v2 runnable->running: the vCPU it starts
    w.record(0, 0x00082012, [29])                        # VMMCALL without TSC, by d5v2
    w.lost(0, 3, 5, 2, 61, 70)                           # LOST: the record names d5v2, which still runs
    w.record(0, 0x0010F002, [7], tsc=80)                 # unmapped by d5v2
    w.record(0, 0x00021021, [(5 << 16) | 2], tsc=85)     # d5v2 running->blocked: cleared
    w.record(0, 0x0010F002, [7], tsc=87)                 # unknown
    w.record(0, 0x00021002, [(9 << 16) | 0], tsc=90)     # continue running d9v0
    w.record(0, 0x0010F002, [7], tsc=95)
    p = tmp_path / "a.bin"
    w.write(p)
    t = read_xentrace(p)
    got = [(e, d, v) for e, d, v in zip(t["event"].to_pylist(), t["dom"].to_pylist(), t["vcpu"].to_pylist())]
    assert got == [
        (CPU_CHANGE, None, None), (0x0010F001, None, None), (0x00021101, 0, 1), (0x0010F001, 0, 1),
        (0x0002800A, 0, 1), (0x00021021, 0, 1), (0x00021101, 5, 2), (0x00082012, 5, 2),
        (0x0001F001, 5, 2), (0x0010F002, 5, 2), (0x00021021, 5, 2), (0x0010F002, None, None),
        (0x00021002, None, None), (0x0010F002, 9, 0),
    ]
    assert t["tsc"].to_pylist()[7] == 50  # inherited


def test_time_ns_column(tmp_path):
    w = CaptureWriter()
    w.record(0, 0x00028004, [1, 0], tsc=3_000_000_000)
    p = tmp_path / "t.bin"
    w.write(p)
    t = read_xentrace(p, DecodeOptions(cpu_hz=2_000_000_000))
    assert t["time_ns"].to_pylist() == [0, 1_500_000_000]


def test_hypercall_v2_decoding():
    cat = load_catalog()
    # grant_table_op: A0 = cmd (32-bit), A2 = count (32-bit) -> d1 = 0x01100014 (spec 4.4)
    assert hypercall_args([0x01100014, 0, 3]) == (20, [0, 3])
    assert format_fields(cat, 0x0020100D, [0x01100014, 1, 16], None) == "op=grant_table_op(20) cmd=unmap_grant_ref a1=0x10"
    # a 64-bit argument takes two words, low first
    assert hypercall_args([(2 << 20) | 12, 0x89ABCDEF, 0x01234567]) == (12, [0x0123456789ABCDEF])
    assert format_fields(cat, 0x0020100D, [0x0000000C], None) == "op=memory_op(12)"


def test_versioned_layouts_and_packing():
    cat = load_catalog()
    pre = format_fields(cat, 0x0010F005, [0x1000, 0, (9 << 16) | 3, 0xDEADBEEF], (4, 17))
    assert pre == "gfn=0x1000 domid=3 order=9"
    new = format_fields(cat, 0x0010F005, [0x1000, 0, 3, 9], (4, 18))
    assert new == "gfn=0x1000 domid=3 order=9"
    assert format_fields(cat, 0x00802006, [(0x31 << 16) | 24, 1, 0, 0, 0, 0, 0], None).startswith("irq=24 vector=49")
    assert cat.layout(0x0002800E, 2, None)[1].fields[1].name == "runtime_ns"
    assert cat.layout(0x00081003, 2, (4, 19))[0] == "HVM_SVM_EXIT"
    assert cat.layout(0x0800F042, 2, None)[0] == "GUEST_0x042"


def test_layout_guess_from_capture(tmp_path):
    w = CaptureWriter()
    w.record(0, 0x0002800E, [0, 100], tsc=5)  # 2-word INFPREV: pre-4.8
    p = tmp_path / "old.bin"
    w.write(p)
    meta = json.loads(read_xentrace(p).schema.metadata[b"tracelens.layout"])
    assert meta["label"] == "<4.8"
    w = CaptureWriter()
    w.record(0, 0x0010F005, [0x10, 0, (9 << 16) | 3, 0xDEADBEEF])  # pre-4.18 packing, stale d4
    w.record(0, 0x0010F005, [0x11, 0, 7, 0xDEADBEEF])
    w.write(p)
    assert json.loads(read_xentrace(p).schema.metadata[b"tracelens.layout"])["label"] == "<4.18"
    from tracelens.parsers.xentrace.decode import info

    assert info(p)["xen_layout"]["label"] == "<4.18"  # the info path reads the payloads with its own kernel
    w = CaptureWriter()
    w.record(0, 0x0010F005, [0x10, 0, 3, 9])  # 4.18+: domid in d3, order in d4
    w.write(p)
    assert info(p)["xen_layout"]["label"] == ">=4.18"


def test_user_catalog_overrides(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[[event]]\nid = 0x0800f001\nname = "GUEST_GRANT_GRANTED"\nfields = ["ref", "domid", "frame/x"]\n')
    w = CaptureWriter()
    w.record(0, 0x0800F001, [12, 0, 0xABC])
    p = tmp_path / "g.bin"
    w.write(p)
    t = read_xentrace(p, DecodeOptions(catalog_files=[f]))
    assert t["name"].to_pylist()[-1] == "GUEST_GRANT_GRANTED"
    assert read_xentrace(p)["name"].to_pylist()[-1] == "GUEST_0x001"
    assert format_fields(load_catalog([f]), 0x0800F001, [12, 0, 0xABC], None) == "ref=12 domid=0 frame=0xabc"
    bad = tmp_path / "bad.toml"
    bad.write_text("[[event]]\nid = 'x'\n")
    with pytest.raises(UsageError):
        load_catalog([bad])


# -- bad input -----------------------------------------------------------------------------------------------------


def _good_capture(tmp_path) -> tuple[Path, bytes]:
    w = CaptureWriter(poll_period=1000, seed=3)
    for i in range(60):
        w.record(i % 2, 0x00028004, [1, i % 4], tsc=100 + 40 * i)
    p = tmp_path / "good.bin"
    w.write(p)
    return p, p.read_bytes()


def _cases(blob: bytes):
    w = np.frombuffer(blob, "<u4").copy()
    first = 12 + int(w[2])  # second window header
    absurd_cpu = w.copy(); absurd_cpu[first // 4 + 1] = 100_000
    absurd_size = w.copy(); absurd_size[first // 4 + 2] = 0xFFFFFFF0
    odd_size = w.copy(); odd_size[first // 4 + 2] = 6
    garbage = w.copy(); garbage[first // 4] = 0x12345678
    past_eof = w.copy(); past_eof[first // 4 + 2] = len(blob)
    return {
        "empty": (b"", 0, "empty file"),
        "text": (b"hello, this is text\n" * 3, 0, "not a xentrace capture"),
        "elf": (b"\x7fELF\x02\x01\x01" + bytes(57), 0, "not a xentrace capture"),
        "random": (bytes(random.Random(1).getrandbits(8) for _ in range(256)), 0, "not a xentrace capture"),
        "truncated_last_record": (blob[:-4], None, "truncated"),
        "stray_bytes": (blob + b"\x01\x02", len(blob), "stray"),
        "absurd_cpu": (absurd_cpu.tobytes(), first, "beyond Xen's limit"),
        "absurd_size": (absurd_size.tobytes(), first, "exceeds the largest"),
        "odd_size": (odd_size.tobytes(), first, "not a multiple of 4"),
        "garbage_in_middle": (garbage.tobytes(), first, "garbage"),
        "window_past_eof": (past_eof.tobytes(), first, "past the end"),
    }


@pytest.mark.parametrize("case", ["empty", "text", "elf", "random", "truncated_last_record", "stray_bytes", "absurd_cpu",
                                  "absurd_size", "odd_size", "garbage_in_middle", "window_past_eof"])
def test_bad_input_one_line_error_and_exit_3(tmp_path, capsys, case):
    _p, blob = _good_capture(tmp_path)
    data, offset, phrase = _cases(blob)[case]
    p = tmp_path / f"{case}.bin"
    p.write_bytes(data)
    if case in ("empty", "text", "elf", "random"):
        # the shared info command sniffs the format first
        rc = main(["info", str(p)])
    else:
        with pytest.raises(FormatError) as ei:
            read_xentrace(p)
        assert phrase in str(ei.value)
        if offset is not None:
            assert ei.value.offset == offset
        rc = main(["decode", str(p), "-o", str(tmp_path / "out.parquet")])
        assert not (tmp_path / "out.parquet").exists()
        assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3
    assert len(err) == 1 and str(p) in err[0] and "at byte" in err[0] and "Traceback" not in err[0]
    assert phrase in err[0]


def test_tolerance_truncate_and_skip(tmp_path, capsys):
    _p, blob = _good_capture(tmp_path)
    data, offset, _ = _cases(blob)["garbage_in_middle"]
    p = tmp_path / "g.bin"
    p.write_bytes(data)
    whole = read_xentrace(tmp_path / "good.bin")
    trunc = read_xentrace(p, DecodeOptions(tolerance="truncate"))
    assert trunc.num_rows > 0 and max(trunc["offset"].to_pylist()) < offset
    dmg = json.loads(trunc.schema.metadata[b"tracelens.damage"])
    assert dmg[0]["offset"] == offset and dmg[0]["length"] == len(data) - offset
    skip = read_xentrace(p, DecodeOptions(tolerance="skip"))
    dmg = json.loads(skip.schema.metadata[b"tracelens.damage"])
    assert dmg[0]["offset"] == offset
    lost = set(range(dmg[0]["offset"], dmg[0]["offset"] + dmg[0]["length"]))
    # skip keeps every record outside the skipped range, and only those (their order can change: a pCPU whose
    # earlier window was skipped inherits TSC 0 for its next CPU_CHANGE record)
    assert sorted(skip["offset"].to_pylist()) == sorted(o for o in whole["offset"].to_pylist() if o not in lost)
    rc = main(["info", str(p), "--tolerance", "skip"])
    assert rc == 0
    assert f"skipped {dmg[0]['length']} bytes at byte {offset}" in capsys.readouterr().err
    with pytest.raises(UsageError):
        read_xentrace(p, DecodeOptions(tolerance="lenient"))


def test_hostile_window_size_does_not_allocate(tmp_path):
    # a 3-word file that claims a 4 GiB window must fail fast, not allocate
    p = tmp_path / "h.bin"
    p.write_bytes(np.array([0x2001F003, 0, 0xFFFFFFFC], "<u4").tobytes())
    with pytest.raises(FormatError) as ei:
        read_xentrace(p)
    assert ei.value.offset == 0


# -- CLI -----------------------------------------------------------------------------------------------------------


def test_cli_decode_and_events(tmp_path, capsys):
    w = _every_record_type(5)
    p = tmp_path / "c.bin"
    w.write(p)
    for out in ("o.parquet", "o.arrow"):
        assert main(["decode", str(p), "-o", str(tmp_path / out), "--batch-mb", "1"]) == 0
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    whole = read_xentrace(p)
    assert pq.read_table(tmp_path / "o.parquet")["offset"].to_pylist() == whole["offset"].to_pylist()
    assert feather.read_table(tmp_path / "o.arrow")["tsc"].to_pylist() == whole["tsc"].to_pylist()
    capsys.readouterr()
    assert main(["events", str(p), "--json", "--cpu", "1", "--limit", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(json.loads(x)["cpu"] == 1 for x in lines)
    assert main(["events", str(p), "-e", "TRACE_CPU_CHANGE"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == int((w.truth()["event"] == CPU_CHANGE).sum())
    assert main(["events", str(p), "-e", "NO_SUCH_EVENT"]) == 2
    assert main(["decode", str(p), "-o", str(tmp_path / "x.csv")]) == 2
    assert main(["events", "--list"]) == 0
    assert "MEM_PAGE_GRANT_MAP" in capsys.readouterr().out


def test_cli_show_code_runs(tmp_path, capsys):
    w = _every_record_type(6)
    p = tmp_path / "c.bin"
    w.write(p)
    assert main(["events", str(p), "--dom", "0", "--limit", "3", "--show-code"]) == 0
    code = capsys.readouterr().out
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_parsers_is_not_a_top_level_module():
    r = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('parsers'))"],
                       capture_output=True, text=True, cwd="/", timeout=60)
    assert r.stdout.strip() == "None"


def test_column_projection(tmp_path):
    w = _every_record_type(8)
    p = tmp_path / "c.bin"
    w.write(p)
    whole = read_xentrace(p, DecodeOptions(cpu_hz=1e9))
    part = read_xentrace(p, DecodeOptions(cpu_hz=1e9), columns=["tsc", "d3", "dom", "time_ns"])
    assert part.column_names == ["tsc", "d3", "dom", "time_ns"]
    for c in part.column_names:
        assert part[c].equals(whole[c])
    streamed = pa.concat_tables(iter_batches(p, columns=["name", "cpu"], batch_bytes=500))
    assert streamed.column_names == ["cpu", "name"]
    assert streamed["name"].to_pylist() == whole["name"].to_pylist()
    with pytest.raises(UsageError):
        read_xentrace(p, columns=["nope"])
