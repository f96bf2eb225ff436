"""The HTML report (``tracelens analyze --format html``): one self-contained page, verdict first.

No script, no stylesheet or font from the network: inline CSS and inline SVG only, so the file opens offline, in a
mail attachment or a CI artifact viewer. Sections, in this order, with stable ids that other pages may link to:

``verdict``
    the overall verdict (the worst over the kexecs the capture holds), then per guest and epoch a word and a colour,
    and what the capture could and could not show: coverage of the event classes, lost records, the dump's problems.
``findings``
    grouped by rule and domain; each links to its moment on the timeline (``#tl-<fingerprint>``) and to the table
    row that is its evidence.
``timeline``
    per guest domain an SVG (responsive: a viewBox, no fixed width): epochs, boundaries, the teardown window between
    shutdown and resume, lost-record intervals shaded, one step line per (mapper, granter) pair (the guest's grants
    mapped by others, and, dashed, other domains' grants the guest mapped), pages ballooned out, and markers for
    findings and first unsafe operations (stacked when they share a moment), under a colour key.
the detail tables
    ``boundaries``, ``safety``, ``grants``, ``grant-mappers``, ``balloon``, ``hypercalls``, ``irq-vectors``,
    ``guest-grefs``, ``guest-pirqs``, ``dump``, ``dump-log``, ``capture``, ``lost``, ``coverage``: long tables
    show their first rows (and every row a finding links to) and fold the rest under a count.

Times are shown from the capture's start, in seconds with ``cpu_hz`` (``--cpu-hz``), else in TSC cycles
(:class:`tracelens.timebase.TimeBase`); raw TSCs stay in tooltips and the tables. Every capture- or dump-derived
string goes through :func:`tracelens.escape.html`.
"""

from __future__ import annotations

import numpy as np

from tracelens.analysis import report as R
from tracelens.escape import html as esc
from tracelens.timebase import TimeBase

ROWS_SHOWN = 15  # rows of a detail table shown before the rest is folded
FINDINGS_SHOWN = 6  # findings of one rule shown before the rest is folded
EPOCHS_SHOWN = 8  # verdict rows shown before the rest is folded
SERIES_SHOWN = 6  # step lines per chart; the quieter pairs are listed, not drawn

KIND_COLOURS = {"balloon": "#7b1fa2", "foreign_map": "#c62828", "grant_outstanding": "#e65100",
                "grant_ref_active": "#ad1457", "pirq_bound": "#4527a0"}
SEVERITY_COLOURS = {"error": "#b00020", "warning": "#b26a00", "note": "#546e7a"}
SERIES_COLOURS = ("#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#c2185b", "#455a64")

