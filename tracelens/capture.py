"""A xentrace capture opened for notebooks (:func:`tracelens.open`): :class:`Capture`.

``info()`` (the counts of ``tracelens info``), ``records`` (a polars ``LazyFrame`` over the decoded records that
pushes column projection and row filters down into the batch reader, tracelens.pushdown), ``events(selection)``
(the records ``tracelens events`` shows), ``table()`` (the whole decoded ``pyarrow.Table``), ``write(path)``
(Parquet or Arrow IPC in bounded memory: ``tracelens decode``), ``analyze(config)`` (a
:class:`tracelens.report.Report`). How it is decoded is one :class:`tracelens.options.DecodeOptions`.

Units: every ``tsc`` column is in TSC cycles; ``time_ns`` (only with ``cpu_hz``) is nanoseconds. The decoded
record columns are documented in docs/xentrace.md. Everything heavy (polars, pyarrow, numba) is imported on first
use.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Iterator

from tracelens.errors import UsageError
from tracelens.options import AnalysisConfig, DecodeOptions
from tracelens.pushdown import ScanRequest, plan_predicate

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
    import pyarrow as pa

    from tracelens.events import EventSelection
    from tracelens.report import Report

#: the file formats :meth:`Capture.write` writes, by name ending
WRITE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}


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

    def __init__(self, path, decode: DecodeOptions | None = None, *, batch_bytes: int = 128 << 20):
        if decode is not None and not isinstance(decode, DecodeOptions):
            raise UsageError(f"decode must be a DecodeOptions, not {decode!r}", "decode")
        self.path = os.fspath(path)
        #: how the capture is decoded (Xen version, TSC frequency, tolerance, catalog files, threads)
        self.decode = decode or DecodeOptions()
        #: capture bytes decoded per batch of :attr:`records` (bounds memory)
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
            from tracelens.parsers.xentrace.decode import info

            self._info = info(self.path, self.decode)
        return self._info

    @property
    def catalog(self):
        """The event catalog the capture is decoded with (the built-in one and ``decode.catalog_files``)."""
        return self.decode.catalog()

    # -- records --------------------------------------------------------------------------------------------------
    @property
    def schema(self) -> dict:
        """Column name -> polars dtype of :attr:`records`."""
        return _record_schema(self.decode.cpu_hz)

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

        return pl.Schema(_record_schema(self.decode.cpu_hz))

    def _batches(self, *, with_time: bool = True, columns=None) -> Iterator[pa.Table]:
        """The decoder's time-ordered batches; ``with_time=False`` does not ask it for the ``time_ns`` column and
        ``columns`` makes it build only those columns (their bitmaps, the name dictionary)."""
        from dataclasses import replace

        from tracelens.parsers.xentrace.decode import iter_batches

        decode = self.decode if with_time else replace(self.decode, cpu_hz=None)
        return iter_batches(self.path, decode, batch_bytes=self.batch_bytes, columns=columns)

    def _scan(self, with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        return self.iter_records(columns=with_columns, predicate=predicate, n_rows=n_rows)

    def iter_records(self, *, columns=None, predicate=None, n_rows: int | None = None) -> Iterator[pl.DataFrame]:
        """The records as consecutive time-ordered polars frames, in bounded memory: what a scan of
        :attr:`records` reads, without collecting it (``columns``: the columns wanted, default all;
        ``predicate``: a polars filter expression; ``n_rows``: stop after that many rows). Each call is recorded in
        :attr:`scans`."""
        import numpy as np
        import polars as pl

        req = ScanRequest(columns=list(columns) if columns is not None else None, predicate=predicate,
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
            if req.layout is None:
                meta = table.schema.metadata
                req.layout = json.loads(meta[b"tracelens.layout"])
                req.damage = json.loads(meta[b"tracelens.damage"])
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

    def events(self, selection: EventSelection | None = None) -> pl.LazyFrame:
        """The records a :class:`tracelens.events.EventSelection` selects (event ids or names, classes, domains,
        pCPUs, a TSC range, a row limit), lazily: what ``tracelens events`` prints, pushed down into the reader
        like any filter on :attr:`records`."""
        lf = self.records
        if selection is None:
            return lf
        predicate = selection.predicate(self.catalog)
        if predicate is not None:
            lf = lf.filter(predicate)
        return lf if selection.limit is None else lf.head(selection.limit)

    def iter_events(self, selection: EventSelection | None = None) -> Iterator[pl.DataFrame]:
        """:meth:`events` as consecutive frames in bounded memory (``tracelens events`` prints them as they come)."""
        if selection is None:
            return self.iter_records()
        return self.iter_records(predicate=selection.predicate(self.catalog), n_rows=selection.limit)

    def table(self) -> pa.Table:
        """The whole decoded capture as one time-ordered ``pyarrow.Table`` (tracelens.read_xentrace)."""
        from tracelens.parsers.xentrace.decode import read_xentrace

        return read_xentrace(self.path, self.decode)

    def write(self, output, *, batch_bytes: int = 64 << 20, progress=None) -> tuple[int, list[dict]]:
        """Decode the capture into the file ``output``: Parquet (``.parquet``, zstd) or an Arrow IPC file (``.arrow``,
        ``.feather``, ``.ipc``), in bounded memory (batches of about ``batch_bytes`` of the capture; a batch is
        encoded while the next one decodes) and atomically (a temporary file renamed at the end). Returns (rows,
        damage): the records written and the byte ranges the tolerance skipped. A capture with no records is a
        UsageError and writes nothing. ``progress(done, total)`` follows the bytes decoded."""
        from tracelens.output import atomic_output
        from tracelens.parsers.xentrace.decode import iter_batches

        output = os.fspath(output)
        fmt = next((f for ext, f in WRITE_FORMATS.items() if output.endswith(ext)), None)
        if fmt is None:
            raise UsageError(f"output must end in {', '.join(WRITE_FORMATS)}, not {output!r}", "output")
        with atomic_output(output) as tmp:
            batches = iter_batches(self.path, self.decode, batch_bytes=batch_bytes, progress=progress,
                                   reuse_buffers=2)
            rows, damage = write_batches(batches, fmt, tmp)
            if rows == 0:
                raise UsageError(f"{self.path}: the capture holds no records")
        return rows, damage

    # -- analysis -------------------------------------------------------------------------------------------------
    def analyze(self, config: AnalysisConfig | None = None) -> Report:
        """Boundaries, ledgers, kexec safety and findings (docs/analysis.md) as a :class:`Report`. Without a
        config, the capture's own decode options are used. Reports are cached per config."""
        from tracelens.analysis.analyze import analyze

        if config is None:
            config = AnalysisConfig(decode=self.decode)
        key = config
        rep = self._reports.get(key)
        if rep is None:
            from tracelens.report import Report

            rep = self._reports[key] = Report(analyze(self.path, config), capture=self)
        return rep

    def close(self) -> None:
        """Nothing to release (every read maps the file for its own duration); for symmetry with Dump."""

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- display --------------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<tracelens.Capture {self.path!r} (xentrace)>"

    def _repr_html_(self) -> str:
        from tracelens.display import capture_html

        return capture_html(self)



