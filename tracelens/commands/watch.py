"""``tracelens watch``: follow a capture while xentrace writes it and print each guest's kexec-safety changes as they
happen (tracelens.live; docs/watch.md). The command parses its options into an AnalysisConfig, a WatchOptions and
(--gate) a GateConfig, runs :func:`tracelens.live.watch` and renders its events as text lines or JSON lines;
``--show-code`` prints the same call with the same objects."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from tracelens.commands import declarations as D


def _dom(d) -> str:
    return "-" if d is None else ("idle" if d == 0x7FFF else f"d{d}")


class _Text:
    """Human-readable lines; TSCs as seconds from the capture's first TSC with --cpu-hz."""

    def __init__(self, out, cpu_hz):
        self.out, self.cpu_hz, self.t0 = out, cpu_hz, None

    def when(self, tsc, d=None) -> str:
        if tsc is None:
            return "tsc -"
        if self.cpu_hz and d is not None and d.get("tsc") == tsc and "time_s" in d:
            return f"{d['time_s']:.6f} s"
        return f"tsc {tsc}"

    def line(self, ev) -> str | None:
        d = ev.data
        t = ev.type
        at = f"[{ev.at:7.2f}s]"
        if t == "boundary":
            return (f"{at} boundary {_dom(d['domid'])} {d['kind']}: epoch {d['epoch']} ended at {self.when(d['tsc'], d)}")
        if t == "unsafe":
            first = " (kexec_is_safe cleared)" if d.get("first") else ""
            return (f"{at} UNSAFE {_dom(d['domid'])} epoch {d['epoch']}: {d['kind']} at {self.when(d['tsc'], d)}{first}")
        if t == "finding":
            verb = {"raised": "finding", "changed": "finding changed", "withdrawn": "finding withdrawn"}[d["change"]]
            return (f"{at} {verb} {d['rule']} {d['severity']} {_dom(d['domid'])} epoch {d['epoch']} "
                    f"{d['object']}: {d['message']}")
        if t == "lost":
            inc = ", ".join(f"{_dom(x['domid'])} epoch {x['epoch']}" for x in d.get("inconclusive", []))
            return (f"{at} lost {d.get('records')} record(s) on pCPU {d.get('cpu')} ({self.when(d.get('first_tsc'))}"
                    f" .. {self.when(d.get('tsc'), d)})" + (f": inconclusive now: {inc}" if inc else ""))
        return None


def _status_line(d: dict) -> str:
    out = ", ".join(f"{_dom(x['mapper'])} holds {x['outstanding']} of {_dom(x['granter'])}"
                    for x in d.get("outstanding", [])[:4])
    g = d.get("guests", {})
    return (f"watch: {d['bytes'] / 1e6:.1f} MB, {d['records']:,} records ({d['records_per_s']:,}/s), guests "
            f"{g.get('safe', 0)} safe / {g.get('unsafe', 0)} unsafe / {g.get('inconclusive', 0)} inconclusive"
            + (f"; {out}" if out else ""))


def run(capture: str, config=None, opts=None, *, json_lines: bool = False, gate=None, show_code: bool = False,
        out=None, err=None, stop=None, on_open=None) -> int:
    """The command's body, callable without the CLI: watch ``capture`` with ``config`` (an AnalysisConfig) and
    ``opts`` (a tracelens.live.WatchOptions); ``gate``: a GateConfig to judge the end by (None: no gate). Returns
    the exit code (docs/exit-codes.md; with ``gate``, the gate's)."""
    from tracelens.live import WatchOptions, gate_verdict, watch
    from tracelens.options import AnalysisConfig

    out = out or sys.stdout
    err = err or sys.stderr
    config = config or AnalysisConfig()
    opts = opts or WatchOptions()
    if show_code:
        out.write(code(capture, config, opts, gate))
        return 0
    tty = hasattr(err, "isatty") and err.isatty()
    text = _Text(out, config.decode.cpu_hz)
    final = None
    status_shown = False
    for ev in watch(capture, config, opts, stop=stop, on_open=on_open):
        if ev.type == "end":
            final = ev
            break
        if json_lines:
            out.write(json.dumps(dict(ev.to_dict(), at=round(ev.at, 3)), sort_keys=False) + "\n")
            out.flush()
            continue
        if ev.type == "status":
            if tty:
                err.write("\r\x1b[K" + _status_line(ev.data))
                err.flush()
                status_shown = True
            continue
        line = text.line(ev)
        if line:
            if status_shown:
                err.write("\r\x1b[K")
                status_shown = False
            out.write(line + "\n")
            out.flush()
    if status_shown:
        err.write("\r\x1b[K")
    a = final.data["analysis"]
    w = final.data["watch"]
    code_ = 0
    gate_line = None
    if gate is not None:
        verdict = gate_verdict(final, capture if capture != "-" else "<stdin>", gate)
        code_, gate_line = verdict.exit_code, verdict.status
    if json_lines:
        end = {"type": "end", "summary": final.data["summary"], "findings": final.data["findings"],
               "watch": w, "at": round(final.at, 3)}
        if gate is not None:
            end["gate"] = {"status": gate_line, "exit_code": code_}
        out.write(json.dumps(end) + "\n")
    else:
        from tracelens.analysis.report import to_text
        from tracelens.terminal import text_width

        out.write(f"--- end of input: {w['bytes']:,} bytes, {w['windows']:,} windows, {w['seconds']} s\n")
        if w["late_windows"]:
            out.write(f"note: {w['late_windows']} window(s) arrived after later records had been analysed; "
                      "the summary below may differ from `tracelens analyze` of the finished capture\n")
        out.write(to_text(a, width=text_width(out)))
        if gate is not None:
            out.write(f"gate: {gate_line} (exit {code_})\n")
    out.flush()
    return code_


