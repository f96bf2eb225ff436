"""One escaping helper per output language, for every capture- or dump-derived string (file names, VMCOREINFO
values, kernel-log text, event names from a catalog, finding messages built from them).

* :func:`terminal`: control characters (C0, DEL, C1) and the Unicode bidirectional overrides become visible
  ``\\xNN`` / ``\\uNNNN`` escapes, as ``vmcore-dmesg`` prints a kernel log: an ``ESC]0;...BEL`` in an OSRELEASE
  retitles no terminal and a ``\\r`` overwrites no line. Every other helper starts from it.
* :func:`rich`: a ``rich.text.Text`` of :func:`terminal`'s result: a Text is never parsed as console markup, so
  ``[/evil]`` raises no MarkupError and ``[link=...]`` makes no hyperlink, whatever the console's ``markup``.
* :func:`markdown` (inline text) and :func:`markdown_code` (a code span): the ASCII punctuation that opens
  CommonMark/GFM syntax inside a line is backslash-escaped (``![](...)`` is no image, ``[x](javascript:...)`` no link,
  ``|`` ends no table cell); a code span is fenced with more backticks than the text holds.
* :func:`html`: :func:`terminal`, then ``html.escape`` with quotes.

Plain-text writers that never reach a terminal as markup (JSON, SARIF, Parquet) keep the strings as they are.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def terminal(text) -> str:
    """``text`` (any object, through ``str``) with control characters as visible escapes: safe to write to a
    terminal, and always one line."""
    return _CONTROL.sub(_visible, str(text))


def rich(text):
    """A ``rich.text.Text`` holding :func:`terminal` of ``text``: never markup, never raw control bytes."""
    from rich.text import Text

    return Text(terminal(text))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_MD_LINE_START = re.compile(r"^([#+\-=])")


def markdown(text) -> str:
    """``text`` as literal Markdown inline text (also safe inside a GFM table cell): the characters that open
    emphasis, code, links and images (``[``; so ``![](...)`` and ``[x](javascript:...)`` are plain text), raw
    HTML and autolinks (``<``), entities (``&``) and table cells (``|``) are backslash-escaped, and so is a
    heading or list marker at the start."""
    return _MD_LINE_START.sub(r"\\\1", _MD_SPECIAL.sub(r"\\\1", terminal(text)))


def markdown_code(text, *, table: bool = False) -> str:
    """``text`` as a Markdown code span: fenced with one backtick more than its longest run of backticks
    (CommonMark has no escapes inside code spans), padded when it starts or ends with a backtick. ``table``: the
    span is inside a GFM table cell, where ``|`` must still be escaped."""
    s = terminal(text)
    if table:
        s = s.replace("|", "\\|")
    longest = max((len(r) for r in re.findall("`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def html(text) -> str:
    """``text`` for HTML text or a quoted attribute value."""
    from html import escape

    return escape(terminal(text), quote=True)