# ---------------------------------------------------------------------------------------------------------------
# writing decoded batches (Capture.write)
def write_batches(batches, fmt: str, path) -> tuple[int, list[dict]]:
    """Write decoded batches (``iter_batches(..., reuse_buffers=2)``) to ``path`` as ``fmt`` ("parquet" or "arrow")
    while the next one decodes: a writer thread encodes batch i (pyarrow releases the GIL) as the decoder (numba,
    GIL released) fills the other of two buffer sets. Returns (rows, damage)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=1)
    free = [threading.Semaphore(1), threading.Semaphore(1)]  # buffer set s may be decoded into
    failure: list[BaseException] = []
    state = {"rows": 0, "damage": []}

    def writer():
        w = None
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                table, slot = item
                if not failure:
                    if w is None:
                        w = _open_writer(fmt, path, table.schema)
                    w.write_table(table)
                    state["rows"] += table.num_rows
                    state["damage"] = json.loads(table.schema.metadata[b"tracelens.damage"])
                del table
                free[slot].release()
        except BaseException as e:  # surfaced in the main thread
            failure.append(e)
            while True:  # keep draining so the producer never blocks
                item = q.get()
                if item is None:
                    break
                free[item[1]].release()
        finally:
            if w is not None:
                w.close()

    t = threading.Thread(target=writer, name="tracelens-writer", daemon=True)
    t.start()
    k = 0
    try:
        free[0].acquire()
        for table in batches:
            q.put((table, k % 2))
            del table
            k += 1
            free[k % 2].acquire()  # the generator is about to decode into set k % 2: wait until it is written
            if failure:
                break
    finally:
        q.put(None)
        t.join()
    if failure:
        raise failure[0]
    return state["rows"], state["damage"]


# Parquet: dictionary-encode only the low-cardinality columns (the others gain nothing and cost encode time)
_PARQUET_DICT = ["name", "cpu", "event", "n_extra", "dom", "vcpu"]


def _open_writer(fmt, path, schema):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=_PARQUET_DICT)
    import pyarrow as pa

    return pa.ipc.new_file(path, schema)
