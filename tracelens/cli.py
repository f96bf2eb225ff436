"""The ``tracelens`` command line (typer).

Commands are thin: they parse arguments, call the library and render. Heavy modules (numba, polars, pyarrow)
are imported inside the commands so that ``tracelens --help`` stays fast. Every error is caught here, at one
choke point, and turned into a one-line message and the documented exit code (see tracelens.errors).
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands import analyze as _analyze_cmds
from tracelens.commands import dump as _dump_cmds
from tracelens.commands import export as _export_cmds
from tracelens.commands import gate as _gate_cmds
from tracelens.commands import query as _query_cmds
from tracelens.commands import scan as _scan_cmds
from tracelens.commands import trace as _trace_cmds
from tracelens.commands import watch as _watch_cmds
from tracelens.commands.declarations import INFO, declared

app = typer.Typer(
    name="tracelens",
    help="Analyse Xen hypervisor traces (xentrace) and Linux kdump captures across the kexec boundary.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


#: the optional extras of pyproject.toml and a module each installs (found without importing it)
EXTRAS = {"lzo": "lzo", "plot": "matplotlib", "fleet": "distributed", "notebook": "nbclient"}


def version_line() -> str:
    """``tracelens --version``: the version, the Python running it and which optional extras are installed."""
    import importlib.util
    import platform

    import tracelens

    extras = ", ".join(f"{name} {'yes' if importlib.util.find_spec(mod) else 'no'}" for name, mod in EXTRAS.items())
    return f"tracelens {tracelens.__version__} (Python {platform.python_version()}; extras: {extras})"


def _print_version(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version, the Python running tracelens and which optional extras "
                                      "(lzo, plot, fleet, notebook) are installed, and exit."),
):
    pass


@app.command()
def info(
    paths: List[str] = typer.Argument(..., metavar="PATH", help="A xentrace capture or a vmcore dump (the format is detected from its bytes), or every file of a makedumpfile --split dump set (in any order)."),
    json_out: bool = declared(INFO, "json_out").typer(),
    xen_version: Optional[str] = declared(INFO, "xen_version").typer(),
    tolerance: Optional[str] = declared(INFO, "tolerance").typer(),
    catalog: List[str] = declared(INFO, "catalog_files").typer(),
    threads: Optional[int] = declared(INFO, "threads").typer(),
    show_code: bool = declared(INFO, "show_code").typer(),
):
    """Summarise a capture or a dump: size, CPUs, record or page counts, time span, layout."""
    from tracelens.detect import XENTRACE, sniff

    if len(paths) == 1:
        kind = sniff(paths[0])
        if kind == XENTRACE:
            from tracelens.commands.traceinfo import decode_from

            decode = decode_from(xen_version=xen_version, tolerance=tolerance, catalog_files=catalog, threads=threads)
            _trace_cmds.info(paths[0], decode, json_out=json_out, show_code=show_code)
        else:
            _dump_cmds.info(paths[0], json_out=json_out, show_code=show_code)
        return
    from tracelens.errors import FormatError

    for p in paths:  # several files are the parts of one split dump set: no capture among them
        if sniff(p) == XENTRACE:
            raise FormatError(p, 0, "a xentrace capture: several files are read as the parts of one makedumpfile --split dump set")
    _dump_cmds.info(paths, json_out=json_out, show_code=show_code)


_trace_cmds.register(app)
_dump_cmds.register(app)
_analyze_cmds.register(app)
_export_cmds.register(app)
_gate_cmds.register(app)
_query_cmds.register(app)
_scan_cmds.register(app)
_watch_cmds.register(app)


def _click_exceptions():
    """(ClickException, UsageError) of the click that typer uses: its vendored copy in recent typer, else click."""
    try:
        from typer._click.exceptions import ClickException, UsageError
    except ImportError:  # older typer depends on click itself
        from click.exceptions import ClickException, UsageError
    return ClickException, UsageError


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map every failure to a one-line message and an exit code (typer's own exits and
    usage errors here, everything else in tracelens.errors.run_guarded, shared with the console's fast paths)."""
    from tracelens.errors import EXIT_USAGE, run_guarded

    ClickException, ClickUsageError = _click_exceptions()

    def run() -> int:
        try:
            rc = app(args=argv, standalone_mode=False)
        except (typer.Exit, SystemExit) as e:  # typer.Exit carries the code we chose
            return int(getattr(e, "exit_code", getattr(e, "code", 0)) or 0)
        except typer.Abort:
            print("tracelens: aborted", file=sys.stderr)
            return 130
        except ClickException as e:  # bad options and arguments
            e.show()
            return EXIT_USAGE if isinstance(e, ClickUsageError) else int(getattr(e, "exit_code", EXIT_USAGE) or EXIT_USAGE)
        # without standalone mode, a command's typer.Exit(n) comes back as the return value
        return rc if isinstance(rc, int) else 0

    return run_guarded(run)


def _entry() -> None:  # pragma: no cover
    sys.exit(main())
