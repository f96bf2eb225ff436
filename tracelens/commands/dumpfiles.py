"""Typer-free helpers of the dump commands: opening the dump named on the command line (a
:class:`tracelens.dump.Dump`) and printing its kernel log. ``tracelens.console`` runs ``tracelens dmesg`` through
these without loading the CLI framework (typer, rich) or numpy/pyarrow; ``tracelens.commands.dump`` uses the same
functions, so both paths print the same bytes and raise the same errors."""

from __future__ import annotations

import sys


def one(paths):
    """A single path as itself, the parts of a split set as a list (what vmcore.open takes)."""
    if isinstance(paths, str):
        return paths
    return paths[0] if len(paths) == 1 else list(paths)


def open_dump(path, vmcoreinfo: str | None = None):
    """The :class:`tracelens.dump.Dump` of a path (or the parts of a split set), with the VMCOREINFO text read from
    the file ``vmcoreinfo`` when given (tracelens.dump.read_vmcoreinfo)."""
    from tracelens.dump import Dump, read_vmcoreinfo

    return Dump(path, vmcoreinfo=read_vmcoreinfo(vmcoreinfo) if vmcoreinfo else None)


def print_log(paths, vmcoreinfo: str | None, style: str) -> None:
    """``tracelens dmesg`` in text form: the log rendered as vmcore-dmesg or makedumpfile print it, to stdout."""
    with open_dump(one(paths), vmcoreinfo) as dump:
        data = dump.kernel_log().render(style)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
