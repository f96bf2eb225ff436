"""Helpers shared by the tests/test_gate_*.py modules (imported as ``test_gate_support``), and the checks that the
damaged captures they build really are damaged.

``invoke`` runs ``tracelens gate`` through :func:`tracelens.cli.main`, the CLI's one error choke point: the real
application, so a gate command that is not registered, or does not import, fails every gate test.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample-traces"
CPU_CHANGE = 0x2001F003

CLEAN = "clean-soft-reset.xentrace"
LEAKING = "persistent-grants.xentrace"
LOST = "lost-across-boundary.xentrace"
UNSAFE = ("balloon-before-kexec.xentrace", "foreign-map.xentrace", "instrumented-guest.xentrace",
          "crash-kdump.xentrace")


def invoke(args, capsys=None, monkeypatch=None, env=None):
    """Run ``tracelens gate ARGS`` as the CLI does; returns (exit code, stdout, stderr)."""
    import tracelens.cli as cli

    mp = monkeypatch or pytest.MonkeyPatch()
    try:
        for k in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
            mp.delenv(k, raising=False)
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        if capsys is not None:
            capsys.readouterr()
        code = cli.main(["gate", *map(str, args)])
        out, err = capsys.readouterr() if capsys is not None else ("", "")
    finally:
        if monkeypatch is None:
            mp.undo()
    return code, out, err


def sample(tmp_path: Path, name: str, as_name: str | None = None) -> Path:
    """A copy of a shipped sample capture in tmp_path."""
    dst = tmp_path / (as_name or name)
    shutil.copyfile(SAMPLES / name, dst)
    return dst


def window_offsets(data: bytes) -> list[int]:
    """Offsets of the CPU_CHANGE window headers, walking the windows: a CPU_CHANGE record is its header word, the
    pCPU and the byte size of the window's records that follow (xentrace's struct t_rec with 2 extra words)."""
    out, off = [], 0
    while off + 12 <= len(data):
        hdr, _cpu, size = struct.unpack_from("<3I", data, off)
        assert hdr == CPU_CHANGE, f"not a window header at {off}"
        out.append(off)
        off += 12 + size
    assert off == len(data)
    return out


def truncated(tmp_path: Path, name: str = CLEAN, cut: int = 100) -> Path:
    data = (SAMPLES / name).read_bytes()
    p = tmp_path / f"truncated-{name}"
    p.write_bytes(data[:-cut])
    return p


def corrupt(tmp_path: Path, name: str = CLEAN) -> Path:
    """A capture whose middle window header is overwritten with garbage."""
    data = bytearray((SAMPLES / name).read_bytes())
    offs = window_offsets(bytes(data))
    at = offs[len(offs) // 2]
    data[at:at + 4] = b"\xde\xad\xbe\xef"
    p = tmp_path / f"corrupt-{name}"
    p.write_bytes(bytes(data))
    return p


# -- the damaged inputs are damaged -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [truncated, corrupt])
def test_damaged_captures_are_refused_by_the_strict_decoder(tmp_path, make):
    import tracelens
    from tracelens.errors import FormatError

    p = make(tmp_path)
    with pytest.raises(FormatError):
        tracelens.read_xentrace(p, tracelens.DecodeOptions(tolerance="strict"))
    # and the damage is real: a lenient decoder still reads part of it
    assert tracelens.read_xentrace(p, tracelens.DecodeOptions(tolerance="truncate")).num_rows > 0


def test_window_walk_covers_the_sample():
    offs = window_offsets((SAMPLES / CLEAN).read_bytes())
    assert offs[0] == 0 and len(offs) > 4
