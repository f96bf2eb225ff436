"""docs/gate.md runs: its example policy, baseline and Python are valid, and the commands of its GitHub Actions and
GitLab CI pipelines (read from the page's YAML blocks) give the documented exit codes and reports."""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from test_gate_support import CLEAN, LEAKING, REPO, SAMPLES, invoke, truncated

DOC = REPO / "docs" / "gate.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def gate_commands(script: str) -> list[list[str]]:
    return [shlex.split(line.strip()) for line in script.splitlines() if line.strip().startswith("tracelens gate ")]


@pytest.fixture(scope="module")
def pipelines():
    import yaml  # a test dependency: it reads the pipelines of docs/gate.md
    docs = [yaml.safe_load(b) for b in blocks("yaml")]
    gh = [d for d in docs if "jobs" in d]
    gl = [d for d in docs if "jobs" not in d]
    assert len(gh) == 1 and len(gl) == 1
    return gh[0], gl[0]


def github_gate(gh):
    steps = gh["jobs"]["gate"]["steps"]
    i = next(i for i, s in enumerate(steps) if gate_commands(s.get("run", "")))
    (cmd,) = gate_commands(steps[i]["run"])
    return cmd, steps[i + 1:]


def gitlab_gate(gl):
    (job,) = gl.values()
    (cmd,) = [c for line in job["script"] for c in gate_commands(line)]
    return cmd, job


def option(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_pipelines_keep_their_reports_when_the_gate_fails(pipelines):
    gh, gl = pipelines
    cmd, later = github_gate(gh)
    assert later and all(s.get("if") == "always()" for s in later)
    upload = next(s for s in later if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    assert upload["with"]["sarif_file"] == option(cmd, "--sarif")
    assert gh["permissions"]["security-events"] == "write"
    kept = next(s for s in later if s.get("uses", "").startswith("actions/upload-artifact"))["with"]["path"].split()
    assert {option(cmd, o) for o in ("--sarif", "--junit", "--json")} <= set(kept)

    cmd, job = gitlab_gate(gl)
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == option(cmd, "--junit")
    assert {option(cmd, "--sarif"), option(cmd, "--json")} <= set(job["artifacts"]["paths"])


def _run(cmd, ws: Path, capsys, env=None):
    assert cmd[:2] == ["tracelens", "gate"]
    args = []
    for a in cmd[2:]:
        args += sorted(glob.glob(a, root_dir=ws)) if "*" in a else [a]
    return invoke(args, capsys, env=env)


def test_pipelines_run(pipelines, tmp_path, capsys, monkeypatch):
    gh, gl = pipelines
    monkeypatch.chdir(tmp_path)
    (tmp_path / "captures").mkdir()
    for n in (CLEAN, LEAKING):
        shutil.copyfile(SAMPLES / n, tmp_path / "captures" / n)
    (policy_text,) = blocks("toml")
    (tmp_path / "tracelens.toml").write_text(policy_text)
    (local,) = [c for b in blocks("sh") for c in gate_commands(b)]
    gh_cmd, _ = github_gate(gh)
    gl_cmd, _ = gitlab_gate(gl)
    summary = tmp_path / "step-summary.md"
    gh_env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(tmp_path)}

    # the pipelines need the committed baseline: without it, a policy error
    code, _, err = _run(gh_cmd, tmp_path, capsys, gh_env)
    assert code == 2 and "tracelens-baseline.json: cannot read the baseline file" in err
    # written once, locally, as the page says
    assert "--write-baseline" in local
    code, _, _ = _run(local, tmp_path, capsys)
    assert code == 0
    accepted = json.loads((tmp_path / option(local, "--write-baseline")).read_text())["accepted"]
    assert {a["rule"] for a in accepted} == {"TL-GNT-001", "TL-GNT-002"}

    code, out, _ = _run(gh_cmd, tmp_path, capsys, gh_env)
    assert code == 0 and "::error" not in out
    sarif = json.loads((tmp_path / option(gh_cmd, "--sarif")).read_text())
    assert {r["baselineState"] for r in sarif["runs"][0]["results"]} == {"unchanged"}
    assert "### tracelens gate: pass (exit 0" in summary.read_text()
    assert _run(gl_cmd, tmp_path, capsys)[0] == 0

    # a new problem in a new capture fails both pipelines, and the reports say where
    shutil.copyfile(SAMPLES / "foreign-map.xentrace", tmp_path / "captures" / "foreign-map.xentrace")
    code, out, _ = _run(gh_cmd, tmp_path, capsys, gh_env)
    assert code == 1
    assert "::error file=captures/foreign-map.xentrace,title=TL-GNT-003 d2 epoch 0 grant-maps::" in out
    code, _, _ = _run(gl_cmd, tmp_path, capsys)
    assert code == 1
    junit = (tmp_path / option(gl_cmd, "--junit")).read_text()
    assert junit.count("<failure ") == 1 and 'type="error"' in junit

    # a damaged capture: inconclusive, whatever else is found
    truncated(tmp_path / "captures")
    code, out, _ = _run(gh_cmd, tmp_path, capsys, gh_env)
    assert code == 3 and f"UNREADABLE   captures/truncated-{CLEAN}" in out
    assert _run(gl_cmd, tmp_path, capsys)[0] == 3


def test_the_documented_policy_and_baseline_are_valid():
    from tracelens.gate.baseline import parse_baseline
    from tracelens.gate.policy import parse_policy

    (policy_text,) = blocks("toml")
    pol = parse_policy(policy_text, "tracelens.toml")
    assert pol.fail_on == "error" and pol.severity == {"TL-GNT-002": "error"} and len(pol.allow) == 1
    assert set(pol.thresholds) == {"TL-GNT-001", "TL-BAL-001"}
    (baseline_text,) = blocks("json")
    assert list(parse_baseline(baseline_text, "b.json").accepted) == ["0637cd20f334c43d"]


def test_the_documented_python_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "captures").mkdir()
    shutil.copyfile(SAMPLES / LEAKING, tmp_path / "captures" / "a.xentrace")
    (policy_text,) = blocks("toml")
    (tmp_path / "tracelens.toml").write_text(policy_text.replace('baseline = "tracelens-baseline.json"', ""))
    (code,) = blocks("python")
    capsys.readouterr()
    exec(compile(code, "<docs/gate.md>", "exec"), {})
    assert capsys.readouterr()[0].splitlines() == [
        "fail captures/a.xentrace [('TL-GNT-001', 'blocking'), ('TL-GNT-002', 'blocking')]", "1"]


def test_documented_error_messages_are_the_real_ones(tmp_path, capsys):
    text = DOC.read_text()
    cases = {
        "tracelens.toml:14: unknown rule 'TL-GNT-009'": "\n" * 12 + '[gate.rules]\n"TL-GNT-009" = "off"\n',
        "tracelens.toml:21: expires must be a date (YYYY-MM-DD), not 'next week'":
            "\n" * 16 + '[[gate.allow]]\nrule = "TL-GNT-001"\ndomid = 1\nreason = "x"\nexpires = "next week"\n',
        "tracelens.toml:3: invalid TOML: Expected '=' after a key in a key/value pair (at line 3, column 9)":
            "[gate]\nfail_on = 'error'\nbaseline\n",
    }
    for message, policy in cases.items():
        assert f"tracelens: error: {message}" in text
        (tmp_path / "tracelens.toml").write_text(policy)
        code, _, err = invoke(["--policy", tmp_path / "tracelens.toml", SAMPLES / CLEAN], capsys)
        assert code == 2 and message in err.replace(str(tmp_path) + "/", ""), err
