"""``tracelens export``: a capture and its analysis as a native Perfetto trace (tracelens.perfetto_export).

The command parses its options into an AnalysisConfig (decode options inside) and an ExportOptions, calls
:func:`tracelens.perfetto_export.export` and reports what it wrote on stderr. ``--show-code`` prints the same call
with the same objects.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands import declarations as D


def run(capture: str, output: str, config=None, options=None, *, show_code: bool = False) -> int:
    """The command's body, callable without the CLI (``config``: an AnalysisConfig, ``options``: an
    ExportOptions). Returns the exit code (0: the trace was written)."""
    from tracelens.options import AnalysisConfig
    from tracelens.perfetto_export import ExportOptions, check_config

    config = config or AnalysisConfig()
    options = options or ExportOptions()
    check_config(config)
    if show_code:
        sys.stdout.write(code(capture, output, config, options))
        return 0
    from tracelens.output import check_outputs

    check_outputs([("-o", output)], [capture, config.vmcore, config.decode.catalog_files])
    from tracelens.perfetto_export import export
    from tracelens.progress import capture_progress

    with capture_progress("exporting (3 passes)", capture) as progress:
        st = export(capture, output, config, options, progress=progress)
    print(f"tracelens: wrote {output}: {st.bytes:,} bytes, {st.packets:,} packets ({st.pcpu_slices:,} pCPU slices, "
          f"{st.counter_values:,} counter values, {st.instants:,} instants); timestamps "
          f"{'in ns' if config.decode.cpu_hz else 'are TSC cycles written as ns (no --cpu-hz)'}; open it in "
          "ui.perfetto.dev", file=sys.stderr)
    return 0


def code(capture, output, config, options) -> str:
    """The Python of ``tracelens export`` with the same AnalysisConfig and ExportOptions."""
    from tracelens.showcode import Code

    c = Code().use("tracelens.perfetto_export", "export")
    c.add(f"stats = {c.call('export', capture, output, config=config, options=options)}", "print(stats)")
    return c.text()


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        capture: str = typer.Argument(..., help="A xentrace capture."),
        output: str = typer.Option(..., "-o", "--output", help="the Perfetto trace to write (OUT.pftrace, atomically)"),
        cpu_hz: Optional[float] = D.CPU_HZ.typer(help="TSC frequency in Hz: timestamps in ns (else TSC cycles written "
                                                      "as ns)" + D.CONFIG_NOTE + "."),
        boundary: List[str] = typer.Option([], "--boundary", help="add a boundary: DOMID@TSC, or DOMID@1.5ms with "
                                                                    "--cpu-hz; repeatable"),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        threads: Optional[int] = D.THREADS.typer(),
        trace_mask: Optional[str] = D.TRACE_MASK.typer(),
        vmcore: Optional[str] = typer.Option(None, "--vmcore", help="the guest's dump: its Xen log lines as instants "
                                                                    "(needs --cpu-hz)"),
        vmcore_dom: Optional[int] = typer.Option(None, "--vmcore-dom", help="the domid the dump belongs to "
                                                                            "(default: inferred)"),
        pcpus: bool = typer.Option(True, "--pcpus/--no-pcpus", help="the running vCPU of every pCPU as slices (a "
                                                                    "third pass over the capture)"),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """A native Perfetto trace (ui.perfetto.dev): pCPU tracks with the running vCPU, epochs, grant, balloon and
        lost-record counters, boundaries, unsafe operations and findings (see docs/perfetto.md)."""
        from tracelens.analysis.boundaries import parse_boundary
        from tracelens.commands import analysis_config, config, decode_options
        from tracelens.perfetto_export import ExportOptions

        cfg = config()
        decode = decode_options(cfg.decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                                catalog_files=catalog, threads=threads)
        analysis = analysis_config(cfg.analysis, decode, boundaries=[parse_boundary(b, decode.cpu_hz) for b in boundary],
                                   trace_mask=trace_mask, vmcore=vmcore, vmcore_dom=vmcore_dom)
        code_ = run(capture, output, analysis, ExportOptions(pcpus=pcpus), show_code=show_code)
        if code_:
            raise typer.Exit(code_)
