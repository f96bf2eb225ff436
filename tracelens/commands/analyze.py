"""``tracelens analyze``: boundaries, ledgers, kexec safety and findings of a xentrace capture.

The command parses its options into a :class:`tracelens.options.AnalysisConfig` (decode options nested inside),
calls :func:`tracelens.analysis.analyze.analyze` and renders with :mod:`tracelens.analysis.report`. ``--show-code``
prints the same call with the same config.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, List, Optional

from tracelens.commands import declarations as D

if TYPE_CHECKING:
    import typer

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


def from_options(capture: str, *, fmt: str = "text", output: str | None = None, boundary=(), cpu_hz=None,
                 xen_version=None, tolerance=None, catalog_files=(), threads=None, show_code: bool = False,
                 trace_mask=None, vmcore=None, vmcore_dom=None) -> int:
    """The command from its options (tracelens.commands.declarations.ANALYZE), with ./tracelens.toml under them:
    what the typer command and the console's fast path (tracelens.console) both run. Returns the exit code."""
    if not show_code:  # its SHA-256 on a spare core while numba loads (tracelens.digest)
        from tracelens.digest import prefetch

        prefetch(capture)
    from tracelens.analysis.boundaries import parse_boundary
    from tracelens.commands import analysis_config, config, decode_options

    cfg = config()
    decode = decode_options(cfg.decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                            catalog_files=list(catalog_files), threads=threads)
    boundaries = [parse_boundary(b, decode.cpu_hz) for b in boundary]
    analysis = analysis_config(cfg.analysis, decode, boundaries=boundaries, trace_mask=trace_mask, vmcore=vmcore,
                               vmcore_dom=vmcore_dom)
    return run(capture, analysis, fmt=fmt, output=output, show_code=show_code)


def register(app: typer.Typer) -> None:
    import typer

    A = {d.param: d for d in D.ANALYZE}

    @app.command()
    def analyze(
        capture: str = typer.Argument(..., help="A xentrace capture."),
        fmt: str = A["fmt"].typer(),
        output: Optional[str] = A["output"].typer(),
        boundary: List[str] = A["boundary"].typer(),
        cpu_hz: Optional[float] = A["cpu_hz"].typer(),
        xen_version: Optional[str] = A["xen_version"].typer(),
        tolerance: Optional[str] = A["tolerance"].typer(),
        catalog: List[str] = A["catalog_files"].typer(),
        threads: Optional[int] = A["threads"].typer(),
        show_code: bool = A["show_code"].typer(),
        trace_mask: Optional[str] = A["trace_mask"].typer(),
        vmcore: Optional[str] = A["vmcore"].typer(),
        vmcore_dom: Optional[int] = A["vmcore_dom"].typer(),
    ):
        """Kexec boundaries, grant/balloon/hypercall ledgers, kexec safety and findings (see docs/analysis.md)."""
        code_ = from_options(capture, fmt=fmt, output=output, boundary=boundary, cpu_hz=cpu_hz,
                             xen_version=xen_version, tolerance=tolerance, catalog_files=catalog, threads=threads,
                             show_code=show_code, trace_mask=trace_mask, vmcore=vmcore, vmcore_dom=vmcore_dom)
        if code_:
            raise typer.Exit(code_)
