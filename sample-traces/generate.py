#!/usr/bin/env python3
"""Regenerate the sample captures of this folder from tracelens.synth's scenarios (deterministic seeds).

    python sample-traces/generate.py            # (re)write every sample next to this script
    python sample-traces/generate.py --check    # exit 1 if a committed sample differs from what would be written

Each scenario is described, with its expected findings, in README.md. The bytes depend only on the scenario code
and its seed, so running this twice gives identical files (tests/test_synth.py checks it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracelens.synth import SCENARIOS

HERE = Path(__file__).resolve().parent
SUFFIX = ".xentrace"


def build(name: str) -> bytes:
    """The bytes of sample ``name`` (a key of tracelens.synth.SCENARIOS), with its default seed."""
    return SCENARIOS[name]().to_bytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    args = ap.parse_args(argv)
    bad = 0
    for name in SCENARIOS:
        blob = build(name)
        path = args.out / f"{name}{SUFFIX}"
        if args.check:
            same = path.is_file() and path.read_bytes() == blob
            print(f"{'ok ' if same else 'DIFF'} {path.name} ({len(blob)} bytes)")
            bad += not same
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            from tracelens.parsers.xentrace.writer import atomic_write_bytes

            atomic_write_bytes(path, blob)
            print(f"wrote {path} ({len(blob)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