_CSS = """
:root{--unsafe:#b00020;--inconclusive:#b26a00;--safe:#1b6e20;--notcovered:#6d4c41;--open:#455a64}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:.8em 1.5em 3em;color:#1b1b1b;
 max-width:1500px;line-height:1.35}
h1{font-size:1.25em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}h3{font-size:.95em;margin:.8em 0 .3em}
.meta{color:#555;font-size:.8em;margin:0 0 .3em;overflow-wrap:anywhere}nav{font-size:.8em;margin-bottom:.4em}
nav a{margin-right:.7em}code{font-size:.95em}
table{border-collapse:collapse;margin:.3em 0;font-size:.82em}
th,td{border:1px solid #d5d5d5;padding:.15em .45em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:target,g:target rect,g:target path{outline:3px solid #ffb300}
tr:target{background:#fff3c4}
.chip{display:inline-block;padding:0 .45em;border-radius:3px;color:#fff;font-weight:600;font-size:.85em;
 white-space:nowrap}
.c-unsafe{background:var(--unsafe)}.c-inconclusive{background:var(--inconclusive)}.c-safe{background:var(--safe)}
.c-not-covered{background:var(--notcovered)}.c-open{background:var(--open)}
.t-unsafe,.error{color:var(--unsafe);font-weight:600}.t-inconclusive,.warning{color:var(--inconclusive)}
.t-safe{color:var(--safe)}.t-open,.note{color:var(--open)}.t-not-covered{color:var(--notcovered)}
#verdict .headline{font-size:1.05em;font-weight:600;padding:.45em .7em;border-left:6px solid var(--open);
 background:#f4f6f7;margin:.3em 0}
#verdict .headline.unsafe{border-color:var(--unsafe);background:#fdecee}
#verdict .headline.inconclusive{border-color:var(--inconclusive);background:#fff6e5}
#verdict .headline.safe{border-color:var(--safe);background:#edf7ee}
#verdict .headline.not-covered{border-color:var(--notcovered);background:#f6f0ed}
#verdict ul{margin:.3em 0;padding-left:1.2em;font-size:.85em}#verdict li.warn{color:var(--unsafe);font-weight:600}
.rule-id{white-space:nowrap;font-family:ui-monospace,monospace}td.nowrap{white-space:nowrap}
.links a{white-space:nowrap;margin-right:.4em}
details>summary{cursor:pointer;color:#1a57a6;font-size:.82em;margin:.2em 0}
figure{margin:.6em 0 1.2em}figcaption{font-weight:600;margin-bottom:.2em}
svg.timeline{width:100%;height:auto;display:block;border:1px solid #ddd;background:#fff}
.key{font-size:.8em;color:#333;display:flex;flex-wrap:wrap;gap:.3em 1.1em;margin:.3em 0}
.key span{white-space:nowrap}.sw{display:inline-block;width:1.6em;height:.75em;vertical-align:middle;
 margin-right:.3em;border:1px solid #999}
.sw.line{height:0;border:0;border-top:2px solid}.sw.dash{height:0;border:0;border-top:2px dashed}
.muted{color:#666;font-size:.8em}
"""


def to_html(a) -> str:
    """The report page of an :class:`~tracelens.analysis.analyze.Analysis` (a str; see the module docstring)."""
    tb = TimeBase.of(a)
    secs = R.sections(a)
    charts, placed = _timeline(a, tb)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>tracelens: {esc(_base(a.path))}</title>", f"<style>{_CSS}</style></head><body>"]
    out.append(_header(a, tb, secs))
    out.append(_verdict(a))
    out.append(_findings(a, tb, placed, {i for s in secs for i in (s.row_ids or ())}))
    out.append(charts)
    pinned = {R.evidence_id(f) for f in a.findings}
    for sec in secs:
        out.append(_table_section(sec, pinned))
    out.append("</body></html>\n")
    return "\n".join(out)


def _base(path) -> str:
    import os

    return os.path.basename(str(path)) if path else "capture"


def _header(a, tb: TimeBase, secs) -> str:
    from tracelens import __version__

    bits = [esc(str(a.path)), f"{a.records:,} records", f"span {esc(tb.fmt_span(a.first_tsc, a.last_tsc))}",
            f"TSC {a.first_tsc:,} .. {a.last_tsc:,}"]
    bits.append(f"{a.cpu_hz / 1e9:g} GHz (--cpu-hz)" if a.cpu_hz else "no --cpu-hz: times in TSC cycles")
    if a.sha256:
        bits.append(f"sha256 {esc(a.sha256[:16])}…")
    bits.append(f"layout {esc(str(a.layout.get('label')))}")
    bits.append(f"tracelens {esc(__version__)}")
    nav = "".join(f'<a href="#{k}">{k}</a>' for k in ["verdict", "findings", "timeline"] + [s.key for s in secs])
    return (f'<header><h1>tracelens: <code>{esc(_base(a.path))}</code></h1><p class="meta">{" · ".join(bits)}</p>'
            f"<nav>{nav}</nav></header>")