def code(capture, config, opts, gate=None) -> str:
    """The Python of ``tracelens watch`` with the same AnalysisConfig, WatchOptions and (--gate) GateConfig."""
    from tracelens.showcode import Code

    c = Code().use("tracelens.live", "watch")
    c.add(f"for ev in {c.call('watch', capture, config=config, opts=opts)}:",
          "    if ev.type == 'end':  # the last event: the final analysis",
          "        break",
          "    if ev.type != 'status':",
          "        print(ev.type, ev.data)",
          "findings = ev.data['findings']",
          "for f in findings:",
          "    print(f['rule'], f['severity'], f['domid'], f['epoch'], f['object'], f['message'])")
    if gate is not None:
        c.use("tracelens.live", "gate_verdict")
        name = capture if capture != "-" else "<stdin>"
        c.add(f"result = gate_verdict(ev, {name!r}, {c.value(gate)})",
              "print('exit code', result.exit_code)  # 0 pass, 1 findings, 3 inconclusive")
    return c.text()


def register(app: typer.Typer) -> None:
    @app.command()
    def watch(
        capture: str = typer.Argument(..., help="A capture being written (followed like tail -f), a FIFO, or - for "
                                                "standard input (xentrace ... - | tracelens watch -)."),
        json_lines: bool = typer.Option(False, "--json", help="one JSON object per line (type: boundary, unsafe, "
                                                              "finding, lost, status, end)"),
        idle_exit: Optional[float] = typer.Option(None, "--idle-exit", metavar="SECONDS",
                                                  help="end when a followed file has not grown for this long "
                                                       "(default: never; standard input ends when it closes)"),
        gate: bool = typer.Option(False, "--gate", help="exit with the gate's code at the end (0 pass, 1 findings, "
                                                        "3 inconclusive)"),
        policy: Optional[str] = typer.Option(None, "--policy", help="gate policy file (default ./tracelens.toml)"),
        fail_on: Optional[str] = typer.Option(None, "--fail-on", help="with --gate: error, warning or note"),
        cpu_hz: Optional[float] = D.CPU_HZ.typer(help="TSC frequency in Hz: times in seconds" + D.CONFIG_NOTE + "."),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        tolerance: Optional[str] = D.TOLERANCE.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        threads: Optional[int] = D.THREADS.typer(),
        boundary: List[str] = typer.Option([], "--boundary", help="add a boundary: DOMID@TSC; repeatable"),
        trace_mask: Optional[str] = D.TRACE_MASK.typer(),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """Follow a capture while xentrace writes it: boundaries, the moment each guest stops being safe to kexec,
        findings and losses as they happen; the final summary at the end (see docs/watch.md)."""
        import signal
        from dataclasses import replace

        from tracelens.analysis.boundaries import parse_boundary
        from tracelens.commands import analysis_config, decode_options
        from tracelens.config import load_config
        from tracelens.errors import UsageError
        from tracelens.live import WatchOptions

        if idle_exit is not None and idle_exit < 0:
            raise UsageError(f"--idle-exit must be 0 or more seconds, not {idle_exit}")
        if (policy or fail_on) and not gate:
            raise UsageError("--policy and --fail-on go with --gate")
        if gate and tolerance not in (None, "strict"):
            raise UsageError("--gate reads strictly (a damaged capture is never a pass): drop --tolerance")
        cfg = load_config(policy)
        base = cfg.gate.analysis if gate else cfg.analysis  # the gate: strict, and gate.trace_mask first
        decode = decode_options(base.decode, xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                                catalog_files=catalog, threads=threads)
        config = analysis_config(base, decode, boundaries=[parse_boundary(b, decode.cpu_hz) for b in boundary],
                                 trace_mask=trace_mask)
        gate_config = replace(cfg.gate, analysis=config, fail_on=fail_on) if gate else None
        opts = WatchOptions(idle_exit=idle_exit, status_every=2.0 if (json_lines or sys.stderr.isatty()) else None)
        stopping = []
        opened = []

        def on_sigint(*_):
            if not opened:  # still waiting for a FIFO's writer: nothing to summarise
                raise KeyboardInterrupt
            stopping.append(True)  # Ctrl-C ends the watch; the final summary follows

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            code = run(capture, config, opts, json_lines=json_lines, gate=gate_config, show_code=show_code,
                       stop=lambda: bool(stopping), on_open=lambda: opened.append(True))
        finally:
            signal.signal(signal.SIGINT, old)
        if code:
            raise typer.Exit(code)
