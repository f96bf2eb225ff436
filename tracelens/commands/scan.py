"""``tracelens scan``: many captures on Dask distributed into Parquet datasets (docs/fleet.md).

Thin: it parses the options into a :class:`tracelens.fleet.scan.ScanConfig`, calls :func:`tracelens.fleet.scan.scan`
with a progress bar on stderr and prints a one-line summary there. ``--show-code`` prints the Python equivalent.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import List, Optional

import typer

from tracelens.commands import declarations as D


def run(paths: list[str], outdir: str, config=None, *, show_code: bool = False, quiet: bool = False) -> int:
    """The command's body, callable without the CLI (``config``: a tracelens.fleet.scan.ScanConfig). Exit 0 once
    every input has its row (error rows included: the scan is a report; ``tracelens gate`` decides pass or fail); 3
    or 70 for ``on_error="raise"``."""
    if show_code:
        sys.stdout.write(code(paths, outdir, config))
        return 0
    from tracelens.fleet.scan import scan
    from tracelens.progress import ScanProgress

    res = scan(paths, outdir, config, progress=ScanProgress(enabled=None if not quiet else False))
    if not quiet:
        if res.dashboard and not sys.stderr.isatty():
            print(f"tracelens: Dask dashboard was at {res.dashboard}", file=sys.stderr)
        print(f"tracelens: {res.summary()}", file=sys.stderr)
    return 0


def code(paths, outdir, config) -> str:
    """The Python of ``tracelens scan`` with the same ScanConfig."""
    from tracelens.showcode import Code

    c = Code().use("tracelens")
    c.add(f"res = {c.call('tracelens.scan', list(paths), outdir, config)}",
          "print(res.summary())",
          "print(res.captures.filter(res.captures['status'] != 'ok').select('capture', 'status', 'error'))",
          "print(res.findings.group_by('rule').len())")
    return c.text()


def register(app: typer.Typer) -> None:
    @app.command()
    def scan(
        paths: List[str] = typer.Argument(None, metavar="PATH", help="captures, or directories searched recursively "
                                                                     "(files recognised by their bytes)"),
        outdir: str = typer.Option(..., "-o", "--output", metavar="OUTDIR",
                                   help="folder of the Parquet datasets (captures, findings, boundaries, grants, "
                                        "balloon, safety); a re-run skips what is done"),
        workers: Optional[int] = typer.Option(None, "--workers", metavar="N",
                                              help="a local Dask cluster of N worker processes (default: the cores; "
                                                   "0: no Dask, in this process)"),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                                help="an existing Dask cluster, e.g. tcp://10.0.0.5:8786"),
        vmcore_map: Optional[str] = typer.Option(None, "--vmcore-map", metavar="FILE",
                                                 help="CSV capture,dump[,domid]: analyse each capture with its dump"),
        on_error: Optional[str] = typer.Option(None, "--on-error", help="record (the default): a failing capture is "
                                                                        "an error row; raise: stop at the first"),
        policy: Optional[str] = typer.Option(None, "--policy", metavar="FILE",
                                             help="a tracelens.toml: its [gate] policy judges the findings, its "
                                                  "[decode], [analyze] and [scan] apply too (default: "
                                                  "./tracelens.toml if present)"),
        fail_on: Optional[str] = typer.Option(None, "--fail-on", metavar="SEVERITY",
                                              help="as for tracelens gate: which findings are blocking"),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        trace_mask: Optional[str] = D.TRACE_MASK.typer(),
        retries: Optional[int] = typer.Option(None, "--retries", metavar="N",
                                    help="worker deaths a capture survives before it is an error row (default 2; "
                                         "local cluster; an existing scheduler uses its allowed-failures)"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress bar or summary"),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """Analyse many captures on Dask distributed into Parquet datasets, resumably (see docs/fleet.md)."""
        from tracelens.commands import analysis_config, decode_options
        from tracelens.config import load_config

        cfg = load_config(policy)
        decode = decode_options(cfg.decode, xen_version=xen_version, tolerance=tolerance, catalog_files=catalog)
        config = cfg.scan_config(workers=workers, scheduler=scheduler, retries=retries, vmcore_map=vmcore_map,
                                 on_error=on_error, fail_on=fail_on)
        config = replace(config, analysis=analysis_config(cfg.analysis, decode, trace_mask=trace_mask))
        code = run(list(paths or []), outdir, config, show_code=show_code, quiet=quiet)
        if code:
            raise SystemExit(code)
