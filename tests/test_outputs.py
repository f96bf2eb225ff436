"""Output files never destroy inputs (issue 11 part 4; docs/exit-codes.md "Output files").

* Every command that writes a file refuses (exit 2, input untouched, one-line error) an output path that resolves to
  one of its inputs: the same path (spelled differently too), a symlink to it, or a hard link (same device and
  inode). ``pages`` is tested with a dump in tests/vmcore/test_cli.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tracelens import cli
from tracelens.output import check_outputs
from tracelens.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample-traces" / "persistent-grants.xentrace"


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def digest(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture()
def cap(tmp_path):
    """A copy of a sample capture (named .csv so that `query -o` accepts the name as an output format)."""
    p = tmp_path / "cap.csv"
    shutil.copyfile(SAMPLE, p)
    return p


def _commands(cap: Path, out: Path):
    """(name, argv) of every command that writes a file, with ``out`` as its output and ``cap`` as its input."""
    return [
        ("analyze -o", ["analyze", cap, "-o", out]),
        ("analyze --format json -o", ["analyze", cap, "--format", "json", "-o", out]),
        ("gate --sarif", ["gate", cap, "--sarif", out]),
        ("gate --junit", ["gate", cap, "--junit", out]),
        ("gate --json", ["gate", cap, "--json", out]),
        ("gate --write-baseline", ["gate", cap, "--write-baseline", out]),
        ("query -o", ["query", cap, "SELECT count(*) AS n FROM records", "-o", out]),
    ]


def _link(kind: str, cap: Path, tmp_path: Path) -> Path:
    if kind == "same path":
        return cap
    if kind == "same path, spelled differently":
        return tmp_path / "." / ".." / tmp_path.name / cap.name
    out = tmp_path / f"link-{kind.replace(' ', '-')}.csv"
    if kind == "symlink":
        out.symlink_to(cap)
    elif kind == "symlink to a symlink":
        mid = tmp_path / "mid.csv"
        mid.symlink_to(cap.name)  # relative
        out.symlink_to(mid)
    elif kind == "hard link":
        os.link(cap, out)
    return out


KINDS = ["same path", "same path, spelled differently", "symlink", "symlink to a symlink", "hard link"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", range(7))
def test_an_output_that_is_an_input_is_refused_and_the_input_untouched(tmp_path, cap, capsys, monkeypatch, kind,
                                                                       which):
    monkeypatch.chdir(tmp_path)
    before = digest(cap)
    out = _link(kind, cap, tmp_path)
    name, argv = _commands(cap, out)[which]
    rc, _out, err = run(capsys, *argv)
    assert rc == 2, (name, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "refusing to overwrite an input" in lines[0] and "Traceback" not in err, err
    assert str(cap) in lines[0]
    assert digest(cap) == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]
    if kind.startswith("symlink"):
        assert out.is_symlink()  # the link itself is not replaced either


def test_decode_refuses_its_input_and_its_catalog(tmp_path, capsys):
    cap = tmp_path / "cap.parquet"  # decode wants a .parquet or .arrow output name
    shutil.copyfile(SAMPLE, cap)
    before = digest(cap)
    for out in (cap, _link("symlink", cap, tmp_path).rename(tmp_path / "s.parquet")):
        rc, _o, err = run(capsys, "decode", cap, "-o", out)
        assert rc == 2 and "refusing to overwrite an input" in err and digest(cap) == before
    hard = tmp_path / "h.parquet"
    os.link(cap, hard)
    rc, _o, err = run(capsys, "decode", cap, "-o", hard)
    assert rc == 2 and "hard link" in err and digest(cap) == before
    cat = tmp_path / "extra.parquet"
    cat.write_text('[[event]]\nid = 0x0800f001\nname = "GUEST_X"\nfields = ["a"]\n')
    text = cat.read_text()
    rc, _o, err = run(capsys, "decode", SAMPLE, "--catalog", cat, "-o", cat)
    assert rc == 2 and "refusing" in err and cat.read_text() == text


def test_gate_refuses_its_policy_baseline_and_vmcore_as_outputs(tmp_path, cap, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pol = tmp_path / "tracelens.toml"  # the default policy is an input too
    pol.write_text("[gate]\nfail_on = \"error\"\n")
    base = tmp_path / "base.json"
    base.write_text('{"schema_version": 1, "accepted": []}\n')
    for argv, victim in ((["--sarif", pol], pol),
                         (["--policy", pol, "--junit", pol], pol),
                         (["--baseline", base, "--json", base], base)):
        before = digest(victim)
        rc, _o, err = run(capsys, "gate", cap, *argv)
        assert rc == 2 and "refusing to overwrite an input" in err, err
        assert digest(victim) == before


def test_gate_refuses_a_step_summary_that_is_an_input(tmp_path, cap, capsys):
    from tracelens.commands import gate

    before = digest(cap)
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(cap)}
    with pytest.raises(UsageError, match="GITHUB_STEP_SUMMARY .* refusing"):
        gate.run([str(cap)], env=env, quiet=True)
    assert digest(cap) == before


def test_analyze_refuses_its_vmcore(tmp_path, cap, capsys):
    dump = tmp_path / "guest.vmcore"
    dump.write_bytes(b"not really a dump, but an input all the same")
    rc, _o, err = run(capsys, "analyze", cap, "--vmcore", dump, "-o", dump)
    assert rc == 2 and "refusing" in err and dump.read_bytes().startswith(b"not really")


@pytest.mark.parametrize("which", range(7))
def test_an_unrelated_existing_output_is_replaced(tmp_path, cap, capsys, monkeypatch, which):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "old-report.csv"
    out.write_text("stale\n")
    name, argv = _commands(cap, out)[which]
    rc, _o, err = run(capsys, *argv)
    assert rc in (0, 1), (name, err)  # gate: 1 = findings
    assert out.read_text() != "stale\n"


def test_check_outputs_directly(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    check_outputs([("-o", tmp_path / "new"), ("--x", None)], [a, None, [a]])  # new file, no output: fine
    with pytest.raises(UsageError, match="-o .* is the input"):
        check_outputs([("-o", a)], [[str(a)]])  # nested inputs (the parts of a split dump)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    check_outputs([("-o", tmp_path / "dangling")], [a])
