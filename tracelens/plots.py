"""Plots for notebooks that render offline: matplotlib figures shown as PNG (``image/png`` and an ``<img>`` with a
base64 data URI in ``text/html``), never a script or a CDN.

matplotlib is an optional extra (``pip install 'tracelens[plot]'``), imported when a plot is made. Each function
returns a :class:`Plot` (``.figure`` is the matplotlib Figure; ``.png()``, ``.to_html()``, ``.save(path)``).
The x axis starts at the capture's first TSC: seconds (or ms, µs) from it when ``cpu_hz`` is given (the report's
``--cpu-hz``), else TSC cycles from it, with the first TSC in the label (tracelens.timebase); never an offset
exponent. Titles name the capture's file, not its whole path.

* :func:`timeline` -- per guest domain: epochs, kexec boundaries and their teardown windows, lost-record intervals,
  first unsafe operation of each kind, one step line per (mapper, granter) pair the domain is in (its grants mapped
  by others; dashed, others' grants it mapped) and the pages it ballooned out;
* :func:`outstanding_grants` -- outstanding grant mappings of each (mapper, granter) pair over time;
* :func:`events_per_class` -- records per event class over time (stacked);
* :func:`pcpu_activity` -- records per pCPU over time (a heat map);
* :func:`findings_overview` -- findings per capture and rule, for many captures.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

from tracelens.errors import UsageError

UNSAFE_COLOURS = {"balloon": "#7b1fa2", "foreign_map": "#c62828", "grant_outstanding": "#e65100",
                  "grant_ref_active": "#ad1457", "pirq_bound": "#4527a0"}


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'tracelens[plot]' (or pip install matplotlib)") from None
    # a bare Figure, not pyplot: nothing global, no GUI backend, and no second copy displayed by the inline backend
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


class Plot:
    """A rendered plot. Notebooks show it as a PNG image; ``figure`` is the matplotlib Figure."""

    def __init__(self, figure, title: str = ""):
        self.figure = figure
        self.title = title
        self._png: bytes | None = None

    def png(self) -> bytes:
        if self._png is None:
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png")
            self._png = buf.getvalue()
        return self._png

    def svg(self) -> str:
        buf = io.StringIO()
        self.figure.savefig(buf, format="svg")
        return buf.getvalue()

    def to_html(self) -> str:
        """An ``<img>`` with the PNG inline (base64): works offline and in exported HTML."""
        data = base64.b64encode(self.png()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{escape(self.title)}"/>'

    def save(self, path) -> None:
        self.figure.savefig(path)

    def _repr_png_(self) -> bytes:
        return self.png()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"<tracelens.plots.Plot {self.title!r}>"


def _xscale(cpu_hz, t0: int = 0, t1: int = 1):
    """(function of a TSC, axis label) of the time base from ``t0`` (tracelens.timebase)."""
    from tracelens.timebase import TimeBase

    tb = TimeBase(int(t0), max(int(t1), int(t0) + 1), cpu_hz)
    scale, _name = tb.unit()
    return (lambda t: tb.offset(t) / scale), tb.axis_label()


def _plain_axis(ax) -> None:
    """No offset or exponent on the x axis: the values are already from the capture's start."""
    from matplotlib.ticker import ScalarFormatter

    f = ScalarFormatter(useOffset=False)
    f.set_scientific(False)
    ax.xaxis.set_major_formatter(f)


def _name(path) -> str:
    import os

    return os.path.basename(str(path)) if path else "capture"


def _report_of(obj, config=None):
    from tracelens.capture import Capture
    from tracelens.report import Report

    if isinstance(obj, Report):
        return obj
    if isinstance(obj, Capture):
        return obj.analyze(config)
    raise UsageError(f"expected a tracelens Report or Capture, not {type(obj).__name__}")


