"""``tracelens analyze``: boundaries, ledgers, kexec safety and findings of a xentrace capture.

The command parses its options into a :class:`tracelens.options.AnalysisConfig` (decode options nested inside),
calls :func:`tracelens.analysis.analyze.analyze` and renders with :mod:`tracelens.analysis.report`. ``--show-code``
prints the same call with the same config.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands import declarations as D

FORMATS = ("text", "json", "md", "html")
#: the renderer of each --format, in tracelens.analysis.report
RENDER = {"text": "to_text", "json": "to_json", "md": "to_markdown", "html": "to_html"}


def check_format(fmt: str) -> str:
    from tracelens.errors import UsageError

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def code(capture, config, fmt: str = "text", output: str | None = None) -> str:
    """The Python of ``tracelens analyze`` with this config."""
    from tracelens.showcode import Code

    render = RENDER[check_format(fmt)]
    c = Code().use("tracelens.analysis.analyze", "analyze").use("tracelens.analysis.report", render)
    c.add(f"a = {c.call('analyze', capture, config=config)}  # a.boundaries, a.grants, a.safety, a.findings...")
    if fmt == "text":  # rich tables as wide as the terminal they go to
        c.use("tracelens.terminal", "text_width")
        if output:
            c.add(f"text = {render}(a, width=text_width())")
        else:
            c.use("sys").add(f"text = {render}(a, width=text_width(sys.stdout))")
    else:
        c.add(f"text = {render}(a)")
    if output:
        c.add(f"with open({output!r}, 'w', encoding='utf-8') as f:", "    f.write(text)")
    else:
        c.add("print(text, end='')")
    return c.text()


def run(capture: str, config=None, *, fmt: str = "text", output: str | None = None, show_code: bool = False) -> int:
    """The command's body, callable without the CLI (``config``: an AnalysisConfig). Returns the exit code (0:
    analysis done)."""
    from tracelens.analysis.analyze import analyze
    from tracelens.analysis.report import RENDERERS
    from tracelens.options import AnalysisConfig
    from tracelens.output import check_outputs
    from tracelens.progress import capture_progress

    config = config or AnalysisConfig()
    check_format(fmt)
    if show_code:
        sys.stdout.write(code(capture, config, fmt, output))
        return 0
    check_outputs([("-o", output)], [capture, config.vmcore, config.decode.catalog_files])
    with capture_progress("analysing (2 passes)", capture) as progress:
        a = analyze(capture, config, progress=progress)
    if fmt == "text":  # as wide as the terminal it goes to (a file: tracelens.terminal.FILE_WIDTH)
        from tracelens.analysis.report import to_text
        from tracelens.terminal import text_width

        text = to_text(a, width=text_width(None if output else sys.stdout))
    else:
        text = RENDERERS[fmt](a)
    if output:
        from tracelens.output import atomic_output

        with atomic_output(output) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        # as decode and pages do: what was written, where, on stderr
        print(f"{capture}: {len(a.findings):,} finding(s), {fmt} report -> {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(app: typer.Typer) -> None:
    @app.command()
    def analyze(
        capture: str = typer.Argument(..., help="A xentrace capture."),
        fmt: str = typer.Option("text", "--format", "-f", help="text, json, md or html (self-contained, with timelines)"),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="write the report to FILE (atomically)"),
        boundary: List[str] = typer.Option([], "--boundary", help="add a boundary: DOMID@TSC, or DOMID@1.5ms with "
                                                                    "--cpu-hz; repeatable"),
        cpu_hz: Optional[float] = D.CPU_HZ.typer(help="TSC frequency in Hz: reports show seconds from the capture's "
                                                      "start (and --boundary takes times)" + D.CONFIG_NOTE + "."),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        threads: Optional[int] = D.THREADS.typer(),
        show_code: bool = D.SHOW_CODE.typer(),
        trace_mask: Optional[str] = D.TRACE_MASK.typer(),
        vmcore: Optional[str] = typer.Option(None, "--vmcore", help="the guest's dump (kdump, ELF vmcore or xl "
                                                                    "dump-core): adds its Xen evidence"),
        vmcore_dom: Optional[int] = typer.Option(None, "--vmcore-dom", help="the domid the dump belongs to "
                                                                            "(default: inferred, see docs/analysis.md)"),
    ):
        """Kexec boundaries, grant/balloon/hypercall ledgers, kexec safety and findings (see docs/analysis.md)."""
        if not show_code:  # its SHA-256 on a spare core while numba loads (tracelens.digest)
            from tracelens.digest import prefetch

            prefetch(capture)
        from tracelens.analysis.boundaries import parse_boundary
        from tracelens.commands import analysis_config, config, decode_options

        cfg = config()
        decode = decode_options(cfg.decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                                catalog_files=catalog, threads=threads)
        boundaries = [parse_boundary(b, decode.cpu_hz) for b in boundary]
        analysis = analysis_config(cfg.analysis, decode, boundaries=boundaries, trace_mask=trace_mask, vmcore=vmcore,
                                   vmcore_dom=vmcore_dom)
        code_ = run(capture, analysis, fmt=fmt, output=output, show_code=show_code)
        if code_:
            raise typer.Exit(code_)
