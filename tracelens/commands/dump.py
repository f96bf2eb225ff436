"""CLI commands for crash dumps: ``info`` (called by the shared info command), ``dmesg``, ``pages``, ``read``.

Commands only parse, call :class:`tracelens.dump.Dump` and render (rich tables for people, ``--json`` for
programs). ``--show-code`` prints the same calls (``*_code``, from the same arguments). Heavy modules are imported
inside the commands so that ``tracelens --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands.declarations import DMESG, SHOW_CODE, declared
from tracelens.commands.dumpfiles import one as _one  # typer-free helpers, shared with tracelens.console
from tracelens.commands.dumpfiles import open_dump as _open

DUMP_HELP = "A vmcore dump (ELF, kdump-compressed, flattened, xl dump-core), or every file of a makedumpfile --split set (in any order)."


def _label(paths) -> str:
    return paths if isinstance(paths, str) else " ".join(paths)


def _parse_int(text: str, what: str) -> int:
    from tracelens.errors import UsageError

    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number (use decimal or 0x-hex)") from None


def _print_json(obj) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _open_code(c, path, vmcoreinfo: str | None = None) -> None:
    """``dump = tracelens.open(...)`` in ``c`` (a tracelens.showcode.Code)."""
    c.use("tracelens")
    if vmcoreinfo:
        c.use("tracelens.dump", "read_vmcoreinfo")
        c.add(f"dump = tracelens.open({c.value(path)}, vmcoreinfo=read_vmcoreinfo({vmcoreinfo!r}))")
    else:
        c.add(f"dump = tracelens.open({c.value(path)})")


def info(path, *, json_out: bool = False, show_code: bool = False) -> None:
    """Summarise a dump: format, compression, header version, page counts by state, VMCOREINFO essentials."""
    path = _one(path)
    if show_code:
        from tracelens.commands.traceinfo import code

        sys.stdout.write(code(path, json_out=json_out))
        return
    with _open(path) as dump:
        summary = dict(dump.info())
    if json_out:
        _print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    from tracelens.escape import rich as esc

    t = Table(title=esc(_label(path)), show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    pages = summary.pop("pages")
    for key in ("format", "container", "complete", "compression", "header_version", "dump_level", "page_size",
                "osrelease", "phys_base_hex", "kaslr_offset", "cpus", "prstatus_notes", "crashtime", "vmcoreinfo_source",
                "guest_type", "xen_version", "max_mapnr", "dumpable_pages", "split", "file_size"):
        if key in summary and summary[key] is not None:
            t.add_row(key.replace("_hex", ""), esc(summary[key]))  # dump-derived: never markup, never raw controls
    for state, n in pages.items():
        t.add_row(f"pages {state}", str(n))
    if not summary.get("has_vmcoreinfo"):
        t.add_row("vmcoreinfo", "absent (see docs/vmcore.md: QEMU -device vmcoreinfo, makedumpfile)")
    Console().print(t)


def dmesg_code(path, *, style: str = "vmcore-dmesg", vmcoreinfo: str | None = None, json_out: bool = False,
               xen_events: bool = False) -> str:
    """The Python of ``tracelens dmesg`` with these options."""
    from tracelens.showcode import Code

    c = Code()
    _open_code(c, path, vmcoreinfo)
    if xen_events:
        c.add("events = dump.xen_events()  # a polars DataFrame: seq, ts_nsec, event, category, pirq, irq, gsi...")
        if json_out:
            c.use("json").add("for row in events.to_dicts():", "    print(json.dumps(row))")
        else:
            c.use("polars").add("with polars.Config(tbl_rows=-1, tbl_cols=-1):", "    print(events)")
    elif json_out:
        c.use("json").add("for row in dump.kernel_log().table().to_pylist():  # seq, ts_nsec, level, facility, "
                          "caller, text...", "    print(json.dumps(row))")
    else:
        c.use("sys").add(f"sys.stdout.buffer.write(dump.kernel_log().render({style!r}))")
    return c.text()


def pages_code(path, *, output: str | None = None, json_out: bool = False) -> str:
    """The Python of ``tracelens pages`` with these options."""
    from tracelens.showcode import Code

    c = Code()
    _open_code(c, path)
    if output:
        c.add(f"n = dump.write_pages({output!r})  # the page index, streamed into Parquet; n pages")
    elif json_out:
        c.use("json").add("runs = dump.page_runs()", "print(json.dumps(runs, indent=2, default=str))")
    else:
        c.add("runs = dump.page_runs()  # first_pfn, last_pfn, pages, state, compression", "print(runs)",
              "pages = dump.pages  # the whole page index as a polars DataFrame")
    return c.text()


def read_code(path, addr: int, size: int, *, virtual: bool = False, zero_excluded: bool = False, raw: bool = False,
              hex_out: bool = False) -> str:
    """The Python of ``tracelens read`` with these options."""
    from tracelens.showcode import Code

    c = Code()
    _open_code(c, path)
    fn = "read_virt" if virtual else "read_phys"
    c.add(f"data = dump.{fn}(0x{addr:x}, {size}" + (", zero_excluded=True" if zero_excluded else "") + ")")
    if raw:
        c.use("sys").add("sys.stdout.buffer.write(data)")
    elif hex_out:
        c.add("print(data.hex())")
    else:
        c.add("print(data)")
    return c.text()


def register(app: typer.Typer) -> None:
    @app.command()
    def dmesg(
        paths: List[str] = typer.Argument(..., metavar="DUMP", help=DUMP_HELP),
        json_out: bool = declared(DMESG, "json_out").typer(),
        style: str = declared(DMESG, "style").typer(),
        vmcoreinfo: Optional[str] = declared(DMESG, "vmcoreinfo").typer(),
        xen_events: bool = declared(DMESG, "xen_events").typer(),
        show_code: bool = declared(DMESG, "show_code").typer(),
    ):
        """Print the kernel log saved in a dump, exactly as vmcore-dmesg (or makedumpfile --dump-dmesg) does."""
        from tracelens.errors import UsageError
        from tracelens.parsers.vmcore.printk import STYLES

        if style not in STYLES:
            raise UsageError(f"--format must be one of {', '.join(STYLES)}")
        path = _one(paths)
        if show_code:
            sys.stdout.write(dmesg_code(path, style=style, vmcoreinfo=vmcoreinfo, json_out=json_out,
                                        xen_events=xen_events))
            return
        if not (xen_events or json_out):
            from tracelens.commands.dumpfiles import print_log

            print_log(path, vmcoreinfo, style)
            return
        with _open(path, vmcoreinfo) as dump:
            if xen_events:
                _print_xen_events(dump.xen_events(), json_out)
                return
            rows = dump.kernel_log().table().to_pylist()
        import json

        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))

    @app.command()
    def pages(
        paths: List[str] = typer.Argument(..., metavar="DUMP", help=DUMP_HELP),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="Write the page index to this Parquet file."),
        json_out: bool = typer.Option(False, "--json", help="Print runs of pages as JSON."),
        show_code: bool = SHOW_CODE.typer(),
    ):
        """The page index: pfn, file offset, stored size, compression, state (present/zero/excluded/lost/invalid)."""
        path = _one(paths)
        if show_code:
            sys.stdout.write(pages_code(path, output=output, json_out=json_out))
            return
        if output:
            from tracelens.output import check_outputs

            check_outputs([("-o", output)], [path])
        with _open(path) as dump:
            if output:
                n = dump.write_pages(output)
                sys.stderr.write(f"{_label(path)}: {n:,} pages -> {output}\n")
                return
            runs = dump.page_runs()
        if json_out:
            _print_json(runs)
            return
        from rich.console import Console
        from rich.table import Table

        from tracelens.escape import rich as esc

        t = Table(title=esc(f"{_label(path)}: page runs"))
        for col in ("first pfn", "last pfn", "pages", "state", "compression"):
            t.add_column(col, justify="right" if col != "state" else "left")
        for r in runs:
            t.add_row(f"0x{r['first_pfn']:x}", f"0x{r['last_pfn']:x}", str(r["pages"]), r["state"], r["compression"])
        Console().print(t)

    @app.command()
    def read(
        args: List[str] = typer.Argument(..., metavar="DUMP... ADDRESS [LENGTH]",
                                         help="The dump (or every file of a --split set), the start address (decimal or "
                                         "0x-hex) and the number of bytes to read (default 64)."),
        raw: bool = typer.Option(False, "--raw", help="Write the bytes themselves to stdout."),
        hex_out: bool = typer.Option(False, "--hex", help="One line of hex digits."),
        virtual: bool = typer.Option(False, "--virtual", help="ADDRESS is a kernel virtual address."),
        zero_excluded: bool = typer.Option(False, "--zero-excluded", help="Read excluded (filtered) pages as zeros."),
        show_code: bool = SHOW_CODE.typer(),
    ):
        """Bytes at a physical (or, with --virtual, kernel virtual) address, like crash's rd."""
        from tracelens.errors import UsageError

        path, address, length = _read_args(args)
        addr = _parse_int(address, "ADDRESS")
        size = _parse_int(length, "LENGTH")
        if raw and hex_out:
            raise UsageError("--raw and --hex exclude each other")
        if size < 0 or size > (1 << 30):
            raise UsageError("LENGTH must be between 0 and 1 GiB")
        if show_code:
            sys.stdout.write(read_code(path, addr, size, virtual=virtual, zero_excluded=zero_excluded, raw=raw,
                                       hex_out=hex_out))
            return
        with _open(path) as dump:
            read_at = dump.read_virt if virtual else dump.read_phys
            data = read_at(addr, size, zero_excluded=zero_excluded)
        if raw:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif hex_out:
            sys.stdout.write(data.hex() + "\n")
        else:
            sys.stdout.write(_hexdump(addr, data))


