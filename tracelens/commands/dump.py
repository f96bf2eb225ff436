"""CLI commands for crash dumps: ``info`` (called by the shared info command), ``dmesg``, ``pages``, ``read``.

Commands only parse, call ``tracelens.parsers.vmcore`` and render (rich tables for people, ``--json`` for
programs). ``--show-code`` prints the Python a notebook user would write instead. Heavy modules are imported
inside the commands so that ``tracelens --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import List

import typer

from tracelens.commands.dumpfiles import one as _one  # typer-free helpers, shared with tracelens.console
from tracelens.commands.dumpfiles import open_dump as _open

_CODE_OPEN = "from tracelens.parsers import vmcore\n\ndump = vmcore.open({path!r})\n"
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


def info(path, *, kind: str | None = None, json_out: bool = False, show_code: bool = False) -> None:
    """Summarise a dump: format, compression, header version, page counts by state, VMCOREINFO essentials."""
    if show_code:
        sys.stdout.write(_CODE_OPEN.format(path=_one(path)) + "summary = dump.info()\nprint(summary)\n")
        return
    with _open(_one(path)) as dump:
        summary = dump.info()
    summary["detected"] = kind
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


def register(app: typer.Typer) -> None:
    @app.command()
    def dmesg(
        paths: List[str] = typer.Argument(..., metavar="DUMP", help=DUMP_HELP),
        json_out: bool = typer.Option(False, "--json", help="One JSON object per record instead of text."),
        style: str = typer.Option("vmcore-dmesg", "--format", help="Text layout: vmcore-dmesg (default) or makedumpfile (--dump-dmesg)."),
        vmcoreinfo: str = typer.Option(None, "--vmcoreinfo", help="Use this VMCOREINFO text instead of the dump's."),
        xen_events: bool = typer.Option(False, "--xen", help="Only the Xen-related events (PIRQ/GSI, grant table, balloon, event channels, shutdown, kexec)."),
        show_code: bool = typer.Option(False, "--show-code", help="Print the equivalent Python and exit."),
    ):
        """Print the kernel log saved in a dump, exactly as vmcore-dmesg (or makedumpfile --dump-dmesg) does."""
        from tracelens.errors import UsageError
        from tracelens.parsers.vmcore.printk import STYLES

        if style not in STYLES:
            raise UsageError(f"--format must be one of {', '.join(STYLES)}")
        path = _one(paths)
        if show_code:
            code = _CODE_OPEN.format(path=path)
            if xen_events:
                code += "from tracelens.parsers.vmcore import xen\n\nevents = xen.log_events(dump)  # pyarrow Table\n"
            elif json_out:
                code += "log = dump.dmesg()  # pyarrow Table: seq, ts_nsec, level, facility, caller, text, ...\n"
            else:
                code += f"text = dump.kernel_log().render({style!r})\nprint(text.decode(), end='')\n"
            sys.stdout.write(code)
            return
        if not (xen_events or json_out):
            from tracelens.commands.dumpfiles import print_log

            print_log(path, vmcoreinfo, style)
            return
        with _open(path, vmcoreinfo) as dump:
            log = dump.kernel_log()
        if xen_events:
            _print_xen_events(log.table(), json_out)
            return
        if json_out:
            import json

            out = sys.stdout
            for row in log.table().to_pylist():
                out.write(json.dumps(row) + "\n")

    @app.command()
    def pages(
        paths: List[str] = typer.Argument(..., metavar="DUMP", help=DUMP_HELP),
        output: str = typer.Option(None, "-o", "--output", help="Write the page index to this Parquet file."),
        json_out: bool = typer.Option(False, "--json", help="Print runs of pages as JSON."),
        show_code: bool = typer.Option(False, "--show-code", help="Print the equivalent Python and exit."),
    ):
        """The page index: pfn, file offset, stored size, compression, state (present/zero/excluded/lost/invalid)."""
        path = _one(paths)
        if show_code:
            code = _CODE_OPEN.format(path=path) + "pages = dump.pages()  # pyarrow Table\n"
            if output:
                code += f"import pyarrow.parquet as pq\npq.write_table(pages, {output!r})\n"
            sys.stdout.write(code)
            return
        if output:
            from tracelens.output import check_outputs

            check_outputs([("-o", output)], [path])
        with _open(path) as dump:
            if output:
                _write_parquet(dump, output)
                counts = dump.page_counts()
                sys.stderr.write(f"{path}: {sum(counts.values()):,} pages -> {output}\n")
                return
            runs = _runs(dump)
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
        show_code: bool = typer.Option(False, "--show-code", help="Print the equivalent Python and exit."),
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
        fn = "read_virt" if virtual else "read_phys"
        if show_code:
            ze = ", zero_excluded=True" if zero_excluded else ""
            sys.stdout.write(_CODE_OPEN.format(path=path) + f"data = dump.{fn}(0x{addr:x}, {size}{ze})\n")
            return
        with _open(path) as dump:
            data = getattr(dump, fn)(addr, size, zero_excluded=zero_excluded)
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


def _print_xen_events(records, json_out: bool) -> None:
    import json

    from tracelens.parsers.vmcore import xen

    events = xen.log_events(records)
    if json_out:
        for row in events.to_pylist():
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    from tracelens.escape import rich as esc

    t = Table(title=f"Xen events ({events.num_rows})")
    for col in ("time", "event", "category", "pirq", "irq", "gsi", "detail"):
        t.add_column(col)
    for r in events.to_pylist():  # kernel-log text: escaped as dmesg escapes it, and never markup
        t.add_row(f"{r['ts_nsec'] / 1e9:.6f}", esc(r["event"]), esc(r["category"]), *(("" if r[c] is None else str(r[c])) for c in ("pirq", "irq", "gsi")),
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


def _runs(dump) -> list[dict]:
    """Contiguous runs of pfns with the same state and compression."""
    import numpy as np

    from tracelens.parsers.vmcore import constants as C

    runs: list[dict] = []
    for b in dump._index_batches():
        if not len(b):
            continue
        pfn = b.pfn.astype(np.int64)
        brk = np.flatnonzero((np.diff(pfn) != 1) | (np.diff(b.state) != 0) | (np.diff(b.compression) != 0)) + 1
        starts = np.concatenate([[0], brk])
        ends = np.concatenate([brk, [len(pfn)]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            st, cp = C.PAGE_STATES[b.state[s]], C.COMPRESSION_NAMES[b.compression[s]]
            if runs and runs[-1]["last_pfn"] + 1 == pfn[s] and runs[-1]["state"] == st and runs[-1]["compression"] == cp:
                runs[-1]["last_pfn"] = int(pfn[e - 1])
                runs[-1]["pages"] += e - s
            else:
                runs.append({"first_pfn": int(pfn[s]), "last_pfn": int(pfn[e - 1]), "pages": e - s, "state": st, "compression": cp})
    return runs


def _write_parquet(dump, output: str) -> None:
    """Stream the page index into ``output`` atomically (temp file in the same folder, then rename)."""
    import pyarrow.parquet as pq

    from tracelens.output import atomic_output
    from tracelens.parsers.vmcore.dump import _page_schema

    with atomic_output(output) as tmp, pq.ParquetWriter(tmp, _page_schema()) as w:
        for batch in dump.iter_page_index():
            w.write_batch(batch)
