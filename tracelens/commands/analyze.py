"""``tracelens analyze``: boundaries, ledgers, kexec safety and findings of a xentrace capture.

The command parses options, calls :func:`tracelens.analysis.analyze.analyze` and renders with
:mod:`tracelens.analysis.report`. ``--show-code`` prints the Python a notebook user would write.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tracelens.commands import check_cpu_hz, trace_mask_option

FORMATS = ("text", "json", "md", "html")


def run(capture: str, *, fmt: str = "text", output: str | None = None, boundary: list[str] | tuple = (),
        cpu_hz: float | None = None, xen_version: str | None = None, tolerance: str = "strict",
        show_code: bool = False, vmcore: str | None = None, vmcore_dom: int | None = None,
        trace_mask: str | None = None) -> int:
    """The command's body, callable without the CLI. Returns the exit code (0: analysis done)."""
    from tracelens.errors import UsageError

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    from tracelens.analysis.boundaries import parse_boundary

    user = [parse_boundary(b, cpu_hz) for b in boundary]
    mask = trace_mask_option(trace_mask)
    if show_code:
        print(_code(capture, user, cpu_hz, xen_version, tolerance, fmt, vmcore, vmcore_dom, mask))
        return 0
    from tracelens.output import check_outputs

    check_outputs([("-o", output)], [capture, vmcore])
    from tracelens.analysis.analyze import AnalysisConfig, analyze
    from tracelens.analysis.report import RENDERERS

    import os

    from tracelens.progress import byte_progress

    try:
        big = os.path.getsize(capture) > (256 << 20)
    except OSError:
        big = False
    with byte_progress("analysing (2 passes)", 0, enabled=None if big else False) as progress:
        a = analyze(capture, AnalysisConfig(boundaries=tuple(user), xen_version=xen_version, cpu_hz=cpu_hz,
                                            tolerance=tolerance, vmcore=vmcore, vmcore_dom=vmcore_dom,
                                            trace_mask=mask), progress=progress)
    if fmt == "text":
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


def _code(capture, user, cpu_hz, xen_version, tolerance, fmt, vmcore=None, vmcore_dom=None, trace_mask=None) -> str:
    from tracelens.commands import config_args

    cfg = config_args(boundaries=tuple(user) if user else None, xen_version=xen_version, cpu_hz=cpu_hz,
                      tolerance=tolerance, vmcore=vmcore, vmcore_dom=vmcore_dom, trace_mask=trace_mask)
    render = {"text": "to_text", "json": "to_json", "md": "to_markdown", "html": "to_html"}[fmt]
    return (
        "from tracelens.analysis.analyze import AnalysisConfig, analyze\n"
        f"from tracelens.analysis.report import {render}\n\n"
        f"a = analyze({capture!r}, AnalysisConfig({', '.join(cfg)}))\n"
        "for f in a.findings:\n"
        "    print(f.rule, f.severity, f.domid, f.epoch, f.object, f.message)\n"
        f"print({render}(a))"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def analyze(
        capture: str = typer.Argument(..., help="A xentrace capture."),
        fmt: str = typer.Option("text", "--format", "-f", help="text, json, md or html (self-contained, with timelines)"),
        output: Optional[str] = typer.Option(None, "-o", "--output", help="write the report to FILE (atomically)"),
        boundary: List[str] = typer.Option([], "--boundary", help="add a boundary: DOMID@TSC, or DOMID@1.5ms with "
                                                                    "--cpu-hz; repeatable"),
        cpu_hz: Optional[float] = typer.Option(None, "--cpu-hz", help="TSC frequency in Hz: reports show seconds from the capture's start (and --boundary takes times)", callback=check_cpu_hz),
        xen_version: Optional[str] = typer.Option(None, "--xen-version", help="Xen release that wrote the capture "
                                                                              "(default: guessed)"),
        tolerance: str = typer.Option("strict", "--tolerance", help="strict, truncate or skip (as for decode)"),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
        trace_mask: Optional[str] = typer.Option(None, "--trace-mask", metavar="MASK",
                                                 help="the event mask the capture was recorded with (xentrace -e: "
                                                      "0x0010f000, or words such as sched,mem,all): zero records of "
                                                      "a declared class are evidence"),
        vmcore: Optional[str] = typer.Option(None, "--vmcore", help="the guest's dump (kdump, ELF vmcore or xl "
                                                                    "dump-core): adds its Xen evidence"),
        vmcore_dom: Optional[int] = typer.Option(None, "--vmcore-dom", help="the domid the dump belongs to "
                                                                            "(default: inferred, see docs/analysis.md)"),
    ):
        """Kexec boundaries, grant/balloon/hypercall ledgers, kexec safety and findings (see docs/analysis.md)."""
        code = run(capture, fmt=fmt, output=output, boundary=boundary, cpu_hz=cpu_hz, xen_version=xen_version,
                   tolerance=tolerance, show_code=show_code, vmcore=vmcore, vmcore_dom=vmcore_dom,
                   trace_mask=trace_mask)
        if code:
            raise typer.Exit(code)