def timeline(report, domid: int | None = None, *, cpu_hz: float | None = None) -> Plot:
    """Per guest domain (or only ``domid``): epochs as bands, kexec boundaries as dashed lines and their teardown
    (shutdown to resume) hatched, lost-record intervals shaded red, the first unsafe operation of each kind as dots
    (hollow when the epoch is still open at the end), one step line per (mapper, granter) pair (solid: the domain's
    grants mapped by another; dashed: another's grants it mapped) and, on a second axis, the pages it ballooned out
    in each epoch. ``cpu_hz``: seconds from the capture's start (default: the analysis' own ``cpu_hz``)."""
    import numpy as np

    rep = _report_of(report)
    a = rep.analysis
    safety = rep.safety
    doms = sorted(set(safety["domid"].to_list()))
    if domid is not None:
        doms = [domid]
    if not doms:
        raise UsageError("the capture has no guest domain to draw a timeline for")
    cpu_hz = cpu_hz if cpu_hz is not None else getattr(a, "cpu_hz", None)
    t0, t1 = a.first_tsc, max(a.last_tsc, a.first_tsc + 1)
    fx, xlabel = _xscale(cpu_hz, t0, t1)
    fig = _figure(9.5, 0.9 + 2.0 * len(doms))
    axes = fig.subplots(len(doms), 1, sharex=True, squeeze=False)[:, 0]
    s = a.grants.series
    mapper = np.asarray(s.get("mapper", []), np.int64)
    granter = np.asarray(s.get("granter", []), np.int64)
    keys = mapper * 0x10000 + granter
    uniq, counts = np.unique(keys, return_counts=True) if keys.size else (np.empty(0, np.int64), [])
    colour = {int(k): f"C{i % 10}" for i, k in enumerate(uniq[np.argsort(-np.asarray(counts), kind="stable")])}
    bad = a.lost_info["malformed"] if a.lost_info is not None else [False] * a.lost.shape[0]
    for ax, d in zip(axes, doms):
        bts = [b for b in a.boundaries if b.domid == d]
        edges = [t0] + [b.tsc for b in bts] + [t1]
        for e in range(len(edges) - 1):
            ax.axvspan(fx(edges[e]), fx(edges[e + 1]), color="#f3f3f3" if e % 2 == 0 else "#e6eefa", zorder=0)
            ax.text(fx(edges[e]), 1.0, f" epoch {e}", transform=ax.get_xaxis_transform(), va="top", fontsize=8,
                    color="#555")
        for b in bts:
            start = b.evidence.get("shutdown_tsc", b.evidence.get("removed_tsc"))
            if start is not None:
                ax.axvspan(fx(start), fx(b.tsc), facecolor="none", edgecolor="#90a4ae", hatch="///", linewidth=0,
                           zorder=1, label="teardown (shutdown to resume)" if b is bts[0] else None)
            ax.axvline(fx(b.tsc), color="black", linestyle="--", linewidth=1, label=None)
            ax.text(fx(b.tsc), 0.02, f" {b.kind}", transform=ax.get_xaxis_transform(), fontsize=8, rotation=90,
                    va="bottom")
        for i in range(a.lost.shape[0]):
            c, f_, t_, n = (int(x) for x in a.lost[i, :4])
            ax.axvspan(fx(f_), fx(t_), color="#e57373", alpha=0.25, zorder=1,
                       label=("records lost (any pCPU)" if i == 0 else None))
        top = 1
        for dashed, sel in ((False, granter == d), (True, (mapper == d) & (granter != d))):
            for k in np.unique(keys[sel]).tolist() if sel.any() else []:
                rows = np.flatnonzero(keys == k)
                m, g = k // 0x10000, k % 0x10000
                vals = np.asarray(s["outstanding"], np.int64)[rows]
                start_v = int(vals[0]) - int(np.asarray(s["delta"])[rows[0]])
                xs = np.concatenate([[fx(t0)], [fx(t) for t in np.asarray(s["tsc"])[rows].tolist()], [fx(t1)]])
                ys = np.concatenate([[start_v], vals, [vals[-1]]])
                who = "unknown mapper" if m < 0 else _dom(m)
                ax.step(xs, ys, where="post", color=colour.get(k, "C0"), linewidth=1.5,
                        linestyle="--" if dashed else "-", label=f"{who} maps {_dom(g)}'s grants")
                top = max(top, int(ys.max()))
        seen = set()
        for row in safety.filter(safety["domid"] == d).iter_rows(named=True):
            import json

            still_open = row["end_tsc"] is None
            marks = list(json.loads(row["unsafe"] or "{}").items())
            for j, (kind, t) in enumerate(sorted(marks, key=lambda kv: kv[1])):
                c = UNSAFE_COLOURS.get(kind, "black")
                ax.scatter([fx(t)], [top * (0.1 + 0.12 * j)], s=40, zorder=5, color=c if not still_open else "white",
                           edgecolors=c, linewidths=1.5, label=None if kind in seen else f"first {kind}")
                seen.add(kind)
        bs = a.balloon_series or {}
        bm = np.asarray(bs.get("domid", []), np.int64) == d
        if bm.any():
            ax2 = ax.twinx()
            bt = np.asarray(bs["tsc"])[bm]
            be = np.asarray(bs["epoch"])[bm]
            bp = np.asarray(bs["pages"])[bm]
            pts = sorted([(int(t), 1, 0) for t in bt.tolist()] + [(b.tsc, 0, 0) for b in bts])
            cum, xs_b, ys_b, ep_of = {}, [fx(t0)], [0], dict(zip(range(len(bt)), be.tolist()))
            i = 0
            for t, kind, _ in pts:
                if kind == 0:
                    xs_b.append(fx(t))
                    ys_b.append(0)
                    continue
                e = ep_of[i]
                cum[e] = cum.get(e, 0) + int(bp[i])
                i += 1
                xs_b.append(fx(t))
                ys_b.append(cum[e])
            xs_b.append(fx(t1))
            ys_b.append(ys_b[-1])
            ax2.step(xs_b, ys_b, where="post", color="#7b1fa2", linewidth=1.2, label="pages ballooned out (epoch)")
            ax2.set_ylim(0, max(ys_b) * 1.3 or 1)
            ax2.set_ylabel("pages", fontsize=8, color="#7b1fa2")
            ax2.tick_params(axis="y", labelsize=7, colors="#7b1fa2")
            h2, l2 = ax2.get_legend_handles_labels()
        else:
            h2, l2 = [], []
        ax.set_ylim(min(0, ax.get_ylim()[0]), top * 1.45)
        ax.set_ylabel(_dom(d))
        ax.set_xlim(fx(t0), fx(t1))
        h, lab = ax.get_legend_handles_labels()
        if h or h2:
            ax.legend(h + h2, lab + l2, loc="upper left", bbox_to_anchor=(1.1 if bm.any() else 1.0, 1.0),
                      fontsize=7, frameon=False)  # beside the plot (and the pages axis), never over the lines
        _plain_axis(ax)
    axes[-1].set_xlabel(xlabel, fontsize=8)
    fig.suptitle(f"kexec timeline: {_name(rep.path)}", fontsize=10)
    return Plot(fig, "timeline")


