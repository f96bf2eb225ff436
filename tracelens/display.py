"""Notebook display of tracelens objects: ``_repr_html_`` bodies for captures, dumps, reports and findings.

Self-contained HTML (inline styles, no scripts, no network); every capture- or dump-derived string is escaped.
Imported only when a notebook asks for a display (it imports polars).
"""

from __future__ import annotations

import polars as pl

from tracelens.escape import html as escape

_SEV_COLOUR = {"error": "#c62828", "warning": "#e65100", "note": "#1565c0", "info": "#1565c0"}
_TABLE = 'style="border-collapse:collapse;font-size:12px"'
_CELL = 'style="border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top"'


def _kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th {_CELL}>{escape(str(k))}</th><td {_CELL}>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table {_TABLE}>{body}</table>"


def frame_html(df: pl.DataFrame, *, max_rows: int = 50, cell_style=None) -> str:
    """A plain escaped HTML table of a polars frame (the first ``max_rows`` rows)."""
    head = "".join(f"<th {_CELL}>{escape(c)}</th>" for c in df.columns)
    rows = []
    for r in df.head(max_rows).iter_rows(named=True):
        cells = []
        for c, v in r.items():
            extra = cell_style(c, v) if cell_style else ""
            cells.append(f'<td {_CELL[:-1]};{extra}">{escape("" if v is None else str(v))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>... {df.height - max_rows} more rows</p>" if df.height > max_rows else ""
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _severity_style(col, value) -> str:
    if col == "severity" and value in _SEV_COLOUR:
        return f"color:{_SEV_COLOUR[value]};font-weight:bold"
    if col == "verdict":
        return {"unsafe": "color:#c62828;font-weight:bold", "inconclusive": "color:#e65100",
                "safe": "color:#2e7d32"}.get(value, "")
    return ""


class FindingsFrame(pl.DataFrame):
    """The findings table: a polars DataFrame (every polars operation works on it) whose notebook display
    colours severities and hides the JSON evidence; ``frame`` is the plain DataFrame."""

    @classmethod
    def wrap(cls, df: pl.DataFrame) -> FindingsFrame:
        return cls._from_pydf(df._df)

    @property
    def frame(self) -> pl.DataFrame:
        return pl.DataFrame._from_pydf(self._df)

    def __repr__(self) -> str:
        if self.height == 0:
            return "findings: none"
        lines = [f"findings: {self.height}"]
        for r in self.iter_rows(named=True):
            where = f"d{r['domid']} epoch {r['epoch']}" if r.get("domid") is not None else "capture"
            lines.append(f"  {r['rule']} {r['severity']:7s} {where} {r['object']}: {r['message']}")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self, **kwargs) -> str:
        if self.height == 0:
            return "<p><b>findings</b>: none</p>"
        cols = [c for c in ("rule", "severity", "domid", "epoch", "object", "tsc", "message") if c in self.columns]
        return (f"<p><b>findings</b>: {self.height}</p>"
                + frame_html(self.frame.select(cols), cell_style=_severity_style))


def capture_html(cap) -> str:
    from tracelens.analysis.records import dom_name

    info = cap.info()
    span = "-"
    if info.get("tsc_first") is not None:
        span = f"{info['tsc_first']:,} .. {info['tsc_last']:,} ({info['tsc_last'] - info['tsc_first']:,} cycles)"
    lost = info["lost_records"]
    rows = [("format", "xentrace"), ("size", f"{info['size_bytes']:,} bytes"),
            ("pCPUs", ", ".join(map(str, info["pcpus"]))), ("windows", f"{info['windows']:,}"),
            ("records", f"{info['records']:,}"), ("lost records", f"{lost['lost']:,} in {lost['records']} markers"),
            ("TSC span", span), ("Xen layout", info["xen_layout"]["label"])]
    per_class = sorted(info["records_per_class"].items(), key=lambda kv: -kv[1])
    per_dom = sorted(info["records_per_domain"].items(), key=lambda kv: -kv[1])
    return (f"<div><b>tracelens capture</b> <code>{escape(cap.path)}</code>" + _kv_table(rows)
            + "<p>records per class</p>" + _kv_table([(k, f"{v:,}") for k, v in per_class])
            + "<p>records per domain (the vCPU running when written)</p>"
            + _kv_table([(dom_name(k), f"{v:,}") for k, v in per_dom]) + "</div>")


def dump_html(dump) -> str:
    info = dict(dump.info())
    pages = info.pop("pages", {}) or {}
    keys = ("format", "container", "complete", "compression", "header_version", "page_size", "osrelease",
            "phys_base_hex", "kaslr_offset", "cpus", "crashtime", "vmcoreinfo_source", "file_size")
    rows = [(k.replace("_hex", ""), info[k]) for k in keys if info.get(k) is not None]
    rows += [(f"pages {s}", f"{n:,}") for s, n in pages.items()]
    return f"<div><b>tracelens dump</b> <code>{escape(dump.path)}</code>{_kv_table(rows)}</div>"


def report_html(rep) -> str:
    from tracelens.analysis.report import verdict_summary

    cap = rep.capture_info
    v = verdict_summary(rep.analysis)
    colour = {"unsafe": "#c62828", "inconclusive": "#e65100", "safe": "#2e7d32"}.get(v["css"], "#455a64")
    parts = [f"<div><b>tracelens analysis</b> <code>{escape(str(rep.path))}</code>",
             f'<p style="border-left:5px solid {colour};padding-left:6px;font-weight:bold">{escape(v["headline"])}</p>',
             _kv_table([("records", f"{cap['records']:,}"), ("lost records", f"{cap['lost_records']:,}"),
                        ("TSC span", f"{cap['first_tsc']:,} .. {cap['last_tsc']:,}"), ("layout", cap["layout"])]),
             rep.findings._repr_html_()]
    b = rep.boundaries
    parts.append(f"<p><b>boundaries</b>: {b.height}</p>")
    if b.height:
        parts.append(frame_html(b.select("domid", "epoch", "kind", "tsc")))
    s = rep.safety
    parts.append("<p><b>kexec safety</b> (per guest domain and epoch)</p>")
    if s.height:
        parts.append(frame_html(s.select("domid", "epoch", "start_tsc", "end_tsc", "boundary_kind", "verdict",
                                         "first_unsafe_kind", "outstanding_grants"), cell_style=_severity_style))
    else:
        parts.append("<p>no guest domains</p>")
    parts.append("<p>Frames: <code>.boundaries .grants .grant_mappers .balloon .hypercalls .irq_vectors .safety "
                 ".findings .grant_series</code>; plots: <code>tracelens.plots.timeline(report)</code> and "
                 "friends.</p></div>")
    return "".join(parts)