# -- verdict -----------------------------------------------------------------------------------------------------
def _verdict(a) -> str:
    v = R.verdict_summary(a)
    out = ['<section id="verdict"><h2>Verdict</h2>', f'<p class="headline {v["css"]}">{esc(v["headline"])}</p>']
    if v["epochs"]:
        rows = []
        order = sorted(range(len(v["epochs"])), key=lambda i: (v["epochs"][i]["label"] in ("OPEN", "SAFE"), i))
        for k, i in enumerate(order):
            e = v["epochs"][i]
            rows.append(f'<tr><td class="nowrap">{esc(R._dom(e["domid"]))}</td><td>{e["epoch"]}</td>'
                        f'<td class="nowrap">{esc(e["span"])}</td>'
                        f'<td><span class="chip c-{e["css"]}">{esc(e["label"])}</span></td>'
                        f'<td>{esc(e["why"])} <a href="#safety-{e["domid"]}-{e["epoch"]}">row</a></td></tr>')
        head = "<tr><th>guest</th><th>epoch</th><th>span</th><th>verdict</th><th>why</th></tr>"
        out.append(_folded_table(head, rows, EPOCHS_SHOWN, "more epochs"))
    facts = [(x, x.startswith("NOT COVERED")) for x in v["coverage"]] + [(x, False) for x in v["losses"]]
    facts += [(x, x.startswith("WARNING")) for x in v["dump"]]
    if facts:
        out.append("<ul>" + "".join(f'<li{" class=warn" if w else ""}>{esc(x)}</li>' for x, w in facts) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _folded_table(head: str, rows: list[str], shown: int, what: str) -> str:
    first = f"<table><thead>{head}</thead><tbody>{''.join(rows[:shown])}</tbody></table>"
    if len(rows) <= shown:
        return first
    return (first + f"<details><summary>{len(rows) - shown} {what}</summary><table><thead>{head}</thead><tbody>"
            + "".join(rows[shown:]) + "</tbody></table></details>")


# -- findings ----------------------------------------------------------------------------------------------------
def _findings(a, tb: TimeBase, placed: dict, anchors: set) -> str:
    errors = sum(f.severity == "error" for f in a.findings)
    warnings = sum(f.severity == "warning" for f in a.findings)
    out = ['<section id="findings">']
    if not a.findings:
        out.append("<h2>Findings: none</h2><p class=\"muted\">No rule of docs/rules.md fired. The verdict above "
                   "says what the capture could show.</p></section>")
        return "\n".join(out)
    out.append(f"<h2>Findings: {len(a.findings)} ({errors} error(s), {warnings} warning(s))</h2>")
    head = "<tr><th>domain</th><th>epoch</th><th>object</th><th>when</th><th>message</th><th>see</th></tr>"
    for rule, sev, title, fs in R.findings_by_rule(a.findings):
        out.append(f'<h3><span class="rule-id {sev}">{esc(rule)}</span> <span class="{sev}">{esc(sev)}</span> · '
                   f"{esc(title)} · {len(fs)}</h3>")
        rows = []
        for f in fs:
            links = []
            tl = placed.get(id(f))
            if tl:
                links.append(f'<a href="#{tl}">timeline</a>')
            ev = R.evidence_id(f)
            if ev in anchors or ev == "dump":
                links.append(f'<a href="#{esc(ev)}">evidence</a>')
            when = "-" if f.tsc is None else f'<span title="tsc {f.tsc}">{esc(tb.fmt(f.tsc))}</span>'
            rows.append(f'<tr><td class="nowrap">{esc(R._dom(f.domid))}</td><td>{esc(R._opt(f.epoch))}</td>'
                        f'<td class="nowrap">{esc(f.object)}</td><td class="nowrap">{when}</td>'
                        f'<td>{esc(f.message)}</td><td class="links">{"".join(links)}</td></tr>')
        out.append(_folded_table(head, rows, FINDINGS_SHOWN, f"more {esc(rule)} findings"))
    out.append("</section>")
    return "\n".join(out)


# -- detail tables -----------------------------------------------------------------------------------------------
def _table_section(sec: R.Section, pinned: set) -> str:
    out = [f'<section id="{sec.key}"><h2>{esc(sec.title)}</h2>']
    if sec.note:
        out.append(f'<p class="muted">{esc(sec.note)}</p>')
    if not sec.rows:
        out.append("<p>none</p></section>")
        return "\n".join(out)
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in sec.header) + "</tr>"
    ids = sec.row_ids or [None] * len(sec.rows)
    html_rows = []
    for i, (r, rid) in enumerate(zip(sec.rows, ids)):
        cells = []
        for h, c in zip(sec.header, r):
            cls = ""
            if h == "verdict" and sec.css:
                cls = f' class="t-{sec.css[i]}"'
            cells.append(f"<td{cls}>{esc(c)}</td>")
        attr = f' id="{esc(rid)}"' if rid else ""
        html_rows.append((rid in pinned, f"<tr{attr}>{''.join(cells)}</tr>"))
    if len(html_rows) <= ROWS_SHOWN:
        out.append(f"<table><thead>{head}</thead><tbody>{''.join(h for _p, h in html_rows)}</tbody></table>")
    else:
        # the first rows, and every row a finding links to (a link into a folded <details> would show nothing)
        shown = [h for i, (p, h) in enumerate(html_rows) if i < ROWS_SHOWN or p]
        rest = [h for i, (p, h) in enumerate(html_rows) if i >= ROWS_SHOWN and not p]
        out.append(f'<p class="muted">{len(html_rows)} rows: the first {ROWS_SHOWN}'
                   + (f" and the {len(shown) - ROWS_SHOWN} findings link to" if len(shown) > ROWS_SHOWN else "")
                   + ", then the rest folded.</p>")
        out.append(f"<table><thead>{head}</thead><tbody>{''.join(shown)}</tbody></table>")
        out.append(f"<details><summary>{len(rest)} more rows</summary><table><thead>{head}</thead><tbody>"
                   + "".join(rest) + "</tbody></table></details>")
    out.append("</section>")
    return "\n".join(out)


