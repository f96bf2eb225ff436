"""The time axis of every report, plot and export: TSC cycles of the capture, shown from the capture's start.

A capture's clock is the TSC (cycles; spec ../shared/spec/xentrace.md §2). With a TSC frequency (``--cpu-hz``,
``DecodeOptions(cpu_hz=...)``) a moment is shown in seconds from the capture's first TSC (``+12.5 ms``); without
one, in cycles from it (``+1.25 Mcyc``): raw 14-digit TSCs are kept for tooltips and tables, never for axes.
:class:`TimeBase` holds that choice once, so the HTML timeline, the matplotlib plots and the Perfetto export agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_SECOND_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
_CYCLE_UNITS = ((1e12, "Tcyc"), (1e9, "Gcyc"), (1e6, "Mcyc"), (1e3, "kcyc"), (1.0, "cyc"))


def nice_step(span: float, target: int = 6) -> float:
    """A 1-2-5 step that cuts ``span`` into about ``target`` intervals."""
    if not span > 0:
        return 1.0
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


@dataclass(frozen=True)
class TimeBase:
    """``t0``/``t1``: the capture's first and last TSC (cycles); ``cpu_hz``: the TSC frequency, or None."""

    t0: int
    t1: int
    cpu_hz: float | None = None

    @classmethod
    def of(cls, analysis) -> TimeBase:
        """The time base of an :class:`~tracelens.analysis.analyze.Analysis` (its span and ``cpu_hz``)."""
        t0 = int(analysis.first_tsc)
        return cls(t0, max(int(analysis.last_tsc), t0 + 1), getattr(analysis, "cpu_hz", None))

    @property
    def span(self) -> int:
        return self.t1 - self.t0

    def offset(self, tsc) -> float:
        """``tsc`` from the start, in seconds (with ``cpu_hz``) or cycles."""
        d = float(int(tsc) - self.t0)
        return d / self.cpu_hz if self.cpu_hz else d

    def unit(self) -> tuple[float, str]:
        """(scale, name) of the display unit suited to the capture's span: seconds, ms, µs, ns, or Gcyc..cyc."""
        span = self.span / self.cpu_hz if self.cpu_hz else float(self.span)
        for scale, name in (_SECOND_UNITS if self.cpu_hz else _CYCLE_UNITS):
            if span >= scale or scale == (1e-9 if self.cpu_hz else 1.0):
                return scale, name
        return 1.0, "s" if self.cpu_hz else "cyc"  # pragma: no cover

    def axis_label(self) -> str:
        _scale, name = self.unit()
        if self.cpu_hz:
            return f"time from capture start ({name}; TSC {self.t0:,} at {self.cpu_hz / 1e9:g} GHz)"
        return f"TSC cycles from capture start ({name}; first TSC {self.t0:,}; no --cpu-hz)"

    def ticks(self, target: int = 6) -> list[tuple[int, str]]:
        """(tsc, label) of round values of the display unit across the span, the start (0) included."""
        scale, name = self.unit()
        span_u = (self.span / self.cpu_hz if self.cpu_hz else self.span) / scale
        step = nice_step(span_u, target)
        out = []
        k = 0
        while k * step <= span_u * (1 + 1e-9):
            v = k * step
            cycles = v * scale * (self.cpu_hz if self.cpu_hz else 1.0)
            out.append((self.t0 + int(round(cycles)), _num(v, step) + (f" {name}" if k == 0 else "")))
            k += 1
        return out

    def fmt(self, tsc, *, sign: bool = True) -> str:
        """A moment as ``+12.35 ms`` (or ``+1.235 Mcyc``), in the capture's display unit."""
        if tsc is None:
            return "-"
        scale, name = self.unit()
        v = self.offset(tsc) / scale
        return f"{'+' if sign and v >= 0 else ''}{_short(v)} {name}"

    def fmt_span(self, a, b) -> str:
        """A duration between two TSCs, in the display unit."""
        scale, name = self.unit()
        d = (int(b) - int(a)) / (self.cpu_hz or 1.0) / scale
        return f"{_short(d)} {name}"

    def ns(self, tsc) -> int:
        """``tsc`` on the Perfetto clock: nanoseconds (tsc * 1e9 / cpu_hz) with ``cpu_hz``, else the cycles."""
        t = int(tsc)
        if not self.cpu_hz:
            return t
        hz = int(self.cpu_hz)
        return (t // hz) * 1_000_000_000 + ((t % hz) * 1_000_000_000) // hz


def _num(v: float, step: float) -> str:
    if v == 0:
        return "0"
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{digits}f}"


def _short(v: float) -> str:
    """Four significant digits, never an exponent: ``1745``, ``2.791``, ``0.0996``, ``12,345``."""
    if v == 0:
        return "0"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    digits = max(0, 3 - math.floor(math.log10(abs(v))))
    return f"{v:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{v:.{digits}f}" else f"{v:.{digits}f}"
