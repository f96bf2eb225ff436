"""``tracelens query CAPTURE|DUMP... "SELECT ..."``: SQL over decoded captures, their analysis and dumps' logs.

The command parses options, calls :func:`tracelens.query.sql` (polars' SQL engine over the tables ``records``,
``boundaries``, ``grants``, ``grant_mappers``, ``balloon``, ``hypercalls``, ``irq_vectors``, ``safety``,
``pirqs_open``, ``grefs_open``, ``findings``, ``dmesg``, ``xen_events``; see tracelens/query.py) and writes the
result as a table, CSV, JSON or Parquet. ``--show-code`` prints the Python a notebook user would write.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands import declarations as D

FORMATS = ("table", "csv", "json", "parquet")


def run(paths: list[str], query: str, config=None, *, fmt: str | None = None, output: str | None = None,
        show_code: bool = False, allow_files: bool = False, timeout: float | None = None,
        max_rows: int | None = None) -> int:
    """The command's body, callable without the CLI (``config``: the AnalysisConfig of the captures, None: the
    defaults). Returns the exit code (0: the query ran)."""
    from tracelens.errors import UsageError

    if fmt is None:
        fmt = _format_from_name(output) if output else "table"
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "parquet" and not output:
        raise UsageError("--format parquet needs -o FILE")
    if not paths:
        raise UsageError("query needs at least one CAPTURE or DUMP before the SQL text")
    if show_code:
        sys.stdout.write(code(paths, query, config, fmt=fmt, output=output, allow_files=allow_files,
                              timeout=timeout, max_rows=max_rows))
        return 0
    from tracelens.output import check_outputs

    check_outputs([("-o", output)], [paths, config.decode.catalog_files if config is not None else None])
    from tracelens.query import sql

    df = sql(query, *paths, config=config, safe=not allow_files, timeout=timeout, max_rows=max_rows)
    if output:
        from tracelens.output import atomic_output

        with atomic_output(output) as tmp:
            _write(df, fmt, tmp)
        print(f"{df.height:,} rows -> {output}", file=sys.stderr)
        return 0
    if fmt == "table":
        import polars as pl

        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=200):
            sys.stdout.write(str(df) + "\n")
    else:
        sys.stdout.write(_text(df, fmt))
    return 0


def _format_from_name(path: str) -> str:
    for ext, fmt in ((".csv", "csv"), (".json", "json"), (".parquet", "parquet")):
        if path.endswith(ext):
            return fmt
    return "csv"


def _flat(df):
    """CSV and JSON cannot hold every polars type: categoricals become text, lists become JSON-like text."""
    import polars as pl

    cols = []
    for name, dt in df.schema.items():
        if dt == pl.Categorical or isinstance(dt, pl.Enum):
            cols.append(pl.col(name).cast(pl.String))
    return df.with_columns(cols) if cols else df


def _text(df, fmt: str) -> str:
    if fmt == "csv":
        import polars as pl

        flat = _flat(df)
        lists = [c for c, dt in flat.schema.items() if isinstance(dt, (pl.List, pl.Array, pl.Struct))]
        if lists:
            flat = flat.with_columns([pl.col(c).map_elements(lambda v: str(list(v) if v is not None else None),
                                                             return_dtype=pl.String) for c in lists])
        return flat.write_csv()
    return _flat(df).write_json() + "\n"


def _write(df, fmt: str, path: str) -> None:
    if fmt == "parquet":
        df.write_parquet(path)
        return
    text = _text(df, "csv" if fmt == "table" else fmt)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def code(paths, query, config=None, *, fmt="table", output=None, allow_files=False, timeout=None,
         max_rows=None) -> str:
    """The Python equivalent of one ``tracelens query`` invocation, with the same AnalysisConfig."""
    from tracelens.showcode import Code

    c = Code().use("tracelens")
    call = c.call("tracelens.sql", query, *paths, config=config, safe=False if allow_files else None,
                  timeout=timeout, max_rows=max_rows)
    c.add(f"df = {call}  # a polars DataFrame")
    if output:
        write = {"parquet": "write_parquet", "json": "write_json", "csv": "write_csv", "table": "write_csv"}[fmt]
        c.add(f"df.{write}({output!r})")
    elif fmt == "csv":
        c.add("print(df.write_csv(), end='')")
    elif fmt == "json":
        c.add("print(df.write_json())")
    else:
        c.use("polars").add("with polars.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, "
                            "tbl_width_chars=200):", "    print(df)")
    return c.text()


def register(app: typer.Typer) -> None:
    @app.command()
    def query(
        items: List[str] = typer.Argument(..., metavar="CAPTURE|DUMP... QUERY",
                                          help="captures and dumps, then the SQL text (the last argument)"),
        fmt: Optional[str] = typer.Option(None, "--format", "-f", help="table (default on a terminal), csv, json "
                                                                        "or parquet (needs -o); default with -o: "
                                                                        "from the file name"),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="write the result to FILE (atomically)"),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        cpu_hz: Optional[float] = D.CPU_HZ.typer(help="TSC frequency in Hz: adds time_ns to records"
                                                 + D.CONFIG_NOTE + "."),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        threads: Optional[int] = D.THREADS.typer(),
        trace_mask: Optional[str] = D.TRACE_MASK.typer(),
        allow_files: bool = typer.Option(False, "--allow-files", help="let the query read files and URLs (read_csv, "
                                                                       "read_parquet, ...); off: only the tables above"),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="cancel the query after this many seconds"),
        max_rows: Optional[int] = typer.Option(None, "--max-rows", help="refuse a result of more rows"),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """SQL over captures and dumps (polars SQL). Tables: records, boundaries, grants, grant_mappers, balloon,
        hypercalls, irq_vectors, safety, pirqs_open, grefs_open, findings (with a `capture` column), dmesg and
        xen_events (with a `dump` column).

        Example: tracelens query a.xentrace b.xentrace "SELECT capture, rule, domid FROM findings"
        """
        from tracelens.errors import UsageError

        if len(items) < 2:
            raise UsageError("query needs CAPTURE|DUMP... and then the SQL text")
        from tracelens.commands import analysis_config, config, decode_options

        cfg = config()
        decode = decode_options(cfg.decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                                catalog_files=catalog, threads=threads)
        analysis = analysis_config(cfg.analysis, decode, trace_mask=trace_mask)
        code_ = run(items[:-1], items[-1], analysis, fmt=fmt, output=output, show_code=show_code,
                    allow_files=allow_files, timeout=timeout, max_rows=max_rows)
        if code_:
            raise typer.Exit(code_)
