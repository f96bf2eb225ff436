"""Policy files (docs/gate.md): errors name the file and the line (exit 2); severities, thresholds, allow-list
entries and their expiry, and baselines change which findings fail."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from test_gate_support import CLEAN, LEAKING, LOST, invoke, sample

TODAY = datetime.now(timezone.utc).date()  # the gate judges expiry by the UTC date


def fp(rule, domid, epoch, obj) -> str:
    """The fingerprint as docs/rules.md defines it: 16 hex digits of sha256 over rule|domid|epoch|object."""
    return hashlib.sha256(f"{rule}|{domid}|{epoch}|{obj}".encode()).hexdigest()[:16]


def gate_json(tmp_path, capsys, args):
    out = tmp_path / "gate.jsonl"
    code, text, err = invoke(["--json", out, *args], capsys)
    lines = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return code, lines, text, err


# -- bad policies: exit 2, FILE:LINE ----------------------------------------------------------------------------
BAD = [
    # (policy text, line, message fragment)
    ("[gate]\nfail_on = \"error\"\nbaseline = [\n", 3, "invalid TOML"),
    ("[gate]\n\n[gate.rules\n", 3, "invalid TOML"),
    ("[gate.rules]\n\"TL-GNT-001\" = \"warning\"\n\"TL-NOPE-001\" = \"error\"\n", 3, "unknown rule 'TL-NOPE-001'"),
    ("[gate.rules]\n\"TL-GNT-001\" = \"fatal\"\n", 2, "must be one of error, warning, note, off, not 'fatal'"),
    ("[gate.rules]\n\"TL-LOST-001\" = \"off\"\n", 2, "TL-LOST-001 cannot be turned off"),
    ("[gate]\nfail_on = 2\n", 2, "gate.fail_on must be one of"),
    ("[gate]\nmax_lost_records = \"ten\"\n", 2, "gate.max_lost_records must be an integer, not a string"),
    ("[gate]\nmax_lost_records = -1\n", 2, "must be >= 0"),
    ("[gate]\nfail_on = \"error\"\nstrict = true\n", 3, "unknown key 'gate.strict'"),
    ("[gate.thresholds]\noutstanding_grants = \"many\"\n", 2, "must be an integer, not a string"),
    ("[gate.thresholds]\nleaks = 3\n", 2, "unknown threshold 'leaks'"),
    ("[gate.thresholds.outstanding_grants]\ndefault = 0\nd0 = 2.5\n", 3, "must be an integer, not a float"),
    ("[gate.thresholds.outstanding_grants]\ndefault = 0\nbackend = 2\n", 3, "a domain must be a domid"),
    # allow-list entries: the line of the bad key, in the right [[gate.allow]] entry
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"ok\"\nexpires = 2999-01-01\n\n"
     "[[gate.allow]]\nrule = \"TL-GNT-002\"\ndomid = 1\nreason = \"ok\"\nexpires = \"next week\"\n",
     11, "expires must be a date (YYYY-MM-DD), not 'next week'"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"ok\"\nexpires = \"2026-02-30\"\n", 5,
     "expires must be a date"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"ok\"\nexpires = 2026-13-01\n", 5, "invalid TOML"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"ok\"\nexpires = 2026-06-01T10:00:00\n", 5,
     "expires must be a date such as 2026-12-31, not"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = \"one\"\nreason = \"ok\"\nexpires = 2999-01-01\n", 3,
     "a domain must be a domid"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"\"\nexpires = 2999-01-01\n", 4,
     "reason must be a non-empty string"),
    ("[[gate.allow]]\nrule = \"TL-GNT-009\"\ndomid = 1\nreason = \"x\"\nexpires = 2999-01-01\n", 2,
     "unknown rule 'TL-GNT-009'"),
    ("[[gate.allow]]\nrule = \"TL-LOST-001\"\ndomid = 1\nreason = \"x\"\nexpires = 2999-01-01\n", 2,
     "TL-LOST-001 cannot be allow-listed"),
    ("# comment\n[[gate.allow]]\nrule = \"TL-GNT-001\"\nreason = \"x\"\nexpires = 2999-01-01\n", 2,
     "names neither a domid nor an object"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"x\"\n", 1, "has no 'expires'"),
    ("[[gate.allow]]\nrule = \"TL-GNT-001\"\ndomid = 1\nreason = \"x\"\nexpires = 2999-01-01\nuntil = 1\n", 6,
     "unknown key 'until'"),
    ("[gate]\nallow = 3\n", 2, "gate.allow must be an array of tables"),
    ("gate = 3\n", 1, "'gate' must be a table"),
]


@pytest.mark.parametrize("text,line,fragment", BAD)
def test_bad_policy_is_exit_2_naming_file_and_line(tmp_path, capsys, text, line, fragment):
    pol = tmp_path / "tracelens.toml"
    pol.write_text(text)
    code, out, err = invoke(["--policy", pol, sample(tmp_path, CLEAN)], capsys)
    assert code == 2
    assert err.startswith(f"tracelens: error: {pol}:{line}: "), err
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_policy_that_is_not_utf8(tmp_path, capsys):
    pol = tmp_path / "p.toml"
    pol.write_bytes(b"[gate]\nfail_on = \"error\"\n# caf\xe9\n")
    code, _, err = invoke(["--policy", pol, sample(tmp_path, CLEAN)], capsys)
    assert code == 2 and f"{pol}:3: not UTF-8" in err


def test_the_other_tables_of_tracelens_toml_apply_and_unknown_ones_are_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tracelens.toml").write_text("[analyze]\ntrace_mask = \"gen\"\n\n[decode]\nxen_version = \"latest\"\n")
    code, _, err = invoke([sample(tmp_path, "crash-kdump.xentrace")], capsys)  # [decode] is read: a bad value
    assert code == 2 and err == "tracelens: error: tracelens.toml:5: decode.xen_version must look like 4.17 or " \
                                "4.17.2, not 'latest'\n"
    (tmp_path / "tracelens.toml").write_text("[decode]\nxen_version = \"4.17\"\n\n[analyse]\nx = 1\n")
    code, _, err = invoke([sample(tmp_path, "crash-kdump.xentrace")], capsys)
    assert code == 2 and "tracelens.toml:4: unknown table [analyse]" in err
    # [decode].tolerance does not loosen the gate (it decodes strictly); [gate] applies as before
    (tmp_path / "tracelens.toml").write_text("[decode]\nxen_version = \"4.17\"\ntolerance = \"skip\"\n\n"
                                             "[gate]\nfail_on = \"warning\"\n")
    # found without --policy, in the working directory; fail_on = warning makes TL-GNT-002 of crash-kdump block
    code, lines, _, _ = gate_json(tmp_path, capsys, [sample(tmp_path, "crash-kdump.xentrace")])
    assert code == 1
    gate = lines[-1]
    assert gate["type"] == "gate" and gate["fail_on"] == "warning" and gate["policy"] == "tracelens.toml"
    assert {x["rule"] for x in lines if x["type"] == "finding" and x["blocking"]} == {"TL-GNT-001", "TL-GNT-002"}


# -- severities, thresholds ---------------------------------------------------------------------------------------
def test_rule_severity_and_off(tmp_path, capsys):
    cap = sample(tmp_path, LEAKING)
    pol = tmp_path / "p.toml"
    pol.write_text('[gate.rules]\n"TL-GNT-001" = "warning"\n')
    code, lines, _, _ = gate_json(tmp_path, capsys, ["--policy", pol, cap])
    assert code == 0
    g1 = next(x for x in lines if x.get("rule") == "TL-GNT-001")
    assert (g1["severity"], g1["reported_severity"], g1["state"]) == ("warning", "error", "below-fail-on")
    assert invoke(["--policy", pol, "--fail-on", "warning", cap], capsys)[0] == 1

    pol.write_text('[gate.rules]\n"TL-GNT-001" = "off"\n"TL-GNT-002" = "off"\n')
    code, lines, _, _ = gate_json(tmp_path, capsys, ["--policy", pol, "--fail-on", "note", cap])
    assert code == 0
    sup = [x["suppression"] for x in lines if x["type"] == "finding"]
    assert [s["kind"] for s in sup] == ["rule-off", "rule-off"]
    assert sup[0]["source"] == f"{pol}:2" and sup[1]["source"] == f"{pol}:3"


@pytest.mark.parametrize("spec,code", [
    ("outstanding_grants = 6", 0),          # persistent-grants: d0 had 6 outstanding at the boundary
    ("outstanding_grants = 5", 1),
    ("outstanding_grants = { default = 0, d0 = 6 }", 0),
    ("outstanding_grants = { default = 10, d0 = 5 }", 1),  # the backend's own allowance wins over the default
    ("outstanding_grants = { d3 = 100 }", 1),
    ("[gate.thresholds.outstanding_grants]\ndefault = 0\n0 = 6", 0),
    ("balloon_pages = 1000", 1),             # another rule's threshold does not touch TL-GNT-001
])
def test_outstanding_grants_threshold(tmp_path, capsys, spec, code):
    pol = tmp_path / "p.toml"
    pol.write_text(spec if spec.startswith("[") else f"[gate.thresholds]\n{spec}\n")
    got, lines, _, _ = gate_json(tmp_path, capsys, ["--policy", pol, sample(tmp_path, LEAKING)])
    assert got == code
    g1 = next(x for x in lines if x.get("rule") == "TL-GNT-001")
    assert (g1["state"] == "within-threshold") == (code == 0)


def test_balloon_threshold_per_domain(tmp_path, capsys):
    cap = sample(tmp_path, "balloon-before-kexec.xentrace")  # d1 ballooned out 518 pages
    pol = tmp_path / "p.toml"
    for spec, code in (("{ d1 = 518 }", 0), ("{ d1 = 517 }", 1), ("{ d2 = 9999 }", 1), ("518", 0)):
        pol.write_text(f"[gate.thresholds]\nballoon_pages = {spec}\n")
        assert invoke(["--policy", pol, cap], capsys)[0] == code, spec


# -- allow-list and expiry ---------------------------------------------------------------------------------------
def _allow(rule, expires, domid=None, obj=None, reason="blkback keeps persistent grants, fixed in 2027") -> str:
    s = f'[[gate.allow]]\nrule = "{rule}"\n'
    if domid is not None:
        s += f"domid = {domid}\n"
    if obj is not None:
        s += f'object = "{obj}"\n'
    return s + f'reason = "{reason}"\nexpires = {expires.isoformat()}\n'


@pytest.mark.parametrize("kw,code", [
    (dict(domid=1), 0),
    (dict(obj="mapper:d0"), 0),
    (dict(domid=1, obj="mapper:d*"), 0),
    (dict(domid=2), 1),
    (dict(domid=1, obj="mapper:d7"), 1),
])
def test_allow_entry_matching(tmp_path, capsys, kw, code):
    pol = tmp_path / "p.toml"
    pol.write_text(_allow("TL-GNT-001", TODAY + timedelta(days=30), **kw))
    got, lines, _, _ = gate_json(tmp_path, capsys, ["--policy", pol, sample(tmp_path, LEAKING)])
    assert got == code
    g1 = next(x for x in lines if x.get("rule") == "TL-GNT-001")
    if code == 0:
        assert g1["state"] == "allowed" and g1["suppression"]["kind"] == "allow"
        assert g1["suppression"]["source"] == f"{pol}:1"
        assert "blkback keeps persistent grants" in g1["suppression"]["justification"]


def test_allow_entries_that_match_nothing_are_reported(tmp_path, capsys):
    pol = tmp_path / "p.toml"
    pol.write_text(_allow("TL-GNT-001", TODAY + timedelta(days=3), domid=1) + "\n"
                   + _allow("TL-BAL-001", TODAY + timedelta(days=3), domid=4))
    code, lines, out, _ = gate_json(tmp_path, capsys, ["--policy", pol, sample(tmp_path, LEAKING)])
    assert code == 0
    assert lines[-1]["unused_allow_entries"] == [{"rule": "TL-BAL-001", "source": f"{pol}:7"}]
    assert f"allow-list entry at {pol}:7 (TL-BAL-001) matched no finding of these captures" in out


def test_expiry(tmp_path, capsys):
    cap = sample(tmp_path, LEAKING)
    pol = tmp_path / "p.toml"
    # valid through its expiry day
    pol.write_text(_allow("TL-GNT-001", TODAY, domid=1))
    assert invoke(["--policy", pol, cap], capsys)[0] == 0
    # from the next day on it stops suppressing, and says so
    yesterday = TODAY - timedelta(days=1)
    pol.write_text(_allow("TL-GNT-001", yesterday, domid=1))
    code, lines, out, _ = gate_json(tmp_path, capsys, ["--policy", pol, cap])
    assert code == 1
    g1 = next(x for x in lines if x.get("rule") == "TL-GNT-001")
    assert g1["blocking"] and g1["suppression"] is None
    assert g1["notes"] == [f"allow-list entry at {pol}:1 (blkback keeps persistent grants, fixed in 2027) expired on "
                           f"{yesterday.isoformat()} and no longer suppresses this finding"]
    assert lines[-1]["expired_allow_entries"] == [{"rule": "TL-GNT-001", "source": f"{pol}:1",
                                                   "reason": "blkback keeps persistent grants, fixed in 2027",
                                                   "expires": yesterday.isoformat()}]
    assert f"expired allow-list entry at {pol}:1" in out
    # an expired entry next to a valid one: the valid one suppresses, the expired one is still reported
    pol.write_text(_allow("TL-GNT-001", yesterday, domid=1) + "\n"
                   + _allow("TL-GNT-001", TODAY + timedelta(days=1), obj="mapper:d0", reason="second look"))
    code, lines, _, _ = gate_json(tmp_path, capsys, ["--policy", pol, cap])
    assert code == 0
    g1 = next(x for x in lines if x.get("rule") == "TL-GNT-001")
    assert g1["suppression"]["source"] == f"{pol}:7" and len(g1["notes"]) == 1


# -- baselines ---------------------------------------------------------------------------------------------------
def test_write_baseline_then_only_new_findings_fail(tmp_path, capsys):
    leak = sample(tmp_path, LEAKING)
    base = tmp_path / "baseline.json"
    code, _, err = invoke(["--write-baseline", base, leak], capsys)
    assert code == 0 and f"wrote 2 accepted fingerprint(s) to {base}" in err
    doc = json.loads(base.read_text())
    assert doc["schema_version"] == 1
    assert {e["fingerprint"] for e in doc["accepted"]} == {fp("TL-GNT-001", 1, 0, "mapper:d0"),
                                                          fp("TL-GNT-002", 1, 1, "mapper:d0")}
    # the same findings again: unchanged, pass even at --fail-on note
    code, lines, _, _ = gate_json(tmp_path, capsys, ["--baseline", base, "--fail-on", "note", leak])
    assert code == 0
    assert [x["baseline_state"] for x in lines if x["type"] == "finding"] == ["unchanged", "unchanged"]
    # a new problem fails; the accepted one (same fingerprint in crash-kdump) does not
    fm = sample(tmp_path, "foreign-map.xentrace")
    code, lines, _, _ = gate_json(tmp_path, capsys, ["--baseline", base, fm, sample(tmp_path, "crash-kdump.xentrace")])
    assert code == 1
    states = {(x["capture"].rsplit("/", 1)[-1], x["rule"]): (x["baseline_state"], x["blocking"])
              for x in lines if x["type"] == "finding"}
    assert states == {("foreign-map.xentrace", "TL-GNT-003"): ("new", True),
                      ("crash-kdump.xentrace", "TL-GNT-001"): ("unchanged", False),
                      ("crash-kdump.xentrace", "TL-GNT-002"): ("unchanged", False)}
    # the baseline can come from the policy file, relative to it
    (tmp_path / "ci").mkdir()
    pol = tmp_path / "ci" / "tracelens.toml"
    pol.write_text('[gate]\nbaseline = "../baseline.json"\n')
    assert invoke(["--policy", pol, leak], capsys)[0] == 0
    assert invoke(["--policy", pol, fm], capsys)[0] == 1


def test_baseline_never_accepts_what_the_policy_suppressed_or_lost_records(tmp_path, capsys):
    leak = sample(tmp_path, LEAKING)
    pol = tmp_path / "p.toml"
    pol.write_text(_allow("TL-GNT-001", TODAY + timedelta(days=3), domid=1))
    base = tmp_path / "b.json"
    assert invoke(["--policy", pol, "--write-baseline", base, leak], capsys)[0] == 0
    assert [e["rule"] for e in json.loads(base.read_text())["accepted"]] == ["TL-GNT-002"]
    # so when the allow entry expires the finding fails again, baseline or not
    pol.write_text(_allow("TL-GNT-001", TODAY - timedelta(days=1), domid=1))
    assert invoke(["--policy", pol, "--baseline", base, leak], capsys)[0] == 1
    # a capture that lost records is not baselined at all
    lost_base = tmp_path / "lost.json"
    code, _, err = invoke(["--write-baseline", lost_base, leak, sample(tmp_path, LOST)], capsys)
    assert code == 3 and "baseline not written" in err and not lost_base.exists()


@pytest.mark.parametrize("text,line,fragment", [
    ('{"schema_version": 1,\n "accepted": [\n  {"fingerprint": "0637cd20f334c43d"},\n ]\n}\n', 4, "invalid JSON"),
    ('{"schema_version": 2, "accepted": []}\n', 1, "schema_version must be 1"),
    ('{"schema_version": 1,\n "accepted": {}}\n', 2, "'accepted' must be an array"),
    ('{"schema_version": 1,\n "accepted": [\n  {"fingerprint": "0637cd20f334c43d"},\n  {"fingerprint": "XYZ"}\n]}\n',
     4, "accepted[1]: fingerprint must be 16 lowercase hex digits"),
])
def test_bad_baseline_is_exit_2_naming_file_and_line(tmp_path, capsys, text, line, fragment):
    base = tmp_path / "b.json"
    base.write_text(text)
    code, _, err = invoke(["--baseline", base, sample(tmp_path, CLEAN)], capsys)
    assert code == 2 and err.startswith(f"tracelens: error: {base}:{line}: ") and fragment in err


def test_baseline_and_write_baseline_together_is_a_usage_error(tmp_path, capsys):
    code, _, err = invoke(["--baseline", tmp_path / "a.json", "--write-baseline", tmp_path / "b.json",
                           sample(tmp_path, CLEAN)], capsys)
    assert code == 2 and "not both" in err and not (tmp_path / "b.json").exists()


def test_missing_baseline_is_exit_2(tmp_path, capsys):
    code, _, err = invoke(["--baseline", tmp_path / "none.json", sample(tmp_path, CLEAN)], capsys)
    assert code == 2 and "cannot read the baseline file" in err


def test_baseline_entries_seen_in_no_capture_are_reported(tmp_path, capsys):
    base = tmp_path / "b.json"
    gone = fp("TL-BAL-001", 4, 0, "balloon")
    base.write_text(json.dumps({"schema_version": 1, "accepted": [{"fingerprint": gone, "rule": "TL-BAL-001"}]}))
    code, lines, out, _ = gate_json(tmp_path, capsys, ["--baseline", base, sample(tmp_path, CLEAN)])
    assert code == 0 and lines[-1]["baseline_not_seen"] == [gone]
    assert "1 baseline fingerprint(s) seen in no capture" in out
