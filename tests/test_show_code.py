"""``--show-code``: every command prints Python that runs and gives what the command itself gives.

Each case runs the command once with ``--show-code`` and once without (machine-readable output), executes the
printed code in a scratch directory and compares the two results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tracelens.cli import main

ROOT = Path(__file__).resolve().parents[1]
PG = str(ROOT / "sample-traces" / "persistent-grants.xentrace")
sys.path.insert(0, str(ROOT / "tests" / "vmcore"))
TEXT_ADDR = 0x1F0 * 4096


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf

    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [LogRec(1_000, b"Hypervisor detected: Xen HVM"),
                          LogRec(2_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7)])
    mem.write(TEXT_ADDR, b"show-code")
    p = tmp_path_factory.mktemp("sc") / "d.elf"
    write_elf(p, mem, standard_notes(k.vmcoreinfo()))
    return str(p)


def _cli(capsysbinary, argv) -> bytes:
    capsysbinary.readouterr()
    code = main(argv)
    out, err = capsysbinary.readouterr()
    assert code == 0, err.decode()
    return out


def _exec(capsysbinary, code: str, cwd: Path) -> tuple[dict, bytes]:
    ns: dict = {}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        capsysbinary.readouterr()
        exec(compile(code, "<show-code>", "exec"), ns)
    finally:
        os.chdir(old)
    return ns, capsysbinary.readouterr()[0]


def test_info_capture(capsysbinary, tmp_path):
    code = _cli(capsysbinary, ["info", PG, "--show-code"]).decode()
    ns, _ = _exec(capsysbinary, code, tmp_path)
    expected = json.loads(_cli(capsysbinary, ["info", PG, "--json"]))
    assert json.loads(json.dumps(ns["info"])) == expected


def test_info_dump(capsysbinary, tmp_path, dump):
    code = _cli(capsysbinary, ["info", dump, "--show-code"]).decode()
    ns, _ = _exec(capsysbinary, code, tmp_path)
    expected = json.loads(_cli(capsysbinary, ["info", dump, "--json"]))
    assert json.loads(json.dumps(ns["info"], default=str)) == expected


def test_decode(capsysbinary, tmp_path):
    import pyarrow.parquet as pq

    via_cli = tmp_path / "cli.parquet"
    _cli(capsysbinary, ["decode", PG, "-o", str(via_cli)])
    code = _cli(capsysbinary, ["decode", PG, "-o", "code.parquet", "--show-code"]).decode()
    _exec(capsysbinary, code, tmp_path)
    a, b = pq.read_table(via_cli), pq.read_table(tmp_path / "code.parquet")
    assert a.num_rows == b.num_rows == 514
    assert a.drop_columns(["name"]).equals(b.drop_columns(["name"]))
    assert a.column("name").cast("string").equals(b.column("name").cast("string"))


@pytest.mark.parametrize("opts", [["--dom", "0", "--limit", "7"], ["--cpu", "1", "--from", "12000000", "--to", "13000000"],
                                  ["--event", "0x0010f001"]])
def test_events(capsysbinary, tmp_path, opts):
    code = _cli(capsysbinary, ["events", PG, *opts, "--show-code"]).decode()
    ns, _ = _exec(capsysbinary, code, tmp_path)
    lines = _cli(capsysbinary, ["events", PG, *opts, "--json"]).decode().splitlines()
    expected = [(r["tsc"], r["cpu"], r["offset"]) for r in map(json.loads, lines)]
    assert expected and list(ns["df"].select("tsc", "cpu", "offset").iter_rows()) == expected


def test_analyze(capsysbinary, tmp_path):
    code = _cli(capsysbinary, ["analyze", PG, "--show-code"]).decode()
    ns, _ = _exec(capsysbinary, code, tmp_path)
    expected = json.loads(_cli(capsysbinary, ["analyze", PG, "--format", "json"]))
    assert [(f.rule, f.domid, f.epoch, f.object) for f in ns["a"].findings] == \
        [(f["rule"], f["domid"], f["epoch"], f["object"]) for f in expected["findings"]]


def test_dmesg(capsysbinary, tmp_path, dump):
    code = _cli(capsysbinary, ["dmesg", dump, "--show-code"]).decode()
    _, printed = _exec(capsysbinary, code, tmp_path)
    direct = _cli(capsysbinary, ["dmesg", dump])
    assert printed == direct and b"pirq=16" in direct


def test_pages(capsysbinary, tmp_path, dump):
    code = _cli(capsysbinary, ["pages", dump, "--show-code"]).decode()
    ns, _ = _exec(capsysbinary, code, tmp_path)
    runs = json.loads(_cli(capsysbinary, ["pages", dump, "--json"]))
    assert ns["pages"].height == sum(r["pages"] for r in runs) == 0x100


def test_read(capsysbinary, tmp_path, dump):
    argv = ["read", dump, hex(TEXT_ADDR), "9"]
    code = _cli(capsysbinary, [*argv, "--show-code"]).decode()
    ns, _ = _exec(capsysbinary, code, tmp_path)
    assert ns["data"] == bytes.fromhex(_cli(capsysbinary, [*argv, "--hex"]).decode().strip()) == b"show-code"


def test_query(capsysbinary, tmp_path, dump):
    argv = ["query", PG, dump, "SELECT rule, domid, epoch FROM findings ORDER BY rule", "--format", "csv"]
    code = _cli(capsysbinary, [*argv, "--show-code"]).decode()
    _, printed = _exec(capsysbinary, code, tmp_path)
    assert printed == _cli(capsysbinary, argv) == b"rule,domid,epoch\nTL-GNT-001,1,0\nTL-GNT-002,1,1\n"
    argv = ["query", dump, "SELECT seq, text FROM dmesg ORDER BY seq", "--format", "json"]
    code = _cli(capsysbinary, [*argv, "--show-code"]).decode()
    _, printed = _exec(capsysbinary, code, tmp_path)
    assert json.loads(printed) == json.loads(_cli(capsysbinary, argv)) == [
        {"seq": 0, "text": "Hypervisor detected: Xen HVM"}, {"seq": 1, "text": "xen: --> pirq=16 -> irq=8 (gsi=8)"}]


def _commands():
    import typer.main

    from tracelens.cli import app

    group = typer.main.get_command(app)
    return {name: [o for p in cmd.params for o in getattr(p, "opts", [])] for name, cmd in group.commands.items()}


def test_every_command_can_show_its_code():
    missing = sorted(name for name, opts in _commands().items() if "--show-code" not in opts)
    assert missing == []


def test_gate(capsysbinary, tmp_path, monkeypatch):
    """gate: the printed code runs and reports what the command reports (exit code and JSON Lines)."""
    monkeypatch.chdir(tmp_path)  # no ./tracelens.toml: the default policy
    code = _cli(capsysbinary, ["gate", PG, "--json", "code.jsonl", "--show-code"]).decode()
    _, printed = _exec(capsysbinary, code, tmp_path)
    capsysbinary.readouterr()
    status = main(["gate", PG, "--json", "cli.jsonl", "-q"])
    capsysbinary.readouterr()
    # sample README: TL-GNT-001 is an error, so the default gate (fail on errors) fails with exit code 1
    assert status == 1 and printed.decode().splitlines()[-1] == f"exit code {status}"
    rows = [json.loads(x) for x in (tmp_path / "code.jsonl").read_text().splitlines()]
    assert rows == [json.loads(x) for x in (tmp_path / "cli.jsonl").read_text().splitlines()]
    assert {r.get("rule") for r in rows} >= {"TL-GNT-001", "TL-GNT-002"}
