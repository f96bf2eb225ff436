"""A vmcore dump opened for notebooks (:func:`tracelens.open`): :class:`Dump`, a thin layer over the format reader
of tracelens.parsers.vmcore that returns polars frames; what the dump commands (``info``, ``dmesg``, ``pages``,
``read``) call. The kernel log's ``ts_nsec`` is nanoseconds since boot."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tracelens.errors import FormatError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

#: largest VMCOREINFO text read from a file (a real one is a few KiB)
MAX_VMCOREINFO_BYTES = 1 << 20


def read_vmcoreinfo(path) -> bytes:
    """The VMCOREINFO text in the file ``path`` (KEY=VALUE lines, as ``makedumpfile -g`` writes them), to give
    :func:`tracelens.open` as ``vmcoreinfo``; an unreadable file is a FormatError naming it."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read(MAX_VMCOREINFO_BYTES)
    except OSError as e:
        raise FormatError(path, None, f"cannot read VMCOREINFO file: {e.strerror}") from None


class Dump:
    """A vmcore opened by :func:`open` (ELF vmcore, kdump-compressed, flattened or xl dump-core)."""

    def __init__(self, path, *, vmcoreinfo: bytes | str | None = None):
        from tracelens.parsers import vmcore

        many = isinstance(path, (list, tuple))
        #: every file of the dump: one, or the parts of a makedumpfile --split set
        self.paths = [os.fspath(p) for p in path] if many else [os.fspath(path)]
        #: the format reader (tracelens.parsers.vmcore.dump.DumpReader) for everything not wrapped here
        self.raw = vmcore.open(self.paths if many else self.paths[0], vmcoreinfo=vmcoreinfo)
        #: the file (the first part, in pfn order, of a split set)
        self.path = self.raw.path
        self._info: dict | None = None
        self._log = None

    @property
    def format(self) -> str:
        return self.raw.kind

    def info(self) -> dict:
        """Format, compression, header version, page counts by state, VMCOREINFO essentials."""
        if self._info is None:
            self._info = self.raw.info()
        return self._info

    @property
    def vmcoreinfo(self):
        """The dump's VMCOREINFO (``.symbol(name)``, ``.table()``, ``.osrelease``...); empty when absent."""
        return self.raw.vmcoreinfo

    def kernel_log(self):
        """The kernel log (tracelens.parsers.vmcore.printk.KernelLog): ``render(style)`` gives the exact bytes
        vmcore-dmesg ("vmcore-dmesg") or makedumpfile --dump-dmesg ("makedumpfile") print, ``table()`` the
        records. Read on first use, then kept."""
        if self._log is None:
            self._log = self.raw.kernel_log()
        return self._log

    def dmesg(self) -> pl.DataFrame:
        """The kernel log records (seq, ts_nsec in nanoseconds since boot, level, facility, caller, text...)."""
        import polars as pl

        return pl.from_arrow(self.kernel_log().table())

    def xen_events(self) -> pl.DataFrame:
        """The Xen-related kernel log records (PIRQ/GSI, grant table, balloon, event channels, shutdown, kexec)
        with the numbers they carry as columns (tracelens.parsers.vmcore.xen.log_events)."""
        import polars as pl

        from tracelens.parsers.vmcore.xen import log_events

        return pl.from_arrow(log_events(self.kernel_log().table()))

    @property
    def pages(self) -> pl.DataFrame:
        """The page index: pfn, offset, size, compression, state (present, zero, excluded, lost, invalid)."""
        import polars as pl

        return pl.from_arrow(self.raw.pages())

    def page_runs(self) -> list[dict]:
        """Runs of consecutive pfns with the same state and compression (first_pfn, last_pfn, pages, state,
        compression): the page index in a few rows."""
        return self.raw.page_runs()

    def write_pages(self, output) -> int:
        """Stream the page index into the Parquet file ``output`` (atomically: a temporary file renamed at the
        end); returns the pages written."""
        import pyarrow.parquet as pq

        from tracelens.output import atomic_output
        from tracelens.parsers.vmcore.dump import _page_schema

        n = 0
        with atomic_output(os.fspath(output)) as tmp, pq.ParquetWriter(tmp, _page_schema()) as w:
            for batch in self.raw.iter_page_index():
                w.write_batch(batch)
                n += batch.num_rows
        return n

    def read_phys(self, addr: int, size: int, *, zero_excluded: bool = False) -> bytes:
        """Bytes at a physical address; PageUnavailable (a FormatError) for holes, excluded and lost pages."""
        return self.raw.read_phys(addr, size, zero_excluded=zero_excluded)

    def read_virt(self, addr: int, size: int, *, zero_excluded: bool = False) -> bytes:
        """Bytes at a kernel virtual address (kernel text, direct map, or a page-table walk)."""
        return self.raw.read_virt(addr, size, zero_excluded=zero_excluded)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tracelens.Dump {self.path!r} ({self.format})>"

    def _repr_html_(self) -> str:
        from tracelens.display import dump_html

        return dump_html(self)

