"""CLI commands for xentrace captures: ``info`` (called by the shared info command), ``decode``, ``events``.

Commands parse options, call tracelens.parsers.xentrace and render. ``--show-code`` prints the Python a notebook
user would write for the same result.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from tracelens.commands import check_batch_mb, check_cpu_hz, check_limit, check_threads

TOLERANCE_HELP = ("What to do with damage: strict (stop with an error, the default), truncate (keep what comes "
                  "before the first damage), skip (resynchronise at the next window and report what was skipped).")


from tracelens.commands.traceinfo import _warn_damage, info  # noqa: E402,F401  (typer-free: the console's fast path)


def _match_events(spec: list[str], catalog) -> set[int] | None:
    """Event ids from ids (0x..) or names (exact, or a prefix ending in '*')."""
    from tracelens.errors import UsageError

    if not spec:
        return None
    out: set[int] = set()
    for s in spec:
        try:
            out.add(int(s, 0))
            continue
        except ValueError:
            pass
        pat = s.upper()
        hits = {e.id for e in catalog.events.values() if e.name.upper() == pat or (pat.endswith("*") and e.name.upper().startswith(pat[:-1]))}
        if not hits:
            raise UsageError(f"--event {s!r}: no such event id or name (see tracelens events --list)")
        out |= hits
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def decode(
        path: str = typer.Argument(..., help="xentrace capture"),
        output: str = typer.Option(..., "-o", "--output", help="OUT.parquet or OUT.arrow (Arrow IPC file)"),
        xen_version: Optional[str] = typer.Option(None, "--xen-version", help="Xen release that wrote the capture (default: guessed)"),
        cpu_hz: Optional[float] = typer.Option(None, "--cpu-hz", help="TSC frequency in Hz: adds a time_ns column", callback=check_cpu_hz),
        tolerance: str = typer.Option("strict", "--tolerance", help=TOLERANCE_HELP),
        catalog: List[str] = typer.Option([], "--catalog", help="extra event definitions (TOML, see docs/xentrace.md)"),
        batch_mb: int = typer.Option(64, "--batch-mb", help="capture bytes decoded per batch (bounds memory)", callback=check_batch_mb),
        threads: Optional[int] = typer.Option(None, "--threads", help="decoder threads (default: all cores)", callback=check_threads),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
    ):
        """Decode a capture to Parquet or Arrow, in bounded memory (batches of windows, row groups written as they come)."""
        from tracelens.errors import UsageError

        fmt = "parquet" if output.endswith(".parquet") else "arrow" if output.endswith((".arrow", ".feather", ".ipc")) else None
        if fmt is None:
            raise UsageError("-o must end in .parquet or .arrow")
        if show_code:
            print("import pyarrow.parquet as pq\nimport tracelens\n\n"
                  f"table = tracelens.read_xentrace({path!r}" + (f", cpu_hz={cpu_hz!r}" if cpu_hz else "") + ")\n"
                  + (f"pq.write_table(table, {output!r})" if fmt == "parquet" else
                     f"import pyarrow.feather as feather\nfeather.write_feather(table, {output!r})"))
            return
        import os

        from tracelens.output import atomic_output, check_outputs
        from tracelens.parsers.xentrace.decode import iter_batches

        check_outputs([("-o", output)], [path, catalog])
        from tracelens.progress import byte_progress

        size = os.path.getsize(path) if os.path.exists(path) else 0
        with byte_progress("decoding", size) as prog, atomic_output(output) as tmp:
            batches = iter_batches(path, batch_bytes=batch_mb << 20, xen_version=xen_version, cpu_hz=cpu_hz,
                                   tolerance=tolerance, catalog_files=catalog, threads=threads, progress=prog,
                                   reuse_buffers=2)
            rows, damage = _write_overlapped(batches, fmt, tmp)
            if rows == 0:
                raise UsageError(f"{path}: the capture holds no records")
        _warn_damage(damage)
        print(f"{path}: {rows:,} records -> {output}", file=sys.stderr)

    @app.command()
    def events(
        path: Optional[str] = typer.Argument(None, help="xentrace capture"),
        event: List[str] = typer.Option([], "--event", "-e", help="event id (0x...) or name (NAME* for a prefix); repeatable"),
        cls: List[str] = typer.Option([], "--class", help="event class: GEN SCHED DOM0OP HVM MEM PV SHADOW HW GUEST; repeatable"),
        dom: List[int] = typer.Option([], "--dom", help="domain id the record is attributed to; repeatable"),
        cpu: List[int] = typer.Option([], "--cpu", help="pCPU; repeatable"),
        tsc_from: Optional[int] = typer.Option(None, "--from", help="first TSC (cycles) to show"),
        tsc_to: Optional[int] = typer.Option(None, "--to", help="last TSC (cycles) to show"),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="stop after this many records", callback=check_limit),
        json_out: bool = typer.Option(False, "--json", help="JSON Lines: one object per record"),
        cpu_hz: Optional[float] = typer.Option(None, "--cpu-hz", help="TSC frequency in Hz: print seconds instead of cycles", callback=check_cpu_hz),
        xen_version: Optional[str] = typer.Option(None, "--xen-version", help="Xen release that wrote the capture (default: guessed)"),
        tolerance: str = typer.Option("strict", "--tolerance", help=TOLERANCE_HELP),
        catalog: List[str] = typer.Option([], "--catalog", help="extra event definitions (TOML)"),
        list_events: bool = typer.Option(False, "--list", help="list the event catalog and exit"),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
    ):
        """One decoded line per record, in time order, like xenalyze --dump-all: time, pCPU, dom:vcpu, name, fields."""
        from tracelens.analysis.records import vcpu_name
        from tracelens.errors import UsageError
        from tracelens.parsers.xentrace.catalog import format_fields, load_catalog

        cat = load_catalog(catalog)
        if list_events:
            for e in sorted(cat.events.values(), key=lambda e: e.id):
                fields = " ".join(f.name for f in e.layouts[-1].fields)
                print(f"0x{e.id:08x}  {cat.class_name(e.id):7s} {e.name:32s} {fields}")
            return
        if path is None:
            raise UsageError("events needs a CAPTURE (or --list)")
        ids = _match_events(event, cat)
        classes = {c.upper() for c in cls}
        known = {name for _m, _v, name in cat.classes}
        if classes - known:
            raise UsageError(f"--class {', '.join(sorted(classes - known))}: no such event class "
                             f"(known: {', '.join(sorted(known))})")
        if show_code:
            print(_events_code(path, ids, classes, dom, cpu, tsc_from, tsc_to, limit))
            return
        import pyarrow.compute as pc

        from tracelens.parsers.xentrace.decode import iter_batches

        shown = 0
        out = sys.stdout
        layout_version = None
        for table in iter_batches(path, xen_version=xen_version, tolerance=tolerance, catalog_files=catalog):
            if layout_version is None:
                layout_version = json.loads(table.schema.metadata[b"tracelens.layout"])["version"]
                layout_version = tuple(layout_version) if layout_version else None
                _warn_damage(json.loads(table.schema.metadata[b"tracelens.damage"]))
            mask = None

            def both(m):
                return m if mask is None else pc.and_(mask, m)

            if ids is not None:
                mask = both(pc.is_in(table["event"], value_set=__import__("pyarrow").array(sorted(ids), "uint32")))
            if classes:
                evs = table["event"].to_numpy()
                keep = __import__("numpy").zeros(len(evs), bool)
                for u in __import__("numpy").unique(evs):
                    if cat.class_name(int(u)) in classes:
                        keep |= evs == u
                mask = both(__import__("pyarrow").array(keep))
            if dom:
                mask = both(pc.fill_null(pc.is_in(table["dom"], value_set=__import__("pyarrow").array(dom, "uint16")), False))
            if cpu:
                mask = both(pc.is_in(table["cpu"], value_set=__import__("pyarrow").array(cpu, "uint16")))
            if tsc_from is not None:
                mask = both(pc.greater_equal(table["tsc"], tsc_from))
            if tsc_to is not None:
                mask = both(pc.less_equal(table["tsc"], tsc_to))
            if mask is not None:
                table = table.filter(mask)
            if limit is not None:
                table = table.slice(0, max(0, limit - shown))
            cols = {c: table[c].to_pylist() for c in ("cpu", "tsc", "event", "n_extra", "offset", "dom", "vcpu")}
            ds = [table[f"d{j}"].to_pylist() for j in range(1, 8)]
            names = table["name"].to_pylist()
            lines = []
            for i in range(table.num_rows):
                words = [ds[j][i] for j in range(cols["n_extra"][i]) if ds[j][i] is not None]
                ev = cols["event"][i]
                d, v = cols["dom"][i], cols["vcpu"][i]
                t = cols["tsc"][i]
                if json_out:
                    rec = {"tsc": t, "cpu": cols["cpu"][i], "dom": d, "vcpu": v, "event": f"0x{ev:08x}", "name": names[i],
                           "data": words, "offset": cols["offset"][i]}
                    if cpu_hz:
                        rec["time_s"] = t / cpu_hz
                    lines.append(json.dumps(rec))
                else:
                    when = f"{t / cpu_hz:.9f}" if cpu_hz else f"{t}"
                    who = "?:?" if d is None else vcpu_name(d, v)
                    lines.append(f"{when} cpu{cols['cpu'][i]} {who} {names[i]} {format_fields(cat, ev, words, layout_version)}".rstrip())
            if lines:
                out.write("\n".join(lines) + "\n")
            shown += table.num_rows
            if limit is not None and shown >= limit:
                break


def _write_overlapped(batches, fmt, path):
    """Write decoded batches while the next one decodes: a writer thread encodes batch i (pyarrow releases the GIL)
    as the decoder (numba, GIL released) fills the other of two buffer sets. Returns (rows, damage)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=1)
    free = [threading.Semaphore(1), threading.Semaphore(1)]  # buffer set s may be decoded into
    failure: list[BaseException] = []
    state = {"rows": 0, "damage": []}

    def writer():
        w = None
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                table, slot = item
                if not failure:
                    if w is None:
                        w = _open_writer(fmt, path, table.schema)
                    w.write_table(table)
                    state["rows"] += table.num_rows
                    state["damage"] = json.loads(table.schema.metadata[b"tracelens.damage"])
                del table
                free[slot].release()
        except BaseException as e:  # surfaced in the main thread
            failure.append(e)
            while True:  # keep draining so the producer never blocks
                item = q.get()
                if item is None:
                    break
                free[item[1]].release()
        finally:
            if w is not None:
                w.close()

    t = threading.Thread(target=writer, name="tracelens-writer", daemon=True)
    t.start()
    k = 0
    try:
        free[0].acquire()
        for table in batches:
            q.put((table, k % 2))
            del table
            k += 1
            free[k % 2].acquire()  # the generator is about to decode into set k % 2: wait until it is written
            if failure:
                break
    finally:
        q.put(None)
        t.join()
    if failure:
        raise failure[0]
    return state["rows"], state["damage"]


