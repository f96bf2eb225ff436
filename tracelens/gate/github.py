"""GitHub Actions output: workflow-command annotations (``::error``/``::warning``/``::notice``) for the most
important findings, and a Markdown table appended to ``$GITHUB_STEP_SUMMARY``. Used when ``GITHUB_ACTIONS=true``.

GitHub shows at most 10 annotations of each level per step, so at most :data:`MAX_ANNOTATIONS` are printed: captures
the gate could not read first, then blocking findings, worst first. Workflow-command escaping follows the runner
(``%``, CR and LF in messages; also ``:`` and ``,`` in properties).
"""

from __future__ import annotations

import os

from tracelens import escape

MAX_ANNOTATIONS = 10
_LEVEL = {"error": "error", "warning": "warning", "note": "notice"}


def _esc_data(s: str) -> str:
    # control characters first (escape.terminal: an ESC sequence from a kernel log reaches no CI log raw)
    return escape.terminal(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _esc_prop(s: str) -> str:
    return _esc_data(s).replace(":", "%3A").replace(",", "%2C")


def _file(path: str) -> str:
    """Annotations are matched to repository files by path relative to the workspace."""
    ws = os.environ.get("GITHUB_WORKSPACE") or os.getcwd()
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(ws))
    return path if rel.startswith(os.pardir) else rel


def annotations(result, limit: int = MAX_ANNOTATIONS) -> list[str]:
    from tracelens.gate.policy import SEVERITY_RANK

    items = []  # (sort key, line)
    for ci, c in enumerate(result.captures):
        if c.error is not None or c.inconclusive:
            what = f"unreadable: {c.error}" if c.error is not None else "inconclusive: " + "; ".join(c.inconclusive)
            items.append(((0, 0, ci), f"::error file={_esc_prop(_file(c.path))},title={_esc_prop('tracelens gate')}"
                                      f"::{_esc_data(f'{c.path}: {what}')}"))
        for gi, g in enumerate(c.findings):
            if not g.blocking:
                continue
            f = g.finding
            title = f"{f.rule} d{f.domid} epoch {f.epoch} {f.object}"
            items.append(((1, SEVERITY_RANK[g.level], ci, gi),
                          f"::{_LEVEL[g.level]} file={_esc_prop(_file(c.path))},title={_esc_prop(title)}"
                          f"::{_esc_data(f.message)}"))
    items.sort(key=lambda x: x[0])
    return [line for _, line in items[:limit]]


def _md(s) -> str:
    return escape.markdown(s)


def _code(s) -> str:
    return escape.markdown_code(s, table=True)


def step_summary(result) -> str:
    """A Markdown section: one row per capture, then the blocking and allow-listed findings."""
    out = [f"### tracelens gate: {result.status} (exit {result.exit_code}, fail on {result.fail_on})", "",
           "| capture | status | findings | blocking | note |", "|---|---|---|---|---|"]
    for c in result.captures:
        note = c.error or "; ".join(c.inconclusive) or ""
        out.append(f"| {_code(c.path)} | {c.status} | {len(c.findings)} | {len(c.blocking)} | {_md(note)} |")
    rows = [(c, g) for c in result.captures for g in c.findings]
    if rows:
        out += ["", "| capture | rule | severity | domain | epoch | object | state | message |",
                "|---|---|---|---|---|---|---|---|"]
        for c, g in rows:
            f = g.finding
            out.append(f"| {_code(c.path)} | {f.rule} | {g.level} | {_md(f.domid)} | {_md(f.epoch)} | "
                       f"{_md(f.object)} | {g.state} | {_md(f.message)} |")
    for e in result.expired:
        out.append(f"\n> allow-list entry at {_code(e.source)} ({e.rule}) expired on {e.expires.isoformat()}")
    return "\n".join(out) + "\n\n"


def append_step_summary(result, path: str) -> None:
    """Append to the step summary file, atomically (the old content plus ours replaces it in one rename)."""
    from tracelens.output import atomic_output

    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(old + step_summary(result))


def emit(result, env=None, out=None) -> None:
    """When running under GitHub Actions: print the annotations to ``out`` and append the step summary."""
    import sys

    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") != "true":
        return
    out = out or sys.stdout
    for line in annotations(result):
        out.write(line + "\n")
    path = env.get("GITHUB_STEP_SUMMARY")
    if path:
        from tracelens.errors import TracelensError

        try:
            append_step_summary(result, path)
        except (OSError, TracelensError) as e:  # the runner's file, not the user's output: never the exit code
            print(f"tracelens: warning: cannot append to GITHUB_STEP_SUMMARY {path}: {e}", file=sys.stderr)
