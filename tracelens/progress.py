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


#: captures at least this large get a bar while they are analysed (smaller ones are done before it would show)
BIG_CAPTURE = 256 << 20


def capture_progress(description: str, path):
    """:func:`byte_progress` for work on the capture at ``path``: a bar only for a capture of BIG_CAPTURE bytes or
    more (and only where byte_progress would show one)."""
    try:
        big = os.path.getsize(path) >= BIG_CAPTURE
    except (OSError, TypeError, ValueError):
        big = False
    return byte_progress(description, 0, enabled=None if big else False)


class ScanProgress:
    """The bar of ``tracelens scan`` on stderr: captures done of the total, failed and already-done counts,
    captures/s and MB/s; the Dask dashboard's address above it when one runs. A no-op when not ``enabled``
    (default: stderr is a terminal and not under CI)."""

    def __init__(self, enabled: bool | None = None):
        if enabled is None:
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.enabled = enabled
        self.done = self.failed = self.resumed = 0
        self.bytes = 0
        self._bar = self._task = None

    def _fields(self) -> dict:
        import time

        dt = max(time.perf_counter() - self._t0, 1e-9)
        return {"failed": self.failed, "resumed": self.resumed, "rate": (self.done - self.resumed) / dt,
                "mbs": self.bytes / dt / 1e6}

    def start(self, total: int, dashboard: str | None = None) -> None:
        import time

        self._t0 = time.perf_counter()
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        if dashboard:
            console.print(f"Dask dashboard: {dashboard}", highlight=False)
        self._bar = Progress(TextColumn("scan"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("[red]{task.fields[failed]} failed[/] {task.fields[resumed]} already done"),
                             TextColumn("{task.fields[rate]:.2f} captures/s {task.fields[mbs]:.1f} MB/s"),
                             TimeElapsedColumn(), console=console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task("scan", total=total, **self._fields())

    def update(self, row: dict) -> None:
        self.done += 1
        status = row.get("status")
        self.failed += status == "error"
        self.resumed += status == "resumed"
        if status == "ok":
            self.bytes += row.get("size_bytes") or 0
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, **self._fields())

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
