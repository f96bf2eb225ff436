"""How wide text tables render: the terminal's width when they go to a terminal, a fixed width otherwise.

Text reports (``tracelens analyze``, the gate summary) are rich tables rendered to plain text. On a terminal they
take its width (``COLUMNS`` when set, as ``shutil.get_terminal_size`` reads it), so an 80-column terminal gets
80-column tables; written to a file or a pipe (CI logs, ``-o report.txt``) they take ``COLUMNS`` when set, else
:data:`FILE_WIDTH`, wide enough that most rows stay on one line.
"""

from __future__ import annotations

import os
import shutil

FILE_WIDTH = 140
MIN_WIDTH = 40  # narrower than this, rich tables fold every cell: keep them legible


def text_width(stream=None) -> int:
    """The width to render text tables at for ``stream`` (None: a file, not a terminal)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return max(int(env), MIN_WIDTH)
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty and isatty())
    except (OSError, ValueError):
        tty = False
    if not tty:
        return FILE_WIDTH
    return max(shutil.get_terminal_size((FILE_WIDTH, 24)).columns, MIN_WIDTH)
