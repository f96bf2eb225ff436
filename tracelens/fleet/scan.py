"""``tracelens.scan``: many captures (and their dumps) on Dask distributed, into Parquet datasets (docs/fleet.md).

One task per capture (tracelens.fleet.task), on a LocalCluster or an existing cluster (tracelens.fleet.cluster);
the results are the tables of tracelens.fleet.tables under OUTDIR. Like Perfetto's batch trace processor the
failure policy is explicit (``on_error``: "record" turns a failing capture into a ``status=error`` row, "raise"
stops at the first) and the per-capture results are flattened into tables with the capture's path and SHA-256 as
columns. Re-running into the same OUTDIR skips the inputs whose result is still valid (same bytes: SHA-256).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tracelens.errors import FormatError, TracelensError, UsageError
from tracelens.fleet import tables as T
from tracelens.fleet.cluster import ClusterOptions

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

ON_ERROR = ("record", "raise")


@dataclass
class ScanConfig:
    """``analysis``: options of every capture's analysis (tracelens.options.AnalysisConfig; its vmcore comes
    from ``vmcore_map``); ``cluster``: where the tasks run; ``vmcore_map``: CSV ``capture,dump[,domid]`` (paths
    relative to the CSV's folder); ``on_error``: "record" or "raise"; ``policy``: a tracelens.toml whose ``[gate]``
    table judges the findings (columns ``level``, ``state``, ``blocking`` and the captures' ``gate_status``; default
    ./tracelens.toml when present, else the gate's defaults); ``fail_on``: as ``tracelens gate --fail-on``."""

    analysis: object = None
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    vmcore_map: str | None = None
    on_error: str = "record"
    policy: str | None = None
    fail_on: str | None = None

    def __post_init__(self):
        from tracelens.options import SEVERITIES, check_choice

        check_choice(self.on_error, ON_ERROR, "on_error")
        if self.fail_on is not None:
            check_choice(self.fail_on, SEVERITIES, "fail_on")


class ScanFailed(TracelensError):
    """``on_error="raise"``: the first capture that failed (exit 3 for a damaged input, 70 for a bug)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ScanResult:
    """What one scan did, and the tables of OUTDIR (all inputs scanned into it so far) as polars frames."""

    outdir: str
    inputs: int = 0  # captures given to the workers
    analysed: int = 0
    errors: int = 0  # error rows written by this run (damaged inputs, bugs, lost workers)
    resumed: int = 0  # inputs whose earlier result was still valid (same SHA-256)
    skipped: int = 0  # files that are neither captures nor dumps paired with one
    lost: int = 0  # of the errors: tasks whose workers kept dying
    bytes: int = 0
    elapsed_s: float = 0.0
    dashboard: str | None = None
    _frames: dict = field(default_factory=dict, repr=False)

    def table(self, name: str) -> pl.DataFrame:
        """One table of OUTDIR: captures, findings, boundaries, grants, balloon or safety."""
        if name not in T.TABLES:
            raise UsageError(f"no table {name!r} (tables: {', '.join(T.TABLES)})")
        if name not in self._frames:
            self._frames[name] = T.read_table(self.outdir, name)
        return self._frames[name]

    def lazy(self, name: str) -> pl.LazyFrame:
        """``polars.scan_parquet`` of one table (what a query over a big OUTDIR should start from)."""
        return self.table(name).lazy() if not _parts(self.outdir, name) else _scan(self.outdir, name)

    captures = property(lambda self: self.table("captures"))
    findings = property(lambda self: self.table("findings"))
    boundaries = property(lambda self: self.table("boundaries"))
    grants = property(lambda self: self.table("grants"))
    balloon = property(lambda self: self.table("balloon"))
    safety = property(lambda self: self.table("safety"))

    def summary(self) -> str:
        rate = self.analysed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"{self.analysed} capture(s) analysed, {self.errors} error(s) ({self.lost} lost to dying workers), "
                f"{self.resumed} skipped as already done (same sha256), {self.skipped} file(s) skipped (not a "
                f"capture); {self.elapsed_s:.1f} s, {rate:.2f} captures/s; tables in {self.outdir}")


def _parts(outdir, name):
    import glob

    return glob.glob(os.path.join(glob.escape(outdir), name, "*.parquet"))


def _scan(outdir, name):
    import polars as pl

    return pl.scan_parquet(os.path.join(outdir, name, "*.parquet"))


# ---------------------------------------------------------------------------------------------------------------
# inputs
def read_vmcore_map(path: str) -> dict[str, tuple[str, int | None]]:
    """The pairs of a ``--vmcore-map`` CSV: capture,dump[,domid] per line (a header line naming the columns is
    allowed; relative paths are relative to the CSV's folder) -> {absolute capture path: (dump path, domid)}."""
    base = os.path.dirname(os.path.abspath(path))
    out: dict[str, tuple[str, int | None]] = {}
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"vmcore_map {path}: {e.strerror}", "vmcore_map") from None
    with f:
        for n, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if n == 1 and row[0].lower() == "capture":
                continue
            if len(row) not in (2, 3) or not row[0] or not row[1]:
                raise UsageError(f"{path}:{n}: expected capture,dump[,domid], got {','.join(row)!r}")
            dom = None
            if len(row) == 3 and row[2]:
                try:
                    dom = int(row[2].removeprefix("d"), 0)
                except ValueError:
                    raise UsageError(f"{path}:{n}: domid must be an integer, not {row[2]!r}") from None
            cap, dump = (os.path.normpath(os.path.join(base, p)) for p in row[:2])
            if os.path.abspath(cap) in out:
                raise UsageError(f"{path}:{n}: {row[0]} is paired twice")
            out[os.path.abspath(cap)] = (dump, dom)
    return out


def _walk(paths, outdir: str):
    """Every file under ``paths`` (directories recursively, in name order), except those under OUTDIR."""
    out_abs = os.path.abspath(outdir)
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(root, d)) != out_abs)
                for name in sorted(files):
                    yield os.path.join(root, name)
        elif os.path.exists(p):
            yield os.path.normpath(p)
        else:
            raise UsageError(f"{p}: no such file or directory")