def _read_args(args: list[str]):
    """``DUMP... ADDRESS [LENGTH]`` -> (path or list of paths, ADDRESS, LENGTH). LENGTH is present when the
    argument before the last is a number (so a dump whose name is a number is given as ./NAME)."""
    from tracelens.errors import UsageError

    args = list(args)
    if len(args) < 2:
        raise UsageError("read needs DUMP... ADDRESS [LENGTH]: a dump and an address")
    if len(args) >= 3 and _is_int(args[-2]):
        paths, address, length = args[:-2], args[-2], args[-1]
    else:
        paths, address, length = args[:-1], args[-1], "64"
    return _one(paths), address, length


def _is_int(text: str) -> bool:
    try:
        int(text, 0)
    except ValueError:
        return False
    return True


def _print_xen_events(events, json_out: bool) -> None:
    """The rows of Dump.xen_events() (a polars DataFrame): JSON Lines, or a table for people."""
    import json

    rows = events.to_dicts()
    if json_out:
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
        return
    from rich.console import Console
    from rich.table import Table

    from tracelens.escape import rich as esc

    t = Table(title=f"Xen events ({len(rows)})")
    for col in ("time", "event", "category", "pirq", "irq", "gsi", "detail"):
        t.add_column(col)
    for r in rows:  # kernel-log text: escaped as dmesg escapes it, and never markup
        t.add_row(f"{r['ts_nsec'] / 1e9:.6f}", esc(r["event"]), esc(r["category"]),
                  *(("" if r[c] is None else str(r[c])) for c in ("pirq", "irq", "gsi")),
                  esc(r["detail"] or (r["text"] if r["event"] == "panic" else "")))
    Console().print(t)


def _hexdump(addr: int, data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        words = " ".join(chunk[j : j + 8][::-1].hex().rjust(16) for j in range(0, len(chunk), 8))
        text = "".join(chr(c) if 0x20 <= c < 0x7F else "." for c in chunk)
        lines.append(f"{addr + i:016x}:  {words:<33}  {text}")
    return "\n".join(lines) + ("\n" if lines else "")
