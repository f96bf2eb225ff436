"""``tracelens gate``: pass or fail CI on the findings of one or more captures, under a policy (docs/gate.md).

Thin: it parses its options into a :class:`tracelens.options.GateConfig` (analysis and decode options nested inside)
and a :class:`GateOutputs`, calls :func:`tracelens.gate.evaluate.gate` (which reads the policy and baseline, writes
a baseline when asked and decides the exit code) and writes the views the outputs ask for; ``--show-code`` prints
the same call with the same GateConfig. The output options never change the exit code.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

from tracelens.commands import declarations as D

if TYPE_CHECKING:
    import typer


def _check_output_dir(path: str | None, option: str) -> None:
    from tracelens.errors import UsageError

    if path:
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise UsageError(f"{option} {path}: directory {d} does not exist")


def _write(path: str, text: str) -> None:
    from tracelens.output import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def _check_not_inputs(captures, config, outputs: GateOutputs, env) -> None:
    """No output (nor the GitHub step summary the gate appends to) may be one of the files the gate reads (the
    library checks write_baseline itself)."""
    from tracelens.gate.evaluate import DEFAULT_POLICY
    from tracelens.output import check_outputs

    env = os.environ if env is None else env
    summary = env.get("GITHUB_STEP_SUMMARY") if env.get("GITHUB_ACTIONS") == "true" else None
    policy = config.policy or (DEFAULT_POLICY if os.path.isfile(DEFAULT_POLICY) else None)
    check_outputs([("--sarif", outputs.sarif), ("--junit", outputs.junit), ("--json", outputs.json),
                   ("GITHUB_STEP_SUMMARY", summary)],
                  [captures, config.analysis.vmcore, policy, config.baseline, config.write_baseline,
                   config.analysis.decode.catalog_files])


@dataclass(frozen=True)
class GateOutputs:
    """What ``tracelens gate`` writes besides its exit code: ``sarif``, ``junit``, ``json`` (JSON Lines) files,
    and the summary on stdout unless ``quiet``. Outputs never change the exit code."""

    sarif: str | None = None
    junit: str | None = None
    json: str | None = None
    quiet: bool = False


def run(captures: list[str], config=None, outputs: GateOutputs | None = None, *, show_code: bool = False,
        today=None, env=None, out=None) -> int:
    """The command's body, callable without the CLI: gate ``captures`` under ``config`` (a
    tracelens.options.GateConfig) and write ``outputs``. Returns the exit code (docs/exit-codes.md)."""
    from tracelens.gate.evaluate import gate
    from tracelens.options import GateConfig

    config = config or GateConfig()
    outputs = outputs or GateOutputs()
    out = out or sys.stdout
    for path, option in ((outputs.sarif, "--sarif"), (outputs.junit, "--junit"), (outputs.json, "--json"),
                         (config.write_baseline, "--write-baseline")):
        _check_output_dir(path, option)
    if show_code:
        out.write(code(captures, config, outputs))
        return 0
    _check_not_inputs(captures, config, outputs, env)
    result = gate(captures, config, today=today)
    if result.baseline_refused:
        print(f"tracelens: baseline not written: {', '.join(result.baseline_refused)} could not be read completely "
              "(a baseline must not accept what the gate could not see)", file=sys.stderr)
    elif result.baseline_written is not None:
        print(f"tracelens: wrote {result.baseline_written} accepted fingerprint(s) to {config.write_baseline}",
              file=sys.stderr)
    if not outputs.quiet:
        from tracelens.gate.summary import to_summary
        from tracelens.terminal import text_width

        out.write(to_summary(result, width=text_width(out)))
    for path, module, render in ((outputs.json, "jsonl", "to_jsonl"), (outputs.sarif, "sarif", "to_sarif"),
                                 (outputs.junit, "junit", "to_junit")):
        if path:
            import importlib

            _write(path, getattr(importlib.import_module(f"tracelens.gate.{module}"), render)(result))
    from tracelens.gate.github import emit

    emit(result, env=env, out=out)
    return result.exit_code


def code(captures, config, outputs: GateOutputs | None = None) -> str:
    """The Python a notebook user would write for the same gate: the same GateConfig."""
    from tracelens.showcode import Code

    outputs = outputs or GateOutputs()
    c = Code().use("tracelens.gate.evaluate", "gate")
    c.add(f"result = {c.call('gate', list(captures), config=config)}",
          "for capture in result.captures:",
          "    print(capture.status, capture.path, [(g.rule, g.state) for g in capture.findings])")
    for path, module, render in ((outputs.json, "jsonl", "to_jsonl"), (outputs.sarif, "sarif", "to_sarif"),
                                 (outputs.junit, "junit", "to_junit")):
        if path:
            c.use(f"tracelens.gate.{module}", render)
            c.add(f"with open({path!r}, 'w', encoding='utf-8') as f:", f"    f.write({render}(result))")
    c.add("print('exit code', result.exit_code)  # 0 pass, 1 findings, 3 unreadable or inconclusive")
    return c.text()


def from_options(captures, *, vmcore=None, vmcore_dom=None, policy=None, fail_on=None, baseline=None,
                 write_baseline=None, sarif=None, junit=None, json_out=None, xen_version=None, catalog_files=(),
                 threads=None, trace_mask=None, workers=None, scheduler=None, quiet: bool = False,
                 show_code: bool = False) -> int:
    """The command from its options (tracelens.commands.declarations.GATE), the policy's settings under them: what
    the typer command and the console's fast path (tracelens.console) both run. Returns the exit code."""
    captures = list(captures or [])
    if captures and not show_code and workers is None and not scheduler:
        from tracelens.digest import prefetch

        prefetch(captures[0])  # its SHA-256 on a spare core while numba loads (tracelens.digest)
    from dataclasses import replace

    from tracelens.commands import analysis_config, decode_options
    from tracelens.config import load_config
    from tracelens.fleet.cluster import ClusterOptions

    cfg = load_config(policy)
    base = cfg.gate
    decode = decode_options(base.analysis.decode, xen_version=xen_version, catalog_files=list(catalog_files),
                            threads=threads)
    analysis = analysis_config(base.analysis, decode, trace_mask=trace_mask, vmcore=vmcore, vmcore_dom=vmcore_dom)
    cluster = None
    if workers is not None or scheduler:
        cluster = ClusterOptions(workers=workers, scheduler=scheduler)
        if workers is not None and workers < 1:
            from tracelens.errors import UsageError

            raise UsageError(f"--workers must be 1 or more, not {workers}")
    config = replace(base, analysis=analysis, fail_on=fail_on, baseline=baseline, write_baseline=write_baseline,
                     cluster=cluster)
    outputs = GateOutputs(sarif=sarif, junit=junit, json=json_out, quiet=quiet)
    return run(captures, config, outputs, show_code=show_code)


