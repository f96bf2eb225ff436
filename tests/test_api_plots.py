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
    (step,) = [ln for ln in ax.lines if ln.get_label() == "grants of d1 mapped by others"]
    ys = step.get_ydata()
    assert max(ys) == 16 and ys[-1] == 4
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert [ln.get_xdata()[0] for ln in dashed] == [12807307]


def test_timeline_has_one_row_per_guest():
    p = plots.timeline(tracelens.open(FM).analyze())
    assert [ax.get_ylabel() for ax in p.figure.axes] == ["d1", "d2"]  # README: guests d1 and d2


def test_outstanding_grants(cap):
    p = plots.outstanding_grants(cap.analyze(), cpu_hz=1e9)
    _check_offline(p)
    assert p.figure.axes[0].get_xlabel().startswith("time (ms")


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
    with pytest.raises(UsageError):
        plots.findings_overview(pl.DataFrame({"x": [1]}))


def test_missing_matplotlib_is_a_usage_error(cap, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError, match="tracelens\\[plot\\]"):
        plots.pcpu_activity(cap)


def test_matplotlib_is_imported_only_by_plots():
    code = "import sys, tracelens.api, tracelens.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
