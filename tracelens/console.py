"""The ``tracelens`` console entry point (``[project.scripts]`` and ``python -m tracelens``).

Most commands go to the typer application in tracelens.cli. ``tracelens dmesg DUMP... [--format F]
[--vmcoreinfo FILE]`` is the exception: it is the command people run next to ``makedumpfile --dump-dmesg``, so it
runs here on the standard library and the dump readers alone, without importing typer, click, rich, pydantic,
numpy or pyarrow (most of the start-up time of the full CLI). The output, the errors and the exit codes are those
of the full command (both call tracelens.commands.dumpfiles.print_log and report errors as tracelens.cli.main
does). Anything else (``--help``, ``--json``, ``--xen``, ``--show-code``, an unknown option, a missing argument, an
unknown ``--format``) takes the full path, so typer still parses and reports it.
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


def _dmesg(paths: list[str], style: str, vmcoreinfo: str | None) -> int:
    from tracelens.errors import EXIT_INTERNAL, TracelensError

    try:
        from tracelens.commands.dumpfiles import print_log

        print_log(paths, vmcoreinfo, style)
    except TracelensError as e:
        print(f"tracelens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tracelens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tracelens dmesg X | head`: not an error for the user
        try:
            sys.stdout = None  # type: ignore[assignment]
        except Exception:
            pass
        return 0
    except Exception as e:  # genuine bugs
        print(f"tracelens: internal error: {type(e).__name__}: {e} (please report this)", file=sys.stderr)
        return EXIT_INTERNAL
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``tracelens ARGV`` and return its exit code."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if args and args[0] == "dmesg":
        fast = dmesg_fast_args(args[1:])
        if fast is not None:
            return _dmesg(fast["paths"], fast["style"], fast["vmcoreinfo"])
    from tracelens.cli import main as cli_main

    return cli_main(args)


def run() -> None:  # pragma: no cover - the console script
    sys.exit(main())