# Parquet: dictionary-encode only the low-cardinality columns (the others gain nothing and cost encode time)
_PARQUET_DICT = ["name", "cpu", "event", "n_extra", "dom", "vcpu"]


def _open_writer(fmt, path, schema):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=_PARQUET_DICT)
    import pyarrow as pa

    return pa.ipc.new_file(path, schema)


def _events_code(path, ids, classes, dom, cpu, tsc_from, tsc_to, limit) -> str:
    lines = ["import polars as pl", "import tracelens", "", f"df = pl.from_arrow(tracelens.read_xentrace({path!r}))"]
    conds = []
    if ids:
        conds.append(f"pl.col('event').is_in({sorted(hex(i) for i in ids)!r})".replace("'0x", "0x").replace("',", ",").replace("']", "]"))
    if dom:
        conds.append(f"pl.col('dom').is_in({list(dom)!r})")
    if cpu:
        conds.append(f"pl.col('cpu').is_in({list(cpu)!r})")
    if tsc_from is not None:
        conds.append(f"(pl.col('tsc') >= {tsc_from})")
    if tsc_to is not None:
        conds.append(f"(pl.col('tsc') <= {tsc_to})")
    if classes:
        lines.append(f"# classes {sorted(classes)}: filter on the id's class bits, e.g. (pl.col('event') & 0x0fff0000) == 0x00100000 for MEM")
    if conds:
        lines.append("df = df.filter(" + " & ".join(conds) + ")")
    if limit:
        lines.append(f"df = df.head({limit})")
    lines.append("print(df)")
    return "\n".join(lines)
