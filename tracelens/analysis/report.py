"""Renderings of one :class:`~tracelens.analysis.api.Analysis`: the JSON contract, rich text and Markdown.

The JSON object is a documented contract (docs/analysis.md, ``schema_version`` 1). Its required members are:
``schema_version``; ``capture`` {path, sha256, records, lost_records}; ``boundaries`` [{domid, epoch, kind, tsc}]
(epoch N of a domain ends at its N-th boundary, counting from 0); ``grants`` [{mapper, granter, epoch, maps,
unmaps, outstanding_at_boundary}] (one row per mapper, granter and epoch of the granter; outstanding_at_boundary is
maps minus unmaps over the whole capture up to the boundary that ends the epoch, null when the epoch does not end in
a boundary); ``balloon`` [{domid, epoch, extents, pages}]; ``findings`` [{rule, severity, domid, epoch, object, tsc,
message, fingerprint}]. Rows carry further members (documented there); consumers must ignore members they do not
know. TSCs are in cycles. Renderers never decide exit codes.
"""

from __future__ import annotations

import io
import json

from tracelens import escape

SCHEMA_VERSION = 1


def to_json_obj(a) -> dict:
    """The JSON contract as a Python object (lists and dicts of str/int/bool/None)."""
    from tracelens import __version__

    from tracelens.analysis.safety import lost_dict

    lost_total = int(a.lost[:, 3].sum()) if a.lost.size else 0
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "tracelens", "version": __version__},
        "capture": {
            "path": a.path, "sha256": a.sha256, "records": a.records, "lost_records": lost_total,
            "lost_intervals": [lost_dict(a.lost, a.lost_info, i) for i in range(a.lost.shape[0])],
            "malformed_lost_records": int(a.lost_info["malformed"].sum()) if a.lost_info is not None else 0,
            "first_tsc": a.first_tsc, "last_tsc": a.last_tsc, "layout": a.layout.get("label"),
        },
        "coverage": a.coverage,
        "boundaries": [b.to_dict() for b in a.boundaries],
        "grants": [dict(r) for r in a.grants.rows],
        "grant_mappers": [dict(r) for r in a.grants.by_mapper],
        "grant_records_unattributed": a.grants.unattributed,
        "balloon": [dict(r, gfn_ranges=[list(x) for x in r["gfn_ranges"]]) for r in a.balloon],
        "hypercalls": [dict(r) for r in a.hypercalls],
        "irq_vectors": [dict(r) for r in a.vectors],
        "guest": {"instrumented": [{"domid": d, "epoch": e} for d, e in sorted(a.guest.instrumented)],
                  "grefs_open": a.guest.grefs, "pirqs_open": a.guest.pirqs, "events": a.guest.events},
        "safety": [dict(r) for r in a.safety],
        "findings": [f.to_dict() for f in a.findings],
        "dump": a.dump,
    }


def to_json(a) -> str:
    return json.dumps(to_json_obj(a), indent=2) + "\n"


def _dom(d) -> str:
    return "?" if d is None else ("idle" if d == 0x7FFF else f"d{d}")


def _opt(x) -> str:
    return "-" if x is None else str(x)


