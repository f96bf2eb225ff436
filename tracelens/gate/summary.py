"""The human summary of a :class:`~tracelens.gate.evaluate.GateResult` (rich, rendered to plain text): a line per
capture with its status, a table of its findings with their gate state, and the verdict with the exit code."""

from __future__ import annotations

import io

from tracelens.escape import terminal as _t

_STATUS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "unreadable": "UNREADABLE"}


def _opt(x) -> str:
    return "-" if x is None else str(x)


def _dom(d) -> str:
    from tracelens.analysis.records import dom_name

    return "-" if d is None else dom_name(d)


def to_summary(result, width: int = 140) -> str:
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False, markup=False,
                  soft_wrap=True)  # plain lines stay whole (greppable in CI logs); tables still fit the width
    for c in result.captures:
        con.print(f"{_STATUS[c.status]:<12} {_t(c.path)}: {len(c.findings)} finding(s), {len(c.blocking)} blocking")
        if c.error is not None:
            con.print(f"    unreadable: {_t(c.error)}")
        for r in c.inconclusive:
            con.print(f"    inconclusive: {_t(r)}")
        if c.coverage_line():
            con.print(f"    {_t(c.coverage_line())}")
        for n in c.notes:
            con.print(f"    note: {_t(n)}")
        if c.findings:
            t = Table(show_header=True, box=None, pad_edge=False)
            for h in ("state", "severity", "rule", "domain", "epoch", "object", "message"):
                # identifiers stay whole (a rule id cut in two is unreadable); the message folds
                t.add_column(h, overflow="fold", no_wrap=h in ("state", "severity", "rule", "domain", "epoch"))
            for g in c.findings:
                f = g.finding
                msg = f.message
                if g.suppression is not None:
                    msg += f" [{g.suppression.justification}" + (f", {g.suppression.source}]"
                                                                  if g.suppression.source else "]")
                for n in g.notes:
                    msg += f" [{n}]"
                t.add_row(g.state, g.level, f.rule, _dom(f.domid), _opt(f.epoch), _t(f.object), _t(msg))
            con.print(t)
    for e in result.expired:
        con.print(f"expired allow-list entry at {e.source} ({e.rule}, {e.reason}): expired on "
                  f"{e.expires.isoformat()}, no longer suppresses")
    for e in result.unused_allow:
        con.print(f"allow-list entry at {e.source} ({e.rule}) matched no finding of these captures")
    if result.unused_baseline:
        con.print(f"{len(result.unused_baseline)} baseline fingerprint(s) seen in no capture (fixed, or not "
                  f"exercised by these captures)")
    counts = {}
    for c in result.captures:
        counts[c.status] = counts.get(c.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    con.print(f"policy: {_t(result.policy.path or '(none: defaults)')}; baseline: {_t(result.baseline_path or '(none)')}")
    con.print(f"gate: {result.status} (exit {result.exit_code}); fail on {result.fail_on}; "
              f"{len(result.captures)} input(s): {parts}")
    return buf.getvalue()
