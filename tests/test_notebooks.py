"""The notebooks in notebooks/: committed without outputs, and executing cleanly, offline, against the shipped
samples, with their plots as images (image/png, and <img> data URIs in text/html: no script, no CDN)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: plots each notebook must show (minimum number of image/png outputs)
MIN_IMAGES = {"01-persistent-grant-leak.ipynb": 4, "02-trace-and-dump.ipynb": 1, "03-many-captures.ipynb": 2}
PNG = b"\x89PNG\r\n\x1a\n"
#: strings longer than polars' default of 30 characters that a notebook must show whole
WHOLE = {"02-trace-and-dump.ipynb": ["Kernel panic - not syncing: no interrupt for the disk controller (gsi 29)"],
         "03-many-captures.ipynb": ["not a xentrace capture"]}


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == sorted(MIN_IMAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for c in code:
        assert c.get("outputs") == [] and c.get("execution_count") is None, "".join(c["source"])[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_need_only_the_library_and_the_samples(path):
    """A user's notebook has tracelens and sample-traces/, not the test suite: no import path into tests/."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "sys.path" not in code and '"tests"' not in code and "tests/" not in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_offline(path, monkeypatch):
    why = "the notebook extra is not installed (pip install 'tracelens[notebook]')"
    pytest.importorskip("ipykernel", reason=why)
    pytest.importorskip("matplotlib", reason=why)
    nbformat = pytest.importorskip("nbformat", reason=why)
    nbclient = pytest.importorskip("nbclient", reason=why)
    monkeypatch.delenv("TRACELENS_DUMP", raising=False)  # notebook 2 builds its own dump
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(path, as_version=4)
    # the kernel runs in the repository root: a setuptools editable install (package-dir maps tracelens.parsers
    # outside tracelens/) is seen as a namespace package from other directories (see the notebooks' doc)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    images = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            assert out.output_type != "error", f"{out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream":
                assert out.name == "stdout", out.text  # nothing on stderr: no warnings
            data = out.get("data", {})
            if "image/png" in data:
                assert base64.b64decode(data["image/png"]).startswith(PNG)
                images += 1
                assert data["text/html"].startswith('<img src="data:image/png;base64,')
            html = data.get("text/html", "")
            assert "<script" not in html and "://" not in html
    assert images >= MIN_IMAGES[path.name]
    # polars shows whole strings (the notebooks set its string width): no cell of a shown table is cut with "…"
    shown = [out.get("data", {}).get("text/html", "") for cell in nb.cells if cell.cell_type == "code"
             for out in cell.outputs]
    for html in shown:
        if "<table" in html:
            assert not re.search(r"<td>[^<]*…</td>", html), re.search(r"<td>[^<]*…</td>", html).group()
    for whole in WHOLE.get(path.name, ()):
        assert any(whole in html for html in shown), whole
