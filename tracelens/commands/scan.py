"""``tracelens scan``: many captures on Dask distributed into Parquet datasets (docs/fleet.md).

Thin: it parses the options into a :class:`tracelens.fleet.scan.ScanConfig`, calls :func:`tracelens.fleet.scan.scan`
with a progress bar on stderr and prints a one-line summary there. ``--show-code`` prints the Python equivalent.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer


def build_config(*, workers=None, scheduler=None, vmcore_map=None, on_error="record", policy=None, fail_on=None,
                 xen_version=None, tolerance="strict", retries=2):
    from tracelens.analysis.analyze import AnalysisConfig
    from tracelens.fleet.scan import ScanConfig
    from tracelens.fleet.cluster import ClusterOptions

    return ScanConfig(analysis=AnalysisConfig(xen_version=xen_version, tolerance=tolerance),
                      cluster=ClusterOptions(workers=workers, scheduler=scheduler, retries=retries),
                      vmcore_map=vmcore_map, on_error=on_error, policy=policy, fail_on=fail_on)


def run(paths: list[str], outdir: str, *, show_code: bool = False, quiet: bool = False, **options) -> int:
    """The command's body, callable without the CLI. Exit 0 once every input has its row (error rows included:
    the scan is a report; ``tracelens gate`` decides pass or fail); 3 or 70 for ``--on-error raise``."""
    if show_code:
        print(_code(paths, outdir, options))
        return 0
    from tracelens.fleet.scan import scan
    from tracelens.progress import ScanProgress

    cfg = build_config(**options)
    res = scan(paths, outdir, cfg, progress=ScanProgress(enabled=None if not quiet else False))
    if not quiet:
        if res.dashboard and not sys.stderr.isatty():
            print(f"tracelens: Dask dashboard was at {res.dashboard}", file=sys.stderr)
        print(f"tracelens: {res.summary()}", file=sys.stderr)
    return 0


def _code(paths, outdir, options) -> str:
    from tracelens.commands import config_args

    analysis = config_args(xen_version=options.get("xen_version"), tolerance=options.get("tolerance", "strict"))
    cluster = [f"{k}={options[k]!r}" for k in ("workers", "scheduler") if options.get(k) is not None]
    if options.get("retries", 2) != 2:
        cluster.append(f"retries={options['retries']!r}")
    rest = [f"{k}={options[k]!r}" for k in ("vmcore_map", "policy", "fail_on") if options.get(k) is not None]
    if options.get("on_error", "record") != "record":
        rest.append(f"on_error={options['on_error']!r}")
    args = [f"analysis=AnalysisConfig({', '.join(analysis)})", f"cluster=ClusterOptions({', '.join(cluster)})", *rest]
    return (
        "import tracelens\n"
        "from tracelens.analysis.analyze import AnalysisConfig\n"
        "from tracelens.fleet.scan import ScanConfig\n"
        "from tracelens.fleet.cluster import ClusterOptions\n\n"
        f"res = tracelens.scan({list(paths)!r}, {outdir!r}, ScanConfig({', '.join(args)}))\n"
        "print(res.summary())\n"
        "print(res.captures.filter(res.captures['status'] != 'ok').select('capture', 'status', 'error'))\n"
        "print(res.findings.group_by('rule').len())"
    )


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
        on_error: str = typer.Option("record", "--on-error", help="record: a failing capture is an error row; raise: "
                                                                  "stop at the first"),
        policy: Optional[str] = typer.Option(None, "--policy", metavar="FILE",
                                             help="gate policy judging the findings (default: ./tracelens.toml if "
                                                  "present)"),
        fail_on: Optional[str] = typer.Option(None, "--fail-on", metavar="SEVERITY",
                                              help="as for tracelens gate: which findings are blocking"),
        xen_version: Optional[str] = typer.Option(None, "--xen-version", metavar="X.Y",
                                                  help="Xen release that wrote the captures (default: guessed)"),
        tolerance: str = typer.Option("strict", "--tolerance", help="strict, truncate or skip (as for analyze)"),
        retries: int = typer.Option(2, "--retries", metavar="N",
                                    help="worker deaths a capture survives before it is an error row (local "
                                         "cluster; an existing scheduler uses its allowed-failures)"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress bar or summary"),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
    ):
        """Analyse many captures on Dask distributed into Parquet datasets, resumably (see docs/fleet.md)."""
        from tracelens.errors import UsageError

        if on_error not in ("record", "raise"):
            raise UsageError(f"--on-error must be record or raise, not {on_error!r}")
        code = run(list(paths or []), outdir, show_code=show_code, quiet=quiet, workers=workers,
                   scheduler=scheduler, vmcore_map=vmcore_map, on_error=on_error, policy=policy, fail_on=fail_on,
                   xen_version=xen_version, tolerance=tolerance, retries=retries)
        if code:
            raise SystemExit(code)
