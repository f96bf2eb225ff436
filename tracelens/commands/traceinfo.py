"""``tracelens info CAPTURE`` for xentrace captures, without the CLI framework: the typer command
(tracelens.commands.trace, tracelens.cli) and the console's fast path (tracelens.console) both call :func:`info`,
so this module imports neither typer nor click."""

from __future__ import annotations

import json
import sys


def decode_from(**given):
    """The DecodeOptions of ``tracelens info``: ./tracelens.toml's [decode] with the options given on top (the typer
    command and the console's fast path both build them here)."""
    from tracelens.commands import config, decode_options

    return decode_options(config().decode, **given)


def code(path, decode=None, json_out: bool = False) -> str:
    """The Python of ``tracelens info PATH`` with these options (a capture, a dump or the parts of a split set)."""
    from tracelens.showcode import Code

    c = Code().use("tracelens")
    c.add(f"info = {c.call('tracelens.info', path, decode=decode)}")
    if json_out:
        c.use("json").add("print(json.dumps(info, indent=2, default=str))")
    else:
        c.add("print(info)")
    return c.text()


def _warn_damage(damage) -> None:
    from tracelens.escape import terminal

    for d in damage:
        off, length, reason = (d["offset"], d["length"], d["reason"]) if isinstance(d, dict) else (d.offset, d.length, d.reason)
        print(f"tracelens: warning: skipped {length} bytes at byte {off}: {terminal(reason)}", file=sys.stderr)


def info(path: str, decode=None, *, json_out: bool = False, show_code: bool = False) -> None:
    """``tracelens info CAPTURE``: the counts of tracelens.info(path, decode), as tables or JSON."""
    from tracelens.options import DecodeOptions

    decode = decode or DecodeOptions()
    if show_code:
        sys.stdout.write(code(path, decode, json_out))
        return
    from tracelens.parsers.xentrace.decode import info as capture_info

    s = capture_info(path, decode)
    if json_out:
        print(json.dumps(s, indent=2))
        return
    _warn_damage(s["damage"])
    from rich.console import Console
    from rich.table import Table

    from tracelens.analysis.records import dom_name
    from tracelens.escape import rich as esc

    con = Console()
    t = Table(title=esc(f"xentrace capture {path}"), show_header=False, title_justify="left")
    t.add_row("size", f"{s['size_bytes']:,} bytes")
    t.add_row("pCPUs", f"{len(s['pcpus'])} ({', '.join(map(str, s['pcpus']))})")
    t.add_row("windows", f"{s['windows']:,}")
    t.add_row("records", f"{s['records']:,}")
    lr = s["lost_records"]
    t.add_row("lost records", f"{lr['lost']:,} in {lr['records']:,} LOST_RECORDS markers"
              + (f" ({lr['malformed']:,} malformed: fewer than 4 words or a count of 0, so the number lost is "
                 "unknown)" if lr.get("malformed") else ""))
    if s["tsc_first"] is not None:
        span = s["tsc_last"] - s["tsc_first"]
        t.add_row("TSC span", f"{s['tsc_first']:,} .. {s['tsc_last']:,} ({span:,} cycles)")
    t.add_row("Xen layout", esc(f"{s['xen_layout']['label']}: {'; '.join(s['xen_layout']['reasons'])}"))
    con.print(t)
    cls = Table(title="records per class", title_justify="left")
    cls.add_column("class")
    cls.add_column("records", justify="right")
    for k, v in sorted(s["records_per_class"].items(), key=lambda kv: -kv[1]):
        cls.add_row(esc(k), f"{v:,}")
    con.print(cls)
    cov = s.get("coverage")
    if cov:
        ct = Table(title="coverage: what the capture can speak for (classes the analysis reads; docs/analysis.md)",
                   title_justify="left")
        for h in ("subclass", "id", "records", "covered", "needed by"):
            ct.add_column(h)
        for x in cov["subclasses"]:
            ct.add_row(x["subclass"], x["id"], f"{x['records']:,}", "yes" if x["evidence"] else "NO",
                       x["needed_by"])
        con.print(ct)
        if cov["uncovered"]:
            con.print(f"not covered: {', '.join(cov['uncovered'])}: no record of them, so kexec-safety verdicts will "
                      "be 'not covered' (recorded without those classes; for an idle host declare the mask: "
                      "--trace-mask)")
    dom = Table(title="records per domain (the vCPU running when written)", title_justify="left")
    dom.add_column("domain")
    dom.add_column("records", justify="right")
    for k, v in sorted(s["records_per_domain"].items(), key=lambda kv: -kv[1]):
        dom.add_row(dom_name(k), f"{v:,}")
    con.print(dom)
