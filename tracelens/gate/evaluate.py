"""Policy evaluation: findings + policy + baseline -> a result per capture and the exit code. The only place where
the gate's exit code is decided; renderers read :class:`GateResult` and never change it.

Per finding, in this order (docs/gate.md):

1. its level: ``[gate.rules]`` may change a rule's severity or turn it ``off`` (suppressed, kind ``rule-off``);
2. a threshold (``[gate.thresholds]``) suppresses a counting finding whose count is within the allowance;
3. an unexpired allow-list entry that matches suppresses it (kind ``allow``); a matching *expired* entry does not,
   and the finding says so in its notes;
4. with a baseline, its ``baseline_state`` is ``unchanged`` (fingerprint accepted) or ``new``;
5. it *blocks* when it is not suppressed, not ``unchanged``, and its level is at or above ``fail_on``.

Per capture: ``unreadable`` (the decoder refused it: exit 3), ``inconclusive`` (a TL-LOST-* finding, whatever the
policy says, more lost records than ``gate.max_lost_records``, a malformed LOST_RECORDS record, a kexec-safety
verdict ``not covered`` (the capture lacks an event class the verdict needs and ``gate.trace_mask`` does not declare
it), fewer records than ``gate.min_records`` or a TSC span shorter than ``gate.min_span_cycles``: exit 3; the gate
fails closed and never passes what it could not read completely), ``fail`` (a blocking finding: exit 1) or ``pass`` (0). Over several captures the
worst wins, in the order 2 > 3 > 1 > 0 (:data:`EXIT_PRECEDENCE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from tracelens.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_OK, EXIT_USAGE, FormatError, UsageError
from tracelens.gate.policy import SEVERITY_RANK, UNSUPPRESSIBLE_PREFIX, Policy
from tracelens.options import AnalysisConfig, GateConfig

#: the policy file the gate reads when GateConfig.policy is not given, if it exists
DEFAULT_POLICY = "tracelens.toml"
#: the lowest severity that fails when neither GateConfig.fail_on nor the policy says
DEFAULT_FAIL_ON = "error"

#: worst first: a usage or policy error, then a capture the gate could not read completely, then findings
EXIT_PRECEDENCE = (EXIT_USAGE, EXIT_INPUT, EXIT_FINDINGS, EXIT_OK)

PASS, FAIL, INCONCLUSIVE, UNREADABLE = "pass", "fail", "inconclusive", "unreadable"
_STATUS_EXIT = {PASS: EXIT_OK, FAIL: EXIT_FINDINGS, INCONCLUSIVE: EXIT_INPUT, UNREADABLE: EXIT_INPUT}


def worst_exit(codes) -> int:
    codes = list(codes)
    for c in EXIT_PRECEDENCE:
        if c in codes:
            return c
    return EXIT_OK


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


@dataclass
class Suppression:
    kind: str  # "rule-off" | "threshold" | "allow"
    justification: str
    source: str | None = None  # FILE:LINE of the policy entry

    def to_dict(self) -> dict:
        return {"kind": self.kind, "justification": self.justification, "source": self.source}


@dataclass
class GatedFinding:
    finding: object  # tracelens.analysis.findings.Finding
    capture: str
    level: str  # the severity after the policy (the finding's own unless [gate.rules] changes it)
    suppression: Suppression | None = None
    baseline_state: str | None = None  # "new" | "unchanged" | None when no baseline is used
    notes: list = field(default_factory=list)
    blocking: bool = False

    @property
    def rule(self) -> str:
        return self.finding.rule

    @property
    def state(self) -> str:
        """One word for humans: blocking, off, within-threshold, allowed, baseline (accepted), below-fail-on."""
        if self.blocking:
            return "blocking"
        if self.suppression is not None:
            return {"rule-off": "off", "threshold": "within-threshold", "allow": "allowed"}[self.suppression.kind]
        if self.baseline_state == "unchanged":
            return "baseline"
        return "below-fail-on"


@dataclass
class CaptureResult:
    path: str
    kind: str = "xentrace"  # or a dump kind
    findings: list = field(default_factory=list)  # [GatedFinding]
    error: str | None = None  # why it is unreadable
    inconclusive: list = field(default_factory=list)  # reasons
    sha256: str | None = None
    size: int | None = None
    records: int | None = None
    lost_records: int = 0
    notes: list = field(default_factory=list)
    vmcore: str | None = None  # the dump analysed with the capture (--vmcore)
    coverage: dict | None = None  # the analysis' coverage object (docs/analysis.md)
    span: tuple | None = None  # (first, last) TSC

    @property
    def status(self) -> str:
        if self.error is not None:
            return UNREADABLE
        if self.inconclusive:
            return INCONCLUSIVE
        if any(g.blocking for g in self.findings):
            return FAIL
        return PASS

    @property
    def exit_code(self) -> int:
        return _STATUS_EXIT[self.status]

    @property
    def blocking(self) -> list:
        return [g for g in self.findings if g.blocking]

    def coverage_line(self) -> str | None:
        """One line for humans: the needed subclasses and how each is covered (docs/analysis.md, Coverage)."""
        cov = self.coverage
        if not cov:
            return None
        ev = {s["subclass"]: s["evidence"] for s in cov["subclasses"]}
        parts = [f"{n} {'by records' if ev[n] == 'records' else 'declared' if ev[n] == 'declared' else 'NOT COVERED'}"
                 for n in cov["verdicts_need"]]
        mask = f"; declared mask {cov['declared_mask']}" if cov.get("declared_mask") else ""
        return "coverage: " + ", ".join(parts) + mask

    def coverage_obj(self) -> dict | None:
        """The coverage the gate outputs carry: declared mask, needed subclasses, uncovered ones, per-class counts."""
        cov = self.coverage
        if not cov:
            return None
        return {"declared_mask": cov.get("declared_mask"), "verdicts_need": cov["verdicts_need"],
                "uncovered": cov["uncovered"],
                "subclasses": {s["subclass"]: {"records": s["records"], "evidence": s["evidence"]}
                               for s in cov["subclasses"]},
                "classes": {x["class"]: x["records"] for x in cov["classes"]}}


@dataclass
class GateResult:
    captures: list  # [CaptureResult]
    fail_on: str
    policy: Policy
    baseline_path: str | None = None
    today: date | None = None
    expired: list = field(default_factory=list)  # [AllowEntry] past their date
    unused_allow: list = field(default_factory=list)  # [AllowEntry] in force that matched no finding (stale?)
    unused_baseline: list = field(default_factory=list)  # accepted entries seen in no capture (fixed, or gone)
    #: write_baseline: the fingerprints written (None: not asked, or refused), and the captures that could not be
    #: read completely when it was refused (a baseline must not accept what the gate could not see)
    baseline_written: int | None = None
    baseline_refused: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return worst_exit(c.exit_code for c in self.captures)

    @property
    def status(self) -> str:
        return {EXIT_OK: PASS, EXIT_FINDINGS: FAIL, EXIT_INPUT: INCONCLUSIVE}[self.exit_code]


def evaluate_findings(findings, capture: str, policy: Policy, fail_on: str, baseline=None,
                      today: date | None = None) -> list[GatedFinding]:
    """Apply the policy to the findings of one capture (see the module docstring for the order)."""
    today = today or today_utc()
    out = []
    for f in findings:
        g = GatedFinding(finding=f, capture=capture, level=f.severity)
        lvl = policy.severity.get(f.rule)
        if lvl == "off":
            g.suppression = Suppression("rule-off", f"{f.rule} is turned off by the policy",
                                        policy.severity_source.get(f.rule))
        elif lvl is not None:
            g.level = lvl
        th = policy.thresholds.get(f.rule)
        if g.suppression is None and th is not None:
            allowed = th.allowance(f)
            value = (f.evidence or {}).get(th.measure)
            if allowed is not None and isinstance(value, int) and value <= allowed:
                g.suppression = Suppression("threshold", f"{th.measure} {value} is within the allowance of "
                                                         f"{allowed} (gate.thresholds.{th.name})", th.source)
        for entry in policy.allow:
            if not entry.matches(f):
                continue
            if entry.expired(today):
                g.notes.append(f"allow-list entry at {entry.source} ({entry.reason}) expired on "
                               f"{entry.expires.isoformat()} and no longer suppresses this finding")
            elif g.suppression is None:
                g.suppression = Suppression("allow", f"{entry.reason} (allowed until {entry.expires.isoformat()})",
                                            entry.source)
        if baseline is not None:
            g.baseline_state = "unchanged" if f.fingerprint in baseline else "new"
        g.blocking = (g.suppression is None and g.baseline_state != "unchanged"
                      and SEVERITY_RANK[g.level] <= SEVERITY_RANK[fail_on])
        out.append(g)
    return out


def inconclusive_reasons(findings, lost_records: int, policy: Policy, analysis=None) -> list[str]:
    """Why a capture cannot be trusted to pass: TL-LOST-* findings (always), lost records beyond tolerance,
    malformed LOST_RECORDS, verdicts ``not covered``, and a capture shorter than the policy's minimum."""
    reasons = []
    if analysis is not None:
        info = analysis.lost_info
        if info is not None and info["malformed"].any():
            offs = [int(o) for o in info["offset"][info["malformed"]][:3]]
            reasons.append(f"{int(info['malformed'].sum())} malformed LOST_RECORDS record(s) (fewer than 4 words or "
                           f"a count of 0; at byte {', '.join(map(str, offs))}): records were lost, how many and "
                           "since when is unknown")
        for s in analysis.safety:
            if s["verdict"] == "not covered":
                reasons.append(f"d{s['domid']} epoch {s['epoch']}: kexec safety not covered: the capture has no "
                               f"{', '.join(s['not_covered'])} record(s) (recorded without those classes? if the "
                               "host was idle, declare the mask: --trace-mask / gate.trace_mask)")
        if analysis.records < policy.min_records:
            reasons.append(f"{analysis.records} record(s), fewer than gate.min_records = {policy.min_records} (a "
                           "capture cut short cannot be told from a quiet one)")
        span = analysis.last_tsc - analysis.first_tsc
        if policy.min_span_cycles and span < policy.min_span_cycles:
            reasons.append(f"TSC span {span} cycles, shorter than gate.min_span_cycles = {policy.min_span_cycles}")
    for f in findings:
        if f.rule.startswith(UNSUPPRESSIBLE_PREFIX):
            where = f"d{f.domid} epoch {f.epoch}" if f.domid is not None else "the capture"
            reasons.append(f"{f.rule}: records lost before {where}'s boundary: its kexec safety cannot be decided")
    if lost_records > policy.max_lost_records:
        reasons.append(f"{lost_records} record(s) lost, more than gate.max_lost_records = {policy.max_lost_records}")
    return reasons


