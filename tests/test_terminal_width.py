"""Text tables fit the terminal they are printed on (tracelens.terminal): an 80-column terminal gets 80-column
tables, a pipe or a file the fixed 140, ``COLUMNS`` wins over both."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAP = str(ROOT / "sample-traces" / "lost-across-boundary.xentrace")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(extra)
    return env


def _on_terminal(args, cols: int, env=None) -> list[str]:
    """Run ``tracelens ARGS`` with its stdout on a pseudo-terminal ``cols`` wide; its lines."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "tracelens", *args], stdout=slave, stderr=subprocess.PIPE,
                         env=env or _env(), cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=120) in (0, 1, 3), p.stderr.read()
    return b"".join(chunks).decode().replace("\r\n", "\n").splitlines()


def _piped(args, env=None) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "tracelens", *args], capture_output=True, text=True,
                         env=env or _env(), cwd=ROOT)
    assert out.returncode in (0, 1, 3), out.stderr
    return out.stdout.splitlines()


def test_analyze_fits_an_80_column_terminal():
    lines = _on_terminal(["analyze", CAP], 80)
    assert any("TL-GNT-001" in x for x in lines)
    assert max(len(x) for x in lines) <= 80
    assert max(len(x) for x in lines if "━" in x) > 60  # the tables use the width they have


def test_analyze_to_a_pipe_is_140_wide_and_columns_wins():
    lines = _piped(["analyze", CAP])
    assert 80 < max(len(x) for x in lines) <= 140
    lines = _piped(["analyze", CAP], env=_env(COLUMNS="100"))
    assert 80 < max(len(x) for x in lines) <= 100


def test_gate_summary_fits_the_terminal():
    lines = _on_terminal(["gate", CAP], 72)
    rows = [x for x in lines if x.startswith(("blocking", "below-fail-on"))]  # the findings table
    assert len(rows) == 2 and max(len(x) for x in rows) <= 72
    assert "TL-GNT-001" in rows[0] and "TL-LOST-001" in rows[1]  # rule ids whole, never folded
