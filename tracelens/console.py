"""The ``tracelens`` console entry point (``[project.scripts]`` and ``python -m tracelens``).

Most commands go to the typer application in tracelens.cli. Four are served here first, without importing typer,
click or pydantic (most of the start-up time of the full CLI): the main job, ``tracelens analyze CAPTURE`` and
``tracelens gate CAPTURE...`` with any of their options but ``--show-code`` (typer's start-up was a tenth of a
second of it); ``tracelens dmesg DUMP... [--format F]
[--vmcoreinfo FILE]``, the command people run next to ``makedumpfile --dump-dmesg``, on the standard library and
the dump readers alone (no rich, numpy or pyarrow either); and ``tracelens info CAPTURE [--json] [--xen-version V]
[--tolerance T] [--catalog F] [--threads N]`` for a xentrace capture, whose target is a whole 1 GiB capture in
under 1.5 s (a dump given to ``info`` goes to the full CLI). The output, the errors and the exit codes are those of
the full command: both paths call the same functions (tracelens.commands.dumpfiles.print_log,
tracelens.commands.traceinfo.info) and report errors through tracelens.errors.run_guarded, and both parse their
options from the same declarations (tracelens.commands.declarations: the typer command is built from them, and
:func:`tracelens.commands.declarations.parse` reads them here). Anything else (``--help``, ``--json`` for dmesg,
``--xen``, ``--show-code``, an unknown option, a missing argument or value, an unknown ``--format``) takes the full
path, so typer still parses and reports it.
"""

from __future__ import annotations

import sys

#: the text layouts of tracelens.parsers.vmcore.printk.STYLES (checked equal by the tests)
_STYLES = ("vmcore-dmesg", "makedumpfile")


def dmesg_fast_args(args: list[str]) -> dict | None:
    """The arguments of ``tracelens dmesg`` when the fast path can serve them (the text forms): {"paths", "style",
    "vmcoreinfo"}; None when the full CLI must parse them. Parsed from the declarations the typer command is built
    from (tracelens.commands.declarations.DMESG)."""
    from tracelens.commands.declarations import DMESG, parse

    out = parse(DMESG, args)
    if out is None or not out["args"] or out["style"] not in _STYLES:
        return None  # no dump, or an unknown --format: typer reports it
    return {"paths": out["args"], "style": out["style"], "vmcoreinfo": out["vmcoreinfo"]}


def info_fast_args(args: list[str]) -> dict | None:
    """The arguments of ``tracelens info CAPTURE`` when the fast path can serve them: the parameters of
    tracelens.commands.declarations.INFO and "path"; None when the full CLI must parse them (several paths,
    --show-code, --help, anything unknown, a missing value)."""
    from tracelens.commands.declarations import INFO, parse

    out = parse(INFO, args)
    if out is None or len(out["args"]) != 1:
        return None
    out["path"] = out.pop("args")[0]
    return out


def main_job_fast_args(command: str, args: list[str]) -> dict | None:
    """The options of ``tracelens analyze CAPTURE`` or ``tracelens gate CAPTURE...`` when the fast path can serve
    them: the parameters of tracelens.commands.declarations.ANALYZE or GATE, and "capture" (analyze: exactly one)
    or "captures" (gate: one or more); None when the full CLI must parse them (--show-code, --help, anything
    unknown, a missing or unconvertible value, no capture)."""
    from tracelens.commands.declarations import ANALYZE, GATE, parse

    out = parse(ANALYZE if command == "analyze" else GATE, args)
    if out is None or not out["args"] or (command == "analyze" and len(out["args"]) != 1):
        return None
    positional = out.pop("args")
    if command == "analyze":
        out["capture"] = positional[0]
    else:
        out["captures"] = positional
    return out


def _main_job(command: str, args: dict) -> int:
    """``tracelens analyze`` or ``gate`` without typer (whose start-up, pydantic included, is a tenth of a second
    of the main job): the command's own body (``from_options`` of tracelens.commands.analyze or .gate), its errors
    as the full CLI reports them."""
    from tracelens.errors import run_guarded

    def run():
        import importlib

        opts = dict(args)
        first = opts.pop("capture" if command == "analyze" else "captures")
        return importlib.import_module(f"tracelens.commands.{command}").from_options(first, **opts)

    return run_guarded(run)


def _info(args: dict) -> int | None:
    """``tracelens info`` of a xentrace capture; None (nothing printed) when the file is not one, so that the full
    CLI handles dumps. Errors as the full CLI reports them."""
    from tracelens.detect import XENTRACE, sniff
    from tracelens.errors import run_guarded

    path = args["path"]
    kind = []
    rc = run_guarded(lambda: kind.append(sniff(path)))  # a missing or unreadable file: the error the CLI gives
    if rc or kind[0] != XENTRACE:
        return rc or None

    def run():
        from tracelens.commands.traceinfo import decode_from, info

        decode = decode_from(xen_version=args["xen_version"], tolerance=args["tolerance"],
                             catalog_files=args["catalog_files"], threads=args["threads"])
        info(path, decode, json_out=args["json_out"])

    return run_guarded(run)


def _dmesg(paths: list[str], style: str, vmcoreinfo: str | None) -> int:
    from tracelens.errors import run_guarded

    def run():
        from tracelens.commands.dumpfiles import print_log

        print_log(paths, vmcoreinfo, style)

    return run_guarded(run)


def main(argv: list[str] | None = None) -> int:
    """Run ``tracelens ARGV`` and return its exit code."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if args and args[0] == "dmesg":
        fast = dmesg_fast_args(args[1:])
        if fast is not None:
            return _dmesg(fast["paths"], fast["style"], fast["vmcoreinfo"])
    if args and args[0] == "info":
        fast = info_fast_args(args[1:])
        if fast is not None:
            rc = _info(fast)
            if rc is not None:
                return rc
    if args and args[0] in ("analyze", "gate"):
        fast = main_job_fast_args(args[0], args[1:])
        if fast is not None:
            return _main_job(args[0], fast)
    from tracelens.cli import main as cli_main

    return cli_main(args)


def leave(code: int | None) -> None:
    """End the process with ``code`` the way the console script does: non-daemon threads are joined, atexit
    handlers run (temporary files, Dask clusters, logging) and stdout/stderr are flushed, as at a normal exit; then
    the process exits without the interpreter's teardown. That teardown unloads some 600 modules and runs LLVM's
    destructors (numba loads LLVM) and took 0.10-0.15 s after every command here, with nothing left to do (output
    files are written atomically and closed before a command returns)."""
    import atexit
    import os
    import threading

    code = int(code or 0)
    try:
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
                pass
    except BaseException:  # pragma: no cover - whatever went wrong, exit as Python would
        sys.exit(code)
    os._exit(code)


def run() -> None:  # pragma: no cover - the console script
    leave(main())
