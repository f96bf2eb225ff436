"""Options objects: what the commands, the gate, the fleet scan and notebooks hand the library, nested one inside
the other: :class:`DecodeOptions` (how to decode a capture) inside :class:`AnalysisConfig` (what to analyse) inside
:class:`GateConfig` (how to judge it; tracelens.fleet.scan.ScanConfig holds an AnalysisConfig too).

A command parses its arguments into these objects and calls the library with them; ``--show-code`` prints the same
objects (tracelens.showcode), so the printed Python cannot drift from what the command ran. ``tracelens.toml`` fills
them too (:mod:`tracelens.config`). Every check raises :class:`~tracelens.errors.UsageError` naming the parameter
(``xen_version``); the command line shows it as its option (``--xen-version``).

Units: ``cpu_hz`` in Hz (TSC cycles per second); TSCs in cycles.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tracelens.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from tracelens.fleet.cluster import ClusterOptions

#: the decoder's damage tolerances (docs/xentrace.md, "Damage")
TOLERANCES = ("strict", "truncate", "skip")
#: the finding severities, worst first (tracelens.gate.policy)
SEVERITIES = ("error", "warning", "note")
MAX_THREADS = 4096


def _paths(value, param: str) -> tuple[str, ...]:
    if isinstance(value, (str, os.PathLike)):
        value = (value,)
    try:
        return tuple(os.fspath(p) for p in value)
    except TypeError:
        raise UsageError(f"{param} must be a list of file paths, not {value!r}", param) from None


def check_cpu_hz(value, param: str = "cpu_hz"):
    """``value`` when it is None or a TSC frequency in Hz between 1 and 1e12 (0 divided by zero, nan and inf failed
    inside the decoder); UsageError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 1 <= value <= 1e12:
        raise UsageError(f"{param} must be a TSC frequency in Hz between 1 and 1e12, not {value}", param)
    return value


def check_xen_version(text):
    """``text`` when it is None or a Xen release like 4.17 or 4.17.2; UsageError otherwise."""
    if text is None:
        return None
    from tracelens.parsers.xentrace.catalog import parse_version

    if not isinstance(text, str):
        raise UsageError(f"xen_version must be a string like 4.17, not {text!r}", "xen_version")
    parse_version(text)
    return text


def check_choice(value, choices, param: str):
    if value not in choices:
        raise UsageError(f"{param} must be one of {', '.join(choices)}, not {value!r}", param)
    return value


def check_int(value, param: str, low: int, high: int | None = None):
    """``value`` when it is None or an integer in [low, high]; UsageError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        more = f" and at most {high}" if high is not None else ""
        raise UsageError(f"{param} must be an integer of at least {low}{more}, not {value!r}", param)
    return value


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode a xentrace capture (docs/xentrace.md).

    ``xen_version``: the Xen release that wrote it ("4.17"; default: guessed from the records); ``cpu_hz``: the TSC
    frequency in Hz, which adds a ``time_ns`` column; ``tolerance``: what to do with damage, "strict" (stop with an
    :class:`~tracelens.errors.IncompleteCaptureError`), "truncate" (keep what comes before it) or "skip"
    (resynchronise after it); ``catalog_files``: extra event definitions (TOML files); ``threads``: decoder threads
    (default: every core)."""

    xen_version: str | None = None
    cpu_hz: float | None = None
    tolerance: str = "strict"
    catalog_files: tuple[str, ...] = ()
    threads: int | None = None

    def __post_init__(self):
        check_xen_version(self.xen_version)
        check_cpu_hz(self.cpu_hz)
        check_choice(self.tolerance, TOLERANCES, "tolerance")
        object.__setattr__(self, "catalog_files", _paths(self.catalog_files, "catalog_files"))
        check_int(self.threads, "threads", 1, MAX_THREADS)

    def catalog(self):
        """The event catalog: the built-in one and ``catalog_files`` (tracelens.parsers.xentrace.catalog)."""
        from tracelens.parsers.xentrace.catalog import load_catalog

        return load_catalog(self.catalog_files)