def check_capture(path: str, policy: Policy, fail_on: str, baseline=None, today: date | None = None,
                  analysis: AnalysisConfig | None = None) -> CaptureResult:
    """Analyse one xentrace capture (strict decoding: any damage makes it unreadable), with the guest's dump when
    ``analysis.vmcore`` is given (its TL-DMP-* findings join the capture's), and evaluate the findings. The trace
    mask is ``analysis.trace_mask``, else the policy's ``gate.trace_mask``."""
    from dataclasses import replace

    from tracelens.analysis.analyze import analyze

    analysis = analysis or AnalysisConfig()
    vmcore = analysis.vmcore
    res = CaptureResult(path=path, vmcore=vmcore)
    try:
        res.size = os.path.getsize(path)
    except OSError:
        pass
    try:
        if analysis.trace_mask is None and policy.trace_mask is not None:
            analysis = replace(analysis, trace_mask=policy.trace_mask)
        a = analyze(path, analysis)
    except FormatError as e:  # IncompleteCaptureError included: truncated, corrupt, not a capture; or the dump
        res.error = str(e)
        return res
    return judge(a, path, policy, fail_on, baseline, today, vmcore, res)


def judge(a, path: str, policy: Policy, fail_on: str, baseline=None, today: date | None = None,
          vmcore: str | None = None, res: CaptureResult | None = None) -> CaptureResult:
    """The gate's verdict on one finished Analysis (check_capture's second half; ``tracelens watch --gate``)."""
    if res is None:
        res = CaptureResult(path=path, vmcore=vmcore)
    res.sha256 = a.sha256
    res.records = a.records
    res.lost_records = int(a.lost[:, 3].sum()) if a.lost.size else 0
    res.findings = evaluate_findings(a.findings, path, policy, fail_on, baseline, today)
    res.inconclusive = inconclusive_reasons(a.findings, res.lost_records, policy, a)
    res.coverage = a.coverage
    res.span = (a.first_tsc, a.last_tsc)
    res.notes += [f"coverage: {n}" for n in a.coverage.get("notes", [])]
    dump = getattr(a, "dump", None)
    if vmcore and dump is not None:
        res.notes.append(f"dump {dump.get('path')} ({dump.get('kind')}): {dump.get('assumption')}")
        res.notes += [f"dump: {n}" for n in dump.get("notes", [])]
        if dump.get("domid") is None:  # asked to use the dump, and could not: fail closed
            res.inconclusive.append(f"the dump {vmcore} could not be tied to a domain of the capture "
                                    f"({dump.get('assumption')})")
    return res


