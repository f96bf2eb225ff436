"""Policy evaluation on hand-built findings (tracelens.gate.evaluate), and the line finder of policy errors."""

from __future__ import annotations

from datetime import date

import pytest

from tracelens.analysis.findings import Finding
from tracelens.errors import PolicyError
from tracelens.gate.evaluate import EXIT_PRECEDENCE, evaluate_findings, inconclusive_reasons, worst_exit
from tracelens.gate.policy import Policy, _Lines, parse_policy

DAY = date(2026, 6, 15)


def F(rule="TL-GNT-001", severity="error", domid=1, epoch=0, obj="mapper:d0", **evidence):
    return Finding(rule, severity, domid, epoch, obj, 100, 50, 100, f"{rule} message", evidence)


def judge(policy_text: str, findings, fail_on="error", baseline=None):
    return evaluate_findings(findings, "cap", parse_policy(policy_text, "p.toml"), fail_on, baseline, DAY)


def test_exit_precedence_is_documented_order():
    assert EXIT_PRECEDENCE == (2, 3, 1, 0)
    assert worst_exit([0, 1, 3, 0]) == 3 and worst_exit([1, 0]) == 1 and worst_exit([]) == 0
    assert worst_exit([3, 2, 1]) == 2


def test_thresholds_per_mapper_and_unknown_mapper():
    pol = "[gate.thresholds]\noutstanding_grants = { default = 1, d0 = 4, 7 = 0 }\n"
    got = judge(pol, [F(mapper=0, outstanding=4), F(mapper=0, outstanding=5), F(mapper=7, outstanding=1),
                      F(mapper=None, outstanding=1, obj="mapper:unknown"), F(mapper=3, outstanding=2)])
    assert [g.state for g in got] == ["within-threshold", "blocking", "blocking", "within-threshold", "blocking"]
    assert got[0].suppression.source == "p.toml:2"
    # a finding without the measured evidence is never suppressed by a threshold
    assert judge(pol, [F()])[0].blocking


def test_late_unmaps_and_balloon_thresholds():
    pol = "[gate.thresholds]\nlate_unmaps = { d0 = 2 }\nballoon_pages = { d2 = 600 }\n"
    got = judge(pol, [F("TL-GNT-002", "warning", mapper=0, late_unmaps=2),
                      F("TL-BAL-001", domid=2, obj="balloon", pages=518),
                      F("TL-BAL-001", domid=1, obj="balloon", pages=518)], fail_on="warning")
    assert [g.state for g in got] == ["within-threshold", "within-threshold", "blocking"]


def test_allow_entry_matching_and_expiry_boundaries():
    pol = ('[[gate.allow]]\nrule = "TL-GST-001"\nobject = "gref:1?"\nreason = "ring"\nexpires = 2026-06-15\n'
           '[[gate.allow]]\nrule = "TL-GST-001"\ndomid = "d2"\nreason = "old"\nexpires = 2026-06-14\n')
    got = judge(pol, [F("TL-GST-001", obj="gref:15"), F("TL-GST-001", obj="gref:150"),
                      F("TL-GST-001", domid=2, obj="gref:3"), F("TL-GST-002", "error", obj="gref:15")])
    assert [g.state for g in got] == ["allowed", "blocking", "blocking", "blocking"]
    assert got[0].suppression.source == "p.toml:1" and got[0].notes == []
    assert got[2].notes == ["allow-list entry at p.toml:6 (old) expired on 2026-06-14 and no longer suppresses "
                            "this finding"]


def test_severity_change_then_fail_on_then_baseline():
    pol = '[gate.rules]\n"TL-GNT-002" = "error"\n"TL-GST-002" = "note"\n'
    fs = [F("TL-GNT-002", "warning", 1, 1), F("TL-GST-002", "warning", obj="pirq:35")]
    got = judge(pol, fs)
    assert [(g.level, g.state) for g in got] == [("error", "blocking"), ("note", "below-fail-on")]
    assert [g.state for g in judge(pol, fs, fail_on="note")] == ["blocking", "blocking"]
    got = judge(pol, fs, fail_on="note", baseline={fs[0].fingerprint})
    assert [(g.baseline_state, g.state) for g in got] == [("unchanged", "baseline"), ("new", "blocking")]


def test_inconclusive_reasons():
    pol = Policy(max_lost_records=10)
    assert inconclusive_reasons([F()], 10, pol) == []
    assert inconclusive_reasons([F()], 11, pol) == ["11 record(s) lost, more than gate.max_lost_records = 10"]
    r = inconclusive_reasons([F("TL-LOST-001", "warning", obj="lost-records")], 0, pol)
    assert len(r) == 1 and r[0].startswith("TL-LOST-001: records lost before d1 epoch 0's boundary")


def test_line_finder():
    text = ('# policy\n[gate]\nfail_on = "error"\nthresholds.late_unmaps = 3\n\n[gate.thresholds]\n'
            'outstanding_grants = { default = 0, d0 = 2 }\n\n[[gate.allow]]\nrule = "A"\n\n[[gate.allow]]\n'
            'reason = """two\nlines\n"""\nexpires = 2026-01-01\n["gate".rules]\n"TL-GNT-001" = "off"\n')
    lines = _Lines(text)
    assert lines.line(("gate", "fail_on")) == 3
    assert lines.line(("gate", "thresholds", "late_unmaps")) == 4
    assert lines.line(("gate", "thresholds", "outstanding_grants", "d0")) == 7
    assert lines.line(("gate", "allow", 0, "rule")) == 10
    assert lines.line(("gate", "allow", 1, "expires")) == 16  # after a multi-line string
    assert lines.line(("gate", "allow", 1, "missing")) == 12  # falls back to its table
    assert lines.line(("gate", "rules", "TL-GNT-001")) == 18


@pytest.mark.parametrize("text,where", [
    ('[gate]\nrules = { "TL-GNT-001" = "loud" }\n', "p.toml:2"),
    ('[gate]\n\n\nallow = [ { rule = "TL-GNT-001" } ]\n', "p.toml:4"),
])
def test_errors_inside_inline_tables_point_at_their_line(text, where):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "p.toml")
    assert str(e.value).startswith(f"{where}: ")