@dataclass(frozen=True)
class AnalysisConfig:
    """What the analysis of one capture is given (docs/analysis.md).

    ``decode``: how to decode it; ``boundaries``: extra kexec boundaries as (domid, tsc) pairs (TSC in cycles;
    tracelens.analysis.boundaries.parse_boundary reads "DOMID@TSC"); ``trace_mask``: the event mask the capture was
    recorded with (``xentrace -e``: a number or its words, e.g. "sched,mem"), so that zero records of a declared
    class count as evidence; ``vmcore``: the guest's dump, whose Xen evidence joins the analysis; ``vmcore_dom``:
    the domain that dump belongs to (default: inferred)."""

    decode: DecodeOptions = field(default_factory=DecodeOptions)
    boundaries: tuple[tuple[int, int], ...] = ()
    trace_mask: int | str | None = None
    vmcore: str | None = None
    vmcore_dom: int | None = None

    def __post_init__(self):
        if not isinstance(self.decode, DecodeOptions):
            raise UsageError(f"decode must be a DecodeOptions, not {self.decode!r}", "decode")
        try:
            pairs = tuple((int(d), int(t)) for d, t in self.boundaries)
        except (TypeError, ValueError):
            raise UsageError(f"boundaries must be (domid, tsc) pairs, not {self.boundaries!r}", "boundaries") from None
        object.__setattr__(self, "boundaries", pairs)
        if self.trace_mask is not None:
            self.declared_mask()
        if self.vmcore is not None:
            object.__setattr__(self, "vmcore", os.fspath(self.vmcore))
        check_int(self.vmcore_dom, "vmcore_dom", 0, 0x7FEF)
        if self.vmcore_dom is not None and self.vmcore is None:
            raise UsageError("vmcore_dom needs vmcore (the dump it names the domain of)", "vmcore_dom", "vmcore")

    def declared_mask(self) -> int | None:
        """``trace_mask`` as a number (None when not given)."""
        from tracelens.analysis.coverage import parse_mask

        if self.trace_mask is None:
            return None
        try:
            return parse_mask(self.trace_mask)
        except ValueError as e:
            raise UsageError(f"trace_mask: {e}", "trace_mask") from None


@dataclass(frozen=True)
class GateConfig:
    """What ``tracelens gate`` (:func:`tracelens.gate.evaluate.gate`) is given, besides the captures (docs/gate.md).

    ``analysis``: how each capture is analysed (the gate always decodes strictly: a damaged capture is
    unreadable, never partly judged); ``policy``: the policy file whose ``[gate]`` table judges the findings
    (default: ./tracelens.toml when present, else the defaults); ``fail_on``: the lowest severity that fails
    (default: the policy's, else "error"); ``baseline``: accepted fingerprints, only new findings fail (default: the
    policy's ``gate.baseline``); ``write_baseline``: accept the current findings instead, writing their fingerprints
    to this file (when every capture was read completely) and gating against it; ``cluster``: check the captures
    on Dask workers (a tracelens.fleet.cluster.ClusterOptions)."""

    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    policy: str | None = None
    fail_on: str | None = None
    baseline: str | None = None
    write_baseline: str | None = None
    cluster: ClusterOptions | None = None

    def __post_init__(self):
        if not isinstance(self.analysis, AnalysisConfig):
            raise UsageError(f"analysis must be an AnalysisConfig, not {self.analysis!r}", "analysis")
        if self.analysis.decode.tolerance != "strict":
            raise UsageError(f"the gate decodes strictly (a damaged capture is unreadable): tolerance "
                             f"{self.analysis.decode.tolerance!r} does not apply to it", "tolerance")
        if self.fail_on is not None:
            check_choice(self.fail_on, SEVERITIES, "fail_on")
        if self.baseline and self.write_baseline:
            raise UsageError("give baseline (gate against accepted findings) or write_baseline (accept the current "
                             "ones), not both", "baseline", "write_baseline")
        for name in ("policy", "baseline", "write_baseline"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
