"""CLI commands for xentrace captures: ``info`` (called by the shared info command), ``decode``, ``events``.

Commands parse their options into a :class:`tracelens.options.DecodeOptions` (and, for ``events``, a
:class:`tracelens.events.EventSelection`), call :class:`tracelens.capture.Capture` and render. ``--show-code``
prints the same calls with the same objects (tracelens.showcode).
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from tracelens.commands import check_at_least
from tracelens.commands import declarations as D
from tracelens.commands.traceinfo import _warn_damage, info  # noqa: F401  (typer-free: the console's fast path)


def decode_code(path, output, decode, batch_mb: int = 64) -> str:
    """The Python of ``tracelens decode PATH -o OUTPUT`` with these options."""
    from tracelens.showcode import Code

    c = Code().use("tracelens")
    c.add(f"capture = {c.call('tracelens.open', path, decode=decode)}",
          f"rows, damage = {c.call('capture.write', output, batch_bytes=batch_mb << 20 if batch_mb != 64 else None)}",
          "print(rows, 'records')")
    return c.text()


def run_decode(path, output, decode, *, batch_mb: int = 64, show_code: bool = False) -> int:
    """``tracelens decode``: Capture.write in bounded memory, a progress bar on stderr."""
    import os

    from tracelens.capture import Capture
    from tracelens.output import check_outputs
    from tracelens.progress import byte_progress

    check_at_least(batch_mb, "--batch-mb", 1, 1 << 16)
    if show_code:
        sys.stdout.write(decode_code(path, output, decode, batch_mb))
        return 0
    check_outputs([("-o", output)], [path, decode.catalog_files])
    size = os.path.getsize(path) if os.path.exists(path) else 0
    with byte_progress("decoding", size) as prog:
        rows, damage = Capture(path, decode).write(output, batch_bytes=batch_mb << 20, progress=prog)
    _warn_damage(damage)
    print(f"{path}: {rows:,} records -> {output}", file=sys.stderr)
    return 0


def events_code(path, decode, selection, json_out: bool = False, list_events: bool = False) -> str:
    """The Python of ``tracelens events`` with these options: the catalog listing, or the selected records."""
    from tracelens.showcode import Code

    c = Code()
    if list_events:
        c.use("tracelens.events", "listing")
        c.add(f"print('\\n'.join(listing({c.value(decode)}.catalog())))")
        return c.text()
    c.use("tracelens")
    c.add(f"capture = {c.call('tracelens.open', path, decode=decode)}",
          f"df = {c.call('capture.events', selection)}.collect()  # a polars DataFrame")
    if json_out:
        c.add("print(df.write_ndjson(), end='')")
    else:
        c.use("polars").add("with polars.Config(tbl_rows=-1):", "    print(df)")
    return c.text()


def run_events(path, decode, selection, *, json_out: bool = False, list_events: bool = False,
               show_code: bool = False) -> int:
    """``tracelens events``: one line (or JSON object) per selected record, as they are decoded."""
    from tracelens.errors import UsageError
    from tracelens.events import listing

    if show_code:
        sys.stdout.write(events_code(path, decode, selection, json_out, list_events))
        return 0
    if list_events:
        sys.stdout.write("\n".join(listing(decode.catalog())) + "\n")
        return 0
    if path is None:
        raise UsageError("events needs a CAPTURE (or --list)")
    from tracelens.analysis.records import vcpu_name
    from tracelens.capture import Capture
    from tracelens.parsers.xentrace.catalog import format_fields

    cap = Capture(path, decode)
    cat = cap.catalog
    frames = cap.iter_events(selection)
    req = None
    warned = False
    out = sys.stdout
    cpu_hz = decode.cpu_hz
    for df in frames:
        req = req or cap.scans[-1]
        if not warned:
            _warn_damage(req.damage)
            warned = True
        version = req.layout["version"]
        version = tuple(version) if version else None
        cols = {c: df[c].to_list() for c in ("cpu", "tsc", "event", "n_extra", "offset", "dom", "vcpu", "name")}
        ds = [df[f"d{j}"].to_list() for j in range(1, 8)]
        lines = []
        for i in range(df.height):
            words = [ds[j][i] for j in range(cols["n_extra"][i]) if ds[j][i] is not None]
            ev, d, v, t = cols["event"][i], cols["dom"][i], cols["vcpu"][i], cols["tsc"][i]
            if json_out:
                rec = {"tsc": t, "cpu": cols["cpu"][i], "dom": d, "vcpu": v, "event": f"0x{ev:08x}",
                       "name": cols["name"][i], "data": words, "offset": cols["offset"][i]}
                if cpu_hz:
                    rec["time_s"] = t / cpu_hz
                lines.append(json.dumps(rec))
            else:
                when = f"{t / cpu_hz:.9f}" if cpu_hz else f"{t}"
                who = "?:?" if d is None else vcpu_name(d, v)
                lines.append(f"{when} cpu{cols['cpu'][i]} {who} {cols['name'][i]} "
                             f"{format_fields(cat, ev, words, version)}".rstrip())
        if lines:
            out.write("\n".join(lines) + "\n")
    if not warned and cap.scans and cap.scans[-1].damage:
        _warn_damage(cap.scans[-1].damage)
    return 0


def register(app: typer.Typer) -> None:
    @app.command()
    def decode(
        path: str = typer.Argument(..., help="xentrace capture"),
        output: str = typer.Option(..., "-o", "--output", help="OUT.parquet or OUT.arrow (Arrow IPC file)"),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        cpu_hz: Optional[float] = D.CPU_HZ.typer(),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        batch_mb: int = typer.Option(64, "--batch-mb", help="capture bytes decoded per batch (bounds memory)"),
        threads: Optional[int] = D.THREADS.typer(),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """Decode a capture to Parquet or Arrow, in bounded memory (batches of windows, row groups written as they come)."""
        from tracelens.commands import config, decode_options

        opts = decode_options(config().decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                              catalog_files=catalog, threads=threads)
        run_decode(path, output, opts, batch_mb=batch_mb, show_code=show_code)

    @app.command()
    def events(
        path: Optional[str] = typer.Argument(None, help="xentrace capture"),
        event: List[str] = typer.Option([], "--event", "-e", help="event id (0x...) or name (NAME* for a prefix); repeatable"),
        cls: List[str] = typer.Option([], "--class", help="event class: GEN SCHED DOM0OP HVM MEM PV SHADOW HW GUEST; repeatable"),
        dom: List[int] = typer.Option([], "--dom", help="domain id the record is attributed to; repeatable"),
        cpu: List[int] = typer.Option([], "--cpu", help="pCPU; repeatable"),
        tsc_from: Optional[int] = typer.Option(None, "--from", help="first TSC (cycles) to show"),
        tsc_to: Optional[int] = typer.Option(None, "--to", help="last TSC (cycles) to show"),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="stop after this many records"),
        json_out: bool = typer.Option(False, "--json", help="JSON Lines: one object per record"),
        cpu_hz: Optional[float] = D.CPU_HZ.typer(help="TSC frequency in Hz: print seconds instead of cycles"
                                                 + D.CONFIG_NOTE + "."),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        threads: Optional[int] = D.THREADS.typer(),
        list_events: bool = typer.Option(False, "--list", help="list the event catalog and exit"),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """One decoded line per record, in time order, like xenalyze --dump-all: time, pCPU, dom:vcpu, name, fields."""
        from tracelens.commands import config, decode_options
        from tracelens.events import EventSelection

        opts = decode_options(config().decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                              catalog_files=catalog, threads=threads)
        selection = EventSelection(events=tuple(event), classes=tuple(cls), doms=tuple(dom), cpus=tuple(cpu),
                                   tsc_from=tsc_from, tsc_to=tsc_to, limit=limit)
        if not list_events:
            selection.predicate(opts.catalog())  # unknown event names and classes: a usage error before any output
        run_events(path, opts, selection, json_out=json_out, list_events=list_events, show_code=show_code)
