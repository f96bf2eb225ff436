#!/usr/bin/env python3
"""Regenerate the sample captures of this folder from the scenarios of the test suite's simulator (tests/synth.py;
deterministic seeds), and the sample dump that goes with one of them (written with the test suite's dump writers,
tests/vmcore/vmcore_writers.py).

    python sample-traces/generate.py            # (re)write every sample next to this script
    python sample-traces/generate.py --check    # exit 1 if a committed sample differs from what would be written

Each scenario is described, with its expected findings, in README.md. The bytes depend only on the scenario code
and its seed (the dump's only on the code: its pages are stored uncompressed, so no codec version shows in them),
so running this twice gives identical files (tests/test_synth.py and tests/test_sample_dump.py check it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the simulator is a test oracle: it lives with the tests (beside tests/vmcore/vmcore_writers.py), not in the package
sys.path.insert(0, str(HERE.parent / "tests"))

from synth import SCENARIOS  # noqa: E402

SUFFIX = ".xentrace"


def build(name: str) -> bytes:
    """The bytes of sample ``name`` (a key of tests/synth.py's SCENARIOS), with its default seed."""
    return SCENARIOS[name]().to_bytes()


#: the sample dump: d1's next kernel after the soft reset of instrumented-guest.xentrace (notebook 02)
DUMP = "instrumented-guest-d1.kdump"
#: its kernel log (ts_nsec since that kernel started, level, text): made up to match the capture's story, in the
#: message formats of Linux arch/x86/pci/xen.c, drivers/xen/events and drivers/xen/grant-table.c
DUMP_LOG = (
    (2_000, 6, b"Hypervisor detected: Xen HVM"),
    (30_000, 6, b"xen:events: Using FIFO-based ABI"),
    (60_000, 6, b"xen:grant_table: Grant tables using version 1 layout"),
    (150_000, 7, b"xen: --> pirq=34 -> irq=28 (gsi=28)"),
    (180_000, 4, b"xen map irq failed -17"),
    (420_000, 0, b"Kernel panic - not syncing: no interrupt for the disk controller (gsi 29)"),
)


def build_dump() -> bytes:
    """The bytes of the sample dump: a kdump-compressed file (makedumpfile's format, pages stored uncompressed) of a
    small x86_64 guest kernel whose lockless printk ring holds DUMP_LOG."""
    import tempfile

    sys.path.insert(0, str(HERE.parent / "tests" / "vmcore"))
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_kdump

    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [LogRec(ts, text, level=level) for ts, level, text in DUMP_LOG], size_bits=10)
    vmci = k.vmcoreinfo()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DUMP
        write_kdump(path, mem, standard_notes(vmci), codec="none", vmcoreinfo=vmci)
        return path.read_bytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    args = ap.parse_args(argv)
    bad = 0
    outputs = [(f"{name}{SUFFIX}", lambda name=name: build(name)) for name in SCENARIOS] + [(DUMP, build_dump)]
    for filename, make in outputs:
        blob = make()
        path = args.out / filename
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
