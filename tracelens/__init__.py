"""tracelens: Xen hypervisor traces and Linux kdump captures, across the kexec boundary.

The Python API mirrors the CLI. Everything heavy (numba, pyarrow, polars) loads on first use, so ``import
tracelens`` is cheap.

- :func:`read_xentrace` -- decode a xentrace capture into a time-ordered ``pyarrow.Table``
- :func:`iter_xentrace` -- the same in bounded memory, as a stream of tables
- :func:`info` -- what ``tracelens info`` prints for a capture (without decoding records) or a dump
- :func:`open` -- a capture or a dump, detected from its bytes, as a notebook-friendly object
  (:class:`~tracelens.capture.Capture`, :class:`~tracelens.dump.Dump`; analyses as :class:`~tracelens.report.Report`)
- :func:`sql` -- a SQL query over captures and dumps (records, boundaries, grants, balloon, findings, dmesg;
  tracelens.query)
- :func:`overview` -- many captures into one table (one row each), with an explicit failure policy (tracelens.batch)
- :func:`scan` -- many captures on Dask distributed into Parquet datasets, resumably (tracelens.fleet)
- :func:`watch` -- follow a capture while xentrace writes it: events as each guest's kexec safety changes
  (tracelens.live)
- :class:`DecodeOptions`, :class:`AnalysisConfig`, :class:`GateConfig` -- the options objects every command and
  function takes, nested (tracelens.options); :func:`load_config` fills them from ``tracelens.toml``
  (tracelens.config)
"""

from __future__ import annotations

__version__ = "0.1.0"


def read_xentrace(path, decode=None, *, columns=None):
    """Decode a whole xentrace capture into one time-ordered ``pyarrow.Table``; ``decode``: a
    :class:`~tracelens.options.DecodeOptions` (see tracelens.parsers.xentrace.decode.read_xentrace)."""
    from tracelens.parsers.xentrace.decode import read_xentrace as _read

    return _read(path, decode, columns=columns)


def iter_xentrace(path, decode=None, *, batch_bytes: int = 128 << 20, columns=None):
    """Decode a capture as consecutive time-ordered tables in bounded memory (about ``batch_bytes`` of the file
    each; tracelens.parsers.xentrace.decode.iter_batches)."""
    from tracelens.parsers.xentrace.decode import iter_batches

    return iter_batches(path, decode, batch_bytes=batch_bytes, columns=columns)


def info(path, decode=None) -> dict:
    """What ``tracelens info`` shows for a capture or a dump (``open(path, decode).info()``): for a capture the
    counts of one streamed pass (pCPUs, windows, records per class, event and domain, lost records, TSC span, Xen
    layout, coverage, damage), for a dump its format, page counts and VMCOREINFO essentials."""
    with open(path, decode) as obj:
        return obj.info()


def open(path, decode=None, *, vmcoreinfo: bytes | str | None = None):  # noqa: A001 - the verb
    """Open a xentrace capture or a vmcore dump (the format is detected from the bytes, never the name): a
    :class:`~tracelens.capture.Capture` or a :class:`~tracelens.dump.Dump`.

    ``decode`` (a :class:`~tracelens.options.DecodeOptions`): how a capture is decoded (Xen version, TSC
    frequency, damage tolerance, extra catalog files, threads). ``vmcoreinfo``: for a dump, text replacing its own
    VMCOREINFO. A list of paths opens the files of a ``makedumpfile --split`` set, in any order, as one Dump.
    Raises :class:`~tracelens.errors.FormatError` for anything else.
    """
    from tracelens.capture import Capture
    from tracelens.detect import XENTRACE, sniff
    from tracelens.dump import Dump
    from tracelens.errors import FormatError

    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            for p in path:
                if sniff(p) == XENTRACE:
                    raise FormatError(p, 0, "a xentrace capture: a list of paths is read as the parts of one "
                                      "makedumpfile --split dump set")
            return Dump(path, vmcoreinfo=vmcoreinfo)
        path = path[0]
    if sniff(path) == XENTRACE:
        return Capture(path, decode)
    return Dump(path, vmcoreinfo=vmcoreinfo)


def scan(paths, outdir, config=None, **kwargs):
    """Analyse many captures into Parquet datasets under ``outdir`` (see tracelens.fleet.scan.scan)."""
    from tracelens.fleet.scan import scan as _scan

    return _scan(paths, outdir, config, **kwargs)


def watch(source="-", config=None, opts=None, **kwargs):
    """Follow a capture as it is written (a path, "-" or a binary stream); yields tracelens.live.Event objects
    (see tracelens.live.watch)."""
    from tracelens.live import watch as _watch

    return _watch(source, config, opts, **kwargs)


#: public names and the module each lives in, imported on first use so that ``import tracelens`` stays cheap
_LAZY = {"Capture": "tracelens.capture", "Dump": "tracelens.dump", "Report": "tracelens.report",
         "overview": "tracelens.batch", "sql": "tracelens.query", "DecodeOptions": "tracelens.options",
         "AnalysisConfig": "tracelens.options", "GateConfig": "tracelens.options", "load_config": "tracelens.config"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'tracelens' has no attribute {name!r}")


__all__ = ["read_xentrace", "iter_xentrace", "info", "open", "sql", "overview", "scan", "watch", "Capture", "Dump",
           "Report", "DecodeOptions", "AnalysisConfig", "GateConfig", "load_config", "__version__"]
