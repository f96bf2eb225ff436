"""One task of a scan: analyse one capture on a worker, write its parts, return its ``captures`` row.

This is the only code that runs on the workers. It reads the capture from the shared file system, analyses it as
``tracelens analyze`` does (tracelens.analysis.analyze.analyze: streaming, bounded memory), writes the rows of every
table to OUTDIR (tracelens.fleet.tables) and returns the small ``captures`` row: the scheduler sees paths and these
rows, never tables. The ``captures`` part is written last, so a row there means the other parts are complete.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from tracelens.fleet import tables as T

#: ``error_kind`` of an error row: the input is damaged or unreadable (a re-run skips it while its bytes are the
#: same), tracelens failed on it (a bug), or the workers running it died (a re-run tries again)
INPUT, INTERNAL, WORKER_LOST = "input", "internal", "worker-lost"
_VERDICT_RANK = {"safe": 0, "not covered": 1, "inconclusive": 2, "unsafe": 3}  # the worst verdict wins


@dataclass
class TaskOptions:
    """What every task of one scan shares (small and picklable: it travels with each task)."""

    outdir: str
    analysis: object = None  # AnalysisConfig without vmcore (that one comes with the input)
    on_error: str = "record"
    policy: object = None  # tracelens.gate.policy.Policy
    fail_on: str = "error"
    baseline: object = None  # tracelens.gate.baseline.Baseline or None
    threads: int | None = 1  # numba threads per task (one task per worker thread fills the machine); None: as is
    today: object = None


class CaptureFailed(Exception):
    """``on_error="raise"``: the capture's one-line error, raised on the worker and re-raised by the client."""


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # not on a Dask worker (the in-process runner, or gate without --workers)
        return f"{socket.gethostname()}:{os.getpid()}"


def base_row(path: str, **kw) -> dict:
    from tracelens import __version__

    row = {"capture": path, "scanned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "tool_version": __version__}
    try:
        row["size_bytes"] = os.path.getsize(path)
    except OSError:
        pass
    row.update(kw)
    return row


def _sha256(path: str) -> str | None:
    from tracelens.digest import sha256_file

    return sha256_file(path)


def already_done(opts: TaskOptions, path: str, key: str, vmcore: str | None) -> dict | None:
    """The existing ``captures`` row of this input when its result is still valid: same bytes (sha256), same dump,
    and a result that a re-run would repeat (ok, or an error of the input itself)."""
    old = T.read_part(opts.outdir, "captures", key)
    if not old:
        return None
    row = old[0]
    if row.get("sha256") is None or row.get("vmcore") != vmcore:
        return None
    if not (row.get("status") == "ok" or (row.get("status") == "error" and row.get("error_kind") == INPUT)):
        return None
    if _sha256(path) != row["sha256"]:
        return None
    return row


def _summary(obj: dict, gated) -> dict:
    """The counts of a ``captures`` row from the JSON contract object and the gated findings."""
    f = obj["findings"]
    closed = [r["verdict"] for r in obj["safety"] if r["end_tsc"] is not None]
    still_open = [r["verdict"] for r in obj["safety"] if r["end_tsc"] is None]
    counts: dict = {}
    for r in obj["safety"]:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return {
        "records": obj["capture"]["records"], "lost_records": obj["capture"]["lost_records"],
        "coverage": obj.get("coverage"),
        "boundaries": len(obj["boundaries"]),
        "kexec_verdict": max(closed, key=_VERDICT_RANK.get) if closed else None,
        "open_verdict": max(still_open, key=_VERDICT_RANK.get) if still_open else None,
        "verdicts": counts, "findings": len(f),
        "error_findings": sum(x["severity"] == "error" for x in f),
        "warning_findings": sum(x["severity"] == "warning" for x in f),
        "blocking_findings": sum(g.blocking for g in gated),
        "rules": sorted({x["rule"] for x in f}),
    }


def analyse_one(item: tuple, opts: TaskOptions) -> dict:
    """Analyse the input ``item`` = (path, vmcore or None, vmcore_dom or None) and write its parts under
    ``opts.outdir``. Returns its ``captures`` row, with ``status`` "ok", "error" or "resumed" (its earlier result
    is still valid: nothing written). With ``on_error="raise"`` a failing capture raises :class:`CaptureFailed`
    (nothing written for it)."""
    from dataclasses import replace

    from tracelens import _jit
    from tracelens.analysis.analyze import AnalysisConfig, analyze
    from tracelens.analysis.report import to_json_obj
    from tracelens.errors import TracelensError
    from tracelens.gate.evaluate import evaluate_findings, inconclusive_reasons
    from tracelens.gate.policy import Policy

    path, vmcore, vmcore_dom = item
    key = T.part_key(path)
    t0 = time.perf_counter()
    done = already_done(opts, path, key, vmcore)
    if done is not None:
        return dict(done, status="resumed", resumed_status=done["status"])
    _jit.set_threads(opts.threads)
    cfg = replace(opts.analysis or AnalysisConfig(), vmcore=vmcore, vmcore_dom=vmcore_dom)
    worker = _worker_name()
    try:
        a = analyze(path, cfg)
    except Exception as e:  # noqa: BLE001 - every failure of one capture is that capture's result
        if isinstance(e, TracelensError):
            kind, msg = INPUT, str(e)
        else:
            kind, msg = INTERNAL, f"internal error: {type(e).__name__}: {e} (please report this)"
        if opts.on_error == "raise":
            raise CaptureFailed(msg) from None
        row = base_row(path, kind="xentrace", status="error", error=msg, error_kind=kind, sha256=_sha256(path),
                       vmcore=vmcore, vmcore_dom=vmcore_dom, worker=worker, elapsed_s=time.perf_counter() - t0)
        for t in T.ROW_TABLES:  # an earlier result of other bytes at this path is no longer true
            T.write_part(opts.outdir, t, key, [])
        T.write_part(opts.outdir, "captures", key, [row])
        return row

    a.path = path
    obj = to_json_obj(a)
    policy = opts.policy or Policy()
    gated = evaluate_findings(a.findings, path, policy, opts.fail_on, opts.baseline, opts.today)
    prov = {"capture": path, "sha256": a.sha256}
    for t in T.ROW_TABLES:
        rows = [dict(r, **prov) for r in obj[t]]
        if t == "findings":
            for r, g in zip(rows, gated):
                r.update(level=g.level, state=g.state, blocking=g.blocking)
        T.write_part(opts.outdir, t, key, rows)
    summary = _summary(obj, gated)
    inconclusive = inconclusive_reasons(a.findings, summary["lost_records"], policy)
    dump = obj.get("dump")
    if vmcore and dump is not None and dump.get("domid") is None:
        inconclusive.append("the dump could not be tied to a domain of the capture")
    gate_status = ("inconclusive" if inconclusive else "fail" if summary["blocking_findings"] else "pass")
    row = base_row(path, kind="xentrace", status="ok", sha256=a.sha256, vmcore=vmcore,
                   vmcore_dom=dump.get("domid") if dump else vmcore_dom, gate_status=gate_status, worker=worker,
                   elapsed_s=time.perf_counter() - t0, **summary)
    T.write_part(opts.outdir, "captures", key, [row])  # last: the commit of this input's result
    return row
