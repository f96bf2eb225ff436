"""``tracelens export``: a capture and its analysis as a native Perfetto trace (tracelens.perfetto_export).

The command parses options, calls :func:`tracelens.perfetto_export.export` and reports what it wrote on stderr.
``--show-code`` prints the Python a notebook user would write.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands import check_cpu_hz, trace_mask_option


def run(capture: str, *, output: str, cpu_hz: float | None = None, boundary: list[str] | tuple = (),
        xen_version: str | None = None, tolerance: str = "strict", vmcore: str | None = None,
        vmcore_dom: int | None = None, trace_mask: str | None = None, pcpus: bool = True,
        show_code: bool = False) -> int:
    """The command's body, callable without the CLI. Returns the exit code (0: the trace was written)."""
    from tracelens.analysis.boundaries import parse_boundary
    from tracelens.errors import UsageError

    user = [parse_boundary(b, cpu_hz) for b in boundary]
    mask = trace_mask_option(trace_mask)
    if vmcore and not cpu_hz:
        raise UsageError("--vmcore needs --cpu-hz: the dump's kernel log counts nanoseconds and the capture TSC "
                         "cycles; give the TSC frequency (xl info, or the guest's boot log)")
    if show_code:
        print(_code(capture, output, user, cpu_hz, xen_version, tolerance, vmcore, vmcore_dom, mask, pcpus))
        return 0
    from tracelens.output import check_outputs

    check_outputs([("-o", output)], [capture, vmcore])
    import os

    from tracelens.analysis.api import AnalysisConfig
    from tracelens.perfetto_export import ExportOptions, export
    from tracelens.progress import byte_progress

    try:
        big = os.path.getsize(capture) > (256 << 20)
    except OSError:
        big = False
    config = AnalysisConfig(boundaries=tuple(user), xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                            vmcore=vmcore, vmcore_dom=vmcore_dom, trace_mask=mask)
    with byte_progress("exporting (3 passes)", 0, enabled=None if big else False) as progress:
        st = export(capture, output, config, ExportOptions(pcpus=pcpus), progress=progress)
    print(f"tracelens: wrote {output}: {st.bytes:,} bytes, {st.packets:,} packets ({st.pcpu_slices:,} pCPU slices, "
          f"{st.counter_values:,} counter values, {st.instants:,} instants); timestamps "
          f"{'in ns' if cpu_hz else 'are TSC cycles written as ns (no --cpu-hz)'}; open it in ui.perfetto.dev",
          file=sys.stderr)
    return 0


def _code(capture, output, user, cpu_hz, xen_version, tolerance, vmcore, vmcore_dom, trace_mask, pcpus) -> str:
    from tracelens.commands import config_args

    cfg = config_args(boundaries=tuple(user) if user else None, xen_version=xen_version, cpu_hz=cpu_hz,
                      tolerance=tolerance, vmcore=vmcore, vmcore_dom=vmcore_dom, trace_mask=trace_mask)
    opts = "" if pcpus else ", ExportOptions(pcpus=False)"
    return (
        "from tracelens.analysis.api import AnalysisConfig\n"
        "from tracelens.perfetto_export import ExportOptions, export\n\n"
        f"stats = export({capture!r}, {output!r}, AnalysisConfig({', '.join(cfg)}){opts})\n"
        "print(stats)"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        capture: str = typer.Argument(..., help="A xentrace capture."),
        output: str = typer.Option(..., "-o", "--output", help="the Perfetto trace to write (OUT.pftrace, atomically)"),
        cpu_hz: Optional[float] = typer.Option(None, "--cpu-hz", help="TSC frequency in Hz: timestamps in ns (else "
                                                                      "TSC cycles written as ns)",
                                               callback=check_cpu_hz),
        boundary: List[str] = typer.Option([], "--boundary", help="add a boundary: DOMID@TSC, or DOMID@1.5ms with "
                                                                    "--cpu-hz; repeatable"),
        xen_version: Optional[str] = typer.Option(None, "--xen-version", help="Xen release that wrote the capture "
                                                                              "(default: guessed)"),
        tolerance: str = typer.Option("strict", "--tolerance", help="strict, truncate or skip (as for decode)"),
        trace_mask: Optional[str] = typer.Option(None, "--trace-mask", metavar="MASK",
                                                 help="the event mask the capture was recorded with (xentrace -e)"),
        vmcore: Optional[str] = typer.Option(None, "--vmcore", help="the guest's dump: its Xen log lines as instants "
                                                                    "(needs --cpu-hz)"),
        vmcore_dom: Optional[int] = typer.Option(None, "--vmcore-dom", help="the domid the dump belongs to "
                                                                            "(default: inferred)"),
        pcpus: bool = typer.Option(True, "--pcpus/--no-pcpus", help="the running vCPU of every pCPU as slices (a "
                                                                    "third pass over the capture)"),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
    ):
        """A native Perfetto trace (ui.perfetto.dev): pCPU tracks with the running vCPU, epochs, grant, balloon and
        lost-record counters, boundaries, unsafe operations and findings (see docs/perfetto.md)."""
        code = run(capture, output=output, cpu_hz=cpu_hz, boundary=boundary, xen_version=xen_version,
                   tolerance=tolerance, vmcore=vmcore, vmcore_dom=vmcore_dom, trace_mask=trace_mask, pcpus=pcpus,
                   show_code=show_code)
        if code:
            raise typer.Exit(code)
