"""tracelens: Xen hypervisor traces and Linux kdump captures, across the kexec boundary.

The Python API mirrors the CLI. Everything heavy (numba, pyarrow, polars) loads on first use, so ``import
tracelens`` is cheap.

- :func:`read_xentrace` -- decode a xentrace capture into a time-ordered ``pyarrow.Table``
- :func:`iter_xentrace` -- the same in bounded memory, as a stream of tables
- :func:`xentrace_info` -- the summary ``tracelens info`` prints, without decoding records
- :func:`open` -- a capture or a dump, detected from its bytes, as a notebook-friendly object (tracelens.api)
- :func:`sql` -- a SQL query over captures and dumps (records, boundaries, grants, balloon, findings, dmesg)
- :func:`overview` -- many captures into one table (one row each), with an explicit failure policy
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


_API = ("open", "sql", "overview", "Capture", "Dump", "Report")


def scan(paths, outdir, config=None, **kwargs):
    """Analyse many captures into Parquet datasets under ``outdir`` (see tracelens.fleet.api.scan)."""
    from tracelens.fleet.api import scan as _scan

    return _scan(paths, outdir, config, **kwargs)


def watch(source="-", config=None, opts=None, **kwargs):
    """Follow a capture as it is written (a path, "-" or a binary stream); yields tracelens.live.Event objects
    (see tracelens.live.watch)."""
    from tracelens.live import watch as _watch

    return _watch(source, config, opts, **kwargs)


def __getattr__(name):
    # the notebook API (tracelens/api.py) loads on first use, so ``import tracelens`` stays cheap
    if name in _API:
        from tracelens import api

        return getattr(api, name)
    raise AttributeError(f"module 'tracelens' has no attribute {name!r}")


__all__ = ["read_xentrace", "iter_xentrace", "xentrace_info", "open", "sql", "overview", "scan", "watch", "Capture",
           "Dump", "Report", "__version__"]
