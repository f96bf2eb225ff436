"""The ``tracelens`` console entry point (``[project.scripts]`` and ``python -m tracelens``).

Most commands go to the typer application in tracelens.cli. Two are served here first, without importing typer,
click or pydantic (most of the start-up time of the full CLI): ``tracelens dmesg DUMP... [--format F]
[--vmcoreinfo FILE]``, the command people run next to ``makedumpfile --dump-dmesg``, on the standard library and
the dump readers alone (no rich, numpy or pyarrow either); and ``tracelens info CAPTURE [--json] [--xen-version V]
[--tolerance T]`` for a xentrace capture, whose target is a whole 1 GiB capture in under 1.5 s (a dump given to
``info`` goes to the full CLI). The output, the errors and the exit codes are those of the full command: both
paths call the same functions (tracelens.commands.dumpfiles.print_log, tracelens.commands.traceinfo.info) and
report errors through tracelens.errors.run_guarded. Anything else (``--help``, ``--json`` for dmesg, ``--xen``,
``--show-code``, an unknown option, a missing argument, an unknown ``--format``) takes the full path, so typer still
parses and reports it.
"""

from __future__ import annotations

import sys

#: the text layouts of tracelens.parsers.vmcore.printk.STYLES (checked equal by the tests)
_STYLES = ("vmcore-dmesg", "makedumpfile")
_VALUE_OPTIONS = {"--format": "style", "--vmcoreinfo": "vmcoreinfo"}


def dmesg_fast_args(args: list[str]) -> dict | None:
    """The arguments of ``tracelens dmesg`` when the fast path can serve them: {"paths", "style", "vmcoreinfo"};
    None when the full CLI must parse them."""
    out = {"paths": [], "style": "vmcore-dmesg", "vmcoreinfo": None}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            key = _VALUE_OPTIONS.get(name)
            if key is None:
                return None  # --help, --json, --xen, --show-code, "--", an unknown option: typer's business
            if not eq:
                i += 1
                if i == len(args):
                    return None  # a missing value: typer reports it
                value = args[i]
            out[key] = value  # click keeps the last value given
        else:
            out["paths"].append(a)
        i += 1
    if not out["paths"] or out["style"] not in _STYLES:
        return None
    return out


_INFO_VALUE_OPTIONS = {"--xen-version": "xen_version", "--tolerance": "tolerance"}


def info_fast_args(args: list[str]) -> dict | None:
    """The arguments of ``tracelens info CAPTURE [--json] [--xen-version V] [--tolerance T]`` when the fast path
    can serve them ({"path", "json_out", "xen_version", "tolerance"}); None when the full CLI must parse them
    (several paths, --show-code, --help, anything unknown, a missing value)."""
    out = {"paths": [], "json_out": False, "xen_version": None, "tolerance": "strict"}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--json":
            out["json_out"] = True
        elif a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            key = _INFO_VALUE_OPTIONS.get(name)
            if key is None:
                return None
            if not eq:
                i += 1
                if i == len(args):
                    return None
                value = args[i]
            out[key] = value
        else:
            out["paths"].append(a)
        i += 1
    if len(out["paths"]) != 1:
        return None
    out["path"] = out.pop("paths")[0]
    return out


def _info(path: str, json_out: bool, xen_version: str | None, tolerance: str) -> int | None:
    """``tracelens info`` of a xentrace capture; None (nothing printed) when the file is not one, so that the full
    CLI handles dumps. Errors as the full CLI reports them."""
    from tracelens.detect import XENTRACE, sniff
    from tracelens.errors import run_guarded

    kind = []
    rc = run_guarded(lambda: kind.append(sniff(path)))  # a missing or unreadable file: the error the CLI gives
    if rc or kind[0] != XENTRACE:
        return rc or None

    def run():
        from tracelens.commands.traceinfo import info

        info(path, json_out=json_out, xen_version=xen_version, tolerance=tolerance)

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
            rc = _info(fast["path"], fast["json_out"], fast["xen_version"], fast["tolerance"])
            if rc is not None:
                return rc
    from tracelens.cli import main as cli_main

    return cli_main(args)


def run() -> None:  # pragma: no cover - the console script
    sys.exit(main())
