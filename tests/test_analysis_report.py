"""``tracelens analyze``: the JSON contract, the text and Markdown renderings, options, and the command wired into a
typer app (the project's cli.py registers it the same way)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import synth
import tracelens
from tracelens.cli import main
from tracelens.commands import analyze as cmd
from tracelens.errors import FormatError, UsageError

SAMPLES = Path(__file__).resolve().parent.parent / "sample-traces"


def _json(path, tmp_path, *options) -> dict:
    """``tracelens analyze PATH --format json -o FILE OPTIONS...``, the JSON it wrote."""
    out = tmp_path / "report.json"
    assert main(["analyze", str(path), "--format", "json", "-o", str(out), *options]) == 0
    return json.loads(out.read_text())


def test_json_contract_on_a_sample(tmp_path):
    path = SAMPLES / "persistent-grants.xentrace"
    doc = _json(path, tmp_path)
    assert doc["schema_version"] == 1
    cap = doc["capture"]
    assert cap["path"] == str(path)
    assert cap["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cap["records"] == tracelens.read_xentrace(path).num_rows and cap["lost_records"] == 0
    assert [{k: b[k] for k in ("domid", "epoch", "kind")} for b in doc["boundaries"]] == [
        {"domid": 1, "epoch": 0, "kind": "soft_reset"}]
    sim = synth.scenario_persistent_grants()
    assert doc["boundaries"][0]["tsc"] == sim.truth.boundaries[0]["tsc"]
    rows = [{k: g[k] for k in ("mapper", "granter", "epoch", "maps", "unmaps", "outstanding_at_boundary")}
            for g in doc["grants"]]
    assert rows == [
        {"mapper": 0, "granter": 1, "epoch": 0, "maps": 16, "unmaps": 10, "outstanding_at_boundary": 6},
        {"mapper": 0, "granter": 1, "epoch": 1, "maps": 4, "unmaps": 6, "outstanding_at_boundary": None},
    ]
    assert doc["balloon"] == []
    for f in doc["findings"]:
        assert set(f) >= {"rule", "severity", "domid", "epoch", "object", "tsc", "message", "fingerprint"}
    assert [f["rule"] for f in doc["findings"]] == ["TL-GNT-001", "TL-GNT-002"]


def test_json_balloon_and_lost(tmp_path):
    doc = _json(SAMPLES / "balloon-before-kexec.xentrace", tmp_path)
    assert [{k: b[k] for k in ("domid", "epoch", "extents", "pages")} for b in doc["balloon"]] == [
        {"domid": 1, "epoch": 0, "extents": 7, "pages": 518}]
    assert doc["balloon"][0]["gfn_ranges"] == [[0x12340, 0x12346], [0x40000, 0x40200]]
    sim = synth.scenario_lost_across_boundary()
    doc = _json(SAMPLES / "lost-across-boundary.xentrace", tmp_path)
    assert doc["capture"]["lost_records"] == sum(n for *_, n in sim.truth.lost) > 0
    assert [s["verdict"] for s in doc["safety"]] == ["inconclusive", "inconclusive"]


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_json_matches_truth_on_random_hosts(seed, tmp_path):
    sim = synth.random_scenario(seed)
    path = tmp_path / "r.xentrace"
    sim.write(path)
    doc = _json(path, tmp_path)
    assert sorted((b["domid"], b["epoch"], b["kind"], b["tsc"]) for b in doc["boundaries"]) == sorted(
        (b["domid"], b["epoch"], b["kind"], b["tsc"]) for b in sim.truth.boundaries)
    assert {(f["rule"], f["domid"], f["epoch"], f["object"]) for f in doc["findings"]} == sim.truth.findings
    for g in doc["grants"]:
        t = sim.truth.grants.get((g["mapper"], g["granter"], g["epoch"]), {"maps": 0, "unmaps": 0})
        assert (g["maps"], g["unmaps"]) == (t["maps"], t["unmaps"])
    json.dumps(doc)  # plain JSON types only


def test_text_and_markdown(tmp_path, capsys):
    src = SAMPLES / "instrumented-guest.xentrace"
    assert cmd.run(str(src)) == 0
    text = capsys.readouterr().out
    assert "TL-GST-001" in text and "gref:15" in text and "soft_reset" in text and "\x1b[" not in text
    odd = tmp_path / "a|b<script>.xentrace"
    shutil.copy(src, odd)
    assert cmd.run(str(odd), fmt="md") == 0
    md = capsys.readouterr().out
    head, _, body = md.partition("\n")
    assert head.endswith("a|b<script>.xentrace`")  # a code span: literal text in every CommonMark renderer
    assert "a\\|b\\<script\\>" in body and "<script>" not in body  # a table cell: backslash escapes
    assert "### TL-GST-001 (error)" in md and "| d1 | 0 | gref:15 |" in md


def test_options(tmp_path, capsys):
    path = SAMPLES / "clean-soft-reset.xentrace"
    sim = synth.scenario_clean_soft_reset()
    b0 = sim.truth.boundaries[0]["tsc"]
    doc = _json(path, tmp_path, "--boundary", f"1@{b0 - 10}", "--boundary", "3@0x10")
    assert [(b["domid"], b["epoch"], b["kind"]) for b in doc["boundaries"]] == [
        (1, 0, "user"), (1, 1, "soft_reset"), (3, 0, "user")]
    doc = _json(path, tmp_path, "--boundary", "1@1ms", "--cpu-hz", "1e9")
    assert doc["boundaries"][0]["tsc"] == 1_000_000
    with pytest.raises(UsageError):
        cmd.run(str(path), fmt="sarif")
    capsys.readouterr()
    assert main(["analyze", str(path), "--boundary", "1@1ms"]) == 2  # a time needs --cpu-hz
    assert "--boundary: '1@1ms' gives a time: it needs --cpu-hz" in capsys.readouterr().err
    assert main(["analyze", str(path), "--show-code", "--boundary", "1@5"]) == 0
    code = capsys.readouterr().out
    assert "AnalysisConfig(boundaries=((1, 5),))" in code
    exec(compile(code, "<show-code>", "exec"), {})  # the printed Python runs
    assert "Boundaries" in capsys.readouterr().out


def test_registered_command_through_typer(tmp_path):
    app = typer.Typer()
    cmd.register(app)

    @app.command()
    def _other():  # a second command so typer keeps sub-command names
        pass

    runner = CliRunner()
    out = tmp_path / "x.md"
    res = runner.invoke(app, ["analyze", str(SAMPLES / "crash-kdump.xentrace"), "--format", "md", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "| d1 | 0 | crash |" in out.read_text()
    res = runner.invoke(app, ["analyze", str(SAMPLES / "crash-kdump.xentrace"), "-f", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["boundaries"][0]["kind"] == "crash"
    res = runner.invoke(app, ["analyze", str(tmp_path / "missing.xentrace")])
    assert isinstance(res.exception, FormatError)  # cli.py's choke point turns it into exit code 3


def test_html_is_self_contained_and_escaped(tmp_path):
    src = SAMPLES / "persistent-grants.xentrace"
    odd = tmp_path / "x<img src=x onerror=alert(1)>.xentrace"
    shutil.copy(src, odd)
    out = tmp_path / "r.html"
    assert cmd.run(str(odd), fmt="html", output=str(out)) == 0
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert html.count('<svg class="timeline"') == 1  # one guest (d1) with safety rows
    assert '<span class="rule-id error">TL-GNT-001</span>' in html
    # the timeline's step line of the pair (d0, d1) peaks at the 16 grants dom0 held before the teardown
    assert "d0 maps d1&#x27;s grants: 36 record(s), 4 outstanding at the end" in html and ">16</text>" in html
    assert "soft_reset boundary of d1 at" in html


# -- the contract, written once (tracelens.analysis.report.CONTRACT) ------------------------------------------------
def _docs_contract() -> dict:
    """The member table of docs/analysis.md ("The JSON contract") read back into the contract's shape: an object is a
    dict, an array of rows a list of one dict; a leaf is None (the docs give no types); prose in parentheses is
    skipped."""
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "analysis.md").read_text()
    section = text[text.index("## The JSON contract"):]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*) \|$", line)
        if not m:
            continue
        cell = m.group(2)
        span = re.match(r"`([^`]*)`", cell)
        out[m.group(1)] = _parse_shape(span.group(1)) if span and span.group(1)[:1] in "[{" else None
    return out


def _parse_shape(s: str):
    pos = 0

    def skip():
        nonlocal pos
        while pos < len(s) and s[pos] in " ,":
            pos += 1
        if pos < len(s) and s[pos] == "(":  # prose: skip the balanced group
            depth = 0
            while True:
                depth += {"(": 1, ")": -1}.get(s[pos], 0)
                pos += 1
                if depth == 0:
                    break
            skip()

    def value():
        nonlocal pos
        if s[pos] == "[":
            pos += 1
            inner = value()
            assert s[pos] == "]", s[pos:]
            pos += 1
            return [inner]
        assert s[pos] == "{", s[pos:]
        pos += 1
        obj = {}
        while True:
            skip()
            if s[pos] == "}":
                pos += 1
                return obj
            m = re.match(r"\w+\??", s[pos:])
            name = m.group(0)
            pos += len(name)
            skip()
            obj[name] = value() if pos < len(s) and s[pos] in "[{" else None

    import re

    return value()


def _shape(schema):
    """The contract without its leaf types, to compare with the docs."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_shape(schema[0])]
    return None


