"""Terminal and markup injection (issue 12): capture- and dump-derived strings go through tracelens.escape, one
helper per output language. The hostile dumps are built with the vmcore test writers (an OSRELEASE and kernel-log
lines holding rich markup, terminal escape sequences and Markdown), analysed with the crash-kdump sample capture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "vmcore"))
import vmcore_writers as vw  # noqa: E402

from tracelens import cli, escape  # noqa: E402

SAMPLE = TESTS.parent / "sample-traces" / "crash-kdump.xentrace"
TITLE = "\x1b]0;pwned\x07\x1b[2J"
UNESCAPED_LINK = __import__("re").compile(r"(?<!\\)\]\(")  # "](" whose "]" is not backslash-escaped
PANIC = b"Kernel panic - not syncing: \x1b]0;owned\x07\x1b[2J ![](http://evil.example/x.png) [x](javascript:alert(1)) | `tick` \rover"


def _dump(tmp_path, osrelease: str, name: str = "d.vmcore"):
    mem = vw.Memory(ram=[(0x100, 0x200)])
    k = vw.Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000, phys_base=0, osrelease=osrelease)
    vw.add_lockless_ring(k, [vw.LogRec(1_000, b"Hypervisor detected: Xen HVM"), vw.LogRec(5_000, PANIC, level=0)])
    p = tmp_path / name
    vw.write_elf(p, mem, vw.standard_notes(k.vmcoreinfo()))
    return p


# -- the helpers --------------------------------------------------------------------------------------------------
def test_terminal_escapes_controls_like_vmcore_dmesg():
    assert escape.terminal(TITLE) == "\\x1b]0;pwned\\x07\\x1b[2J"
    assert escape.terminal("a\rb\nc\x9b\x7f\u202e") == "a\\x0db\\x0ac\\x9b\\x7f\\u202e"
    assert escape.terminal("plain [b]text[/b] é") == "plain [b]text[/b] é"


def test_rich_is_never_markup():
    from rich.console import Console

    con = Console(width=200, force_terminal=False, color_system=None)
    for s in ("[/evil]", "[link=https://example.com]click[/link]", "[bold]x[/bold]"):
        with con.capture() as cap:
            con.print(escape.rich(s))
        assert cap.get().rstrip("\n") == s


def test_markdown_helpers():
    md = escape.markdown("![](http://x/y.png) [x](javascript:alert(1)) a|b <i>")
    assert "![" not in md and not UNESCAPED_LINK.search(md) and "<i>" not in md and "|" not in md.replace("\\|", "")
    assert escape.markdown_code("a`b") == "``a`b``"
    assert escape.markdown_code("`x") == "`` `x ``"
    assert escape.markdown_code("a|b", table=True) == "`a\\|b`"
    assert escape.markdown_code("a\rb") == "`a\\x0db`"


def test_html_helper():
    assert escape.html('<a href="x">\x1b') == "&lt;a href=&quot;x&quot;&gt;\\x1b"


# -- the commands ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("osrelease", ["[/evil]", "[link=https://example.com]click[/link]", "6.1" + TITLE])
def test_info_prints_osrelease_literally(tmp_path, capsys, osrelease):
    p = _dump(tmp_path, osrelease)
    assert cli.main(["info", str(p)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert escape.terminal(osrelease) in out.replace("\n", "")
    assert "\x1b" not in out and "\x07" not in out


def test_dmesg_xen_table_escapes_the_log(tmp_path, capsys):
    p = _dump(tmp_path, "6.1.0")
    assert cli.main(["dmesg", str(p), "--xen"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("esc")
    return _dump(d, "6.1.0" + TITLE, name="evil`name|x.vmcore")


def _analyze(hostile, tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    cap = tmp_path / "cap`ture.xentrace"  # a backtick in the name: the Markdown heading's code span must hold it
    cap.write_bytes(SAMPLE.read_bytes())
    assert cli.main(["analyze", str(cap), "--vmcore", str(hostile), "--format", fmt, "-o", str(out)]) == 0
    return out.read_text()


def test_analyze_text_escapes_the_kernel_log(hostile, tmp_path, capsys):
    text = _analyze(hostile, tmp_path, "text")
    assert "owned" in text  # the panic line is in the report, escaped
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text


def test_analyze_markdown_escapes_links_images_and_code_spans(hostile, tmp_path, capsys):
    md = _analyze(hostile, tmp_path, "md")
    assert "owned" in md
    assert "![](" not in md and not UNESCAPED_LINK.search(md) and "\x1b" not in md and "\r" not in md
    # the file name with a backtick stays inside its code span: the fence is longer than the backtick run
    assert md.startswith("# tracelens analysis of ``") and "cap`ture.xentrace``" in md.splitlines()[0]
    assert "evil\\`name\\|x" in md  # the dump's name in a table cell: escaped text
    for line in md.splitlines():
        if line.startswith("| "):
            assert line.count(" | ") + 2 == line.count("|") - line.count("\\|"), line


def test_analyze_html_escapes(hostile, tmp_path, capsys):
    html = _analyze(hostile, tmp_path, "html")
    assert "owned" in html and "\x1b" not in html and "<img" not in html and 'href="javascript' not in html


def test_github_step_summary_keeps_file_names_in_their_code_span(hostile, tmp_path, capsys, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    odd = tmp_path / "cap`ture|1.xentrace"
    odd.write_bytes(SAMPLE.read_bytes())
    cli.main(["gate", str(odd), "--vmcore", str(hostile)])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    md = summary.read_text()
    assert "``" in md and "cap`ture\\|1" in md and "![](" not in md and "\x1b" not in md


def test_error_messages_are_one_line_whatever_the_file_name(tmp_path, capsys):
    p = tmp_path / "bad\x1b[2Jname\nsecond"
    p.write_bytes(b"garbage" * 100)
    assert cli.main(["info", str(p)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\\x1b[2Jname\\x0asecond" in err
