"""The gate's outputs, read by real consumers: SARIF validated against the official SARIF 2.1.0 schema (and the
constraints GitHub code scanning adds), JUnit XML parsed by junitparser, JSON Lines, GitHub annotations and step
summary. Files are written atomically."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from test_gate_support import CLEAN, LEAKING, LOST, REPO, invoke, sample, truncated

SCHEMA = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"
#: every rule documented in docs/rules.md, in its order ("## TL-XXX-NNN: title" sections)
RULE_IDS = re.findall(r"^## (TL-[A-Z]+-\d+):", (REPO / "docs" / "rules.md").read_text(), flags=re.M)


@pytest.fixture()
def mixed(tmp_path, monkeypatch):
    """Captures of every kind under a working directory, a policy that suppresses one finding, and a baseline that
    accepts another: every SARIF feature the gate uses appears."""
    monkeypatch.chdir(tmp_path)
    caps = tmp_path / "captures"
    caps.mkdir()
    paths = [sample(caps, n) for n in (CLEAN, LEAKING, "instrumented-guest.xentrace", "foreign-map.xentrace", LOST)]
    paths.append(truncated(caps))
    pol = tmp_path / "tracelens.toml"
    pol.write_text('[[gate.allow]]\nrule = "TL-GST-002"\nobject = "pirq:35"\nreason = "passthrough NIC, tracked"\n'
                   f"expires = {(date.today() + timedelta(days=10)).isoformat()}\n\n"
                   '[[gate.allow]]\nrule = "TL-GNT-003"\ndomid = 9\nreason = "old entry"\nexpires = 2020-01-01\n')
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"schema_version": 1, "accepted": [
        {"fingerprint": __import__("hashlib").sha256(b"TL-GNT-002|1|1|mapper:d0").hexdigest()[:16]}]}))
    rel = [str(p.relative_to(tmp_path)) for p in paths]
    return tmp_path, rel, pol, base


def run_mixed(mixed, capsys, *extra, env=None):
    cwd, rel, pol, base = mixed
    out = cwd / "out"
    out.mkdir(exist_ok=True)
    args = ["--policy", pol.name, "--baseline", base.name, "--sarif", "out/g.sarif", "--junit", "out/g.xml",
            "--json", "out/g.jsonl", *extra, *rel]
    code, stdout, err = invoke(args, capsys, env=env)
    return code, stdout, err, out


# -- SARIF -------------------------------------------------------------------------------------------------------
def test_sarif_is_valid_against_the_official_schema(mixed, capsys):
    import jsonschema
    code, _, _, out = run_mixed(mixed, capsys)
    assert code == 3
    doc = json.loads((out / "g.sarif").read_text())
    schema = json.loads(SCHEMA.read_text())
    v = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    # the schema is strict (additionalProperties false): a misspelt member would fail it
    bad = json.loads(json.dumps(doc))
    bad["runs"][0]["results"][0]["ruleID"] = "x"
    assert list(v.iter_errors(bad))


def test_sarif_content_for_github_code_scanning(mixed, capsys):
    cwd, rel, pol, base = mixed
    code, _, _, out = run_mixed(mixed, capsys)
    doc = json.loads((out / "g.sarif").read_text())
    assert doc["version"] == "2.1.0" and len(doc["runs"]) == 1
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert sorted(r["id"] for r in rules) == sorted(RULE_IDS)  # every rule declared, whether it fired or not
    assert {"TL-GNT-001", "TL-GNT-002", "TL-GNT-003", "TL-BAL-001", "TL-LOST-001"} <= set(RULE_IDS)

    # help text: each rule's section of docs/rules.md
    text = (REPO / "docs" / "rules.md").read_text()
    for r in rules:
        start = text.index(f"## {r['id']}:")
        body = text[text.index("\n", start) + 1:]
        ends = [i for i in (body.find("\n## "), body.find("\n---\n")) if i >= 0]  # next rule, or a ruler
        section = (body[:min(ends)] if ends else body).strip()
        assert r["help"]["markdown"] == section
        assert "**Why it matters" in section and len(r["help"]["text"]) > 200
        assert r["defaultConfiguration"]["level"] in ("error", "warning", "note")
    assert {r["id"]: r["defaultConfiguration"]["level"] for r in rules}["TL-GNT-002"] == "warning"

    results = run["results"]
    assert len(results) == 7  # 2 + 2 + 1 findings, + TL-GNT-001 and TL-LOST-001 of the lossy capture, + none from
    # clean and truncated
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        loc = r["locations"][0]["physicalLocation"]
        art = loc["artifactLocation"]
        assert art["uriBaseId"] == "%SRCROOT%" and art["uri"].startswith("captures/")
        assert (cwd / art["uri"]).is_file()  # GitHub needs a file of the checkout
        assert loc["region"]["startLine"] >= 1
        assert re.fullmatch(r"[0-9a-f]{16}", r["partialFingerprints"]["tracelensFingerprint/v1"])
        assert r["message"]["text"]
        assert run["artifacts"][art["index"]]["location"]["uri"] == art["uri"]
    by = {(r["properties"]["capture"].split("/")[-1], r["ruleId"]): r for r in results}

    gnt2 = by[(LEAKING, "TL-GNT-002")]
    assert gnt2["baselineState"] == "unchanged" and "suppressions" not in gnt2
    assert by[(LEAKING, "TL-GNT-001")]["baselineState"] == "new"
    gst2 = by[("instrumented-guest.xentrace", "TL-GST-002")]
    assert gst2["suppressions"] == [{"kind": "external", "status": "accepted",
                                     "justification": gst2["suppressions"][0]["justification"],
                                     "properties": {"policyEntry": "tracelens.toml:1", "gateKind": "allow"}}]
    assert gst2["suppressions"][0]["justification"].startswith("passthrough NIC, tracked (allowed until ")
    assert "suppressions" not in by[("instrumented-guest.xentrace", "TL-GST-001")]
    assert by[("foreign-map.xentrace", "TL-GNT-003")]["level"] == "error"

    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False  # the truncated capture could not be read
    assert inv["exitCode"] == code == 3
    notes = [n["message"]["text"] for n in inv["toolExecutionNotifications"]]
    assert any("capture unreadable" in n and "truncated capture" in n for n in notes)
    assert any(LOST in n and "inconclusive" in n for n in notes)
    assert any("expired on 2020-01-01" in n for n in notes)
    sha = {a["location"]["uri"]: a.get("hashes", {}).get("sha-256") for a in run["artifacts"]}
    import hashlib
    assert sha[f"captures/{CLEAN}"] == hashlib.sha256((cwd / "captures" / CLEAN).read_bytes()).hexdigest()


def test_sarif_for_a_capture_outside_the_working_directory(tmp_path, capsys, monkeypatch):
    import jsonschema
    (tmp_path / "wd").mkdir()
    (tmp_path / "elsewhere").mkdir()
    cap = sample(tmp_path / "elsewhere", LEAKING, "a capture, with spaces.xentrace")
    monkeypatch.chdir(tmp_path / "wd")
    code, _, _ = invoke(["--sarif", "g.sarif", cap], capsys)
    assert code == 1
    doc = json.loads((tmp_path / "wd" / "g.sarif").read_text())
    art = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert art["uri"] == cap.as_uri() and "uriBaseId" not in art
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(doc)


# -- JUnit -------------------------------------------------------------------------------------------------------
def test_junit_parsed_by_junitparser(mixed, capsys):
    from junitparser import Error, Failure, JUnitXml, Skipped

    cwd, rel, _, _ = mixed
    code, _, _, out = run_mixed(mixed, capsys)
    xml = JUnitXml.fromfile(str(out / "g.xml"))
    suites = {s.name: s for s in xml}
    assert list(suites) == rel  # a testsuite per capture, in order

    def cases(path):
        return {c.name.split(":")[0]: c for c in suites[path]}

    def kinds(case):
        return [type(r) for r in case.result]

    for path in rel:
        cs = cases(path)
        assert set(cs) == {"capture read completely", "capture covers the event classes its verdicts need",
                           *RULE_IDS}  # a testcase per rule
        assert suites[path].tests == 2 + len(RULE_IDS)
    leak = cases(f"captures/{LEAKING}")
    assert kinds(leak["TL-GNT-001"]) == [Failure] and leak["TL-GNT-001"].result[0].type == "error"
    assert "d0 still had 6 grant mapping(s)" in leak["TL-GNT-001"].result[0].text
    assert leak["TL-GNT-002"].is_passed and "[baseline]" in leak["TL-GNT-002"].system_out
    assert leak["capture read completely"].is_passed and leak["TL-BAL-001"].is_passed
    assert suites[f"captures/{LEAKING}"].failures == 1

    inst = cases("captures/instrumented-guest.xentrace")
    assert kinds(inst["TL-GST-001"]) == [Failure] and inst["TL-GST-002"].is_passed
    assert "allowed: passthrough NIC" in inst["TL-GST-002"].system_out

    lost = cases(f"captures/{LOST}")
    assert kinds(lost["capture read completely"]) == [Error]
    assert lost["capture read completely"].result[0].type == "inconclusive"

    trunc = cases(f"captures/truncated-{CLEAN}")
    assert kinds(trunc["capture read completely"]) == [Error]
    assert "truncated capture" in trunc["capture read completely"].result[0].message
    assert all(kinds(trunc[r]) == [Skipped] for r in RULE_IDS)

    clean = cases(f"captures/{CLEAN}")
    dump_rules = [r for r in RULE_IDS if r.startswith("TL-DMP-")]  # need --vmcore: not checked here
    assert dump_rules and all(kinds(clean[r]) == [Skipped] for r in dump_rules)
    assert all(c.is_passed for r, c in clean.items() if r not in dump_rules)
    xml.update_statistics()
    assert (xml.failures, xml.errors) == (4, 2)  # GNT-001 (twice: the lossy capture too), GST-001, GNT-003; lost and
    # truncated


# -- JSON Lines ----------------------------------------------------------------------------------------------------
def test_jsonl(mixed, capsys):
    cwd, rel, _, _ = mixed
    code, _, _, out = run_mixed(mixed, capsys)
    lines = (out / "g.jsonl").read_text().splitlines()
    objs = [json.loads(x) for x in lines]
    assert all(o["schema_version"] == 1 for o in objs)
    types = [o["type"] for o in objs]
    assert types == ["finding"] * 7 + ["capture"] * 6 + ["gate"]
    caps = [o for o in objs if o["type"] == "capture"]
    assert [c["capture"] for c in caps] == rel
    assert [c["status"] for c in caps] == ["pass", "fail", "fail", "fail", "inconclusive", "unreadable"]
    assert objs[-1]["exit_code"] == code == 3 and objs[-1]["status"] == "inconclusive"
    f = next(o for o in objs if o["type"] == "finding" and o["rule"] == "TL-GNT-001")
    for k in ("rule", "severity", "domid", "epoch", "object", "tsc", "message", "evidence", "fingerprint"):
        assert k in f
    assert f["evidence"]["outstanding"] == 6 and f["blocking"] is True


# -- GitHub ------------------------------------------------------------------------------------------------------
def test_github_annotations_and_step_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caps = [sample(tmp_path, LEAKING, f"leak{i:02d}.xentrace") for i in range(11)]
    caps.append(sample(tmp_path, LOST))
    summary = tmp_path / "step-summary.md"
    summary.write_text("## earlier step\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(tmp_path)}
    code, out, _ = invoke([c.name for c in caps], capsys, env=env)
    assert code == 3
    ann = [x for x in out.splitlines() if x.startswith("::")]
    assert len(ann) == 10  # GitHub shows at most 10 per step
    assert ann[0].startswith(f"::error file={LOST},title=tracelens gate::") and "inconclusive" in ann[0]
    assert ann[1] == ("::error file=leak00.xentrace,title=TL-GNT-001 d1 epoch 0 mapper%3Ad0::d0 still had 6 grant "
                      "mapping(s) of d1 when d1 started its next kernel (soft_reset boundary at tsc 12807307); the "
                      "new kernel will reuse those pages")
    md = summary.read_text()
    assert md.startswith("## earlier step\n")  # appended, not replaced
    assert "### tracelens gate: inconclusive (exit 3, fail on error)" in md
    assert "| `leak10.xentrace` | fail | 2 | 1 |  |" in md
    assert md.count("| TL-GNT-001 | error | 1 | 0 | mapper:d0 | blocking |") == 12  # 11 leaks, and the lossy one
    # outside GitHub Actions: no annotations, no summary
    summary.write_text("")
    code2, out2, _ = invoke([c.name for c in caps], capsys, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert code2 == code and "::error" not in out2 and summary.read_text() == ""


def test_github_escaping_of_workflow_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cap = sample(tmp_path, LEAKING, "odd,name:100%.xentrace")
    code, out, _ = invoke([cap.name], capsys, env={"GITHUB_ACTIONS": "true"})
    ann = [x for x in out.splitlines() if x.startswith("::")]
    assert ann == [ann[0]] and ann[0].startswith("::error file=odd%2Cname%3A100%25.xentrace,title=")


# -- summary and atomic files ------------------------------------------------------------------------------------
def test_summary_and_atomic_outputs(mixed, capsys):
    cwd, rel, pol, base = mixed
    (cwd / "out").mkdir()
    (cwd / "out" / "g.sarif").write_text("old")
    code, stdout, _, out = run_mixed(mixed, capsys)
    assert json.loads((out / "g.sarif").read_text())["version"] == "2.1.0"
    assert not [p for p in out.iterdir() if p.name.startswith(".tracelens-")]  # no temporary files left
    lines = stdout.splitlines()
    assert lines[-1] == "gate: inconclusive (exit 3); fail on error; 6 input(s): 3 fail, 1 inconclusive, 1 pass, " \
                        "1 unreadable"
    assert lines[-2] == "policy: tracelens.toml; baseline: baseline.json"
    assert any(x.startswith(f"PASS         captures/{CLEAN}: 0 finding(s)") for x in lines)
    assert any(x.startswith(f"UNREADABLE   captures/truncated-{CLEAN}") for x in lines)
    assert "expired allow-list entry at tracelens.toml:7 (TL-GNT-003, old entry)" in stdout
    # a failing renderer leaves the previous file in place (an unwritable target)
    code, _, err = invoke(["--sarif", str(cwd / "nodir" / "x.sarif"), rel[0]], capsys)
    assert code == 2


# -- --show-code ---------------------------------------------------------------------------------------------------
_OPTS = {"policy": "--policy", "baseline": "--baseline", "json_out": "--json", "sarif": "--sarif",
         "write_baseline": "--write-baseline"}


def _show_code(args: dict, capsys) -> str:
    argv = ["--show-code"]
    for k, v in args.items():
        if k != "captures":
            argv += [_OPTS[k], v]
    code, printed, err = invoke([*argv, *args["captures"]], capsys)
    assert code == 0, err
    return printed


def test_show_code_runs_and_gives_what_the_command_gives(mixed, capsys):
    cwd, rel, pol, base = mixed
    code, _, _, out = run_mixed(mixed, capsys)
    printed = _show_code(dict(captures=rel, policy=pol.name, baseline=base.name, json_out="out/code.jsonl",
                              sarif="out/code.sarif"), capsys)
    assert not (out / "code.jsonl").exists()  # show-code only prints
    ns: dict = {}
    exec(compile(printed, "<show-code>", "exec"), ns)
    stdout = capsys.readouterr()[0]
    assert ns["result"].exit_code == code == 3 and stdout.endswith("exit code 3\n")
    assert (out / "code.jsonl").read_text() == (out / "g.jsonl").read_text()
    assert json.loads((out / "code.sarif").read_text()) == json.loads((out / "g.sarif").read_text())


def test_show_code_of_write_baseline(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cap = sample(tmp_path, LEAKING).name
    invoke(["--write-baseline", "cli.json", cap], capsys)
    printed = _show_code(dict(captures=[cap], write_baseline="code.json"), capsys)
    exec(compile(printed, "<show-code>", "exec"), {})
    assert json.loads((tmp_path / "code.json").read_text()) == json.loads((tmp_path / "cli.json").read_text())


# -- robustness -------------------------------------------------------------------------------------------------
def test_the_same_capture_twice_is_one_artifact(tmp_path, capsys, monkeypatch):
    import jsonschema
    monkeypatch.chdir(tmp_path)
    cap = sample(tmp_path, LEAKING).name
    code, out, _ = invoke(["--sarif", "g.sarif", cap, f"./{cap}"], capsys)
    assert code == 1 and out.count("FAIL ") == 2  # a result per argument
    doc = json.loads((tmp_path / "g.sarif").read_text())
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(doc)  # artifacts are uniqueItems
    assert len(doc["runs"][0]["artifacts"]) == 1 and len(doc["runs"][0]["results"]) == 4


def test_an_unwritable_step_summary_does_not_change_the_exit_code(tmp_path, capsys):
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "no-such-dir" / "summary.md")}
    code, out, err = invoke([sample(tmp_path, LEAKING)], capsys, env=env)
    assert code == 1 and "::error " in out and "cannot append to GITHUB_STEP_SUMMARY" in err


def test_numpy_values_in_evidence_are_written_as_json(tmp_path):
    import numpy as np
    from tracelens.analysis.findings import Finding
    from tracelens.gate.evaluate import CaptureResult, GateResult, evaluate_findings
    from tracelens.gate.jsonl import to_jsonl
    from tracelens.gate.policy import Policy
    from tracelens.gate.sarif import to_sarif

    f = Finding("TL-GNT-001", "error", 1, 0, "mapper:d0", 5, 1, 5, "m",
                {"outstanding": np.int64(3), "refs": np.arange(3, dtype=np.uint32), "ports": {2, 1}})
    c = CaptureResult(path=str(tmp_path / "x.xentrace"), findings=evaluate_findings([f], "x", Policy(), "error"))
    r = GateResult(captures=[c], fail_on="error", policy=Policy())
    line = json.loads(to_jsonl(r).splitlines()[0])
    assert line["evidence"] == {"outstanding": 3, "refs": [0, 1, 2], "ports": [1, 2]}
    assert json.loads(to_sarif(r))["runs"][0]["results"][0]["properties"]["evidence"]["refs"] == [0, 1, 2]