def expired_entries(policy: Policy, today: date) -> list:
    return [e for e in policy.allow if e.expired(today)]


def _check_item(item, *args) -> CaptureResult:
    """check_capture of one (index, path) item: the task ``run_gate`` gives the workers of a cluster (one thread
    each: the numba kernels run on that one too, instead of every worker spreading over all cores)."""
    from tracelens._jit import set_threads

    set_threads(1)
    return check_capture(item[1], *args)


def run_gate(captures, policy: Policy, fail_on: str, baseline=None, *, analysis: AnalysisConfig | None = None,
             today: date | None = None, cluster=None) -> GateResult:
    """Check every capture and evaluate the policy. ``analysis.vmcore`` (the guest's dump) goes with the only
    capture. Never raises for a damaged input: that input's result is ``unreadable``. ``cluster`` (a
    tracelens.fleet.cluster.ClusterOptions): check the captures on Dask workers, one task each, as ``tracelens
    scan`` does; a capture whose workers kept dying is ``unreadable`` (the gate fails closed)."""
    today = today or today_utc()
    analysis = analysis or AnalysisConfig()
    args = (policy, fail_on, baseline, today, analysis)
    paths = [os.fspath(p) for p in captures]
    if cluster is None:
        results = [check_capture(p, *args) for p in paths]
    else:
        from tracelens.fleet.cluster import connect, run_tasks

        results = [None] * len(paths)

        def lost(item, message):
            results[item[0]] = CaptureResult(path=item[1], vmcore=analysis.vmcore, error=message)

        with connect(cluster) as client:
            run_tasks(client, _check_item, list(enumerate(paths)), args, on_lost=lost,
                      on_result=lambda item, r: results.__setitem__(item[0], r), key_prefix="tracelens-gate")
    seen = {g.finding.fingerprint for r in results for g in r.findings}
    unused = [e for fp, e in baseline.accepted.items() if fp not in seen] if baseline is not None else []
    findings = [g.finding for r in results for g in r.findings]
    unused_allow = [e for e in policy.allow if not e.expired(today) and not any(e.matches(f) for f in findings)]
    return GateResult(captures=results, fail_on=fail_on, policy=policy,
                      baseline_path=baseline.path if baseline is not None else None, today=today,
                      expired=expired_entries(policy, today), unused_baseline=unused, unused_allow=unused_allow)


