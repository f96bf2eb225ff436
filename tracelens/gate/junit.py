"""JUnit XML rendering of a :class:`~tracelens.gate.evaluate.GateResult` (the de-facto schema of Ant/Surefire that
Jenkins, GitLab and GitHub test reporters read): a ``testsuite`` per capture, a ``testcase`` per rule, plus one
``capture`` testcase saying whether the capture was read completely.

A rule's testcase has a ``failure`` when it has blocking findings; its non-blocking findings (suppressed, in the
baseline, below ``fail_on``) are listed in ``system-out``. An unreadable capture errors its ``capture`` testcase
and skips its rules; an inconclusive one errors its ``capture`` testcase. Without ``--vmcore`` the dump rules
(TL-DMP-*) are skipped: they were not checked.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

#: rules that only a dump can raise (docs/rules.md: they need --vmcore); without one their testcases are skipped
DUMP_RULE_PREFIX = "TL-DMP-"
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(s) -> str:
    """A string XML 1.0 can carry (capture paths and messages may hold control characters)."""
    return _NOT_XML.sub("\ufffd", str(s))


def _finding_line(g) -> str:
    f = g.finding
    extra = f" [{g.state}: {g.suppression.justification}]" if g.suppression else f" [{g.state}]"
    notes = "".join(f"\n    note: {n}" for n in g.notes)
    return (f"{g.level} {f.rule} d{f.domid} epoch {f.epoch} {f.object} tsc {f.tsc} "
            f"fingerprint {f.fingerprint}: {f.message}{extra}{notes}")


def to_junit_element(result) -> ET.Element:
    from tracelens.gate.policy import known_rules

    rules = known_rules()
    root = ET.Element("testsuites", name="tracelens gate")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for c in result.captures:
        suite = ET.SubElement(root, "testsuite", name=_x(c.path))
        props = ET.SubElement(suite, "properties")
        for k, v in (("status", c.status), ("exit_code", c.exit_code), ("kind", c.kind), ("sha256", c.sha256),
                     ("records", c.records), ("lost_records", c.lost_records), ("fail_on", result.fail_on)):
            if v is not None:
                ET.SubElement(props, "property", name=k, value=_x(v))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        cls = _x(c.path)

        def case(name: str) -> ET.Element:
            counts["tests"] += 1
            return ET.SubElement(suite, "testcase", classname=cls, name=name, time="0")

        tc = case("capture read completely")
        if c.error is not None:
            ET.SubElement(tc, "error", message=_x(c.error), type="unreadable").text = _x(c.error)
            counts["errors"] += 1
        elif c.inconclusive:
            text = _x("; ".join(c.inconclusive))
            ET.SubElement(tc, "error", message=f"inconclusive: {text}", type="inconclusive").text = text
            counts["errors"] += 1
        if c.kind == "xentrace":
            tc = case("capture covers the event classes its verdicts need")
            cov = c.coverage_obj()
            if cov is None:
                ET.SubElement(tc, "skipped", message="capture unreadable")
                counts["skipped"] += 1
            else:
                ET.SubElement(tc, "system-out").text = _x(c.coverage_line())
                if cov["uncovered"] and any("not covered" in r for r in c.inconclusive):
                    text = _x(f"no {', '.join(cov['uncovered'])} record(s) and no declared mask selecting them "
                              "(--trace-mask / gate.trace_mask): verdicts that need them are 'not covered'")
                    ET.SubElement(tc, "failure", message=text, type="not-covered").text = text
                    counts["failures"] += 1
            for rid, (_sev, title) in rules.items():
                tc = case(f"{rid}: {title}")
                mine = [g for g in c.findings if g.rule == rid]
                if c.error is not None:
                    ET.SubElement(tc, "skipped", message="capture unreadable")
                    counts["skipped"] += 1
                    continue
                if rid.startswith(DUMP_RULE_PREFIX) and not c.vmcore:
                    ET.SubElement(tc, "skipped", message="checked only with --vmcore DUMP")
                    counts["skipped"] += 1
                    continue
                blocking = [g for g in mine if g.blocking]
                if blocking:
                    worst = blocking[0].level
                    fl = ET.SubElement(tc, "failure", type=worst,
                                       message=_x(f"{len(blocking)} finding(s) at or above {result.fail_on}: "
                                                  f"{blocking[0].finding.message}"))
                    fl.text = _x("\n".join(_finding_line(g) for g in blocking))
                    counts["failures"] += 1
                rest = [g for g in mine if not g.blocking]
                if rest:
                    ET.SubElement(tc, "system-out").text = _x("\n".join(_finding_line(g) for g in rest))
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", "0")
    for k, v in totals.items():
        root.set(k, str(v))
    return root


def to_junit(result) -> str:
    root = to_junit_element(result)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
