"""The sample dump shipped beside the sample captures (sample-traces/instrumented-guest-d1.kdump): committed,
reproducible byte for byte by sample-traces/generate.py, and read back by the dump readers as written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import tracelens

SAMPLES = Path(__file__).resolve().parent.parent / "sample-traces"
DUMP = SAMPLES / "instrumented-guest-d1.kdump"


def _generate():
    spec = importlib.util.spec_from_file_location("sample_generate", SAMPLES / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_and_reproducible():
    gen = _generate()
    assert gen.DUMP == DUMP.name
    blob = DUMP.read_bytes()
    assert len(blob) < 64 << 10
    assert gen.build_dump() == blob, "regenerating the sample dump changed its bytes: run sample-traces/generate.py"


def test_reads_back_the_kernel_log_it_was_written_with():
    with tracelens.open(DUMP) as dump:
        assert dump.format == "kdump"
        log = dump.dmesg()
        assert [(r["ts_nsec"], r["level"], r["text"]) for r in log.to_dicts()] == [
            (2_000, 6, "Hypervisor detected: Xen HVM"),
            (30_000, 6, "xen:events: Using FIFO-based ABI"),
            (60_000, 6, "xen:grant_table: Grant tables using version 1 layout"),
            (150_000, 7, "xen: --> pirq=34 -> irq=28 (gsi=28)"),
            (180_000, 4, "xen map irq failed -17"),
            (420_000, 0, "Kernel panic - not syncing: no interrupt for the disk controller (gsi 29)"),
        ]
        ev = dump.xen_events()
        mapped = ev.filter(ev["event"] == "pirq_mapped")
        assert (mapped["pirq"].to_list(), mapped["gsi"].to_list()) == ([34], [28])


def test_the_samples_readme_describes_it():
    assert DUMP.name in (SAMPLES / "README.md").read_text()
