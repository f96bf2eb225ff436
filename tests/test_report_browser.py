"""The HTML report as a reader sees it: rendered by headless Chromium at 1280x800, the verdict and the findings are
on the first screen, the timeline fits the page at any width, the links land on what they name.

Skips with a reason when no Chromium is installed (``apt-get install chromium``; scripts/setup.sh installs it as
root on Debian). Set ``TRACELENS_SCREENSHOTS=DIR`` (a directory outside the repository) to keep a PNG of every
first screen looked at."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chromium import Chromium, find_chromium

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "sample-traces").glob("*.xentrace"))
REAL = Path(os.environ.get("TRACELENS_SHARED", ROOT.parent / "shared")) / "samples" / "xentrace-real"
REAL_CAPTURES = sorted(REAL.glob("*.bin")) if REAL.is_dir() else []

#: what the page says about its own layout (evaluated in the page)
LAYOUT_JS = """JSON.stringify((() => {
  const box = el => { if (!el) return null; const b = el.getBoundingClientRect();
                      return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, width: b.width}; };
  const q = s => document.querySelector(s);
  const findings = q('#findings');
  const firstFinding = findings.querySelector('tbody tr') || findings.querySelector('h2');
  return {
    vw: innerWidth, vh: innerHeight,
    sections: [...document.querySelectorAll('body > section')].map(s => s.id),
    headline: box(q('#verdict .headline')), verdict: box(q('#verdict')), findingsHead: box(findings.querySelector('h2')),
    firstFinding: box(firstFinding), findingCount: findings.querySelectorAll('tbody tr').length,
    svgs: [...document.querySelectorAll('svg.timeline')].map(box),
    figures: [...document.querySelectorAll('#timeline figure')].map(box),
    ruleIds: [...document.querySelectorAll('#findings .rule-id')].map(e => e.getClientRects().length),
    links: [...document.querySelectorAll('#findings a[href^="#"], #verdict a[href^="#"]')]
             .map(a => [a.getAttribute('href'), !!document.getElementById(a.getAttribute('href').slice(1))]),
    scripts: document.scripts.length,
    external: [...document.querySelectorAll('[src],link[href]')].length,
  };
})())"""


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set TRACELENS_CHROMIUM): the rendered report "
                    "cannot be looked at")
    with Chromium(exe) as c:
        yield c


def _report(tmp_path, capture, *extra) -> Path:
    from tracelens.cli import main

    out = tmp_path / (Path(capture).stem + ".html")
    assert main(["analyze", str(capture), "-f", "html", "-o", str(out), *extra]) == 0
    return out


def _shoot(browser, name: str) -> None:
    keep = os.environ.get("TRACELENS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{name}.png").write_bytes(browser.screenshot())


def _first_screen(browser, page: Path, name: str) -> dict:
    browser.open(page.as_uri(), 1280, 800)
    lay = json.loads(browser.evaluate(LAYOUT_JS))
    _shoot(browser, name)
    assert (lay["vw"], lay["vh"]) == (1280, 800)
    assert lay["sections"][:3] == ["verdict", "findings", "timeline"], lay["sections"]
    assert lay["headline"]["bottom"] <= 800, "the verdict's headline is below the first screen"
    assert lay["verdict"]["bottom"] <= 800, "the verdict section does not fit the first screen"
    assert lay["findingsHead"]["top"] < 800
    assert lay["firstFinding"]["bottom"] <= 800, "the first finding is below the first screen"
    assert all(n == 1 for n in lay["ruleIds"]), "a rule id wraps"
    assert all(ok for _href, ok in lay["links"]), [h for h, ok in lay["links"] if not ok]
    assert lay["scripts"] == 0 and lay["external"] == 0
    return lay


@pytest.mark.parametrize("capture", SAMPLES, ids=lambda p: p.stem)
def test_sample_first_screen(browser, tmp_path, capture):
    lay = _first_screen(browser, _report(tmp_path, capture), capture.stem)
    from tracelens.analysis.analyze import analyze

    a = analyze(str(capture))
    assert lay["findingCount"] == len(a.findings)  # every finding is a row (none folded on the samples)
    assert len(lay["svgs"]) == len({s["domid"] for s in a.safety})


@pytest.mark.skipif(not REAL_CAPTURES, reason="../shared/samples/xentrace-real is absent (a fresh clone)")
@pytest.mark.parametrize("capture", REAL_CAPTURES, ids=lambda p: p.stem)
def test_real_capture_first_screen(browser, tmp_path, capture):
    lay = _first_screen(browser, _report(tmp_path, capture), capture.stem)
    assert lay["headline"]["top"] < 300


@pytest.mark.parametrize("width", [700, 1280, 1920])
def test_timeline_fits_the_page(browser, tmp_path, width):
    """The SVG scales with the page (viewBox, no fixed width): never wider than the viewport, never clipped."""
    page = _report(tmp_path, ROOT / "sample-traces" / "foreign-map.xentrace")
    browser.open(page.as_uri(), width, 800)
    lay = json.loads(browser.evaluate(LAYOUT_JS))
    assert len(lay["svgs"]) == 2
    for box, fig in zip(lay["svgs"], lay["figures"]):
        assert 0 <= box["left"] and box["right"] <= width  # never clipped
        assert box["width"] >= 0.98 * fig["width"] and fig["width"] >= 0.8 * min(width, 1500)  # fills its column


def test_finding_links_land_on_the_timeline_and_the_evidence(browser, tmp_path):
    page = _report(tmp_path, ROOT / "sample-traces" / "instrumented-guest.xentrace")
    browser.open(page.as_uri(), 1280, 800)
    hrefs = json.loads(browser.evaluate(
        "JSON.stringify([...document.querySelectorAll('#findings td.links a')].map(a => a.getAttribute('href')))"))
    assert any(h.startswith("#tl-") for h in hrefs) and "#gref-1-0-15" in hrefs and "#pirq-1-0-35" in hrefs
    marker = next(h for h in hrefs if h.startswith("#tl-"))
    for h in ("#gref-1-0-15", "#pirq-1-0-35", marker):
        box = f"document.getElementById('{h[1:]}').getBoundingClientRect()"
        browser.evaluate("window.scrollTo(0, 0)")
        if browser.evaluate(f"{box}.top") < 800:  # the target out of view: at the bottom of the page then
            browser.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            assert browser.evaluate(f"{box}.bottom") < 0
        browser.evaluate(f"document.querySelector('#findings a[href=\"{h}\"]').click()")
        top = browser.evaluate(f"document.getElementById('{h[1:]}').getBoundingClientRect().top")
        assert 0 <= top < 800  # the browser scrolled to what the link names