def rebaseline(result: GateResult, baseline) -> GateResult:
    """The same captures judged against another baseline, without analysing them again."""
    import copy

    new = copy.copy(result)
    new.captures = []
    for c in result.captures:
        c2 = copy.copy(c)
        c2.findings = evaluate_findings([g.finding for g in c.findings], c.path, result.policy, result.fail_on,
                                        baseline, result.today)
        new.captures.append(c2)
    new.baseline_path = baseline.path if baseline is not None else None
    seen = {g.finding.fingerprint for c in new.captures for g in c.findings}
    new.unused_baseline = [e for fp, e in baseline.accepted.items() if fp not in seen] if baseline is not None else []
    return new


def baseline_entries(result: GateResult) -> list[dict]:
    """What --write-baseline accepts: every finding not already suppressed by the policy (allow-list entries keep
    their expiry that way) and not a TL-LOST-* finding (loss is a property of one capture, never accepted)."""
    out = []
    for r in result.captures:
        for g in r.findings:
            f = g.finding
            if g.suppression is not None or f.rule.startswith(UNSUPPRESSIBLE_PREFIX):
                continue
            out.append({"fingerprint": f.fingerprint, "rule": f.rule, "domid": f.domid, "epoch": f.epoch,
                        "object": f.object, "capture": r.path})
    return out


