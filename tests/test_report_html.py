"""The HTML report's content (tracelens.analysis.report_html): section order, the verdict's words agreeing with the
findings, the timeline's series, shading and markers, --cpu-hz, folded tables, the dump's problems in view.
How it looks in a browser: tests/test_report_browser.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tracelens.analysis import report as R
from tracelens.analysis.analyze import analyze
from tracelens.options import AnalysisConfig, DecodeOptions
from tracelens.analysis.report_html import ROWS_SHOWN, _table_section, to_html

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample-traces"
SHARED = ROOT.parent / "shared" / "samples" / "vmcore"


def _html(name, **decode) -> str:
    return to_html(analyze(str(SAMPLES / f"{name}.xentrace"), AnalysisConfig(decode=DecodeOptions(**decode))))


def _charts(html: str) -> dict[str, str]:
    return dict(re.findall(r'<figure id="timeline-(\d+)">(.*?)</figure>', html, re.S))


def test_sections_in_order_with_stable_ids():
    html = _html("instrumented-guest")
    ids = re.findall(r'<section id="([a-z-]+)"', html)
    assert ids[:3] == ["verdict", "findings", "timeline"]
    detail = ["boundaries", "safety", "grants", "balloon", "hypercalls", "irq-vectors", "guest-grefs", "guest-pirqs"]
    assert [i for i in ids if i in detail] == detail
    assert ids.index("guest-pirqs") < ids.index("capture") < ids.index("coverage")


def test_open_epoch_with_live_mappings_is_not_red():
    """clean-soft-reset: no finding, so nothing red; the open epoch's live backend mappings are words, not 'unsafe'."""
    html = _html("clean-soft-reset")
    body = html.split("</style>", 1)[1]
    assert '<p class="headline safe">SAFE' in body
    assert '"chip c-unsafe"' not in body and 'class="t-unsafe"' not in body and ">UNSAFE<" not in body
    assert re.search(r'class="chip c-open">OPEN</span></td><td>live: 4 grant\(s\) mapped by other domains \(d0: 4\); '
                     r"a kexec now would not be safe", html)
    assert '<td class="t-open">open</td>' in html


def test_unsafe_words_name_their_rules():
    html = _html("persistent-grants")
    assert '<p class="headline unsafe">UNSAFE kexec: d1 epoch 0 (soft_reset)' in html
    assert "6 grant(s) still mapped (d0: 6) (TL-GNT-001)" in html
    # the open epoch has a finding (TL-GNT-002, a warning): it says so, in the warning's colour
    assert re.search(r'c-inconclusive">OPEN</span></td><td>live: 4 grant\(s\) mapped by other domains \(d0: 4\); a '
                     r"kexec now would not be safe; findings: TL-GNT-002", html)


def test_cpu_hz_is_honoured():
    plain, hz = _html("persistent-grants"), _html("persistent-grants", cpu_hz=2.4e9)
    assert plain != hz
    assert ">0 Mcyc</text>" in plain and "no --cpu-hz: times in TSC cycles" in plain
    assert ">0 ms</text>" in hz and "2.4 GHz (--cpu-hz)" in hz
    # the boundary at TSC 12,807,307, 2,805,254 cycles after the first: 1.169 ms at 2.4 GHz
    assert "soft_reset at +1.169 ms" in hz and "soft_reset at +2.805 Mcyc" in plain


def test_timeline_is_responsive_with_a_key():
    html = _html("foreign-map")
    svgs = re.findall(r"<svg class=\"timeline\"[^>]*>", html)
    assert len(svgs) == 2
    for s in svgs:
        assert 'viewBox="0 0 1000 ' in s and " width=" not in s
    assert 'class="key"' in html and "foreign_map: mapped other domains&#x27; grants" in html


def test_one_line_per_pair_and_the_mapper_charted():
    """foreign-map: d1's grants are mapped by d0 (2) and by d2 (5 at most): two lines, not one sum; the culprit d2's
    chart shows the grants it mapped, dashed, on a scale."""
    charts = _charts(_html("foreign-map"))
    d1, d2 = charts["1"], charts["2"]
    assert "d0 maps d1&#x27;s grants: 2 record(s), 2 outstanding at the end" in d1
    assert "d2 maps d1&#x27;s grants: 8 record(s), 2 outstanding at the end" in d1
    assert re.search(r'<path d="[^"]+" fill="none" stroke="#[0-9a-f]+" stroke-width="1.6" stroke-dasharray="6 3">'
                     r"<title>d2 maps d1&#x27;s grants", d2)
    assert re.search(r'text-anchor="end" fill="#555">5</text>', d2)  # the scale of what d2 mapped


def test_lost_interval_and_teardown_are_drawn():
    chart = _charts(_html("lost-across-boundary"))["1"]
    assert re.search(r'fill="url\(#p-lost\)"><title>pCPU 0 lost 13 record\(s\) between ', chart)
    assert re.search(r'fill="url\(#p-tear\)" opacity="\.85"><title>teardown of d1 epoch 0: shutdown at ', chart)


