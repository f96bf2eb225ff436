"""The analysis of one capture as polars frames: :class:`Report` (``Capture.analyze()``), the rows of the JSON
contract of docs/analysis.md (schema_version 1), one frame per member. TSCs are cycles."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from tracelens.analysis.analyze import Analysis
    from tracelens.capture import Capture


def _json_text(v):
    return None if v is None else json.dumps(v, sort_keys=True, default=str)


def _frame(rows: list[dict], spec: dict[str, str], extra: dict | None = None):
    import polars as pl

    types = {"i64": pl.Int64, "u64": pl.UInt64, "str": pl.String, "json": pl.String, "bool": pl.Boolean,
             "list_i64": pl.List(pl.Int64), "list_str": pl.List(pl.String)}
    data = {c: [(_json_text(r.get(c)) if t == "json" else r.get(c)) for r in rows] for c, t in spec.items()}
    schema = {c: types[t] for c, t in spec.items()}
    df = pl.DataFrame(data, schema=schema)
    if extra:
        df = df.with_columns([pl.lit(v, dtype=pl.String).alias(k) for k, v in extra.items()])
    return df


class Report:
    """The analysis of one capture as polars frames (rows of the JSON contract of docs/analysis.md).

    ``boundaries``, ``grants``, ``grant_mappers``, ``balloon``, ``hypercalls``, ``irq_vectors``, ``safety`` and
    ``pirqs_open``, ``grefs_open`` (instrumented guests) and ``findings`` (a
    :class:`tracelens.display.FindingsFrame`, a polars DataFrame with a richer notebook display);
    ``grant_series`` (one row per grant MAP/UNMAP record: tsc, mapper, granter, outstanding after it, delta);
    nested members (evidence, unsafe, lost, gfn_ranges, extents_by_order) are JSON text. ``analysis`` is the
    underlying :class:`tracelens.analysis.analyze.Analysis`; ``to_json()``, ``to_html()``... render it."""

    def __init__(self, analysis: Analysis, capture: Capture | None = None):
        from tracelens.analysis.report import to_json_obj

        self.analysis = analysis
        self.capture = capture
        self.path = analysis.path
        self._obj = to_json_obj(analysis)
        self._frames: dict = {}

    def _get(self, name: str):
        df = self._frames.get(name)
        if df is None:
            rows = self._obj["guest"][name] if name in ("pirqs_open", "grefs_open") else self._obj[name]
            from tracelens.analysis.report import row_columns

            df = _frame(rows, row_columns(f"guest.{name}" if name in ("pirqs_open", "grefs_open") else name))
            if name == "findings":
                from tracelens.display import FindingsFrame

                df = FindingsFrame.wrap(df)
            self._frames[name] = df
        return df

    boundaries = property(lambda self: self._get("boundaries"),
                          doc="kexec boundaries: domid, epoch (that it ends), kind, tsc, evidence")
    grants = property(lambda self: self._get("grants"),
                      doc="grant ledger: one row per mapper, granter and granter epoch")
    grant_mappers = property(lambda self: self._get("grant_mappers"), doc="grant maps per mapper and mapper epoch")
    balloon = property(lambda self: self._get("balloon"), doc="balloon ledger: per domain and epoch")
    hypercalls = property(lambda self: self._get("hypercalls"), doc="hypercall counts per domain, epoch, source, op")
    irq_vectors = property(lambda self: self._get("irq_vectors"), doc="Xen IRQ vector assignments")
    safety = property(lambda self: self._get("safety"), doc="kexec safety per guest domain and epoch")
    findings = property(lambda self: self._get("findings"), doc="the findings (rules: docs/rules.md)")
    pirqs_open = property(lambda self: self._get("pirqs_open"),
                          doc="instrumented guests: PIRQs still bound at the end of an epoch "
                              "(docs/guest-tracepoints.md)")
    grefs_open = property(lambda self: self._get("grefs_open"),
                          doc="instrumented guests: grant refs still granted at the end of an epoch")

    @property
    def grant_series(self) -> pl.DataFrame:
        """One row per grant MAP/UNMAP record in time order: tsc, mapper (null: unknown), granter, outstanding
        (the pair's count after it), delta (+1 map, -1 unmap)."""
        import numpy as np
        import polars as pl

        s = self.analysis.grants.series
        df = pl.DataFrame({
            "tsc": pl.Series(np.asarray(s["tsc"], np.uint64), dtype=pl.UInt64),
            "mapper": pl.Series(np.asarray(s["mapper"], np.int64), dtype=pl.Int64),
            "granter": pl.Series(np.asarray(s["granter"], np.int64), dtype=pl.Int64),
            "outstanding": pl.Series(np.asarray(s["outstanding"], np.int64), dtype=pl.Int64),
            "delta": pl.Series(np.asarray(s["delta"], np.int64), dtype=pl.Int64),
        })
        return df.with_columns(pl.when(pl.col("mapper") >= 0).then(pl.col("mapper")).alias("mapper"))

    @property
    def capture_info(self) -> dict:
        """The ``capture`` member of the JSON contract (path, sha256, records, lost records, TSC span, layout)."""
        return dict(self._obj["capture"])

    def to_json(self) -> str:
        from tracelens.analysis.report import to_json

        return to_json(self.analysis)

    def to_html(self) -> str:
        """The self-contained HTML report of ``tracelens analyze --format html``."""
        from tracelens.analysis.report import to_html

        return to_html(self.analysis)

    def to_markdown(self) -> str:
        from tracelens.analysis.report import to_markdown

        return to_markdown(self.analysis)

    def __repr__(self) -> str:
        f = self._obj["findings"]
        rules = ", ".join(sorted({x["rule"] for x in f})) or "none"
        return (f"<tracelens.Report {self.path!r}: {len(self._obj['boundaries'])} boundaries, "
                f"{len(f)} findings ({rules})>")

    def _repr_html_(self) -> str:
        from tracelens.display import report_html

        return report_html(self)

