"""The exit-code matrix of ``tracelens gate`` (docs/exit-codes.md, docs/gate.md): per capture kind, over several
captures (the worst wins: 2 > 3 > 1 > 0), over bad policies, and unchanged by the output options."""

from __future__ import annotations

import pytest
from test_gate_support import CLEAN, LEAKING, LOST, UNSAFE, corrupt, invoke, sample, truncated

PASS, FINDINGS, USAGE, INPUT, INTERNAL = 0, 1, 2, 3, 70


@pytest.mark.parametrize("name,code", [(CLEAN, PASS), (LEAKING, FINDINGS), (LOST, INPUT)]
                         + [(u, FINDINGS) for u in UNSAFE])
def test_sample_captures(tmp_path, capsys, name, code):
    got, out, _ = invoke([sample(tmp_path, name)], capsys)
    assert got == code
    word = {PASS: "PASS", FINDINGS: "FAIL", INPUT: "INCONCLUSIVE"}[code]
    assert f"{word} " in out and name in out


def test_damaged_and_unreadable_inputs(tmp_path, capsys):
    empty = tmp_path / "empty.xentrace"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    for p, what in ((truncated(tmp_path), "truncated"), (corrupt(tmp_path), "CPU_CHANGE"),
                    (empty, "empty file"), (text, "not a xentrace capture"),
                    (tmp_path / "missing.xentrace", "cannot open")):
        code, out, _ = invoke([p], capsys)
        assert code == INPUT, p
        assert "UNREADABLE" in out and what in out


def test_lost_records_fail_closed_whatever_the_tolerance(tmp_path, capsys):
    pol = tmp_path / "p.toml"
    pol.write_text("[gate]\nmax_lost_records = 1000\nfail_on = 'error'\n")
    code, out, _ = invoke(["--policy", pol, sample(tmp_path, LOST)], capsys)
    assert code == INPUT  # the TL-LOST-001 finding alone makes it inconclusive
    assert "TL-LOST-001" in out and "more than gate.max_lost_records" not in out
    code, out, _ = invoke([sample(tmp_path, LOST)], capsys)
    assert code == INPUT and "13 record(s) lost, more than gate.max_lost_records = 0" in out


@pytest.mark.parametrize("names,code", [
    ((CLEAN, CLEAN), PASS),
    ((CLEAN, LEAKING), FINDINGS),
    ((LEAKING, LOST), INPUT),
    ((CLEAN, LOST, LEAKING), INPUT),
    ((CLEAN, "truncated"), INPUT),
    ((LEAKING, "corrupt", CLEAN), INPUT),
])
def test_several_captures_the_worst_wins(tmp_path, capsys, names, code):
    paths = []
    for i, n in enumerate(names):
        d = tmp_path / str(i)
        d.mkdir()
        paths.append(truncated(d) if n == "truncated" else corrupt(d) if n == "corrupt" else sample(d, n))
    got, out, _ = invoke(paths, capsys)
    assert got == code
    assert out.count(" finding(s), ") == len(names)  # a result per capture


def test_policy_error_wins_over_everything(tmp_path, capsys):
    pol = tmp_path / "p.toml"
    pol.write_text("[gate]\nfail_on = 'fatal'\n")
    code, out, err = invoke(["--policy", pol, sample(tmp_path, LEAKING), truncated(tmp_path)], capsys)
    assert code == USAGE
    assert f"{pol}:2: gate.fail_on must be one of error, warning, note, not 'fatal'" in err
    assert out == ""  # nothing was analysed


def test_fail_on(tmp_path, capsys):
    inst = sample(tmp_path, "instrumented-guest.xentrace")  # TL-GST-001 error, TL-GST-002 warning
    pol = tmp_path / "p.toml"
    pol.write_text('[[gate.allow]]\nrule = "TL-GST-001"\nobject = "gref:15"\nreason = "ref 15 is the console ring"\n'
                   'expires = 2999-01-01\n')
    assert invoke(["--policy", pol, inst], capsys)[0] == PASS
    assert invoke(["--policy", pol, "--fail-on", "warning", inst], capsys)[0] == FINDINGS
    assert invoke(["--policy", pol, "--fail-on", "note", inst], capsys)[0] == FINDINGS
    pol.write_text(pol.read_text() + '[gate]\nfail_on = "warning"\n')
    assert invoke(["--policy", pol, inst], capsys)[0] == FINDINGS
    assert invoke(["--policy", pol, "--fail-on", "error", inst], capsys)[0] == PASS  # the option wins


