"""The Parquet datasets of ``tracelens scan``: their schemas, one part file per input and table, atomic writes.

Layout of OUTDIR (docs/fleet.md)::

    OUTDIR/captures/<key>.parquet    one row per input (status ok | error | skipped): written last, the commit
    OUTDIR/findings/<key>.parquet    the JSON contract's rows (docs/analysis.md) + ``capture`` and ``sha256``
    OUTDIR/boundaries/ grants/ balloon/ safety/    the same
    OUTDIR/.tmp/                     parts being written (renamed into place when complete)

``<key>`` is 16 hex digits of the SHA-256 of the input's absolute path: one input, one part name per table, so a
task that runs twice (a worker died after writing, Dask ran it again) replaces its parts instead of adding rows.
A table without rows for an input has no part for it (a stale one is removed). Each table directory is a Parquet
dataset that ``polars.scan_parquet("OUTDIR/findings/*.parquet")``, DuckDB (``read_parquet``) and Spark read as is.

Columns follow the JSON contract (schema_version 1): integers are int64 (TSCs are cycles below 2**63), members
whose value is an object or a list of objects (``evidence``, ``unsafe``, ``lost``, ``extents_by_order``,
``gfn_ranges``) are JSON text, so that every engine reads one fixed schema whatever the rows hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import pyarrow as pa

from tracelens.analysis.report import row_columns

I64, STR, F64, BOOL = pa.int64(), pa.string(), pa.float64(), pa.bool_()
PROVENANCE = [("capture", STR), ("sha256", STR)]

#: table -> [(column, arrow type)]; the per-capture tables' columns are the JSON contract's members of each row
#: (tracelens.analysis.report.CONTRACT) after the provenance columns
SCHEMAS: dict[str, list[tuple[str, pa.DataType]]] = {
    "captures": [
        ("capture", STR), ("sha256", STR), ("size_bytes", I64), ("kind", STR), ("status", STR), ("error", STR),
        ("error_kind", STR), ("vmcore", STR), ("vmcore_dom", I64), ("records", I64), ("lost_records", I64),
        ("coverage", STR), ("boundaries", I64), ("kexec_verdict", STR), ("open_verdict", STR), ("verdicts", STR),
        ("findings", I64), ("error_findings", I64), ("warning_findings", I64), ("blocking_findings", I64),
        ("gate_status", STR), ("rules", pa.list_(STR)), ("elapsed_s", F64), ("worker", STR), ("scanned_at", STR),
        ("tool_version", STR),
    ],
}
#: the per-capture tables (everything but ``captures``), from the JSON contract's members of the same name
ROW_TABLES = ("findings", "boundaries", "grants", "balloon", "safety")
#: the JSON contract's leaf types in a dataset: integers are int64 (TSCs are cycles below 2**63), nested members JSON
_ARROW = {"i64": I64, "u64": I64, "str": STR, "json": STR, "bool": BOOL, "list_i64": STR, "list_str": STR}
#: columns a table has besides the contract's members: the policy's verdict on each finding (docs/gate.md)
_EXTRA = {"findings": [("level", STR), ("state", STR), ("blocking", BOOL)]}

SCHEMAS.update({t: PROVENANCE + [(c, _ARROW[ty]) for c, ty in row_columns(t).items()] + _EXTRA.get(t, [])
                for t in ROW_TABLES})
TABLES = ("captures",) + ROW_TABLES
TMP_DIR = ".tmp"


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in SCHEMAS[table]])


def part_key(path: str) -> str:
    """The part name of an input: 16 hex digits of the SHA-256 of its absolute path."""
    return hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def part_path(outdir: str, table: str, key: str) -> str:
    return os.path.join(outdir, table, f"{key}.parquet")


def _cell(value, typ: pa.DataType):
    if value is None:
        return None
    if typ == STR and not isinstance(value, str):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def to_arrow(table: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts with the table's members; unknown members ignored, missing ones null) as an Arrow table of the
    table's fixed schema. Nested members become JSON text."""
    cols = {}
    for name, typ in SCHEMAS[table]:
        cols[name] = pa.array([_cell(r.get(name), typ) for r in rows], type=typ)
    return pa.table(cols, schema=arrow_schema(table))


def prepare(outdir: str) -> None:
    """Create OUTDIR and its table directories."""
    for t in TABLES + (TMP_DIR,):
        os.makedirs(os.path.join(outdir, t), exist_ok=True)


def write_part(outdir: str, table: str, key: str, rows: list[dict]) -> None:
    """Write the rows of one input into its part of ``table``, atomically (a temporary file in OUTDIR/.tmp renamed
    over the part); no rows: remove the part if an earlier run left one."""
    import pyarrow.parquet as pq

    target = part_path(outdir, table, key)
    if not rows:
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        return
    fd, tmp = tempfile.mkstemp(prefix=f"{table}-{key}-", suffix=".part", dir=os.path.join(outdir, TMP_DIR))
    os.close(fd)
    try:
        pq.write_table(to_arrow(table, rows), tmp, compression="zstd")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def clean_tmp(outdir: str) -> None:
    """Remove the temporary files of OUTDIR/.tmp (left by workers killed while writing a part)."""
    d = os.path.join(outdir, TMP_DIR)
    for name in os.listdir(d):
        try:
            os.unlink(os.path.join(d, name))
        except OSError:
            pass


def remove_parts(outdir: str, key: str) -> None:
    """Remove every table's part of one input (before recording it as lost: no half result stays behind)."""
    for t in TABLES:
        try:
            os.unlink(part_path(outdir, t, key))
        except FileNotFoundError:
            pass


def read_part(outdir: str, table: str, key: str) -> list[dict]:
    """The rows of one input's part ([] when there is none or it cannot be read)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(part_path(outdir, table, key)).to_pylist()
    except (FileNotFoundError, pa.ArrowInvalid, OSError):
        return []


def read_table(outdir: str, table: str):
    """The whole dataset ``table`` of OUTDIR as a polars DataFrame (empty, with the schema, when it has no part)."""
    import glob

    import polars as pl

    empty = pl.from_arrow(arrow_schema(table).empty_table())
    files = sorted(glob.glob(os.path.join(glob.escape(outdir), table, "*.parquet")))
    if not files:
        return empty
    return pl.read_parquet(files)
