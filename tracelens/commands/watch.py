"""``tracelens watch``: follow a capture while xentrace writes it and print each guest's kexec-safety changes as they
happen (tracelens.watch; docs/watch.md). The command parses options, runs :func:`tracelens.watch.watch` and
renders its events as text lines or JSON lines."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from tracelens.commands import check_cpu_hz, config_args, trace_mask_option


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


def run(capture: str, *, json_lines: bool = False, idle_exit: float | None = None, gate: bool = False,
        policy: str | None = None, fail_on: str | None = None, cpu_hz: float | None = None,
        xen_version: str | None = None, tolerance: str = "strict", boundary: list[str] | tuple = (),
        trace_mask: str | None = None, show_code: bool = False, out=None, err=None, stop=None,
        on_open=None) -> int:
    """The command's body, callable without the CLI. Returns the exit code (docs/exit-codes.md; with ``gate``,
    the gate's)."""
    from tracelens.analysis.boundaries import parse_boundary
    from tracelens.errors import UsageError

    out = out or sys.stdout
    err = err or sys.stderr
    if idle_exit is not None and idle_exit < 0:
        raise UsageError(f"--idle-exit must be 0 or more seconds, not {idle_exit}")
    if gate and tolerance != "strict":
        raise UsageError("--gate reads strictly (a damaged capture is never a pass): drop --tolerance")
    if (policy or fail_on) and not gate:
        raise UsageError("--policy and --fail-on go with --gate")
    user = [parse_boundary(b, cpu_hz) for b in boundary]
    mask = trace_mask_option(trace_mask)
    if show_code:
        out.write(_code(capture, user, cpu_hz, xen_version, tolerance, mask, idle_exit) + "\n")
        return 0
    pol = None
    if gate:
        import os

        from tracelens.commands.gate import DEFAULT_FAIL_ON, DEFAULT_POLICY
        from tracelens.gate.policy import SEVERITIES, Policy, load_policy

        if fail_on is not None and fail_on not in SEVERITIES:
            raise UsageError(f"--fail-on must be one of {', '.join(SEVERITIES)}, not {fail_on!r}")
        if policy is None and os.path.isfile(DEFAULT_POLICY):
            policy = DEFAULT_POLICY
        pol = load_policy(policy) if policy else Policy()
        fail_on = fail_on or pol.fail_on or DEFAULT_FAIL_ON
        if mask is None:
            mask = pol.trace_mask
    from tracelens.analysis.api import AnalysisConfig
    from tracelens.live import WatchOptions, watch

    config = AnalysisConfig(boundaries=tuple(user), xen_version=xen_version, cpu_hz=cpu_hz, tolerance=tolerance,
                            trace_mask=mask)
    tty = hasattr(err, "isatty") and err.isatty()
    opts = WatchOptions(idle_exit=idle_exit, status_every=2.0 if (json_lines or tty) else None)
    text = _Text(out, cpu_hz)
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
    code = 0
    gate_line = None
    if gate:
        from tracelens.gate.evaluate import judge

        res = judge(a, capture if capture != "-" else "<stdin>", pol, fail_on)
        if w["late_records"] or w["late_windows"]:
            res.inconclusive.append(f"{w['late_windows']} window(s) arrived after later records had been "
                                    "analysed: the live analysis may differ from the finished capture's")
        code = res.exit_code
        gate_line = {0: "pass", 1: "fail", 3: "inconclusive"}.get(code, str(code))
    if json_lines:
        end = {"type": "end", "summary": final.data["summary"], "findings": final.data["findings"],
               "watch": w, "at": round(final.at, 3)}
        if gate:
            end["gate"] = {"status": gate_line, "exit_code": code}
        out.write(json.dumps(end) + "\n")
    else:
        from tracelens.analysis.report import to_text
        from tracelens.terminal import text_width

        out.write(f"--- end of input: {w['bytes']:,} bytes, {w['windows']:,} windows, {w['seconds']} s\n")
        if w["late_windows"]:
            out.write(f"note: {w['late_windows']} window(s) arrived after later records had been analysed; "
                      "the summary below may differ from `tracelens analyze` of the finished capture\n")
        out.write(to_text(a, width=text_width(out)))
        if gate:
            out.write(f"gate: {gate_line} (exit {code})\n")
    out.flush()
    return code


def _code(capture, user, cpu_hz, xen_version, tolerance, mask, idle_exit) -> str:
    cfg = config_args(boundaries=tuple(user) if user else None, xen_version=xen_version, cpu_hz=cpu_hz,
                      tolerance=tolerance, trace_mask=mask)
    opts = f"WatchOptions(idle_exit={idle_exit!r})" if idle_exit is not None else "WatchOptions()"
    return (
        "from tracelens.analysis.api import AnalysisConfig\n"
        "from tracelens.live import WatchOptions, watch\n\n"
        f"for ev in watch({capture!r}, AnalysisConfig({', '.join(cfg)}), {opts}):\n"
        "    if ev.type == 'end':\n"
        "        for f in ev.data['findings']:\n"
        "            print(f['rule'], f['severity'], f['domid'], f['epoch'], f['object'], f['message'])\n"
        "    elif ev.type != 'status':\n"
        "        print(ev.type, ev.data)"
    )


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
        cpu_hz: Optional[float] = typer.Option(None, "--cpu-hz", help="TSC frequency in Hz: times in seconds",
                                               callback=check_cpu_hz),
        xen_version: Optional[str] = typer.Option(None, "--xen-version", help="Xen release that writes the capture "
                                                                              "(default: guessed)"),
        tolerance: str = typer.Option("strict", "--tolerance", help="strict, truncate or skip (as for decode)"),
        boundary: List[str] = typer.Option([], "--boundary", help="add a boundary: DOMID@TSC; repeatable"),
        trace_mask: Optional[str] = typer.Option(None, "--trace-mask", metavar="MASK",
                                                 help="the xentrace -e mask in use (see tracelens analyze --help)"),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
    ):
        """Follow a capture while xentrace writes it: boundaries, the moment each guest stops being safe to kexec,
        findings and losses as they happen; the final summary at the end (see docs/watch.md)."""
        import signal

        stopping = []
        opened = []

        def on_sigint(*_):
            if not opened:  # still waiting for a FIFO's writer: nothing to summarise
                raise KeyboardInterrupt
            stopping.append(True)  # Ctrl-C ends the watch; the final summary follows

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            code = run(capture, json_lines=json_lines, idle_exit=idle_exit, gate=gate, policy=policy,
                       fail_on=fail_on, cpu_hz=cpu_hz, xen_version=xen_version, tolerance=tolerance,
                       boundary=boundary, trace_mask=trace_mask, show_code=show_code, stop=lambda: bool(stopping),
                       on_open=lambda: opened.append(True))
        finally:
            signal.signal(signal.SIGINT, old)
        if code:
            raise typer.Exit(code)