def test_markers_sharing_a_moment_are_stacked():
    chart = _charts(_html("instrumented-guest"))["1"]
    # TL-GST-001 and TL-GST-002 are both at the boundary: same x, different y
    marks = re.findall(r'<g id="tl-[0-9a-f]+"><path d="M([0-9.]+) ([0-9.]+) ', chart)
    assert len(marks) == 2 and marks[0][0] == marks[1][0] and marks[0][1] != marks[1][1]


def test_guest_tables_and_balloon_pages():
    html = _html("instrumented-guest")
    assert '<tr id="gref-1-0-15">' in html and '<tr id="pirq-1-0-35">' in html
    assert 'href="#gref-1-0-15">evidence</a>' in html and 'href="#pirq-1-0-35">evidence</a>' in html
    chart = _charts(_html("balloon-before-kexec"))["1"]
    assert "ballooned out (DECREASE_RESERVATION) so far in the epoch: up to 518" in chart
    assert "balloon: memory ballooned out" in _html("balloon-before-kexec")  # the purple dot has a key


def test_rule_ids_do_not_wrap():
    html = _html("persistent-grants")
    assert '<span class="rule-id error">TL-GNT-001</span>' in html and ".rule-id{white-space:nowrap" in html


def test_long_tables_are_folded_with_a_count_and_linked_rows_stay_visible():
    rows = [[str(i), "x"] for i in range(40)]
    sec = R.Section("grants", "Grants", ["n", "v"], rows, row_ids=[f"grant-{i}" for i in range(40)])
    html = _table_section(sec, pinned={"grant-33"})
    shown, _, folded = html.partition("<details>")
    assert "<summary>24 more rows</summary>" in folded
    assert shown.count("<tr id=") == ROWS_SHOWN + 1 and 'id="grant-33"' in shown and 'id="grant-33"' not in folded
    assert "40 rows: the first 15 and the 1 findings link to" in shown


def _dump(tmp_path, lines) -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "vmcore"))
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf

    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [LogRec(1_000 * (i + 1), t) for i, t in enumerate(lines)])
    p = tmp_path / "d.elf"
    write_elf(p, mem, standard_notes(k.vmcoreinfo()))
    return p


def test_a_dump_without_xen_is_flagged(tmp_path):
    dump = _dump(tmp_path, [b"Hypervisor detected: KVM", b"Kernel panic - not syncing: sysrq"])
    a = analyze(str(SAMPLES / "crash-kdump.xentrace"), AnalysisConfig(vmcore=str(dump)))
    assert a.dump["hypervisor"] == "KVM" and a.dump["xen_signs"] == []
    html = to_html(a)
    assert re.search(r"<li class=warn>WARNING: this dump shows no sign of a Xen guest kernel \(its log says "
                     r"&quot;Hypervisor detected: KVM&quot;, no grant frame, no shared_info\): it may not be d1", html)
    assert "no sign of a Xen guest kernel" in R.to_text(a)
    xen = _dump(tmp_path, [b"Hypervisor detected: Xen HVM", b"xen:events: Using FIFO-based ABI"])
    a = analyze(str(SAMPLES / "crash-kdump.xentrace"), AnalysisConfig(vmcore=str(xen)))
    assert a.dump["warnings"] == [] and a.dump["xen_signs"] == ["evtchn_abi", "hypervisor_detected"]


@pytest.fixture(scope="module")
def lzo_dump(tmp_path_factory):
    src = SHARED / "kdump-boot.guest-mdf-l31.kdump.zst"
    if not src.exists():
        pytest.skip("../shared/samples/vmcore is absent (a fresh clone)")
    import zstandard

    out = tmp_path_factory.mktemp("lzo") / "guest-mdf-l31.kdump"
    with open(src, "rb") as f, open(out, "wb") as g:
        zstandard.ZstdDecompressor().copy_stream(f, g)
    return out


def test_unreadable_dump_parts_are_unknown_not_zero(lzo_dump, monkeypatch):
    """The real kdump's pages are LZO: without python-lzo its kernel log and grant table cannot be read, and the
    report says "unknown", never 0 or none."""
    from tracelens.parsers.vmcore import codecs

    monkeypatch.setattr(codecs, "_lzo_mod", None)
    a = analyze(str(SAMPLES / "crash-kdump.xentrace"), AnalysisConfig(vmcore=str(lzo_dump)))
    assert a.dump["readable"] == {"log": False, "grant_frames": False, "shared_info": None}
    html = to_html(a)
    verdict = html.split('<section id="findings">')[0]
    assert "WARNING: the kernel log could not be read: its Xen events and PIRQs are unknown, not none" in verdict
    assert "python-lzo" in verdict
    assert "<td>unknown (log not readable)</td>" in html and "<td>unknown (grant table not readable)</td>" in html
