"""A xentrace capture opened for notebooks (:func:`tracelens.open`): :class:`Capture`.

``info()`` (the counts of ``tracelens info``), ``records`` (a polars ``LazyFrame`` over the decoded records that
pushes column projection and row filters down into the batch reader, tracelens.pushdown), ``table()`` (the whole
decoded ``pyarrow.Table``), ``analyze(config)`` (a :class:`tracelens.report.Report`).

Units: every ``tsc`` column is in TSC cycles; ``time_ns`` (only with ``cpu_hz``) is nanoseconds. The decoded
record columns are documented in docs/xentrace.md. Everything heavy (polars, pyarrow, numba) is imported on first
use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from tracelens.errors import UsageError
from tracelens.pushdown import ScanRequest, plan_predicate

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
    import pyarrow as pa

    from tracelens.analysis.analyze import AnalysisConfig
    from tracelens.report import Report


def _record_schema(cpu_hz) -> dict:
    import polars as pl

    from tracelens.parsers.xentrace.decode import COLUMNS

    types = {"cpu": pl.UInt16, "tsc": pl.UInt64, "has_tsc": pl.Boolean, "event": pl.UInt32, "n_extra": pl.UInt8,
             "offset": pl.UInt64, "dom": pl.UInt16, "vcpu": pl.UInt16, "name": pl.Categorical()}
    for j in range(1, 8):
        types[f"d{j}"] = pl.UInt32
    schema = {c: types[c] for c in COLUMNS}
    if cpu_hz:
        schema["time_ns"] = pl.Int64
    return schema


class Capture:
    """A xentrace capture opened by :func:`open`. Nothing is decoded until asked for."""

    format = "xentrace"

    def __init__(self, path, *, xen_version: str | None = None, cpu_hz: float | None = None,
                 tolerance: str = "strict", catalog_files=(), batch_bytes: int = 128 << 20):
        from tracelens.parsers.xentrace.decode import TOLERANCES

        if tolerance not in TOLERANCES:
            raise UsageError(f"tolerance must be one of {', '.join(TOLERANCES)}, not {tolerance!r}")
        self.path = os.fspath(path)
        self.xen_version = xen_version
        self.cpu_hz = cpu_hz
        self.tolerance = tolerance
        self.catalog_files = tuple(catalog_files)
        self.batch_bytes = int(batch_bytes)
        #: one :class:`ScanRequest` per scan of :attr:`records`, most recent last (what polars pushed down)
        self.scans: list[ScanRequest] = []
        self._info: dict | None = None
        self._reports: dict = {}

    # -- summary ------------------------------------------------------------------------------------------------
    def info(self) -> dict:
        """The counts ``tracelens info`` shows (pCPUs, windows, records per class/event/domain, TSC span, Xen
        layout guess, damage), from one pass over the records without building a table."""
        if self._info is None:
            from tracelens.parsers.xentrace.decode import summarize

            self._info = summarize(self.path, xen_version=self.xen_version, tolerance=self.tolerance,
                                   catalog_files=self.catalog_files)
        return self._info

    # -- records --------------------------------------------------------------------------------------------------
    @property
    def schema(self) -> dict:
        """Column name -> polars dtype of :attr:`records`."""
        return _record_schema(self.cpu_hz)

    @property
    def records(self) -> pl.LazyFrame:
        """The decoded records as a polars ``LazyFrame`` (columns: docs/xentrace.md; ``tsc`` in cycles).

        The scan pushes the projection and the filter into the batch reader: each decoded batch is cut to the
        requested columns before it is converted to polars, the filter is applied per batch, batches that cannot
        hold a matching row (TSC bounds or pCPU terms of the filter) are dropped, and a row limit stops the
        decoding early. :attr:`scans` records what each scan was asked for."""
        from polars.io.plugins import register_io_source

        return register_io_source(self._scan, schema=self._schema_fn, validate_schema=False,
                                  explain_name="tracelens xentrace", explain_detail=self.path)

    def _schema_fn(self):
        import polars as pl

        return pl.Schema(_record_schema(self.cpu_hz))

    def _batches(self, *, with_time: bool = True, columns=None) -> Iterator[pa.Table]:
        """The decoder's time-ordered batches; ``with_time=False`` does not ask it for the ``time_ns`` column and
        ``columns`` makes it build only those columns (their bitmaps, the name dictionary)."""
        from tracelens.parsers.xentrace import decode

        return decode.iter_batches(self.path, batch_bytes=self.batch_bytes, xen_version=self.xen_version,
                                   cpu_hz=self.cpu_hz if with_time else None, tolerance=self.tolerance,
                                   catalog_files=self.catalog_files, columns=columns)

    def _scan(self, with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        import numpy as np
        import polars as pl

        req = ScanRequest(columns=list(with_columns) if with_columns is not None else None, predicate=predicate,
                          n_rows=n_rows)
        self.scans.append(req)
        (lo, hi), cpu_terms = plan_predicate(predicate)
        req.tsc_range = (lo, hi)
        wanted = req.columns
        needed = None
        if wanted is not None:
            needed = list(wanted)
            if predicate is not None:
                needed += [c for c in predicate.meta.root_names() if c not in needed]
        left = n_rows
        # the decoder computes time_ns only when given cpu_hz: give it only when the column is wanted
        with_time = needed is None or "time_ns" in needed
        decoder_columns = None
        if needed is not None:
            # the batch-skipping tests below read tsc and cpu
            extra = (["tsc"] if lo is not None or hi is not None else []) + (["cpu"] if cpu_terms else [])
            decoder_columns = [c for c in dict.fromkeys(needed + extra) if with_time or c != "time_ns"]
        for table in self._batches(with_time=with_time, columns=decoder_columns):
            req.batches += 1
            if lo is not None or hi is not None:
                tsc = table.column("tsc").to_numpy()
                if (lo is not None and int(tsc.max()) < lo) or (hi is not None and int(tsc.min()) > hi):
                    req.batches_skipped += 1
                    continue
            if cpu_terms:
                cpus = pl.DataFrame({"cpu": np.unique(table.column("cpu").to_numpy())})
                if not all(cpus.select(t.fill_null(False).any()).item() for t in cpu_terms):
                    req.batches_skipped += 1
                    continue
            if needed is not None:
                table = table.select(needed)
            df = pl.from_arrow(table)
            if predicate is not None:
                df = df.filter(predicate)
            if wanted is not None and len(wanted) != df.width:
                df = df.select(wanted)
            if left is not None:
                df = df.head(left)
                left -= df.height
            req.rows += df.height
            if df.height:
                yield df
            if left is not None and left <= 0:
                break

    def table(self) -> pa.Table:
        """The whole decoded capture as one time-ordered ``pyarrow.Table`` (tracelens.read_xentrace)."""
        from tracelens.parsers.xentrace.decode import read_xentrace

        return read_xentrace(self.path, xen_version=self.xen_version, cpu_hz=self.cpu_hz, tolerance=self.tolerance,
                             catalog_files=self.catalog_files)

    # -- analysis -------------------------------------------------------------------------------------------------
    def analyze(self, config: AnalysisConfig | None = None) -> Report:
        """Boundaries, ledgers, kexec safety and findings (docs/analysis.md) as a :class:`Report`. Without a
        config, the capture's own options (xen_version, cpu_hz, tolerance) are used. Reports are cached per
        config."""
        from tracelens.analysis.analyze import AnalysisConfig, analyze

        if config is None:
            config = AnalysisConfig(xen_version=self.xen_version, cpu_hz=self.cpu_hz, tolerance=self.tolerance)
        key = repr(config)
        rep = self._reports.get(key)
        if rep is None:
            from tracelens.report import Report

            rep = self._reports[key] = Report(analyze(self.path, config), capture=self)
        return rep

    # -- display --------------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<tracelens.Capture {self.path!r} (xentrace)>"

    def _repr_html_(self) -> str:
        from tracelens.display import capture_html

        return capture_html(self)

