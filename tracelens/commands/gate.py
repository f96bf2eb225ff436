"""``tracelens gate``: pass or fail CI on the findings of one or more captures, under a policy (docs/gate.md).

Thin: it parses options, loads the policy and baseline, calls :func:`tracelens.gate.evaluate.run_gate` (which
decides the exit code) and writes the views the options ask for. The output options never change the exit code.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from tracelens.commands import trace_mask_option

DEFAULT_POLICY = "tracelens.toml"
DEFAULT_FAIL_ON = "error"


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


def _check_not_inputs(captures, *, vmcore, policy, baseline, sarif, junit, json_out, write_baseline, env) -> None:
    """No output (nor the GitHub step summary the gate appends to) may be one of the files the gate reads."""
    from tracelens.output import check_outputs

    env = os.environ if env is None else env
    summary = env.get("GITHUB_STEP_SUMMARY") if env.get("GITHUB_ACTIONS") == "true" else None
    check_outputs([("--sarif", sarif), ("--junit", junit), ("--json", json_out), ("--write-baseline", write_baseline),
                   ("GITHUB_STEP_SUMMARY", summary)],
                  [captures, vmcore, policy, baseline])


def run(captures: list[str], *, vmcore: str | None = None, policy: str | None = None, fail_on: str | None = None,
        baseline: str | None = None, sarif: str | None = None, junit: str | None = None, json_out: str | None = None,
        write_baseline: str | None = None, xen_version: str | None = None, vmcore_dom: int | None = None,
        quiet: bool = False, show_code: bool = False, today=None, env=None, out=None,
        trace_mask: str | None = None, workers: int | None = None, scheduler: str | None = None) -> int:
    """The command's body, callable without the CLI. Returns the exit code (docs/exit-codes.md)."""
    from tracelens.errors import UsageError
    import json

    from tracelens.gate.baseline import baseline_document, load_baseline, parse_baseline
    from tracelens.gate.baseline import write_baseline as _write_baseline
    from tracelens.gate.evaluate import baseline_entries, rebaseline, run_gate
    from tracelens.gate.policy import SEVERITIES, Policy, load_policy

    out = out or sys.stdout
    if not captures:
        raise UsageError("give at least one CAPTURE")
    if vmcore and len(captures) != 1:
        raise UsageError(f"--vmcore goes with one CAPTURE (the run the dump was taken in), not {len(captures)}")
    if vmcore_dom is not None and not vmcore:
        raise UsageError("--vmcore-dom needs --vmcore")
    if baseline and write_baseline:
        raise UsageError("give --baseline (gate against accepted findings) or --write-baseline (accept the current "
                         "ones), not both")
    mask = trace_mask_option(trace_mask)
    if workers is not None and scheduler:
        raise UsageError("give --workers (a local Dask cluster) or --scheduler (an existing one), not both")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {workers}")
    cluster = None
    if workers is not None or scheduler:
        from tracelens.fleet.cluster import ClusterOptions

        cluster = ClusterOptions(workers=workers, scheduler=scheduler)
    if fail_on is not None and fail_on not in SEVERITIES:
        raise UsageError(f"--fail-on must be one of {', '.join(SEVERITIES)}, not {fail_on!r}")
    for path, option in ((sarif, "--sarif"), (junit, "--junit"), (json_out, "--json"),
                         (write_baseline, "--write-baseline")):
        _check_output_dir(path, option)

    if policy is None and os.path.isfile(DEFAULT_POLICY):
        policy = DEFAULT_POLICY
    if show_code:
        out.write(_code(captures, vmcore=vmcore, vmcore_dom=vmcore_dom, policy=policy, fail_on=fail_on,
                        baseline=baseline, sarif=sarif, junit=junit, json_out=json_out,
                        write_baseline=write_baseline, xen_version=xen_version, trace_mask=mask, cluster=cluster))
        return 0
    pol = load_policy(policy) if policy else Policy()
    fail = fail_on or pol.fail_on or DEFAULT_FAIL_ON
    bpath = None if write_baseline else (baseline or pol.baseline)
    _check_not_inputs(captures, vmcore=vmcore, policy=policy, baseline=bpath, sarif=sarif, junit=junit,
                      json_out=json_out, write_baseline=write_baseline, env=env)
    base = load_baseline(bpath) if bpath else None

    result = run_gate(captures, pol, fail, base, vmcore=vmcore, vmcore_dom=vmcore_dom, today=today,
                      xen_version=xen_version, trace_mask=mask, cluster=cluster)

    if write_baseline:
        incomplete = [c.path for c in result.captures if c.error is not None or c.inconclusive]
        if incomplete:
            print(f"tracelens: baseline not written: {', '.join(incomplete)} could not be read completely "
                  "(a baseline must not accept what the gate could not see)", file=sys.stderr)
        else:
            entries = baseline_entries(result)
            _write_baseline(write_baseline, entries)
            # judged against what was just written: everything accepted, so only the policy and damage remain
            doc = baseline_document(entries)
            result = rebaseline(result, parse_baseline(json.dumps(doc), write_baseline))
            print(f"tracelens: wrote {len(doc['accepted'])} accepted fingerprint(s) to {write_baseline}",
                  file=sys.stderr)

    if not quiet:
        from tracelens.gate.summary import to_summary
        from tracelens.terminal import text_width

        out.write(to_summary(result, width=text_width(out)))
    if json_out:
        from tracelens.gate.jsonl import to_jsonl

        _write(json_out, to_jsonl(result))
    if sarif:
        from tracelens.gate.sarif import to_sarif

        _write(sarif, to_sarif(result))
    if junit:
        from tracelens.gate.junit import to_junit

        _write(junit, to_junit(result))
    from tracelens.gate.github import emit

    emit(result, env=env, out=out)
    return result.exit_code