def _sections(a):
    """(title, header, rows) of every table, shared by the text and Markdown renderers (strings only)."""
    out = []
    cap = to_json_obj(a)["capture"]
    out.append(("Capture", ["path", "sha256", "records", "lost records", "TSC span", "layout"],
                [[str(cap["path"]), str(cap["sha256"])[:16] + "…" if cap["sha256"] else "-", str(cap["records"]),
                  f"{cap['lost_records']} in {len(cap['lost_intervals'])} interval(s)",
                  f"{a.first_tsc} .. {a.last_tsc}", str(cap["layout"])]]))
    cov = a.coverage or {}
    if cov:
        out.append(("Coverage (event classes the capture can speak for; docs/analysis.md)",
                    ["subclass", "id", "records", "covered", "needed by"],
                    [[x["subclass"], x["id"], str(x["records"]),
                      {"records": "yes (records)", "declared": "yes (declared mask)", None: "NO"}[x["evidence"]]
                      + (" *" if x["subclass"] in cov["verdicts_need"] else ""), x["needed_by"]]
                     for x in cov["subclasses"]]
                    + [["declared mask", str(cov["declared_mask"] or "none (--trace-mask)"), "", "",
                        "* a safe verdict needs these; uncovered: " + (", ".join(cov["uncovered"]) or "none")]]
                    + [["note", "", "", "", n] for n in cov["notes"]]))
    out.append(("Boundaries", ["domain", "epoch ended", "kind", "tsc", "evidence"],
                [[_dom(b.domid), str(b.epoch), b.kind, str(b.tsc),
                  ", ".join(f"{k}={v}" for k, v in b.evidence.items() if k in ("shutdown_tsc", "reason_name",
                                                                            "removed_tsc", "note", "source"))]
                 for b in a.boundaries]))
    out.append(("kexec safety", ["domain", "epoch", "ends", "verdict", "first unsafe", "at tsc", "outstanding grants"],
                [[_dom(s["domid"]), str(s["epoch"]), s["boundary_kind"] or "(open)",
                  s["verdict"] + (f" (no {', '.join(s['not_covered'])} records)" if s.get("not_covered") else "")
                  + (f" (possibly {', '.join(s['possibly_unsafe'])})" if s.get("possibly_unsafe") else ""),
                  _opt(s["first_unsafe_kind"]), _opt(s["first_unsafe_tsc"]), str(s["outstanding_grants"])]
                 for s in a.safety]))
    out.append(("Grants (per mapper, granter and granter epoch)",
                ["mapper", "granter", "epoch", "maps", "unmaps", "late unmaps", "outstanding at boundary"],
                [[_dom(r["mapper"]), _dom(r["granter"]), str(r["epoch"]), str(r["maps"]), str(r["unmaps"]),
                  str(r["late_unmaps"]),
                  _opt(r["outstanding_at_boundary"]) if r["outstanding_at_boundary"] is not None
                  else f"(open: {r['outstanding_at_end']} at end)"] for r in a.grants.rows]))
    out.append(("Balloon (DECREASE_RESERVATION)", ["domain", "epoch", "extents", "pages", "by order", "gfn ranges",
                                                   "memory_op calls"],
                [[_dom(r["domid"]), str(r["epoch"]), str(r["extents"]), str(r["pages"]),
                  ", ".join(f"{o}:{c}" for o, c in r["extents_by_order"].items()),
                  ", ".join(f"{x:#x}-{y - 1:#x}" for x, y in r["gfn_ranges"][:4])
                  + (" …" if len(r["gfn_ranges"]) > 4 else ""), str(r["memory_op_calls"])] for r in a.balloon]))
    interesting = {12, 20, 29, 32, 33, 34, 36, 24}
    out.append(("Hypercalls (memory, grant, sched, event channel, physdev, hvm, domctl, vcpu)",
                ["domain", "epoch", "source", "op", "cmd", "count"],
                [[_dom(h["domid"]), str(h["epoch"]), h["source"], h["op_name"], h.get("cmd_name", "-"), str(h["count"])]
                 for h in a.hypercalls if h["op"] in interesting]))
    if a.dump is not None:
        dv = a.dump
        out.append(("Dump (--vmcore)", ["path", "kind", "belongs to", "Xen log events", "grants granted / in use",
                                        "PIRQs in log", "pending ports", "notes"],
                    [[str(dv["path"]), str(dv["kind"]), dv["assumption"], str(len(dv["log_events"])),
                      f"{dv['grants_granted']} / {len(dv['grants_in_use'])}", str(len(dv["pirqs"])),
                      str(len(dv["pending_ports"])), "; ".join(dv["notes"]) or "-"]]))
        out.append(("Dump kernel log (Xen events; guest clock, not on the TSC axis)", ["ts (ns)", "event", "text"],
                    [[str(e["ts_nsec"]), e["event"], e["text"]] for e in dv["log_events"]]))
    out.append(("Findings", ["severity", "rule", "domain", "epoch", "object", "tsc", "message"],
                [[f.severity, f.rule, _dom(f.domid), _opt(f.epoch), f.object, _opt(f.tsc), f.message]
                 for f in a.findings]))
    return out


def to_text(a, width: int = 140) -> str:
    """rich tables, rendered to plain text (no colour codes)."""
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False, markup=False)
    for title, header, rows in _sections(a):
        if not rows:
            con.print(f"{title}: none")
            continue
        t = Table(title=title, title_justify="left")
        for h in header:
            t.add_column(h, overflow="fold")
        for r in rows:
            t.add_row(*(escape.rich(c) for c in r))  # capture- and dump-derived: never markup, never raw controls
        con.print(t)
    errors = sum(f.severity == "error" for f in a.findings)
    con.print(f"{len(a.findings)} finding(s), {errors} error(s); {len(a.boundaries)} boundary(ies)")
    return buf.getvalue()


def _md_cell(s: str) -> str:
    return escape.markdown(s)


def to_markdown(a) -> str:
    lines = [f"# tracelens analysis of {escape.markdown_code(a.path)}", ""]
    for title, header, rows in _sections(a):
        lines.append(f"## {title}")
        lines.append("")
        if not rows:
            lines += ["none", ""]
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in rows:
            lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
        lines.append("")
    return "\n".join(lines)


RENDERERS = {"text": to_text, "json": to_json, "md": to_markdown}