def _dom(d) -> str:
    from tracelens.analysis.records import dom_name

    return dom_name(d)


def outstanding_grants(report, *, cpu_hz: float | None = None) -> Plot:
    """Outstanding grant mappings of each (mapper, granter) pair after each MAP/UNMAP record, with the granter's
    kexec boundaries as dashed lines."""
    import numpy as np

    rep = _report_of(report)
    s = rep.grant_series
    a = rep.analysis
    cpu_hz = cpu_hz if cpu_hz is not None else getattr(a, "cpu_hz", None)
    fx, xlabel = _xscale(cpu_hz, a.first_tsc, a.last_tsc)
    fig = _figure(9, 3)
    ax = fig.subplots()
    if s.height == 0:
        ax.text(0.5, 0.5, "no grant map/unmap records", ha="center", transform=ax.transAxes)
    for (mapper, granter), g in s.group_by(["mapper", "granter"], maintain_order=True):
        ts = g["tsc"].to_numpy().astype(np.float64)
        ys = g["outstanding"].to_numpy()
        who = "unknown mapper" if mapper is None else _dom(mapper)
        ax.step([fx(x) for x in np.concatenate([ts, [a.last_tsc]])], np.concatenate([ys, [ys[-1]]]), where="post",
                label=f"{who} maps {_dom(granter)}'s grants")
    granters = set(s["granter"].to_list())
    for b in a.boundaries:
        if b.domid in granters:
            ax.axvline(fx(b.tsc), color="black", linestyle="--", linewidth=1)
            ax.text(fx(b.tsc), 0.98, f" {_dom(b.domid)} {b.kind}", transform=ax.get_xaxis_transform(), va="top",
                    fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("outstanding mappings")
    if s.height:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _plain_axis(ax)
    ax.set_title(f"outstanding grants: {_name(rep.path)}", fontsize=10)
    return Plot(fig, "outstanding grants")


def _records(source, columns):
    import polars as pl

    from tracelens.capture import Capture

    if isinstance(source, Capture):
        return source.records.select(columns).collect()
    if isinstance(source, pl.LazyFrame):
        return source.select(columns).collect()
    if isinstance(source, pl.DataFrame):
        return source.select(columns)
    return pl.from_arrow(source).select(columns)  # a pyarrow Table from read_xentrace


def _bins(tsc, bins: int):
    import numpy as np

    timed = tsc[tsc > 0]  # CPU_CHANGE markers before the first timed record inherit TSC 0
    lo, hi = (int(timed.min()), int(timed.max())) if timed.size else (0, 1)
    edges = np.linspace(lo, max(hi, lo + 1), bins + 1)
    return edges


def events_per_class(source, *, bins: int = 60, cpu_hz: float | None = None) -> Plot:
    """Records per event class (GEN, SCHED, DOM0OP, HVM, MEM, PV, HW, GUEST...) in ``bins`` TSC intervals, stacked.
    ``source``: a Capture, its ``records`` LazyFrame, a DataFrame or the decoder's pyarrow Table (needs ``tsc``
    and ``event``; only those two columns are decoded)."""
    import numpy as np

    from tracelens.parsers.xentrace.catalog import load_catalog

    df = _records(source, ["tsc", "event"])
    tsc = df["tsc"].to_numpy()
    ev = df["event"].to_numpy()
    cat = load_catalog()
    uniq, inv = np.unique(ev, return_inverse=True)
    names = np.array([cat.class_name(int(u)) for u in uniq])
    cls = names[inv.ravel()]
    edges = _bins(tsc, bins)
    fx, xlabel = _xscale(cpu_hz, edges[0], edges[-1])
    fig = _figure(9, 3.2)
    ax = fig.subplots()
    keep = tsc >= edges[0]
    order = sorted(set(cls.tolist()), key=lambda c: -(cls == c).sum())
    counts = [np.histogram(tsc[keep & (cls == c)], bins=edges)[0] for c in order]
    centres = [fx(x) for x in (edges[:-1] + edges[1:]) / 2]
    ax.stackplot(centres, counts, labels=order, step="mid")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(f"records per bin ({bins} bins)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _plain_axis(ax)
    ax.set_title("records per event class", fontsize=10)
    return Plot(fig, "events per class")


def pcpu_activity(source, *, bins: int = 80, cpu_hz: float | None = None) -> Plot:
    """Records written on each pCPU per TSC interval (a heat map: darker is busier)."""
    import numpy as np

    df = _records(source, ["tsc", "cpu"])
    tsc = df["tsc"].to_numpy()
    cpu = df["cpu"].to_numpy().astype(np.int64)
    edges = _bins(tsc, bins)
    cpus = np.unique(cpu)
    grid = np.stack([np.histogram(tsc[cpu == c], bins=edges)[0] for c in cpus]) if cpus.size else np.zeros((1, bins))
    fx, xlabel = _xscale(cpu_hz, edges[0], edges[-1])
    fig = _figure(9, 0.8 + 0.35 * max(len(cpus), 2))
    ax = fig.subplots()
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="Blues",
                   extent=(fx(edges[0]), fx(edges[-1]), len(cpus) - 0.5, -0.5))
    ax.set_yticks(range(len(cpus)), [f"pCPU {c}" for c in cpus])
    ax.set_xlabel(xlabel, fontsize=8)
    _plain_axis(ax)
    fig.colorbar(im, ax=ax, label="records")
    ax.set_title("activity per pCPU", fontsize=10)
    return Plot(fig, "pCPU activity")


def findings_overview(findings: Any, *, by: str = "capture") -> Plot:
    """Findings per ``by`` (a column: capture by default) and rule, as stacked horizontal bars. ``findings``: a
    polars frame with ``rule`` and ``by`` columns (e.g. ``tracelens.sql("SELECT * FROM findings", *paths)``)."""
    import numpy as np
    import polars as pl

    df = findings if isinstance(findings, pl.DataFrame) else pl.DataFrame(findings)
    for col in (by, "rule"):
        if col not in df.columns:
            raise UsageError(f"findings_overview needs a {col!r} column")
    keys = sorted(set(df[by].cast(pl.String).to_list()))
    rules = sorted(set(df["rule"].to_list()))
    fig = _figure(9, 1.0 + 0.4 * max(len(keys), 2))
    ax = fig.subplots()
    left = np.zeros(len(keys))
    for r in rules:
        sub = df.filter(pl.col("rule") == r)
        n = np.array([sub.filter(pl.col(by).cast(pl.String) == k).height for k in keys])
        ax.barh(keys, n, left=left, label=r)
        left += n
    if not rules:
        ax.text(0.5, 0.5, "no findings", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="rule",
                  title_fontsize=8)  # beside the bars, never over them
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole ticks only
    ax.set_xlabel("findings")
    ax.set_title(f"findings per {by} and rule", fontsize=10)
    return Plot(fig, "findings overview")