# -- timeline ----------------------------------------------------------------------------------------------------
W = 1000  # viewBox width; the SVG scales to the page
LEFT, RIGHT = 74, 14
TOP = 18  # epoch labels above the lanes
EVENTS_H, GRANTS_H, BALLOON_H, AXIS_H, GAP = 40, 110, 46, 26, 8
MARK_DX = 10  # markers closer than this (viewBox units) share a moment: stacked


def _timeline(a, tb: TimeBase) -> tuple[str, dict]:
    """(the timeline section, {id(finding): marker anchor} of the findings it placed)."""
    doms = sorted({s["domid"] for s in a.safety})
    placed: dict = {}
    out = ['<section id="timeline"><h2>Timeline</h2>']
    if not doms:
        out.append("<p>No guest domain to draw.</p></section>")
        return "\n".join(out), placed
    stride = getattr(a.grants, "series_stride", 1)
    note = (f"Axis: {esc(tb.axis_label())}. Grant lines: each pair's outstanding mappings "
            "(maps minus unmaps since the capture started; negative when it unmaps what it mapped before).")
    if stride > 1:
        note += f" This capture has many grant records: the lines use one record in {stride}."
    out.append(f'<p class="muted">{note}</p>')
    out.append(_key(a))
    for d in doms:
        svg, key = _chart(a, tb, d, placed)
        out.append(f'<figure id="timeline-{d}"><figcaption>{esc(R._dom(d))}</figcaption>{svg}{key}</figure>')
    out.append("</section>")
    return "\n".join(out), placed