def test_docs_table_is_the_contract():
    from tracelens.analysis.report import CONTRACT

    docs = _docs_contract()
    assert list(docs) == list(CONTRACT)
    for member, schema in CONTRACT.items():
        assert docs[member] == _shape(schema), member


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.xentrace")))
def test_every_sample_conforms_to_the_contract(name, tmp_path):
    from tracelens.analysis.report import check

    doc = _json(SAMPLES / name, tmp_path)
    assert check(doc) == []


def test_the_contract_check_can_fail(tmp_path):
    from tracelens.analysis.report import check

    doc = _json(SAMPLES / "persistent-grants.xentrace", tmp_path)
    assert check(doc) == []
    bad = json.loads(json.dumps(doc))
    del bad["grants"][0]["maps"]
    bad["grants"][1]["surprise"] = 1
    bad["findings"][0]["tsc"] = -5
    bad["safety"][0]["verdict"] = 3
    bad["hypercalls"][0].pop("cmd_name", None)  # optional: absent is fine
    assert sorted(check(bad)) == sorted([".grants[0].maps: missing", ".grants[1].surprise: not in the contract",
                                         ".findings[0].tsc: -5 is not u64", ".safety[0].verdict: 3 is not str"])


def test_report_frames_and_scan_tables_take_their_columns_from_the_contract(tmp_path):
    from tracelens.analysis.report import row_columns
    from tracelens.fleet.tables import ROW_TABLES, SCHEMAS

    rep = tracelens.open(SAMPLES / "persistent-grants.xentrace").analyze()
    for name in ("boundaries", "grants", "grant_mappers", "balloon", "hypercalls", "irq_vectors", "safety",
                 "findings", "pirqs_open", "grefs_open"):
        member = f"guest.{name}" if name in ("pirqs_open", "grefs_open") else name
        assert getattr(rep, name).columns == list(row_columns(member)), name
    assert rep.safety["not_covered"].to_list() == [[], []]  # a list column, not JSON text
    for t in ROW_TABLES:
        cols = [c for c, _ in SCHEMAS[t]]
        assert cols[:2] == ["capture", "sha256"]
        assert cols[2:2 + len(row_columns(t))] == list(row_columns(t))