def resolve_policy(config: GateConfig) -> tuple[str | None, Policy, str]:
    """(policy file, Policy, fail_on) of a GateConfig: ``config.policy``, else ./tracelens.toml when it exists, else
    the defaults; fail_on is ``config.fail_on``, else the policy's, else "error"."""
    from tracelens.gate.policy import load_policy

    path = config.policy
    if path is None and os.path.isfile(DEFAULT_POLICY):
        path = DEFAULT_POLICY
    policy = load_policy(path) if path else Policy()
    return path, policy, config.fail_on or policy.fail_on or DEFAULT_FAIL_ON


def gate(captures, config: GateConfig | None = None, *, today: date | None = None) -> GateResult:
    """``tracelens gate`` as a function: check ``captures`` under ``config`` (a GateConfig: policy file, fail_on,
    baseline or write_baseline, the analysis options, a cluster) and return the :class:`GateResult`, whose
    ``exit_code`` is the gate's verdict. The policy is ``config.policy``, else ./tracelens.toml when it exists,
    else the defaults; fail_on is ``config.fail_on``, else the policy's, else "error"; the baseline is
    ``config.baseline``, else the policy's ``gate.baseline``. With ``config.write_baseline`` the current findings
    are accepted: their fingerprints are written there (atomically) and the result is judged against them, unless a
    capture could not be read completely (``baseline_refused`` names them and nothing is written)."""
    import json

    from tracelens.gate.baseline import baseline_document, load_baseline, parse_baseline, write_baseline
    from tracelens.output import check_outputs

    config = config or GateConfig()
    captures = [os.fspath(p) for p in captures]
    if not captures:
        raise UsageError("captures: give at least one capture", "captures")
    if config.analysis.vmcore and len(captures) != 1:
        raise UsageError(f"vmcore goes with one capture (the run the dump was taken in), not {len(captures)}",
                         "vmcore")
    policy_path, policy, fail_on = resolve_policy(config)
    baseline_path = None if config.write_baseline else (config.baseline or policy.baseline)
    check_outputs([("write_baseline", config.write_baseline)],
                  [captures, config.analysis.vmcore, policy_path, config.analysis.decode.catalog_files])
    baseline = load_baseline(baseline_path) if baseline_path else None
    result = run_gate(captures, policy, fail_on, baseline, analysis=config.analysis, today=today,
                      cluster=config.cluster)
    if config.write_baseline:
        incomplete = [c.path for c in result.captures if c.error is not None or c.inconclusive]
        if incomplete:
            result.baseline_refused = incomplete
        else:
            entries = baseline_entries(result)
            write_baseline(config.write_baseline, entries)
            # judged against what was just written: everything accepted, so only the policy and damage remain
            doc = baseline_document(entries)
            result = rebaseline(result, parse_baseline(json.dumps(doc), config.write_baseline))
            result.baseline_written = len(doc["accepted"])
    return result