# -- HTML --------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}.error{color:#b00020;font-weight:600}.warning{color:#a15c00}.note{color:#555}
.unsafe{color:#b00020}.inconclusive{color:#a15c00}.safe{color:#1b6e20}
svg{border:1px solid #ddd;background:#fff}.legend{font-size:.8em;color:#444}
"""
_KIND_COLOUR = {"balloon": "#7b1fa2", "foreign_map": "#c62828", "grant_outstanding": "#e65100",
                "grant_ref_active": "#ad1457", "pirq_bound": "#4527a0"}


def _svg_timeline(a, domid: int, width: int = 900, height: int = 150) -> str:
    """Boundaries (vertical lines), epochs (bands), first unsafe operation of each kind (markers) and the
    domain's grants outstanding over time (a step line), on a TSC axis from the capture's first to last TSC."""
    from tracelens.escape import html as escape

    import numpy as np

    t0, t1 = a.first_tsc, max(a.last_tsc, a.first_tsc + 1)
    left, right, top, bottom = 60, 10, 20, 25
    w, h = width - left - right, height - top - bottom

    def x(t) -> float:
        return left + w * (min(max(int(t), t0), t1) - t0) / (t1 - t0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="timeline of d{domid}">']
    bts = [b for b in a.boundaries if b.domid == domid]
    edges = [t0] + [b.tsc for b in bts] + [t1]
    for e in range(len(edges) - 1):
        fill = "#f7f7f7" if e % 2 == 0 else "#eef3fb"
        parts.append(f'<rect x="{x(edges[e]):.1f}" y="{top}" width="{max(x(edges[e + 1]) - x(edges[e]), 0):.1f}" '
                     f'height="{h}" fill="{fill}"><title>epoch {e}</title></rect>')
        parts.append(f'<text x="{x(edges[e]) + 3:.1f}" y="{top + 12}" font-size="10" fill="#666">epoch {e}</text>')
    s = a.grants.series
    sel = np.flatnonzero(s["granter"] == domid) if len(s["tsc"]) else np.empty(0, np.int64)
    if sel.size:
        total = np.cumsum(s["delta"][sel])
        ts = s["tsc"][sel]
        if sel.size > 2000:  # keep the shape, bound the size of the file
            pick = np.unique(np.linspace(0, sel.size - 1, 2000).astype(np.int64))
            ts, total = ts[pick], total[pick]
        top_v = max(int(total.max()), 1)
        pts = [f"{x(t0):.1f},{top + h:.1f}"]
        prev_y = top + h
        for t, v in zip(ts.tolist(), total.tolist()):
            y = top + h - h * max(v, 0) / top_v
            pts.append(f"{x(t):.1f},{prev_y:.1f}")
            pts.append(f"{x(t):.1f},{y:.1f}")
            prev_y = y
        pts.append(f"{x(t1):.1f},{prev_y:.1f}")
        parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#1565c0" stroke-width="1.5">'
                     f'<title>grants of d{domid} mapped by others (max {top_v})</title></polyline>')
        parts.append(f'<text x="{left - 5}" y="{top + 8}" font-size="10" text-anchor="end">{top_v}</text>')
        parts.append(f'<text x="{left - 5}" y="{top + h}" font-size="10" text-anchor="end">0</text>')
    for b in bts:
        parts.append(f'<line x1="{x(b.tsc):.1f}" x2="{x(b.tsc):.1f}" y1="{top}" y2="{top + h}" stroke="#000" '
                     f'stroke-dasharray="4 2"><title>{escape(b.kind)} boundary at tsc {b.tsc}</title></line>')
    for srow in a.safety:
        if srow["domid"] != domid:
            continue
        for kind, t in srow["unsafe"].items():
            parts.append(f'<circle cx="{x(t):.1f}" cy="{top + h - 6}" r="4" fill="{_KIND_COLOUR.get(kind, "#000")}">'
                         f'<title>epoch {srow["epoch"]}: first {escape(kind)} at tsc {t}</title></circle>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10">{t0}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 6}" font-size="10" text-anchor="end">{t1} (TSC)</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(a) -> str:
    """A self-contained HTML report (no scripts, no network): the same tables, plus a per-domain timeline.
    Every capture-derived string is escaped (tracelens.escape.html)."""
    from tracelens.escape import html as escape

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>tracelens analysis of {escape(str(a.path))}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>tracelens analysis of <code>{escape(str(a.path))}</code></h1>"]
    doms = sorted({s["domid"] for s in a.safety})
    if doms:
        out.append("<h2>Timelines</h2>")
        out.append('<p class="legend">Bands: epochs; dashed lines: kexec boundaries; blue line: the domain\'s grants '
                   "mapped by other domains; dots: first unsafe operation of each kind (hover for details).</p>")
        for d in doms:
            out.append(f"<h3>{escape(_dom(d))}</h3>{_svg_timeline(a, d)}")
    for title, header, rows in _sections(a):
        out.append(f"<h2>{escape(title)}</h2>")
        if not rows:
            out.append("<p>none</p>")
            continue
        out.append("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for r in rows:
            cells = []
            for h, c in zip(header, r):
                cls = f' class="{escape(c)}"' if h in ("severity", "verdict") else ""
                cells.append(f"<td{cls}>{escape(c)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    out.append("</body></html>\n")
    return "\n".join(out)


RENDERERS["html"] = to_html
