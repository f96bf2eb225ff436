"""Xen ``xentrace`` captures: decoder, event catalog and writer (spec ../shared/spec/xentrace.md).

``read_xentrace(path)`` returns one time-ordered ``pyarrow.Table``; ``iter_batches`` streams it in bounded memory;
``info`` counts without decoding; each takes a tracelens.options.DecodeOptions. The heavy modules load on first use.
"""

from __future__ import annotations


def __getattr__(name):
    if name in ("read_xentrace", "iter_batches", "info", "scan", "Damage", "COLUMNS", "TOLERANCES"):
        from tracelens.parsers.xentrace import decode

        return getattr(decode, name)
    if name in ("load_catalog", "Catalog"):
        from tracelens.parsers.xentrace import catalog

        return getattr(catalog, name)
    if name == "CaptureWriter":
        from tracelens.parsers.xentrace.writer import CaptureWriter

        return CaptureWriter
    raise AttributeError(name)


__all__ = ["read_xentrace", "iter_batches", "info", "load_catalog", "CaptureWriter"]
