"""tracelens: Xen hypervisor traces and Linux kdump captures, across the kexec boundary.

The Python API mirrors the CLI. Everything heavy (numba, pyarrow, polars) loads on first use, so ``import
tracelens`` is cheap.

- :func:`read_xentrace` -- decode a xentrace capture into a time-ordered ``pyarrow.Table``
- :func:`iter_xentrace` -- the same in bounded memory, as a stream of tables
- :func:`xentrace_info` -- the summary ``tracelens info`` prints, without decoding records
- :func:`open` -- a capture or a dump, detected from its bytes, as a notebook-friendly object
  (:class:`~tracelens.capture.Capture`, :class:`~tracelens.dump.Dump`; analyses as :class:`~tracelens.report.Report`)
- :func:`sql` -- a SQL query over captures and dumps (records, boundaries, grants, balloon, findings, dmesg;
  tracelens.query)
- :func:`overview` -- many captures into one table (one row each), with an explicit failure policy (tracelens.batch)
- :func:`scan` -- many captures on Dask distributed into Parquet datasets, resumably (tracelens.fleet)
- :func:`watch` -- follow a capture while xentrace writes it: events as each guest's kexec safety changes
  (tracelens.live)
"""

from __future__ import annotations

__version__ = "0.1.0"


def read_xentrace(path, **kwargs):
    """Decode a whole xentrace capture (see tracelens.parsers.xentrace.decode.read_xentrace)."""
    from tracelens.parsers.xentrace.decode import read_xentrace as _read

    return _read(path, **kwargs)


def iter_xentrace(path, **kwargs):
    """Decode a capture as consecutive time-ordered tables in bounded memory."""
    from tracelens.parsers.xentrace.decode import iter_batches

    return iter_batches(path, **kwargs)


def xentrace_info(path, **kwargs) -> dict:
    """The counts ``tracelens info`` shows for a capture."""
    from tracelens.parsers.xentrace.decode import summarize

    return summarize(path, **kwargs)


def open(path, *, xen_version: str | None = None, cpu_hz: float | None = None,  # noqa: A001 - the verb
         tolerance: str = "strict", catalog_files=(), vmcoreinfo: bytes | str | None = None):
    """Open a xentrace capture or a vmcore dump (the format is detected from the bytes, never the name): a
    :class:`~tracelens.capture.Capture` or a :class:`~tracelens.dump.Dump`.

    Capture options: ``xen_version`` (e.g. "4.17"; default: guessed from the records), ``cpu_hz`` (adds a
    ``time_ns`` column), ``tolerance`` ("strict", "truncate" or "skip"), ``catalog_files`` (extra event
    definitions, TOML). Dump option: ``vmcoreinfo`` (text replacing the dump's own VMCOREINFO).
    A list of paths opens the files of a ``makedumpfile --split`` set, in any order, as one Dump.
    Raises :class:`~tracelens.errors.FormatError` for anything else, UsageError for a ``cpu_hz`` that is not a
    finite frequency above 0.
    """
    from tracelens.capture import Capture
    from tracelens.commands import check_cpu_hz
    from tracelens.detect import XENTRACE, sniff
    from tracelens.dump import Dump
    from tracelens.errors import FormatError

    check_cpu_hz(cpu_hz)

    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            for p in path:
                if sniff(p) == XENTRACE:
                    raise FormatError(p, 0, "a xentrace capture: a list of paths is read as the parts of one "
                                      "makedumpfile --split dump set")
            return Dump(path, vmcoreinfo=vmcoreinfo)
        path = path[0]
    kind = sniff(path)
    if kind == XENTRACE:
        return Capture(path, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                       catalog_files=tuple(catalog_files))
    return Dump(path, vmcoreinfo=vmcoreinfo)


#: public names and the module each lives in, imported on first use so that ``import tracelens`` stays cheap
_LAZY = {"Capture": "tracelens.capture", "Dump": "tracelens.dump", "Report": "tracelens.report",
         "overview": "tracelens.batch", "sql": "tracelens.query"}


def scan(paths, outdir, config=None, **kwargs):
    """Analyse many captures into Parquet datasets under ``outdir`` (see tracelens.fleet.scan.scan)."""
    from tracelens.fleet.scan import scan as _scan

    return _scan(paths, outdir, config, **kwargs)


def watch(source="-", config=None, opts=None, **kwargs):
    """Follow a capture as it is written (a path, "-" or a binary stream); yields tracelens.live.Event objects
    (see tracelens.live.watch)."""
    from tracelens.live import watch as _watch

    return _watch(source, config, opts, **kwargs)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'tracelens' has no attribute {name!r}")


__all__ = ["read_xentrace", "iter_xentrace", "xentrace_info", "open", "sql", "overview", "scan", "watch", "Capture",
           "Dump", "Report", "__version__"]
