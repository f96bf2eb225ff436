"""The analysis entry point: :func:`analyze` a capture into one :class:`Analysis` (what ``tracelens analyze``
renders). Its options are one :class:`tracelens.options.AnalysisConfig` (decode options nested inside) rather
than a keyword list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from tracelens.analysis import findings as F
from tracelens.analysis import ledgers as L
from tracelens.analysis import records as R
from tracelens.analysis import safety as S
from tracelens.analysis.boundaries import Epochs, find_boundaries
from tracelens.options import AnalysisConfig

__all__ = ["Analysis", "AnalysisConfig", "analyze", "analyze_table"]


@dataclass
class Analysis:
    path: str | None
    records: int
    epochs: Epochs
    grants: L.GrantLedger
    balloon: list[dict]
    hypercalls: list[dict]
    vectors: list[dict]
    guest: L.GuestLedger
    safety: list[dict]
    findings: list[F.Finding]
    lost: np.ndarray
    first_tsc: int = 0
    last_tsc: int = 0
    sha256: str | None = None
    layout: dict = field(default_factory=dict)
    dump: dict | None = None  # evidence from --vmcore (tracelens.analysis.dumpside)
    coverage: dict = field(default_factory=dict)  # tracelens.analysis.coverage.coverage
    lost_info: dict | None = None  # records.lost_details, parallel to ``lost``
    cpu_hz: float | None = None  # the TSC frequency given (DecodeOptions.cpu_hz): reports show seconds with it
    balloon_series: dict | None = None  # per DECREASE_RESERVATION record: tsc, domid, pages (ledgers.balloon_series)

    @property
    def boundaries(self):
        return self.epochs.boundaries


def analyze_table(table, config: AnalysisConfig | None = None, path: str | None = None) -> Analysis:
    """Analyse a decoded capture (the pyarrow.Table of tracelens.read_xentrace)."""
    from tracelens.parsers.xentrace.catalog import parse_version

    config = config or AnalysisConfig()
    rec = R.columns(table)
    ep = find_boundaries(rec, user=list(config.boundaries))
    grants = L.grant_ledger(rec, ep)
    hc = L.hypercall_counts(rec, ep)
    balloon = L.balloon_ledger(rec, ep, xen_version=parse_version(config.decode.xen_version), hypercalls=hc)
    guest = L.guest_ledger(rec, ep)
    lost = R.lost_intervals(rec)
    return finish(rec, ep, grants, balloon, hc, guest, lost, R.event_counts(rec), R.seen_domains(rec), config,
                  path=path, records=len(rec), vectors=L.vector_ledger(rec), first_tsc=rec.first_tsc,
                  last_tsc=rec.last_tsc)


def finish(rec, ep, grants, balloon, hc, guest, lost, event_counts, seen, config: AnalysisConfig, **kw) -> Analysis:
    """Coverage, kexec safety and findings: the part the in-memory and the streamed analysis share."""
    from tracelens.analysis.coverage import coverage

    cov = coverage(event_counts, config.declared_mask())
    info = R.lost_details(rec)
    from tracelens.parsers.xentrace.catalog import parse_version

    safety = S.kexec_safety(rec, ep, grants, balloon, lost, guest, hc, coverage=cov, lost_info=info, seen=seen)
    findings = F.build_findings(ep, grants, balloon, guest, safety, lost, info, cov)
    bseries = L.balloon_series(rec, ep, xen_version=parse_version(config.decode.xen_version))
    return Analysis(epochs=ep, grants=grants, balloon=balloon, hypercalls=hc, guest=guest, safety=safety,
                    findings=findings, lost=lost, layout=rec.meta.get("tracelens.layout") or {}, coverage=cov,
                    lost_info=info, cpu_hz=config.decode.cpu_hz, balloon_series=bseries, **kw)


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except (OSError, TypeError, ValueError):
        return 0


def analyze(path, config: AnalysisConfig | None = None, progress=None) -> Analysis:
    """Analyse the capture at ``path`` as a stream, in bounded memory (tracelens.analysis.stream): the result
    equals :func:`analyze_table` of the decoded table. ``progress(done, total)`` follows the passes."""
    from tracelens.digest import take

    # the file's SHA-256, on a thread of its own from now on (or since the command started it: tracelens.digest),
    # before the imports below, which load numba
    with take(path) as digest:
        from tracelens._jit import ANALYZE_KERNELS, first_run, set_threads
        from tracelens.analysis.stream import analyze_stream

        config = config or AnalysisConfig()
        set_threads(config.decode.threads)
        config.decode.catalog()  # the analysis reads ids, not names; a catalog file it is given must still be valid
        with first_run(_size(path), kernels=ANALYZE_KERNELS, beside=("select", "analyze")):
            a = analyze_stream(path, config, progress=progress, digest=digest)
    if config.vmcore:
        from tracelens.analysis.dumpside import attach

        attach(a, config.vmcore, config.vmcore_dom)
    return a