def collect_inputs(paths, outdir: str, vmcore_map: dict | None = None):
    """(items, skipped): the captures to analyse as (path, dump or None, domid or None), larger first, and a
    ``captures`` row for each file that is no capture (recognised by its bytes, tracelens.detect.sniff): other
    files, and dumps that ``vmcore_map`` pairs with no capture."""
    from tracelens.detect import XENTRACE, sniff
    from tracelens.fleet.task import INPUT, base_row

    vmcore_map = vmcore_map or {}
    paired_dumps = {os.path.abspath(d) for d, _ in vmcore_map.values()}
    seen: set[str] = set()
    items, skipped = [], []
    files = list(_walk(paths, outdir))
    files += [c for c in vmcore_map if c not in {os.path.abspath(f) for f in files}]  # captures named only there
    for f in files:
        a = os.path.abspath(f)
        if a in seen:
            continue
        seen.add(a)
        try:
            kind = sniff(f)
        except FormatError as e:
            if e.offset is None:  # cannot be opened: an error of this input, not "some other file"
                skipped.append(base_row(f, status="error", error=str(e), error_kind=INPUT))
            else:
                skipped.append(base_row(f, status="skipped", error=e.reason))
            continue
        if kind == XENTRACE:
            dump, dom = vmcore_map.get(a, (None, None))
            items.append((f, dump, dom))
        elif a in paired_dumps:
            continue  # analysed with its capture
        else:
            skipped.append(base_row(f, kind=kind, status="skipped",
                                    error=f"a {kind} dump without a capture: pair it with one in --vmcore-map"))
    items.sort(key=lambda it: -_size(it[0]))
    return items, skipped


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------------------------
# scan
def _task_options(config: ScanConfig, outdir: str):
    from tracelens.analysis.analyze import AnalysisConfig
    from tracelens.fleet.task import TaskOptions
    from tracelens.gate.baseline import load_baseline
    from tracelens.gate.policy import Policy, load_policy

    policy_path = config.policy
    if policy_path is None and os.path.isfile("tracelens.toml"):
        policy_path = "tracelens.toml"
    pol = load_policy(policy_path) if policy_path else Policy()
    base = load_baseline(pol.baseline) if pol.baseline else None
    analysis = config.analysis or AnalysisConfig()
    if getattr(analysis, "vmcore", None):
        raise UsageError("a scan pairs dumps with captures through vmcore_map, not AnalysisConfig.vmcore")
    return TaskOptions(outdir=os.path.abspath(outdir), analysis=analysis, on_error=config.on_error, policy=pol,
                       fail_on=config.fail_on or pol.fail_on or "error", baseline=base)


