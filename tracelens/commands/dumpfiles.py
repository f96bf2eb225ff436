"""Typer-free helpers of the dump commands: opening the dump named on the command line and printing its kernel
log. ``tracelens.console`` runs ``tracelens dmesg`` through these without loading the CLI framework (typer, rich)
or numpy/pyarrow; ``tracelens.commands.dump`` uses the same functions, so both paths print the same bytes and raise
the same errors."""

from __future__ import annotations

import sys


def one(paths):
    """A single path as itself, the parts of a split set as a list (what vmcore.open takes)."""
    if isinstance(paths, str):
        return paths
    return paths[0] if len(paths) == 1 else list(paths)


def open_dump(path, vmcoreinfo: str | None = None):
    """``vmcore.open`` of a path (or the parts of a split set), with the VMCOREINFO text read from the file
    ``vmcoreinfo`` when given; an unreadable file is a FormatError naming it."""
    from tracelens.errors import FormatError
    from tracelens.parsers import vmcore

    text = None
    if vmcoreinfo:
        try:
            with open(vmcoreinfo, "rb") as f:
                text = f.read(1 << 20)
        except OSError as e:
            raise FormatError(vmcoreinfo, None, f"cannot read VMCOREINFO file: {e.strerror}") from None
    return vmcore.open(path, vmcoreinfo=text)


def print_log(paths, vmcoreinfo: str | None, style: str) -> None:
    """``tracelens dmesg`` in text form: the log rendered as vmcore-dmesg or makedumpfile print it, to stdout."""
    with open_dump(one(paths), vmcoreinfo) as dump:
        log = dump.kernel_log()
    data = log.render(style)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
