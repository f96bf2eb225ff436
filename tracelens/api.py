"""The notebook-facing Python API: ``tracelens.open(path)`` and ``tracelens.sql(query, *paths)``.

``open`` detects the format from the file's bytes (:func:`tracelens.detect.sniff`) and returns

* a :class:`Capture` for a xentrace capture: ``info()`` (the counts of ``tracelens info``), ``records`` (a polars
  ``LazyFrame`` over the decoded records that pushes column projection and row filters down into the batch reader),
  ``table()`` (the whole decoded ``pyarrow.Table``), ``analyze(config)`` (a :class:`Report`);
* a :class:`Dump` for a vmcore (any format of :mod:`tracelens.parsers.vmcore`): ``info()``, ``dmesg()``,
  ``xen_events()``, ``vmcoreinfo``, ``pages``, ``read_phys()``, ``read_virt()``.

Units: every ``tsc`` column is in TSC cycles; ``time_ns`` (only with ``cpu_hz``) and the kernel log's ``ts_nsec``
are nanoseconds. The decoded record columns are documented in docs/xentrace.md; the analysis tables in
docs/analysis.md (a :class:`Report`'s frames hold the rows of the JSON contract, schema_version 1).

Everything heavy (polars, pyarrow, numba) is imported on first use.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from tracelens.errors import FormatError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
    import pyarrow as pa

    from tracelens.analysis.api import Analysis, AnalysisConfig

__all__ = ["open", "sql", "overview", "Capture", "Dump", "Report", "ScanRequest", "TABLES"]

#: table names :func:`sql` and ``tracelens query`` know
TABLES = ("records", "boundaries", "grants", "grant_mappers", "balloon", "hypercalls", "irq_vectors", "safety",
          "pirqs_open", "grefs_open", "findings", "dmesg", "xen_events")
_DUMP_TABLES = ("dmesg", "xen_events")
_ANALYSIS_TABLES = tuple(t for t in TABLES if t not in ("records", *_DUMP_TABLES))


# ---------------------------------------------------------------------------------------------------------------
# open
def open(path, *, xen_version: str | None = None, cpu_hz: float | None = None,  # noqa: A001 - the verb
         tolerance: str = "strict", catalog_files=(), vmcoreinfo: bytes | str | None = None) -> Capture | Dump:
    """Open a xentrace capture or a vmcore dump (the format is detected from the bytes, never the name).

    Capture options: ``xen_version`` (e.g. "4.17"; default: guessed from the records), ``cpu_hz`` (adds a
    ``time_ns`` column), ``tolerance`` ("strict", "truncate" or "skip"), ``catalog_files`` (extra event
    definitions, TOML). Dump option: ``vmcoreinfo`` (text replacing the dump's own VMCOREINFO).
    A list of paths opens the files of a ``makedumpfile --split`` set, in any order, as one :class:`Dump`.
    Raises :class:`~tracelens.errors.FormatError` for anything else, UsageError for a ``cpu_hz`` that is not a
    finite frequency above 0.
    """
    from tracelens.commands import check_cpu_hz
    from tracelens.detect import XENTRACE, sniff

    check_cpu_hz(cpu_hz)

    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            for p in path:
                if sniff(p) == XENTRACE:
                    raise FormatError(p, 0, "a xentrace capture: a list of paths is read as the parts of one "
                                      "makedumpfile --split dump set")
            return Dump(path, vmcoreinfo=vmcoreinfo)
        path = path[0]
    kind = sniff(path)
    if kind == XENTRACE:
        return Capture(path, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                       catalog_files=tuple(catalog_files))
    return Dump(path, vmcoreinfo=vmcoreinfo)


# ---------------------------------------------------------------------------------------------------------------
# captures
@dataclass
class ScanRequest:
    """What one scan of :attr:`Capture.records` was asked for by polars, and what it did.

    ``columns``: the projected columns (None: all); ``predicate``: the pushed-down filter (a polars ``Expr``) or
    None; ``n_rows``: the row limit; ``tsc_range``: the (low, high) TSC bounds inferred from the predicate (None
    when unbounded); ``batches``: the decoder batches read; ``batches_skipped``: those dropped because no row could
    match the predicate's TSC bounds or pCPU terms; ``rows``: the rows yielded. polars pushes only elementwise
    filters into a scan (``tsc == tsc.max()`` is applied after it), so a per-batch filter is exact."""

    columns: list[str] | None
    predicate: Any
    n_rows: int | None
    tsc_range: tuple[int | None, int | None] = (None, None)
    batches: int = 0
    batches_skipped: int = 0
    rows: int = 0


def _literal_int(node) -> int | None:
    """The integer of a serialized polars literal ({"Scalar": {"UInt64": 5}} or {"Dyn": {"Int": 5}})."""
    if not isinstance(node, dict) or "Literal" not in node:
        return None
    lit = node["Literal"]
    for key in ("Scalar", "Dyn"):
        inner = lit.get(key) if isinstance(lit, dict) else None
        if isinstance(inner, dict) and len(inner) == 1:
            v = next(iter(inner.values()))
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def _conjuncts(node) -> list:
    if isinstance(node, dict) and "BinaryExpr" in node and node["BinaryExpr"].get("op") in ("And", "LogicalAnd"):
        b = node["BinaryExpr"]
        return _conjuncts(b["left"]) + _conjuncts(b["right"])
    return [node]


_FLIP = {"Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq", "Eq": "Eq"}


def _tsc_bound(node) -> tuple[int | None, int | None] | None:
    """(low, high) inclusive bounds on ``tsc`` implied by one conjunct, or None when it is not a simple one."""
    if isinstance(node, dict) and "BinaryExpr" in node:
        b = node["BinaryExpr"]
        op, left, right = b.get("op"), b.get("left"), b.get("right")
        if right == {"Column": "tsc"} and op in _FLIP:
            left, right, op = right, left, _FLIP[op]
        if left != {"Column": "tsc"}:
            return None
        v = _literal_int(right)
        if v is None:
            return None
        return {"Eq": (v, v), "Gt": (v + 1, None), "GtEq": (v, None), "Lt": (None, v - 1), "LtEq": (None, v)}.get(op)
    if isinstance(node, dict) and "Function" in node:
        f = node["Function"]
        fn = f.get("function", {})
        boolean = fn.get("Boolean") if isinstance(fn, dict) else None
        between = boolean.get("IsBetween") if isinstance(boolean, dict) else None
        inp = f.get("input", [])
        if between is not None and len(inp) == 3 and inp[0] == {"Column": "tsc"}:
            lo, hi = _literal_int(inp[1]), _literal_int(inp[2])
            if lo is None or hi is None:
                return None
            closed = between.get("closed", "Both")
            return (lo if closed in ("Both", "Left") else lo + 1, hi if closed in ("Both", "Right") else hi - 1)
    return None


def plan_predicate(predicate) -> tuple[tuple[int | None, int | None], list]:
    """Split a pushed-down predicate into what allows skipping whole batches: inclusive TSC bounds from its simple
    ``tsc`` comparisons, and its terms that involve only ``cpu`` (evaluated on the pCPUs present in a batch).
    Terms it does not understand are left to the row filter, so skipping stays sound."""
    import polars as pl

    if predicate is None:
        return (None, None), []
    try:
        tree = json.loads(predicate.meta.serialize(format="json"))
    except Exception:  # an expression polars cannot serialize: no batch skipping, the row filter still applies
        return (None, None), []
    lo = hi = None
    cpu_terms = []
    for c in _conjuncts(tree):
        b = _tsc_bound(c)
        if b is not None:
            if b[0] is not None:
                lo = b[0] if lo is None else max(lo, b[0])
            if b[1] is not None:
                hi = b[1] if hi is None else min(hi, b[1])
            continue
        try:
            expr = pl.Expr.deserialize(io.StringIO(json.dumps(c)), format="json")
        except Exception:
            continue
        if set(expr.meta.root_names()) == {"cpu"}:
            cpu_terms.append(expr)
    return (lo, hi), cpu_terms


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
        from tracelens.analysis.api import AnalysisConfig, analyze

        if config is None:
            config = AnalysisConfig(xen_version=self.xen_version, cpu_hz=self.cpu_hz, tolerance=self.tolerance)
        key = repr(config)
        rep = self._reports.get(key)
        if rep is None:
            rep = self._reports[key] = Report(analyze(self.path, config), capture=self)
        return rep

    # -- display --------------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<tracelens.Capture {self.path!r} (xentrace)>"

    def _repr_html_(self) -> str:
        from tracelens.display import capture_html

        return capture_html(self)


# ---------------------------------------------------------------------------------------------------------------
# dumps
class Dump:
    """A vmcore opened by :func:`open` (ELF vmcore, kdump-compressed, flattened or xl dump-core)."""

    def __init__(self, path, *, vmcoreinfo: bytes | str | None = None):
        from tracelens.parsers import vmcore

        many = isinstance(path, (list, tuple))
        #: every file of the dump: one, or the parts of a makedumpfile --split set
        self.paths = [os.fspath(p) for p in path] if many else [os.fspath(path)]
        #: the format reader (tracelens.parsers.vmcore.dump.Dump) for everything not wrapped here
        self.raw = vmcore.open(self.paths if many else self.paths[0], vmcoreinfo=vmcoreinfo)
        #: the file (the first part, in pfn order, of a split set)
        self.path = self.raw.path
        self._info: dict | None = None

    @property
    def format(self) -> str:
        return self.raw.kind

    def info(self) -> dict:
        """Format, compression, header version, page counts by state, VMCOREINFO essentials."""
        if self._info is None:
            self._info = self.raw.info()
        return self._info

    @property
    def vmcoreinfo(self):
        """The dump's VMCOREINFO (``.symbol(name)``, ``.table()``, ``.osrelease``...); empty when absent."""
        return self.raw.vmcoreinfo

    def dmesg(self) -> pl.DataFrame:
        """The kernel log records (seq, ts_nsec in nanoseconds since boot, level, facility, caller, text...)."""
        import polars as pl

        return pl.from_arrow(self.raw.dmesg())

    def xen_events(self) -> pl.DataFrame:
        """The Xen-related kernel log records (PIRQ/GSI, grant table, balloon, event channels, shutdown, kexec)
        with the numbers they carry as columns (tracelens.parsers.vmcore.xen.log_events)."""
        import polars as pl

        from tracelens.parsers.vmcore.xen import log_events

        return pl.from_arrow(log_events(self.raw))

    @property
    def pages(self) -> pl.DataFrame:
        """The page index: pfn, offset, size, compression, state (present, zero, excluded, lost, invalid)."""
        import polars as pl

        return pl.from_arrow(self.raw.pages())

    def read_phys(self, addr: int, size: int, *, zero_excluded: bool = False) -> bytes:
        """Bytes at a physical address; PageUnavailable (a FormatError) for holes, excluded and lost pages."""
        return self.raw.read_phys(addr, size, zero_excluded=zero_excluded)

    def read_virt(self, addr: int, size: int, *, zero_excluded: bool = False) -> bytes:
        """Bytes at a kernel virtual address (kernel text, direct map, or a page-table walk)."""
        return self.raw.read_virt(addr, size, zero_excluded=zero_excluded)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tracelens.Dump {self.path!r} ({self.format})>"

    def _repr_html_(self) -> str:
        from tracelens.display import dump_html

        return dump_html(self)


# ---------------------------------------------------------------------------------------------------------------
# reports
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
    underlying :class:`tracelens.analysis.api.Analysis`; ``to_json()``, ``to_html()``... render it."""

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
            from tracelens.analysis.report import row_columns

            member = f"guest.{name}" if name in ("pirqs_open", "grefs_open") else name
            rows = self._obj["guest"][name] if name in ("pirqs_open", "grefs_open") else self._obj[name]
            df = _frame(rows, row_columns(member))  # columns and dtypes from the JSON contract
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


# ---------------------------------------------------------------------------------------------------------------
# many captures
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
        raise UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    from tracelens.errors import TracelensError

    rows = []
    for p in paths:
        path = os.fspath(p)
        try:
            cap = open(path) if config is None else open(path, xen_version=config.xen_version, cpu_hz=config.cpu_hz,
                                                         tolerance=config.tolerance)
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


# ---------------------------------------------------------------------------------------------------------------
# SQL
def _referenced(query: str) -> set[str]:
    import re

    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
    return {t for t in TABLES if t in words}


def sql_context(paths, *, tables: set[str] | None = None, config: AnalysisConfig | None = None):
    """A ``polars.SQLContext`` over the captures and dumps at ``paths``: ``records`` (lazy, with a ``capture``
    column), the analysis tables (``boundaries``, ``grants``, ``grant_mappers``, ``balloon``, ``hypercalls``,
    ``irq_vectors``, ``safety``, ``pirqs_open``, ``grefs_open``, ``findings``: the :class:`Report` frames, each with
    a ``capture`` column) and, from dumps, ``dmesg`` and ``xen_events`` (with a ``dump`` column). Only the
    ``tables`` named are built (default: every table the inputs can give); naming a capture table without a capture,
    or a dump table without a dump, is a UsageError."""
    import polars as pl

    caps: list[Capture] = []
    dumps: list[Dump] = []
    for p in paths:
        obj = open(p) if config is None else open(p, xen_version=config.xen_version, cpu_hz=config.cpu_hz,
                                                  tolerance=config.tolerance)
        (caps if isinstance(obj, Capture) else dumps).append(obj)
    if tables is None:  # everything the inputs can give
        tables = {t for t in TABLES if t not in _DUMP_TABLES} if caps else set()
        tables |= set(_DUMP_TABLES) if dumps else set()
    tables = set(tables)
    need_caps = sorted(tables - set(_DUMP_TABLES))
    need_dumps = sorted(tables & set(_DUMP_TABLES))
    if need_caps and not caps:
        raise UsageError(f"the query uses {', '.join(need_caps)}, which come from captures, but no capture was given")
    if need_dumps and not dumps:
        raise UsageError(f"the query uses {', '.join(need_dumps)}, which come from dumps, but no dump was given")
    ctx = pl.SQLContext()
    if "records" in tables:
        ctx.register("records", pl.concat([c.records.with_columns(pl.lit(c.path).alias("capture")) for c in caps]))
    wanted = [t for t in _ANALYSIS_TABLES if t in tables]
    if wanted:
        reports = [c.analyze(config) for c in caps]
        for t in wanted:
            ctx.register(t, pl.concat([r._get(t).with_columns(pl.lit(r.path).alias("capture")) for r in reports]))
    for t, fn in (("dmesg", Dump.dmesg), ("xen_events", Dump.xen_events)):
        if t in tables:
            ctx.register(t, pl.concat([fn(d).with_columns(pl.lit(d.path).alias("dump")) for d in dumps],
                                      how="diagonal_relaxed"))
    for d in dumps:  # their tables are in memory now
        d.close()
    return ctx


def _sql_tokens(query: str) -> str:
    """``query`` with comments and string literals blanked and quoted identifiers ("x", `x`) unquoted, in lower
    case: what the safe-mode check looks at."""
    import re

    out = []
    pos = 0
    token = re.compile(r"--[^\n]*|/\*.*?(\*/|$)|'(?:[^']|'')*'?|\"((?:[^\"]|\"\")*)\"?|`((?:[^`]|``)*)`?|[^-/'\"`]+|.", re.S)
    while pos < len(query):
        m = token.match(query, pos)
        t = m.group()
        if t.startswith(("--", "/*")) and len(t) > 1:
            out.append(" ")
        elif t.startswith("'"):
            out.append(" '' ")
        elif t.startswith('"'):
            out.append(" " + (m.group(2) or "").replace('""', '"') + " ")
        elif t.startswith("`"):
            out.append(" " + (m.group(3) or "").replace("``", "`") + " ")
        else:
            out.append(t)
        pos = m.end()
    return "".join(out).lower()


def check_safe_sql(query: str) -> None:
    """Raise UsageError when ``query`` calls a table function (polars SQL's ``read_csv``, ``read_parquet``,
    ``read_ipc``, ``read_json``... read any file or URL the process can reach). Safe mode sees only the tables
    tracelens registers. The check is lexical and errs on the side of refusing: any call of a ``read_*`` or
    ``scan_*`` name, quoted or not, whatever the comments around it."""
    import re

    m = re.search(r"\b((?:read|scan)_\w*)\s*\(", _sql_tokens(query))
    if m:
        raise UsageError(f"SQL: {m.group(1)}() reads files or URLs, which safe mode does not allow (only the tables "
                         f"{', '.join(TABLES)}); pass safe=False (CLI: --allow-files) to read your own files")


def _collect_within(lf, timeout: float):
    """``lf.collect()``, or UsageError after ``timeout`` seconds. polars cannot interrupt a running query (its
    background-collect cancel aborts the process when the query later finishes, polars 2.1), so the query runs
    on a daemon thread that is abandoned on timeout: the caller gets control back at once and the thread ends
    when the query does. Services that need a hard CPU bound should run queries in a child process."""
    import threading

    box: dict = {}

    def work():
        try:
            box["df"] = lf.collect()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name="tracelens-sql", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise UsageError(f"SQL: the query ran longer than the {timeout:g} s timeout (abandoned)")
    if "error" in box:
        raise box["error"]
    return box["df"]


def sql(query: str, *paths, config: AnalysisConfig | None = None, safe: bool = True, timeout: float | None = None,
        max_rows: int | None = None) -> pl.DataFrame:
    """Run a SQL query (polars' SQL dialect) over the captures and dumps at ``paths``; see :func:`sql_context`
    for the tables. Only the tables the query names are built. Returns a polars DataFrame.

    ``safe`` (the default) refuses table functions such as ``read_csv('/etc/passwd')`` or ``read_csv('http://...')``:
    the query sees only the capture and dump tables (services and shared notebooks run queries they did not write;
    pass ``safe=False`` for your own files). ``timeout`` (seconds) gives up on a query that runs longer (polars cannot
    stop it: see :func:`_collect_within`) and ``max_rows`` refuses a result with more rows; both raise UsageError.
    They bound the query, not the decoding of the inputs (bounded by the inputs' size)."""
    import math

    if not paths:
        raise UsageError("sql() needs at least one capture or dump path")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"timeout must be a number of seconds above 0, not {timeout}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0):
        raise UsageError(f"max_rows must be an integer >= 0, not {max_rows!r}")
    if safe:
        check_safe_sql(query)
    names = _referenced(query)
    if not names:
        raise UsageError(f"the query names none of the tables {', '.join(TABLES)}")
    ctx = sql_context(paths, tables=names, config=config)
    import polars.exceptions as plx

    try:
        lf = ctx.execute(query, eager=False)
        if safe:  # a second line of defence: the plan may scan no file but the captures' own sources
            import re

            for line in lf.explain(optimized=False).splitlines():
                if re.search(r"\bSCAN\b", line) and not line.lstrip().startswith("PYTHON[tracelens"):
                    raise UsageError(f"SQL: the query reads a file or URL ({line.strip()[:80]}), which safe mode "
                                     "does not allow; pass safe=False (CLI: --allow-files) to read your own files")
        if max_rows is not None:
            lf = lf.limit(max_rows + 1)
        if timeout is None:
            df = lf.collect()
        else:
            df = _collect_within(lf, timeout)
    except (plx.SQLSyntaxError, plx.SQLInterfaceError, plx.ColumnNotFoundError, plx.ComputeError,
            plx.InvalidOperationError, plx.SchemaError) as e:
        raise UsageError(f"SQL: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if max_rows is not None and df.height > max_rows:
        raise UsageError(f"SQL: the result has more than {max_rows:,} rows (max_rows): narrow the query or add LIMIT")
    return df