def _key(a) -> str:
    kinds = sorted({k for s in a.safety for k in (s.get("unsafe") or {})} |
                   {k for s in a.safety for k in (s.get("possibly_unsafe") or {})})
    sevs = sorted({f.severity for f in a.findings}, key=lambda s: R.SEVERITY_RANK.get(s, 9))
    parts = ['<span><span class="sw" style="background:#f4f4f4"></span><span class="sw" '
             'style="background:#e8eef8"></span>epochs (one kernel each)</span>',
             '<span><span class="sw dash" style="border-color:#000"></span>kexec boundary (the domain runs again)'
             '</span>',
             '<span><svg width="22" height="12"><rect width="22" height="12" fill="url(#p-tear)"/></svg> '
             'teardown: shutdown to resume</span>',
             '<span><svg width="22" height="12"><rect width="22" height="12" fill="url(#p-lost)"/></svg> '
             'records lost (any pCPU)</span>']
    for k in kinds:
        parts.append(f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" fill="{KIND_COLOURS[k]}"/>'
                     f"</svg> {k}: {esc(R.KIND_WORDS[k])}</span>")
    if kinds:
        parts.append('<span class="muted">(dots: first unsafe operation of each kind in an epoch; hollow: the epoch '
                     "is still open at the end, or records were lost)</span>")
    for s in sevs:
        parts.append(f'<span><svg width="12" height="12"><path d="M6 0 L12 6 L6 12 L0 6 Z" '
                     f'fill="{SEVERITY_COLOURS.get(s, "#000")}"/></svg> finding ({esc(s)})</span>')
    if a.grants.rows:
        parts.append('<span>grant lines: <span class="sw line" style="border-color:#555"></span>the domain\'s grants '
                     'mapped by another, <span class="sw dash" style="border-color:#555"></span>another\'s grants it '
                     "mapped (one colour per pair, named under each chart)</span>")
    if a.balloon:
        parts.append('<span><span class="sw line" style="border-color:#7b1fa2"></span>pages ballooned out in the '
                     'epoch</span>')
    patterns = ('<svg width="0" height="0" style="position:absolute"><defs>'
                '<pattern id="p-tear" width="6" height="6" patternUnits="userSpaceOnUse" '
                'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eceff1"/>'
                '<line x1="0" y1="0" x2="0" y2="6" stroke="#90a4ae" stroke-width="2"/></pattern>'
                '<pattern id="p-lost" width="6" height="6" patternUnits="userSpaceOnUse" '
                'patternTransform="rotate(-45)"><rect width="6" height="6" fill="#fde7e9" fill-opacity=".7"/>'
                '<line x1="0" y1="0" x2="0" y2="6" stroke="#e57373" stroke-width="2"/></pattern>'
                "</defs></svg>")
    return patterns + '<div class="key">' + "".join(parts) + "</div>"


def _pair_colours(a) -> dict:
    """One colour per (mapper, granter) pair for every chart, the busiest pairs first."""
    s = a.grants.series
    if not len(s.get("tsc", ())):
        return {}
    keys = np.asarray(s["mapper"], np.int64) * 0x10000 + np.asarray(s["granter"], np.int64)
    u, n = np.unique(keys, return_counts=True)
    order = u[np.argsort(-n, kind="stable")]
    return {int(k): SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, k in enumerate(order.tolist())}


def _series_for(a, d: int):
    """The grant pairs drawn on ``d``'s chart: [(label, dashed, tsc array, values array, records)], the busiest
    first; pairs where ``d`` grants, then pairs where ``d`` maps."""
    s = a.grants.series
    if not len(s.get("tsc", ())):
        return []
    mapper = np.asarray(s["mapper"], np.int64)
    granter = np.asarray(s["granter"], np.int64)
    out = []
    for sel_mask, dashed in ((granter == d, False), ((mapper == d) & (granter != d), True)):
        idx = np.flatnonzero(sel_mask)
        if not idx.size:
            continue
        keys = mapper[idx] * 0x10000 + granter[idx]
        for k in np.unique(keys).tolist():
            rows = idx[keys == k]
            m, g = k // 0x10000, k % 0x10000
            label = (f"{R._dom(m)} maps {R._dom(g)}'s grants" if m >= 0 else f"unknown mapper maps {R._dom(g)}'s "
                     "grants")
            ts = np.asarray(s["tsc"], np.uint64)[rows]
            vals = np.asarray(s["outstanding"], np.int64)[rows]
            start = int(vals[0]) - int(np.asarray(s["delta"])[rows[0]])
            out.append((label, dashed, ts, vals, start, rows.size, int(k)))
    out.sort(key=lambda x: (x[1], -x[5]))
    return out