def register(app: typer.Typer) -> None:
    import typer

    G = {d.param: d for d in D.GATE}

    @app.command()
    def gate(
        captures: List[str] = typer.Argument(None, metavar="CAPTURE", help="xentrace captures; one result each"),
        vmcore: Optional[str] = G["vmcore"].typer(),
        vmcore_dom: Optional[int] = G["vmcore_dom"].typer(),
        policy: Optional[str] = G["policy"].typer(),
        fail_on: Optional[str] = G["fail_on"].typer(),
        baseline: Optional[str] = G["baseline"].typer(),
        write_baseline: Optional[str] = G["write_baseline"].typer(),
        sarif: Optional[str] = G["sarif"].typer(),
        junit: Optional[str] = G["junit"].typer(),
        json_out: Optional[str] = G["json_out"].typer(),
        xen_version: Optional[str] = G["xen_version"].typer(),
        catalog: List[str] = G["catalog_files"].typer(),
        threads: Optional[int] = G["threads"].typer(),
        trace_mask: Optional[str] = G["trace_mask"].typer(),
        workers: Optional[int] = G["workers"].typer(),
        scheduler: Optional[str] = G["scheduler"].typer(),
        quiet: bool = G["quiet"].typer(),
        show_code: bool = G["show_code"].typer(),
    ):
        """Pass or fail CI on kexec-safety findings: exit 0 pass, 1 findings at or above --fail-on, 2 bad usage or
        policy, 3 a capture unreadable or inconclusive (see docs/gate.md)."""
        code = from_options(captures, vmcore=vmcore, vmcore_dom=vmcore_dom, policy=policy, fail_on=fail_on,
                            baseline=baseline, write_baseline=write_baseline, sarif=sarif, junit=junit,
                            json_out=json_out, xen_version=xen_version, catalog_files=catalog, threads=threads,
                            trace_mask=trace_mask, workers=workers, scheduler=scheduler, quiet=quiet,
                            show_code=show_code)
        if code:
            # SystemExit, not typer.Exit: with standalone_mode=False click turns typer.Exit into a return value,
            # which tracelens.cli.main does not pass on (yet); SystemExit reaches main's handler either way
            raise SystemExit(code)