def _code(captures, *, vmcore, vmcore_dom, policy, fail_on, baseline, sarif, junit, json_out, write_baseline,
          xen_version, trace_mask=None, cluster=None) -> str:
    """The Python a notebook user would write for the same gate."""
    lines = ["from tracelens.gate.baseline import load_baseline",
             "from tracelens.gate.evaluate import run_gate",
             "from tracelens.gate.policy import Policy, load_policy",
             "",
             f"policy = load_policy({policy!r})" if policy else "policy = Policy()  # no policy file: the defaults",
             f"fail_on = {fail_on!r} or policy.fail_on or {DEFAULT_FAIL_ON!r}"]
    if write_baseline:
        lines.append("baseline = None  # --write-baseline: accept what this run finds")
    elif baseline:
        lines.append(f"baseline = load_baseline({baseline!r})")
    else:
        lines.append("baseline = load_baseline(policy.baseline) if policy.baseline else None")
    kw = "".join(f", {k}={v!r}" for k, v in (("vmcore", vmcore), ("vmcore_dom", vmcore_dom),
                                               ("xen_version", xen_version)) if v is not None)
    if trace_mask is not None:
        kw += f", trace_mask={trace_mask:#010x}"
    if cluster is not None:
        lines.insert(0, "from tracelens.fleet.cluster import ClusterOptions")
        opts = ", ".join(f"{k}={getattr(cluster, k)!r}" for k in ("workers", "scheduler") if getattr(cluster, k))
        kw += f", cluster=ClusterOptions({opts})"
    lines.append(f"result = run_gate({list(captures)!r}, policy, fail_on, baseline{kw})")
    if write_baseline:
        lines += ["import json",
                  "",
                  "from tracelens.gate.baseline import baseline_document, parse_baseline, write_baseline",
                  "from tracelens.gate.evaluate import baseline_entries, rebaseline",
                  "",
                  "if all(c.error is None and not c.inconclusive for c in result.captures):  # complete captures only",
                  "    entries = baseline_entries(result)",
                  f"    write_baseline({write_baseline!r}, entries)",
                  f"    result = rebaseline(result, parse_baseline(json.dumps(baseline_document(entries)), "
                  f"{write_baseline!r}))"]
    lines += ["for c in result.captures:",
              "    print(c.status, c.path, [(g.rule, g.state) for g in c.findings])"]
    for path, mod, fn in ((json_out, "jsonl", "to_jsonl"), (sarif, "sarif", "to_sarif"), (junit, "junit", "to_junit")):
        if path:
            lines += [f"from tracelens.gate.{mod} import {fn}",
                      f"with open({path!r}, 'w', encoding='utf-8') as f:",
                      f"    f.write({fn}(result))"]
    lines.append("print('exit code', result.exit_code)  # 0 pass, 1 findings, 3 unreadable or inconclusive")
    return "\n".join(lines) + "\n"


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
                                             help=f"policy file (default: ./{DEFAULT_POLICY} if present; see "
                                                  "docs/gate.md)"),
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
        xen_version: Optional[str] = typer.Option(None, "--xen-version", metavar="X.Y",
                                                  help="Xen release that wrote the captures (default: guessed per "
                                                       "capture)"),
        trace_mask: Optional[str] = typer.Option(None, "--trace-mask", metavar="MASK",
                                                 help="the event mask the captures were recorded with (xentrace -e: "
                                                      "0x0010f000, or words such as sched,mem,all): zero records "
                                                      "of a declared class are evidence (overrides "
                                                      "gate.trace_mask)"),
        workers: Optional[int] = typer.Option(None, "--workers", metavar="N",
                                              help="check the captures on a local Dask cluster of N worker "
                                                   "processes (as tracelens scan; needs tracelens[fleet])"),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                                help="check them on an existing Dask cluster, e.g. tcp://HOST:8786"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="no summary on stdout"),
        show_code: bool = typer.Option(False, "--show-code", help="print the equivalent Python and exit"),
    ):
        """Pass or fail CI on kexec-safety findings: exit 0 pass, 1 findings at or above --fail-on, 2 bad usage or
        policy, 3 a capture unreadable or inconclusive (see docs/gate.md)."""
        code = run(list(captures or []), vmcore=vmcore, policy=policy, fail_on=fail_on, baseline=baseline,
                   sarif=sarif, junit=junit, json_out=json_out, write_baseline=write_baseline,
                   xen_version=xen_version, vmcore_dom=vmcore_dom, quiet=quiet, show_code=show_code,
                   trace_mask=trace_mask, workers=workers, scheduler=scheduler)
        if code:
            # SystemExit, not typer.Exit: with standalone_mode=False click turns typer.Exit into a return value,
            # which tracelens.cli.main does not pass on (yet); SystemExit reaches main's handler either way
            raise SystemExit(code)
