"""SQL over captures and dumps: :func:`sql` and :func:`sql_context` (polars' SQL engine; the command is
``tracelens query``). Tables: ``records`` (lazy, pushed down, tracelens.pushdown), the analysis frames of
:class:`tracelens.report.Report` and, from dumps, ``dmesg`` and ``xen_events``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracelens.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from tracelens.analysis.analyze import AnalysisConfig

#: table names :func:`sql` and ``tracelens query`` know
TABLES = ("records", "boundaries", "grants", "grant_mappers", "balloon", "hypercalls", "irq_vectors", "safety",
          "pirqs_open", "grefs_open", "findings", "dmesg", "xen_events")
_DUMP_TABLES = ("dmesg", "xen_events")
_ANALYSIS_TABLES = tuple(t for t in TABLES if t not in ("records", *_DUMP_TABLES))


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

    from tracelens import open
    from tracelens.capture import Capture
    from tracelens.dump import Dump

    caps: list[Capture] = []
    dumps: list[Dump] = []
    for p in paths:
        obj = open(p, config.decode if config is not None else None)
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
        raise UsageError(f"timeout must be a number of seconds above 0, not {timeout}", "timeout")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0):
        raise UsageError(f"max_rows must be an integer >= 0, not {max_rows!r}", "max_rows")
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
        raise UsageError(f"SQL: the result has more than {max_rows:,} rows (max_rows): narrow the query or add LIMIT",
                         "max_rows")
    return df