def scan(paths, outdir, config: ScanConfig | None = None, *, client=None, progress=None) -> ScanResult:
    """Analyse every capture under ``paths`` (files or directories, recursively) into the Parquet datasets of
    ``outdir`` and return a :class:`ScanResult` (its tables are polars frames). ``client``: an existing
    ``distributed.Client`` to run on (else ``config.cluster`` says). ``progress``: an object with ``start(total,
    dashboard)``, ``update(row)`` and ``stop()`` (tracelens.fleet.progress.ScanProgress draws a bar)."""
    config = config or ScanConfig()
    if config.on_error not in ON_ERROR:
        raise UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, not {config.on_error!r}", "on_error")
    outdir = os.fspath(outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UsageError(f"outdir {outdir}: exists and is not a directory", "outdir")
    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    vmap = read_vmcore_map(config.vmcore_map) if config.vmcore_map else {}
    if not paths and not vmap:
        raise UsageError("paths: give at least one capture or folder of captures", "paths")
    opts = _task_options(config, outdir)
    items, skipped = collect_inputs(paths, outdir, vmap)
    try:
        T.prepare(outdir)
    except OSError as e:
        raise UsageError(f"cannot create {outdir}: {e.strerror}") from None

    from tracelens.fleet.cluster import InProcess, connect, dashboard_link, run_tasks
    from tracelens.fleet.task import WORKER_LOST, CaptureFailed, analyse_one, base_row

    res = ScanResult(outdir=outdir, inputs=len(items))
    for row in skipped:  # one part per input, kept when a re-run finds the same: never duplicated
        key = T.part_key(row["capture"])
        old = T.read_part(outdir, "captures", key)
        same = ("status", "error", "kind", "size_bytes")
        if not (old and all(old[0].get(k) == row.get(k) for k in same)):
            T.remove_parts(outdir, key)
            T.write_part(outdir, "captures", key, [row])
        res.errors += row["status"] == "error"
        res.skipped += row["status"] == "skipped"
    t0 = time.perf_counter()

    def on_result(item, row):
        if row["status"] == "resumed":
            res.resumed += 1
        elif row["status"] == "ok":
            res.analysed += 1
            res.bytes += row.get("size_bytes") or 0
        else:
            res.errors += 1
        if progress is not None:
            progress.update(row)

    def on_lost(item, message):
        if config.on_error == "raise":
            raise ScanFailed(f"{item[0]}: {message}", 70)
        key = T.part_key(item[0])
        T.remove_parts(outdir, key)  # whatever a dying worker left: no half result stays
        row = base_row(item[0], kind="xentrace", status="error", error=message, error_kind=WORKER_LOST,
                       vmcore=item[1], vmcore_dom=item[2])
        T.write_part(outdir, "captures", key, [row])
        res.lost += 1
        on_result(item, row)

    with connect(config.cluster, client) as c:
        if isinstance(c, InProcess):
            opts.threads = None  # in the caller's process: its numba threads stay as they are
        res.dashboard = dashboard_link(c)
        if progress is not None:
            progress.start(len(items), res.dashboard)
        try:
            run_tasks(c, analyse_one, items, (opts,), sizes=[_size(i[0]) for i in items], on_result=on_result,
                      on_lost=on_lost, key_prefix="tracelens-scan")
        except CaptureFailed as e:
            raise ScanFailed(str(e), 70 if str(e).startswith("internal error") else 3) from None
        finally:
            res.elapsed_s = time.perf_counter() - t0
            if progress is not None:
                progress.stop()
    T.clean_tmp(outdir)  # every task has finished: what is left there is from workers killed while writing
    return res