def test_usage_errors(tmp_path, capsys):
    code, _, err = invoke(["--fail-on", "fatal", sample(tmp_path, CLEAN)], capsys)
    assert code == USAGE and "--fail-on must be one of error, warning, note" in err
    code, _, err = invoke(["--sarif", tmp_path / "no-such-dir" / "x.sarif", sample(tmp_path, CLEAN)], capsys)
    assert code == USAGE and "does not exist" in err
    code, _, err = invoke([], capsys)
    assert code == USAGE and "CAPTURE: give at least one capture" in err
    code, _, err = invoke(["--policy", tmp_path / "absent.toml", sample(tmp_path, CLEAN)], capsys)
    assert code == USAGE and "cannot read the policy file" in err


def test_unknown_option_is_a_usage_error(tmp_path, capsys):
    code, _, _ = invoke(["--no-such-option", sample(tmp_path, CLEAN)], capsys)
    assert code == USAGE


def test_internal_error_is_70_with_a_short_message(tmp_path, capsys, monkeypatch):
    import tracelens.analysis.analyze as analysis

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(analysis, "analyze", boom)
    code, _, err = invoke([sample(tmp_path, CLEAN)], capsys, monkeypatch)
    assert code == INTERNAL
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err


@pytest.mark.parametrize("names,code", [((CLEAN,), PASS), ((LEAKING, CLEAN), FINDINGS), ((LEAKING, LOST), INPUT),
                                        ((CLEAN, "truncated"), INPUT)])
def test_the_output_format_never_changes_the_exit_code(tmp_path, capsys, names, code):
    paths = [truncated(tmp_path) if n == "truncated" else sample(tmp_path, n) for n in names]
    o = tmp_path / "out"
    o.mkdir()
    variants = [
        [],
        ["-q"],
        ["--json", o / "g.jsonl"],
        ["--sarif", o / "g.sarif"],
        ["--junit", o / "g.xml"],
        ["-q", "--json", o / "a.jsonl", "--sarif", o / "a.sarif", "--junit", o / "a.xml"],
    ]
    for v in variants:
        assert invoke([*v, *paths], capsys)[0] == code, v
    gh = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(o / "summary.md")}
    assert invoke(["--sarif", o / "b.sarif", *paths], capsys, env=gh)[0] == code
    assert (o / "summary.md").read_text().count("### tracelens gate") == 1


def test_exit_codes_of_the_real_process(tmp_path):
    """What a CI runner sees: the process exit status of ``python -m tracelens gate``."""
    import subprocess
    import sys

    def status(*args):
        return subprocess.run([sys.executable, "-m", "tracelens", "gate", "-q", *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    r = status(sample(tmp_path, CLEAN), sample(tmp_path, LEAKING))
    assert r.returncode == FINDINGS and r.stdout == "" and r.stderr == ""
    r = status(sample(tmp_path, LEAKING), truncated(tmp_path))
    assert r.returncode == INPUT
    bad = tmp_path / "p.toml"
    bad.write_text("[gate.rules]\n'TL-X-1' = 'off'\n")
    r = status("--policy", bad, sample(tmp_path, CLEAN))
    assert r.returncode == USAGE and r.stderr.startswith(f"tracelens: error: {bad}:2: unknown rule 'TL-X-1'")
    assert status(sample(tmp_path, CLEAN)).returncode == PASS


def test_sarif_help_without_the_docs_folder(tmp_path, monkeypatch):
    """An install whose rule docs are missing (a wheel ships them: tests/test_packaging.py) still declares every
    rule, with its one line and a pointer to the docs."""
    import tracelens.gate.sarif as sarif
    from tracelens.analysis.findings import RULES

    monkeypatch.setattr(sarif, "rules_doc_path", lambda: tmp_path / "absent" / "rules.md")
    rules = sarif.rule_descriptors()
    assert [r["id"] for r in rules] == list(RULES)
    assert all("See docs/rules.md" in r["help"]["text"] and r["shortDescription"]["text"] for r in rules)
