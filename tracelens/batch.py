"""Many captures into one table: :func:`overview`, one row per capture with an explicit failure policy (as
Perfetto's batch trace processor flattens per-trace results into one table with the trace as a column)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tracelens.errors import FormatError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from tracelens.analysis.analyze import AnalysisConfig

_VERDICT_RANK = {"safe": 0, "inconclusive": 1, "unsafe": 2}
ON_ERROR = ("raise", "record")


def overview(paths, *, config: AnalysisConfig | None = None, on_error: str = "raise") -> pl.DataFrame:
    """One row per capture: ``capture`` (path), ``error`` (null when read), ``size_bytes``, ``pcpus``, ``records``,
    ``lost_records``, ``tsc_first``/``tsc_last`` (cycles), ``boundaries``, ``boundary_kinds``, ``findings``,
    ``errors``/``warnings`` (findings by severity), ``rules``, ``kexec_verdict`` (the worst verdict, unsafe >
    inconclusive > safe, over the guest epochs that ended in a boundary: was a kexec that happened safe; null
    without one) and ``open_verdict`` (the same over the epochs still open at the end: would a kexec now be safe).

    ``on_error``: ``"raise"`` stops at the first input that cannot be read (a TracelensError); ``"record"`` puts
    its message in ``error`` and goes on. A dump in ``paths`` is such an error (it is not a capture)."""
    import polars as pl

    if on_error not in ON_ERROR:
        raise UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}", "on_error")
    from tracelens import open
    from tracelens.capture import Capture
    from tracelens.errors import TracelensError

    rows = []
    for p in paths:
        path = os.fspath(p)
        try:
            cap = open(path, config.decode if config is not None else None)
            if not isinstance(cap, Capture):
                cap.close()
                raise FormatError(path, None, f"a {cap.format} dump, not a xentrace capture")
            info = cap.info()
            rep = cap.analyze(config)
        except TracelensError as e:
            if on_error == "raise":
                raise
            rows.append({"capture": path, "error": str(e)})
            continue
        f = rep._obj["findings"]
        closed = [r["verdict"] for r in rep._obj["safety"] if r["end_tsc"] is not None]
        still_open = [r["verdict"] for r in rep._obj["safety"] if r["end_tsc"] is None]
        rows.append({
            "capture": path, "error": None, "size_bytes": info["size_bytes"], "pcpus": len(info["pcpus"]),
            "records": info["records"], "lost_records": info["lost_records"]["lost"],
            "tsc_first": info["tsc_first"], "tsc_last": info["tsc_last"],
            "boundaries": len(rep._obj["boundaries"]),
            "boundary_kinds": sorted({b["kind"] for b in rep._obj["boundaries"]}),
            "findings": len(f), "errors": sum(x["severity"] == "error" for x in f),
            "warnings": sum(x["severity"] == "warning" for x in f), "rules": sorted({x["rule"] for x in f}),
            "kexec_verdict": max(closed, key=_VERDICT_RANK.get) if closed else None,
            "open_verdict": max(still_open, key=_VERDICT_RANK.get) if still_open else None,
        })
    schema = {"capture": pl.String, "error": pl.String, "size_bytes": pl.Int64, "pcpus": pl.Int64,
              "records": pl.Int64, "lost_records": pl.Int64, "tsc_first": pl.UInt64, "tsc_last": pl.UInt64,
              "boundaries": pl.Int64, "boundary_kinds": pl.List(pl.String), "findings": pl.Int64,
              "errors": pl.Int64, "warnings": pl.Int64, "rules": pl.List(pl.String), "kexec_verdict": pl.String,
              "open_verdict": pl.String}
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in schema}, schema=schema)

