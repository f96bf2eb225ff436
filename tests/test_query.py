"""``tracelens query`` (tracelens/commands/query.py) and ``tracelens.sql``: SQL over captures, their analysis and
dumps. Expected values come from the sample README and from pyarrow over the decoder's table."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pytest
import typer
from typer.testing import CliRunner

import tracelens
from tracelens.commands import query as Q
from tracelens.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
PG = str(ROOT / "sample-traces" / "persistent-grants.xentrace")
CK = str(ROOT / "sample-traces" / "crash-kdump.xentrace")
BAL = str(ROOT / "sample-traces" / "balloon-before-kexec.xentrace")
sys.path.insert(0, str(ROOT / "tests" / "vmcore"))


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    Q.register(a)

    @a.command()
    def _other():  # a second command, so that typer keeps "query" as a sub-command
        pass

    return a


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf

    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [LogRec(1_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7),
                          LogRec(2_000, b"xen: --> pirq=17 -> irq=9 (gsi=9)", level=7),
                          LogRec(3_000, b"Kernel panic - not syncing: test", level=0)])
    p = tmp_path_factory.mktemp("q") / "d.elf"
    write_elf(p, mem, standard_notes(k.vmcoreinfo()))
    return str(p)


def test_findings_over_several_captures():
    df = tracelens.sql("SELECT capture, rule, domid, epoch FROM findings ORDER BY capture, rule", PG, CK, BAL)
    assert df.rows() == [(BAL, "TL-BAL-001", 1, 0),
                         (CK, "TL-GNT-001", 1, 0), (CK, "TL-GNT-002", 1, 1),
                         (PG, "TL-GNT-001", 1, 0), (PG, "TL-GNT-002", 1, 1)]


def test_records_aggregate_matches_pyarrow():
    t = tracelens.read_xentrace(PG)
    df = tracelens.sql("SELECT cpu, COUNT(*) AS n FROM records WHERE event = 135425 GROUP BY cpu ORDER BY cpu", PG)
    sel = t.filter(pc.equal(t.column("event"), 135425))
    expected = sorted({c: sel.column("cpu").to_pylist().count(c) for c in set(sel.column("cpu").to_pylist())}.items())
    assert [tuple(r) for r in df.rows()] == expected


def test_join_records_with_boundaries():
    q = ("SELECT b.domid, COUNT(*) AS before FROM records r JOIN boundaries b ON r.dom = b.domid "
         "WHERE r.tsc < b.tsc GROUP BY b.domid")
    df = tracelens.sql(q, PG)
    t = tracelens.read_xentrace(PG)
    mask = pc.and_(pc.equal(t.column("dom"), 1), pc.less(t.column("tsc"), 12807307))
    assert df.rows() == [(1, pc.sum(pc.cast(pc.fill_null(mask, False), "int64")).as_py())]


def test_dmesg_and_xen_events_from_a_dump(dump):
    df = tracelens.sql("SELECT ts_nsec, text FROM dmesg ORDER BY seq", dump)
    assert df["ts_nsec"].to_list() == [1000, 2000, 3000]
    ev = tracelens.sql("SELECT pirq, irq FROM xen_events WHERE event = 'pirq_mapped' ORDER BY pirq", dump, PG)
    assert ev.rows() == [(16, 8), (17, 9)]


def test_errors_are_usage_errors():
    with pytest.raises(UsageError):
        tracelens.sql("SELECT 1", PG)  # names no table
    with pytest.raises(UsageError):
        tracelens.sql("SELECT nope FROM findings", PG)
    with pytest.raises(UsageError):
        Q.run([PG], "SELECT * FROM findings", fmt="parquet")  # parquet needs -o
    with pytest.raises(UsageError):
        Q.run([PG], "SELECT * FROM findings", fmt="xml")


def test_cli_csv_and_json(app):
    r = CliRunner().invoke(app, ["query", PG, "SELECT rule, domid, epoch FROM findings ORDER BY rule",
                                 "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows == [["rule", "domid", "epoch"], ["TL-GNT-001", "1", "0"], ["TL-GNT-002", "1", "1"]]
    r = CliRunner().invoke(app, ["query", PG, "SELECT name, COUNT(*) AS n FROM records WHERE event = 1110017 "
                                              "GROUP BY name", "--format", "json"])
    assert r.exit_code == 0, r.output
    t = tracelens.read_xentrace(PG)
    n_maps = pc.sum(pc.cast(pc.equal(t.column("event"), 0x0010F001), "int64")).as_py()
    assert n_maps == 20  # README: 16 maps before the boundary, 4 after
    assert json.loads(r.stdout) == [{"name": "MEM_PAGE_GRANT_MAP", "n": 20}]


def test_cli_output_files_are_atomic(app, tmp_path):
    out = tmp_path / "f.parquet"
    r = CliRunner().invoke(app, ["query", PG, CK, "SELECT capture, rule FROM findings", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).height == 4
    assert [p.name for p in tmp_path.iterdir()] == ["f.parquet"]  # no temporary file left
    bad = tmp_path / "g.csv"
    r = CliRunner().invoke(app, ["query", PG, "SELECT nope FROM findings", "-o", str(bad)])
    assert r.exit_code != 0 and not bad.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["f.parquet"]


def test_show_code_runs_and_gives_the_same_rows(app, capsys):
    q = "SELECT rule, domid FROM findings ORDER BY rule"
    r = CliRunner().invoke(app, ["query", PG, q, "--show-code", "--format", "csv"])
    assert r.exit_code == 0 and "tracelens.sql(" in r.stdout
    exec(compile(r.stdout, "<show-code>", "exec"), {})
    printed = capsys.readouterr().out
    direct = CliRunner().invoke(app, ["query", PG, q, "--format", "csv"]).stdout
    assert printed == direct


def test_cli_exit_codes(capsys, tmp_path):
    from tracelens.cli import main

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x7fnot anything" * 40)
    assert main(["query", PG, "SELECT * FROM xen_events"]) == 2  # a dump table, no dump given
    assert "no dump was given" in capsys.readouterr().err
    assert main(["query", str(junk), "SELECT * FROM findings"]) == 3  # not a capture nor a dump
    assert main(["query", PG, "SELEC rule FROM findings"]) == 2
    assert main(["query", "SELECT 1"]) == 2


def test_guest_ledger_tables():
    ig = str(ROOT / "sample-traces" / "instrumented-guest.xentrace")
    # README: PIRQ 35 and grant ref 15 are left open by the instrumented guest
    df = tracelens.sql("SELECT pirq FROM pirqs_open UNION ALL SELECT ref FROM grefs_open", ig)
    assert sorted(df.to_series().to_list()) == [15, 35]


# -- safe mode and limits (issue 12) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [
    "SELECT * FROM read_csv('{f}') AS records",
    "SELECT * FROM records JOIN read_csv('{f}') AS r ON true",
    'SELECT * FROM "read_csv"(\'{f}\')',
    "SELECT * FROM `READ_CSV` /* comment */ ('{f}')",
    "SELECT * FROM read_parquet('{f}') -- records",
    "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
])
def test_safe_mode_refuses_table_functions(tmp_path, q):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    with pytest.raises(UsageError, match="safe mode"):
        tracelens.sql(q.format(f=secret), PG)


def test_safe_mode_allows_strings_and_comments_naming_them(tmp_path):
    df = tracelens.sql("SELECT 'read_csv(x)' AS s, rule FROM findings -- read_csv(\n ORDER BY rule", PG)
    assert df["s"].to_list() == ["read_csv(x)"] * 2


def test_unsafe_mode_and_the_cli_flag(app, tmp_path):
    f = tmp_path / "extra.csv"
    f.write_text("rule,note\nTL-GNT-001,known\n")
    q = f"SELECT f.rule, e.note FROM findings f JOIN read_csv('{f}') AS e ON f.rule = e.rule"
    assert tracelens.sql(q, PG, safe=False).rows() == [("TL-GNT-001", "known")]
    r = CliRunner().invoke(app, ["query", PG, q, "--format", "csv"])
    assert r.exit_code != 0 and isinstance(r.exception, UsageError) and "safe mode" in str(r.exception)
    r = CliRunner().invoke(app, ["query", PG, q, "--format", "csv", "--allow-files"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["rule,note", "TL-GNT-001,known"]
    r = CliRunner().invoke(app, ["query", PG, q, "--allow-files", "--show-code"])
    assert "safe=False" in r.stdout


def test_row_and_time_limits(monkeypatch):
    import time

    assert tracelens.sql("SELECT * FROM findings", PG, max_rows=2).height == 2
    with pytest.raises(UsageError, match="more than 1 rows"):
        tracelens.sql("SELECT * FROM findings", PG, max_rows=1)
    assert tracelens.sql("SELECT * FROM findings", PG, timeout=60).height == 2
    real = pl.LazyFrame.collect

    def slow(self, *a, **kw):  # a query that takes 2 s (a real slow one would keep running after the test)
        time.sleep(2)
        return real(self, *a, **kw)

    monkeypatch.setattr(pl.LazyFrame, "collect", slow)
    t0 = time.monotonic()
    with pytest.raises(UsageError, match="longer than the 0.1 s timeout"):
        tracelens.sql("SELECT * FROM findings", PG, timeout=0.1)
    assert time.monotonic() - t0 < 1.5
    for bad in ({"timeout": 0}, {"timeout": float("nan")}, {"max_rows": -1}):
        with pytest.raises(UsageError):
            tracelens.sql("SELECT * FROM findings", PG, **bad)
