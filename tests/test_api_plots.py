"""tracelens.plots: offline plots (PNG, inline in HTML), drawn from the report and the lazy records."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("matplotlib", reason="matplotlib, the plot extra, is not installed "
                                  "(pip install 'tracelens[plot]')")

import tracelens  # noqa: E402
from tracelens import plots  # noqa: E402
from tracelens.errors import UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PG = ROOT / "sample-traces" / "persistent-grants.xentrace"
FM = ROOT / "sample-traces" / "foreign-map.xentrace"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cap():
    return tracelens.open(PG)


def _check_offline(p: plots.Plot) -> None:
    assert p._repr_png_().startswith(PNG)
    html = p._repr_html_()
    assert html.startswith('<img src="data:image/png;base64,')
    assert base64.b64decode(html.split(",", 1)[1].split('"', 1)[0]) == p.png()
    assert "http" not in html and "<script" not in html


def test_timeline_draws_the_readme_scenario(cap):
    p = plots.timeline(cap.analyze())
    _check_offline(p)
    (ax,) = p.figure.axes
    # README: dom0 maps 16 of d1's grants, 6 are still mapped at the boundary, 4 at the end
    (step,) = [ln for ln in ax.lines if ln.get_label() == "d0 maps d1's grants"]
    ys = step.get_ydata()
    assert max(ys) == 16 and ys[-1] == 4
    a = cap.analyze().analysis
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]  # the boundary, in cycles from the start
    assert [ln.get_xdata()[0] for ln in dashed] == [(12807307 - a.first_tsc) / 1e6]  # Mcyc
    assert ax.get_xlabel().startswith("TSC cycles from capture start (Mcyc; first TSC 10,002,053")
    assert p.figure._suptitle.get_text() == "kexec timeline: persistent-grants.xentrace"  # no directory


def test_timeline_in_seconds_from_the_start(cap):
    a = cap.analyze().analysis
    p = plots.timeline(cap.analyze(), cpu_hz=2.4e9)
    (ax,) = p.figure.axes
    assert ax.get_xlabel().startswith("time from capture start (ms")
    (line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert line.get_xdata()[0] == pytest.approx((12807307 - a.first_tsc) / 2.4e9 * 1e3)
    p.png()
    assert ax.xaxis.get_offset_text().get_text() == ""  # no 1e7 offset


def test_timeline_charts_every_pair_and_the_mapper():
    """foreign-map: d1's grants are mapped by d0 and by d2: two lines, not their sum; d2's own chart shows what it
    mapped (dashed), with its scale."""
    p = plots.timeline(tracelens.open(FM).analyze())
    ax1, ax2 = p.figure.axes
    labels1 = {ln.get_label(): ln for ln in ax1.lines}
    assert max(labels1["d2 maps d1's grants"].get_ydata()) == 5 and max(labels1["d0 maps d1's grants"].get_ydata()) == 2
    (mapped,) = [ln for ln in ax2.lines if ln.get_label() == "d2 maps d1's grants"]
    assert mapped.get_linestyle() == "--" and ax2.get_ylim()[1] > 5


def test_timeline_balloon_and_losses():
    p = plots.timeline(tracelens.open(ROOT / "sample-traces" / "balloon-before-kexec.xentrace").analyze())
    ax, pages = p.figure.axes
    (line,) = pages.lines
    assert max(line.get_ydata()) == 518 and line.get_ydata()[-1] == 0  # back to 0 after the boundary
    p = plots.timeline(tracelens.open(ROOT / "sample-traces" / "lost-across-boundary.xentrace").analyze())
    (ax,) = p.figure.axes
    assert "records lost (any pCPU)" in ax.get_legend_handles_labels()[1]


def test_timeline_has_one_row_per_guest():
    p = plots.timeline(tracelens.open(FM).analyze())
    assert [ax.get_ylabel() for ax in p.figure.axes] == ["d1", "d2"]  # README: guests d1 and d2


def test_outstanding_grants(cap):
    p = plots.outstanding_grants(cap.analyze(), cpu_hz=1e9)
    _check_offline(p)
    assert p.figure.axes[0].get_xlabel().startswith("time from capture start (ms")


def test_events_and_pcpu_read_only_the_columns_they_need(cap):
    for fn, cols in ((plots.events_per_class, ["event", "tsc"]), (plots.pcpu_activity, ["cpu", "tsc"])):
        p = fn(cap)
        _check_offline(p)
        assert sorted(cap.scans[-1].columns) == cols


def test_pcpu_rows(cap):
    p = plots.pcpu_activity(cap)
    labels = [t.get_text() for t in p.figure.axes[0].get_yticklabels()]
    assert labels == ["pCPU 0", "pCPU 1"]  # README: 2 pCPUs


def test_findings_overview():
    df = pl.DataFrame({"capture": ["a", "a", "b"], "rule": ["R1", "R2", "R1"]})
    p = plots.findings_overview(df)
    _check_offline(p)
    bars = p.figure.axes[0].patches
    assert sorted(b.get_width() for b in bars) == [0, 1, 1, 1]
    p.png()
    ticks = [t for t in p.figure.axes[0].get_xticks() if 0 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)  # counts: no 0.5 ticks
    legend = p.figure.axes[0].get_legend()
    bbox = legend.get_window_extent()
    assert all(bbox.x0 >= b.get_window_extent().x1 - 1 for b in bars)  # the key is beside the bars
    with pytest.raises(UsageError):
        plots.findings_overview(pl.DataFrame({"x": [1]}))


def test_missing_matplotlib_is_a_usage_error(cap, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError, match="tracelens\\[plot\\]"):
        plots.pcpu_activity(cap)


def test_matplotlib_is_imported_only_by_plots():
    code = "import sys, tracelens.capture, tracelens.dump, tracelens.report, tracelens.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