def _step_path(xs: np.ndarray, ys: np.ndarray, x0: float, y0: float, x1: float) -> str:
    """An SVG path of a step line (value ``ys[i]`` from ``xs[i]`` on), starting at (x0, y0) and ending at x1;
    points in the same pixel column are reduced to their first, lowest, highest and last value, so the path is at
    most four points a column whatever the number of records."""
    if not xs.size:
        return f"M{x0:.1f},{y0:.1f}H{x1:.1f}"
    col = np.floor(xs).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    ends = np.r_[starts[1:], col.size] - 1
    lo = np.minimum.reduceat(ys, starts)
    hi = np.maximum.reduceat(ys, starts)
    first, last = ys[starts], ys[ends]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for c, f, l_, h, z in zip(xs[starts].tolist(), first.tolist(), lo.tolist(), hi.tolist(), last.tolist()):
        parts.append(f"H{c:.1f}V{f:.1f}")
        if l_ != h:
            parts.append(f"V{l_:.1f}V{h:.1f}")
        parts.append(f"V{z:.1f}")
    parts.append(f"H{x1:.1f}")
    return "".join(parts)


def _chart(a, tb: TimeBase, d: int, placed: dict) -> tuple[str, str]:
    t0, t1 = tb.t0, tb.t1
    w = W - LEFT - RIGHT

    def x(t) -> float:
        return LEFT + w * (min(max(int(t), t0), t1) - t0) / (t1 - t0)

    def xs_of(ts: np.ndarray) -> np.ndarray:
        tt = np.clip(ts.astype(np.float64), t0, t1)
        return LEFT + w * (tt - t0) / (t1 - t0)

    series = _series_for(a, d)
    grants_h = GRANTS_H if series else 34  # an empty lane only says so
    bs = a.balloon_series or {}
    bmask = (np.asarray(bs.get("domid", np.empty(0)), np.int64) == d) if bs else np.zeros(0, bool)
    has_balloon = bool(bmask.any())
    ev_top = TOP
    gr_top = ev_top + EVENTS_H + GAP
    bl_top = gr_top + grants_h + GAP
    bottom = (bl_top + BALLOON_H) if has_balloon else (gr_top + grants_h)
    height = bottom + AXIS_H
    p = [f'<svg class="timeline" viewBox="0 0 {W} {height}" preserveAspectRatio="xMinYMin meet" role="img" '
         f'aria-label="timeline of {esc(R._dom(d))}" xmlns="http://www.w3.org/2000/svg" '
         f'font-family="system-ui,sans-serif" font-size="11">']
    # epochs
    bts = [b for b in a.boundaries if b.domid == d]
    edges = [t0] + [b.tsc for b in bts] + [t1]
    for e in range(len(edges) - 1):
        xa, xb = x(edges[e]), x(edges[e + 1])
        p.append(f'<rect x="{xa:.1f}" y="{ev_top}" width="{max(xb - xa, 0):.1f}" height="{bottom - ev_top}" '
                 f'fill="{"#f4f4f4" if e % 2 == 0 else "#e8eef8"}"><title>epoch {e}</title></rect>')
        if xb - xa > 44:
            p.append(f'<text x="{xa + 3:.1f}" y="{TOP - 5}" fill="#555">epoch {e}</text>')
    # teardown windows and lost intervals, over every lane
    for b in bts:
        start = b.evidence.get("shutdown_tsc", b.evidence.get("removed_tsc"))
        if start is not None:
            xa, xb = x(start), x(b.tsc)
            p.append(f'<rect x="{xa:.1f}" y="{ev_top}" width="{max(xb - xa, 1.5):.1f}" height="{bottom - ev_top}" '
                     f'fill="url(#p-tear)" opacity=".85"><title>teardown of {esc(R._dom(d))} epoch {b.epoch}: '
                     f'{"shutdown" if "shutdown_tsc" in b.evidence else "destroyed"} at {esc(tb.fmt(start))} (tsc '
                     f"{start}), {esc(b.kind)} resume at {esc(tb.fmt(b.tsc))} (tsc {b.tsc})</title></rect>")
    bad = a.lost_info["malformed"] if a.lost_info is not None else [False] * a.lost.shape[0]
    for i in range(a.lost.shape[0]):
        c, f_, t_, n = (int(v) for v in a.lost[i, :4])
        xa, xb = x(f_), x(t_)
        what = "an unknown number of records (malformed LOST_RECORDS)" if bad[i] else f"{n} record(s)"
        p.append(f'<rect x="{xa:.1f}" y="{ev_top}" width="{max(xb - xa, 2):.1f}" height="{bottom - ev_top}" '
                 f'fill="url(#p-lost)"><title>pCPU {c} lost {what} between {esc(tb.fmt(f_))} and '
                 f"{esc(tb.fmt(t_))}: counts and verdicts after it are uncertain</title></rect>")
    # time grid and axis
    for t, label in tb.ticks():
        xt = x(t)
        p.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{ev_top}" y2="{bottom}" stroke="#000" '
                 'stroke-opacity=".08"/>')
        p.append(f'<text x="{xt:.1f}" y="{bottom + 15}" text-anchor="{"start" if xt < LEFT + 2 else "middle"}" '
                 f'fill="#333">{esc(label)}</text>')
    # lane labels
    p.append(f'<text x="4" y="{ev_top + EVENTS_H / 2 + 4:.0f}" fill="#333">events</text>')
    p.append(f'<text x="4" y="{gr_top + grants_h / 2 + 4:.0f}" fill="#333">grants</text>')
    # grant series
    drawn = series[:SERIES_SHOWN]
    key = []
    if drawn:
        lo = min(0, min(min(int(v.min()), st) for _l, _d, _t, v, st, _n, _k in drawn))
        hi = max(1, max(max(int(v.max()), st) for _l, _d, _t, v, st, _n, _k in drawn))

        def y(v):
            return gr_top + grants_h - grants_h * (v - lo) / (hi - lo)

        for val in sorted({lo, 0, hi}):
            p.append(f'<text x="{LEFT - 6}" y="{y(val) + 4:.1f}" text-anchor="end" fill="#555">{val}</text>')
            p.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(val):.1f}" y2="{y(val):.1f}" stroke="#000" '
                     'stroke-opacity=".1"/>')
        colours = _pair_colours(a)
        for label, dashed, ts, vals, start, n, pair in drawn:
            colour = colours.get(pair, SERIES_COLOURS[0])
            ys = gr_top + grants_h - grants_h * (vals.astype(np.float64) - lo) / (hi - lo)
            path = _step_path(xs_of(ts), ys, x(t0), y(start), x(t1))
            dash = ' stroke-dasharray="6 3"' if dashed else ""
            p.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}>'
                     f"<title>{esc(label)}: {n} record(s), {int(vals[-1])} outstanding at the end</title></path>")
            key.append(f'<span><span class="sw {"dash" if dashed else "line"}" style="border-color:{colour}"></span>'
                       f"{esc(label)} ({n} records; {int(vals[-1])} at the end)</span>")
        if len(series) > SERIES_SHOWN:
            key.append(f'<span class="muted">{len(series) - SERIES_SHOWN} quieter pair(s) not drawn: see the grants '
                       "table</span>")
    else:
        p.append(f'<text x="{LEFT + 8}" y="{gr_top + grants_h / 2 + 4:.1f}" fill="#777">no grant map/unmap record '
                 f"involves {esc(R._dom(d))}</text>")
    # balloon: pages ballooned out so far in each epoch
    if has_balloon:
        bt = np.asarray(bs["tsc"], np.uint64)[bmask]
        be = np.asarray(bs["epoch"], np.int64)[bmask]
        bp = np.asarray(bs["pages"], np.int64)[bmask]
        cum = np.zeros(bp.size, np.int64)
        for e in np.unique(be).tolist():
            m = be == e
            cum[m] = np.cumsum(bp[m])
        top_v = max(int(cum.max()), 1)

        def yb(v):
            return bl_top + BALLOON_H - BALLOON_H * v / top_v

        # the count restarts at each boundary (a new kernel): a zero there, before the records at that TSC
        pts = sorted([(int(t), 1, v) for t, v in zip(bt.tolist(), cum.tolist())] + [(b.tsc, 0, 0) for b in bts])
        path = _step_path(xs_of(np.asarray([q[0] for q in pts], np.uint64)),
                          np.asarray([yb(q[2]) for q in pts], np.float64), x(t0), yb(0), x(t1))
        p.append(f'<text x="4" y="{bl_top + BALLOON_H / 2 + 4:.0f}" fill="#333">balloon</text>')
        p.append(f'<text x="{LEFT - 6}" y="{bl_top + 4}" text-anchor="end" fill="#555">{top_v:,}</text>')
        p.append(f'<text x="{LEFT - 6}" y="{bl_top + BALLOON_H + 4}" text-anchor="end" fill="#555">0</text>')
        key.append(f'<span><span class="sw line" style="border-color:#7b1fa2"></span>pages of {esc(R._dom(d))} '
                   f"ballooned out in the epoch (up to {top_v:,}; {int(bp.size):,} DECREASE_RESERVATION records)</span>")
        p.append(f'<path d="{path}" fill="none" stroke="#7b1fa2" stroke-width="1.6"><title>pages of '
                 f"{esc(R._dom(d))} ballooned out (DECREASE_RESERVATION) so far in the epoch: up to {top_v:,}"
                 "</title></path>")
    # boundaries over everything
    for b in bts:
        xb = x(b.tsc)
        p.append(f'<line x1="{xb:.1f}" x2="{xb:.1f}" y1="{ev_top - 2}" y2="{bottom}" stroke="#000" '
                 f'stroke-dasharray="4 3"><title>{esc(b.kind)} boundary of {esc(R._dom(d))} at {esc(tb.fmt(b.tsc))} '
                 f"(tsc {b.tsc}): epoch {b.epoch} ends</title></line>")
    # markers: first unsafe operations and findings, stacked when they share a moment
    marks = []
    for s in a.safety:
        if s["domid"] != d:
            continue
        still_open = s["end_tsc"] is None
        for kind, t in list((s.get("unsafe") or {}).items()) + list((s.get("possibly_unsafe") or {}).items()):
            possibly = kind in (s.get("possibly_unsafe") or {}) and kind not in (s.get("unsafe") or {})
            title = (f"epoch {s['epoch']}: {'possibly ' if possibly else 'first '}{kind} "
                     f"({R.KIND_WORDS[kind]}) at {tb.fmt(t)} (tsc {t})"
                     + ("; open at the end of the capture, no kexec yet" if still_open else ""))
            marks.append((x(t), "kind", kind, still_open or possibly, title, None))
    for f in a.findings:
        if f.domid == d and f.tsc is not None:
            anchor = f"tl-{f.fingerprint}"
            if anchor in placed.values():
                anchor = f"{anchor}-{len(placed)}"
            placed[id(f)] = anchor
            marks.append((x(f.tsc), "finding", f.severity, False,
                          f"{f.rule} ({f.severity}) at {tb.fmt(f.tsc)}: {f.message}", anchor))
    marks.sort(key=lambda m: (m[0], m[1] != "finding"))
    last_x: list[float] = []
    for mx, what, which, hollow, title, anchor in marks:
        row = next((r for r, lx in enumerate(last_x) if mx - lx >= MARK_DX), None)
        if row is None:
            row = len(last_x)
            last_x.append(mx)
        else:
            last_x[row] = mx
        my = ev_top + 7 + (row % 4) * 9
        if what == "kind":
            colour = KIND_COLOURS.get(which, "#000")
            fill = f'fill="#fff" stroke="{colour}" stroke-width="2"' if hollow else f'fill="{colour}"'
            p.append(f'<circle cx="{mx:.1f}" cy="{my}" r="4" {fill}><title>{esc(title)}</title></circle>')
        else:
            colour = SEVERITY_COLOURS.get(which, "#000")
            p.append(f'<g id="{esc(anchor)}"><path d="M{mx:.1f} {my - 5} l5 5 l-5 5 l-5 -5 Z" fill="{colour}" '
                     f'stroke="#fff" stroke-width=".8"><title>{esc(title)}</title></path></g>')
    p.append("</svg>")
    key_html = '<div class="key">' + "".join(key) + "</div>" if key else ""
    return "".join(p), key_html
