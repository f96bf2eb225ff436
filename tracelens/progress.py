"""A progress bar on stderr for long work, shown only when stderr is a terminal (and not under CI)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def byte_progress(description: str, total: int, enabled: bool | None = None):
    """Yield a callback ``update(done_bytes, total_bytes)``; a rich bar when stderr is a TTY, else a no-op."""
    if enabled is None:
        enabled = sys.stderr.isatty() and not os.environ.get("CI")
    if not enabled:
        yield lambda done, tot: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, tot: bar.update(task, completed=done, total=tot)
