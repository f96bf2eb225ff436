"""Output files never destroy inputs (issue 11 part 4; docs/exit-codes.md "Output files").

* Every command that writes a file refuses (exit 2, input untouched, one-line error) an output path that resolves to
  one of its inputs: the same path (spelled differently too), a symlink to it, or a hard link (same device and
  inode). ``pages`` is tested with a dump in tests/vmcore/test_cli.py.
* Outputs are created with the mode ``open()`` would give: 0666 minus the umask for a new file; an existing file
  keeps its permission bits.
* Part files sit beside the target with a recognisable name, are removed on failure and on SIGTERM (the process
  then dies of SIGTERM), and stale ones of dead processes are removed by the next write of the same output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracelens import cli
from tracelens.output import atomic_output, check_outputs, clean_stale_parts, part_prefix
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
        gate.run([str(cap)], env=env, outputs=gate.GateOutputs(quiet=True))
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


# -- mode --------------------------------------------------------------------------------------------------------
@pytest.fixture()
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask):
        os.umask(mask)
    yield set_
    os.umask(old)


def _mode(p) -> int:
    return os.stat(p).st_mode & 0o7777


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027, 0o000])
def test_a_new_output_gets_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain", "w") as f:
        f.write("x")
    with atomic_output(tmp_path / "ours") as tmp:
        Path(tmp).write_text("x")
    assert _mode(tmp_path / "ours") == _mode(tmp_path / "plain") == 0o666 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_commands_create_outputs_with_the_umask_mode(tmp_path, cap, capsys, umask, monkeypatch, mask):
    monkeypatch.chdir(tmp_path)
    umask(mask)
    outs = {"analyze": tmp_path / "r.txt", "sarif": tmp_path / "r.sarif", "decode": tmp_path / "r.parquet",
            "query": tmp_path / "q.csv"}
    assert run(capsys, "analyze", cap, "-o", outs["analyze"])[0] == 0
    assert run(capsys, "gate", cap, "--sarif", outs["sarif"])[0] in (0, 1)
    assert run(capsys, "decode", cap, "-o", outs["decode"])[0] == 0
    assert run(capsys, "query", cap, "SELECT 1 AS x FROM records LIMIT 1", "-o", outs["query"])[0] == 0
    for p in outs.values():
        assert _mode(p) == 0o666 & ~mask, p


def test_an_existing_output_keeps_its_permission_bits(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "kept"
    out.write_text("old")
    os.chmod(out, 0o640)
    with atomic_output(out) as tmp:
        Path(tmp).write_text("new")
    assert out.read_text() == "new" and _mode(out) == 0o640


# -- part files --------------------------------------------------------------------------------------------------
def test_the_part_file_is_beside_the_target_with_a_recognisable_name(tmp_path):
    target = tmp_path / "report.html"
    with atomic_output(target) as tmp:
        p = Path(tmp)
        assert p.parent == tmp_path and p.exists()
        assert p.name.startswith(".report.html.tracelens-") and p.name.endswith(".part")
        assert f"-{os.getpid()}-" in p.name
        assert p.name.startswith(part_prefix(target))
        p.write_text("data")
    assert not p.exists() and target.read_text() == "data"


def test_a_long_target_name_still_gives_a_valid_part_name(tmp_path):
    target = tmp_path / ("é" * 120 + ".json")  # 245 bytes: the part name must be cut to fit NAME_MAX
    with atomic_output(target) as tmp:
        assert len(os.fsencode(Path(tmp).name)) <= 255
        Path(tmp).write_text("{}")
    assert target.read_text() == "{}"


def test_a_failed_write_leaves_no_part_and_the_old_target(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


WRITER = """
import sys, time
from pathlib import Path
from tracelens.output import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    Path(tmp).write_bytes(b"x" * 100000)
    print(tmp, flush=True)
    time.sleep(60)
"""


def _start_writer(target):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the writer did not start"
    return proc, Path(line)


@pytest.mark.parametrize("existing", [False, True])
def test_sigterm_removes_the_part_file_and_kills_the_process(tmp_path, existing):
    target = tmp_path / "big.parquet"
    if existing:
        target.write_text("old")
    proc, part = _start_writer(target)
    try:
        assert part.exists() and part.parent == tmp_path
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert rc == -signal.SIGTERM  # died of SIGTERM, as without tracelens' handler
    assert not part.exists()
    assert (target.read_text() == "old") if existing else not target.exists()
    assert os.listdir(tmp_path) == (["big.parquet"] if existing else [])


CLI_WRITER = """
import sys, time
from pathlib import Path
import tracelens.capture as capture

def slow(batches, fmt, tmp):
    Path(tmp).write_bytes(b"x" * 100000)
    print(tmp, flush=True)
    time.sleep(60)

capture.write_batches = slow
from tracelens.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_cli_decode_removes_its_part_file(tmp_path):
    target = tmp_path / "out.parquet"
    proc = subprocess.Popen([sys.executable, "-c", CLI_WRITER, "decode", str(SAMPLE), "-o", str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        part = Path(proc.stdout.readline().strip())
        assert part.name.startswith(".out.parquet.tracelens-") and part.exists()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert rc == -signal.SIGTERM and not part.exists() and os.listdir(tmp_path) == []


def _fake_part(target: Path, pid: int, host: str | None = None) -> Path:
    host = host or hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    p = target.parent / f"{part_prefix(target)}{pid}-{host}-abcd1234.part"
    p.write_bytes(b"stale")
    return p


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no such process (pid reuse within the test is not a practical concern)


def test_sigkill_leaves_a_part_that_the_next_write_of_the_same_output_removes(tmp_path):
    target = tmp_path / "out.json"
    proc, part = _start_writer(target)
    proc.kill()
    proc.wait(timeout=30)
    assert part.exists()  # SIGKILL cannot be caught
    other_target = _fake_part(tmp_path / "other.json", _dead_pid())
    other_host = _fake_part(target, _dead_pid(), host="0badc0de")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        of_live = _fake_part(target, live.pid)
        with atomic_output(target) as tmp:
            Path(tmp).write_text("{}")
        assert not part.exists()  # stale: its process is dead
        assert of_live.exists()  # a live process may still be writing it
        assert other_target.exists() and other_host.exists()  # not ours to judge
    finally:
        live.kill()
        live.wait()
    assert target.read_text() == "{}"


def test_the_next_cli_run_of_the_same_output_cleans_stale_parts(tmp_path, cap, capsys):
    out = tmp_path / "report.txt"
    stale = [_fake_part(out, _dead_pid()) for _ in range(2)]
    rc, _o, _e = run(capsys, "analyze", cap, "-o", out)
    assert rc == 0 and not any(p.exists() for p in stale) and out.exists()


def test_clean_stale_parts_ignores_foreign_names(tmp_path):
    target = tmp_path / "x.sarif"
    junk = [tmp_path / f"{part_prefix(target)}notapid.part", tmp_path / ".tracelens-abc123.part",
            tmp_path / "x.sarif.part"]
    for j in junk:
        j.write_text("?")
    assert clean_stale_parts(target) == []
    assert all(j.exists() for j in junk)
