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
from typing import List, Optional

import typer

from tracelens.commands import declarations as D


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


def register(app: typer.Typer) -> None:
    @app.command()
    def gate(
        captures: List[str] = typer.Argument(None, metavar="CAPTURE", help="xentrace captures; one result each"),
        vmcore: Optional[str] = typer.Option(None, "--vmcore", metavar="DUMP",
                                             help="the guest's dump from the run of the (one) CAPTURE: adds TL-DMP-* "
                                                  "findings"),
        vmcore_dom: Optional[int] = typer.Option(None, "--vmcore-dom", metavar="DOMID",
                                                 help="the domain the dump belongs to (default: inferred, see "
                                                      "docs/analysis.md)"),
        policy: Optional[str] = typer.Option(None, "--policy", metavar="FILE",
                                             help="policy file, a tracelens.toml whose [decode] and [analyze] apply "
                                                  "too (default: ./tracelens.toml if present; see docs/gate.md)"),
        fail_on: Optional[str] = typer.Option(None, "--fail-on", metavar="SEVERITY",
                                              help="error, warning or note: the lowest severity that fails (default: "
                                                   "the policy's, else error)"),
        baseline: Optional[str] = typer.Option(None, "--baseline", metavar="FILE",
                                               help="accepted fingerprints: only new findings fail (overrides "
                                                    "gate.baseline)"),
        write_baseline: Optional[str] = typer.Option(None, "--write-baseline", metavar="FILE",
                                                     help="accept the current findings: write their fingerprints to "
                                                          "FILE, then gate against it"),
        sarif: Optional[str] = typer.Option(None, "--sarif", metavar="FILE",
                                            help="write SARIF 2.1.0 to FILE (GitHub code scanning)"),
        junit: Optional[str] = typer.Option(None, "--junit", metavar="FILE", help="write JUnit XML to FILE"),
        json_out: Optional[str] = typer.Option(None, "--json", metavar="FILE",
                                               help="write JSON Lines to FILE (one finding a line)"),
        xen_version: Optional[str] = D.XEN_VERSION.typer(),
        catalog: List[str] = D.CATALOG.typer(),
        threads: Optional[int] = D.THREADS.typer(),
        trace_mask: Optional[str] = D.TRACE_MASK.typer(help=D.TRACE_MASK.help.replace(
            "(default: [analyze] of ./tracelens.toml)", "(default: gate.trace_mask, else analyze.trace_mask)")),
        workers: Optional[int] = typer.Option(None, "--workers", metavar="N",
                                              help="check the captures on a local Dask cluster of N worker "
                                                   "processes (as tracelens scan; needs tracelens[fleet])"),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                                help="check them on an existing Dask cluster, e.g. tcp://HOST:8786"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="no summary on stdout"),
        show_code: bool = D.SHOW_CODE.typer(),
    ):
        """Pass or fail CI on kexec-safety findings: exit 0 pass, 1 findings at or above --fail-on, 2 bad usage or
        policy, 3 a capture unreadable or inconclusive (see docs/gate.md)."""
        if captures and not show_code and workers is None and not scheduler:
            from tracelens.digest import prefetch

            prefetch(captures[0])  # its SHA-256 on a spare core while numba loads (tracelens.digest)
        from dataclasses import replace

        from tracelens.commands import analysis_config, decode_options
        from tracelens.config import load_config
        from tracelens.fleet.cluster import ClusterOptions

        cfg = load_config(policy)
        base = cfg.gate
        decode = decode_options(base.analysis.decode, xen_version=xen_version, catalog_files=catalog,
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
        code = run(list(captures or []), config, outputs, show_code=show_code)
        if code:
            # SystemExit, not typer.Exit: with standalone_mode=False click turns typer.Exit into a return value,
            # which tracelens.cli.main does not pass on (yet); SystemExit reaches main's handler either way
            raise SystemExit(code)
