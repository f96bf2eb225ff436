"""``--show-code`` is equivalent to the command for every option of every command.

Each case runs a command twice: as the command itself, and as the Python its ``--show-code`` prints (executed in a
scratch folder). Both runs must give the same result (the same bytes printed or written, or the same rows where the
command renders for people and the code prints a frame), and the library must be called with the same options
objects in both (a spy records the DecodeOptions, AnalysisConfig, GateConfig, ScanConfig and the other arguments
the library entry points receive), which also covers options whose effect the output cannot show (``--threads``).
:func:`test_every_option_of_every_command_has_a_case` keeps the cases complete as commands grow options.

Arguments starting with ``@`` are output files: each run writes them in its own folder, and the files are compared.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tracelens.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample-traces"
PG = str(SAMPLES / "persistent-grants.xentrace")
CLEAN = str(SAMPLES / "clean-soft-reset.xentrace")
TEXT_ADDR = 0x1F0 * 4096

sys.path.insert(0, str(ROOT / "tests" / "vmcore"))


# -- inputs ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The inputs every case may name: samples, a truncated capture, a catalog, a dump and its VMCOREINFO file, a
    policy, a baseline, a vmcore map and a CSV for --allow-files."""
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf

    d = tmp_path_factory.mktemp("inputs")
    cut = d / "cut.xentrace"
    cut.write_bytes(Path(PG).read_bytes()[:-6])  # a truncated last record: strict refuses it
    catalog = d / "mine.toml"
    catalog.write_text('[[event]]\nid = 0x0010f001\nname = "MY_GRANT_MAP"\nfields = ["granter"]\n')
    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [LogRec(1_000, b"Hypervisor detected: Xen HVM"),
                          LogRec(2_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7),
                          LogRec(3_000, b"Grant tables using version 1 layout", level=6)])
    mem.write(TEXT_ADDR, b"show-code")
    dump = d / "d.elf"
    write_elf(dump, mem, standard_notes(k.vmcoreinfo()))
    vmcoreinfo = d / "vmcoreinfo.txt"
    vmcoreinfo.write_bytes(k.vmcoreinfo())
    policy = d / "policy.toml"
    policy.write_text('[gate]\nfail_on = "warning"\n')
    baseline = d / "baseline.json"
    assert main(["gate", PG, "--write-baseline", str(baseline), "-q"]) == 0
    vmap = d / "map.csv"
    vmap.write_text(f"capture,dump,domid\n{PG},{dump},1\n")
    csv = d / "extra.csv"
    csv.write_text("rule,team\nTL-GNT-001,storage\n")
    fleet = d / "fleet"
    fleet.mkdir()
    for name in ("persistent-grants.xentrace", "crash-kdump.xentrace"):
        (fleet / name).write_bytes((SAMPLES / name).read_bytes())
    return {"cut": str(cut), "catalog": str(catalog), "dump": str(dump), "vmcoreinfo": str(vmcoreinfo),
            "policy": str(policy), "baseline": str(baseline), "vmap": str(vmap), "csv": str(csv),
            "fleet": str(fleet)}


@pytest.fixture(scope="module")
def scheduler():
    """A Dask scheduler with one worker process, for --scheduler."""
    distributed = pytest.importorskip("distributed", reason="--scheduler needs Dask distributed (tracelens[fleet])")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


# -- the spy: what the library was given -------------------------------------------------------------------------
#: (module, function, the parameters whose values are recorded)
SPIED = [
    ("tracelens.parsers.xentrace.decode", "iter_batches", ("decode",)),
    ("tracelens.parsers.xentrace.decode", "read_xentrace", ("decode",)),
    ("tracelens.parsers.xentrace.decode", "info", ("decode",)),
    ("tracelens.analysis.analyze", "analyze", ("config",)),
    ("tracelens.gate.evaluate", "gate", ("config",)),
    ("tracelens.fleet.scan", "scan", ("config",)),
    ("tracelens.query", "sql", ("config", "safe", "timeout", "max_rows")),
    ("tracelens.perfetto_export", "export", ("config", "options")),
    ("tracelens.live", "watch", ("config", "opts")),
    ("tracelens.live", "gate_verdict", ("config",)),
]


def _normal(value):
    """None and an options object at its defaults mean the same to the library (``analyze(path)`` is
    ``analyze(path, AnalysisConfig())``)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and value == type(value)():
        return None
    return value


@pytest.fixture
def spy(monkeypatch):
    import importlib

    seen: set = set()
    for module, name, params in SPIED:
        mod = importlib.import_module(module)
        real = getattr(mod, name)

        def wrapper(*args, _real=real, _name=name, _params=params, **kw):
            bound = inspect.signature(_real).bind(*args, **kw)
            bound.apply_defaults()
            seen.add((_name, repr(tuple(_normal(bound.arguments[p]) for p in _params))))
            return _real(*args, **kw)

        monkeypatch.setattr(mod, name, wrapper)
    from tracelens.dump import Dump

    real_init = Dump.__init__

    def dump_init(self, path, *, vmcoreinfo=None):
        seen.add(("Dump", repr(vmcoreinfo)))
        real_init(self, path, vmcoreinfo=vmcoreinfo)

    monkeypatch.setattr(Dump, "__init__", dump_init)
    return seen


# -- running both ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    rc: int
    out: bytes
    files: dict
    folder: Path  # where it ran and wrote (SARIF names its working directory: compared as "@")


def _argv(argv, inputs, folder: Path) -> list[str]:
    out = []
    for a in argv:
        a = a.format(**inputs)
        out.append(str(folder / a[1:]) if a.startswith("@") else a)
    return out


def _outputs(argv, folder: Path) -> dict:
    return {a[1:]: folder / a[1:] for a in argv if a.startswith("@")}


def _cli(capsysbinary, argv, cwd: Path | None = None) -> tuple[int, bytes]:
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        capsysbinary.readouterr()
        rc = main(argv)
        out, err = capsysbinary.readouterr()
    finally:
        os.chdir(old)
    return rc, out


def both(capsysbinary, tmp_path, spy, inputs, argv) -> tuple[Run, Run, dict]:
    """Run ``argv`` as a command and as its --show-code; returns (command run, code run, the code's namespace)."""
    cli_dir, code_dir = tmp_path / "cli", tmp_path / "code"
    cli_dir.mkdir()
    code_dir.mkdir()
    rc, out = _cli(capsysbinary, _argv(argv, inputs, cli_dir), cwd=cli_dir)  # each run in its own folder
    seen_cli = {(f, v.replace(str(cli_dir), "@")) for f, v in spy}
    spy.clear()
    code_rc, code = _cli(capsysbinary, [*_argv(argv, inputs, code_dir), "--show-code"])
    assert code_rc == 0, code
    assert not spy, "--show-code must not run the command"
    ns: dict = {"__name__": "__show_code__"}
    old = os.getcwd()
    os.chdir(code_dir)
    try:
        capsysbinary.readouterr()
        exec(compile(code.decode(), "<show-code>", "exec"), ns)
    finally:
        os.chdir(old)
    printed = capsysbinary.readouterr()[0]
    seen_code = {(f, v.replace(str(code_dir), "@")) for f, v in spy}
    assert seen_code == seen_cli, f"the library was given other options:\ncommand: {sorted(seen_cli)}\ncode: {sorted(seen_code)}"
    return (Run(rc, out, _outputs(argv, cli_dir), cli_dir), Run(0, printed, _outputs(argv, code_dir), code_dir), ns)


def _same_files(a: Run, b: Run) -> None:
    assert a.files.keys() == b.files.keys()
    for name in a.files:
        x, y = a.files[name], b.files[name]
        assert x.exists() and y.exists(), name
        if name.endswith((".parquet", ".arrow")):
            tx = pq.read_table(x) if name.endswith(".parquet") else _arrow(x)
            ty = pq.read_table(y) if name.endswith(".parquet") else _arrow(y)
            assert tx.to_pylist() == ty.to_pylist(), name
        elif name.endswith("baseline.json"):
            assert json.loads(x.read_text())["accepted"] == json.loads(y.read_text())["accepted"]
        else:
            assert x.read_bytes().replace(bytes(a.folder), b"@") == y.read_bytes().replace(bytes(b.folder), b"@"), name


def _arrow(path):
    import pyarrow as pa

    with pa.memory_map(str(path)) as f:
        return pa.ipc.open_file(f).read_all()


def _json_lines(data: bytes) -> list:
    return [json.loads(x) for x in data.decode().splitlines() if x.strip()]


# -- the cases, per command ---------------------------------------------------------------------------------------
def check_info(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    if "--json" in argv:
        assert code.out == cmd.out
    ref = json.loads(_cli(capsysbinary, [*_argv(argv, inputs, tmp_path), "--json"])[1])
    assert json.loads(json.dumps(ns["info"], default=str)) == ref


def check_decode(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    _same_files(cmd, code)
    (name, path), = cmd.files.items()
    assert ns["rows"] == (pq.read_table(path) if name.endswith(".parquet") else _arrow(path)).num_rows > 0


def check_events(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    rows = _json_lines(cmd.out) if "--json" in argv else \
        _json_lines(_cli(capsysbinary, [*_argv(argv, inputs, tmp_path), "--json"])[1])
    assert rows, "a case must select some records"
    got = [{"tsc": r["tsc"], "cpu": r["cpu"], "dom": r["dom"], "vcpu": r["vcpu"], "event": f"0x{r['event']:08x}",
            "name": r["name"], "offset": r["offset"]} for r in ns["df"].iter_rows(named=True)]
    assert got == [{k: r[k] for k in ("tsc", "cpu", "dom", "vcpu", "event", "name", "offset")} for r in rows]
    if "--cpu-hz" in argv:
        hz = float(argv[argv.index("--cpu-hz") + 1])
        assert [t / 1e9 for t in ns["df"]["time_ns"].to_list()] == pytest.approx([r["time_s"] for r in rows])
        assert all(abs(r["time_s"] - r["tsc"] / hz) < 1e-9 for r in rows)


def check_same_output(capsysbinary, tmp_path, spy, inputs, argv):
    """Commands whose code prints (or writes) exactly what the command does: analyze, query, dmesg text/JSON,
    pages --json/-o, read --raw/--hex."""
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    assert code.out == cmd.out and (cmd.out or cmd.files)
    _same_files(cmd, code)


def check_dmesg_xen_table(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    rows = _json_lines(_cli(capsysbinary, [*_argv(argv, inputs, tmp_path), "--json"])[1])
    assert rows and ns["events"].to_dicts() == rows


def check_pages_table(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    assert ns["runs"] == json.loads(_cli(capsysbinary, [*_argv(argv, inputs, tmp_path), "--json"])[1])


def check_read_dump(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    assert ns["data"] == bytes.fromhex(_cli(capsysbinary, [*_argv(argv, inputs, tmp_path), "--hex"])[1].decode())


def check_gate(capsysbinary, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert code.out.decode().splitlines()[-1] == f"exit code {cmd.rc}"
    assert ns["result"].exit_code == cmd.rc
    _same_files(cmd, code)


def check_scan(capsysbinary, tmp_path, spy, inputs, argv):
    import polars as pl

    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0
    volatile = ["elapsed_s", "worker", "scanned_at"]
    for table in ("captures", "findings", "safety"):
        a, b = (pl.read_parquet(run.files[next(iter(run.files))] / table / "*.parquet") for run in (cmd, code))
        if table == "captures":
            a, b = a.drop(volatile), b.drop(volatile)
        assert a.sort(a.columns).equals(b.sort(b.columns)), table
    assert ns["res"].analysed == len(pl.read_parquet(cmd.files[next(iter(cmd.files))] / "captures" / "*.parquet")
                                     .filter(pl.col("status") == "ok"))


def check_export(capture, tmp_path, spy, inputs, argv):
    cmd, code, ns = both(capture, tmp_path, spy, inputs, argv)
    assert cmd.rc == 0 and ns["stats"].packets > 0
    _same_files(cmd, code)


def check_watch(capsysbinary, tmp_path, spy, inputs, argv):
    """The watch's events come as its views find them (timing); its end (the final findings) and, with --gate,
    its exit code are what both runs must agree on."""
    cmd, code, ns = both(capsysbinary, tmp_path, spy, inputs, argv)
    ref = _json_lines(_cli(capsysbinary, [*_argv(argv, inputs, tmp_path), "--json"] if "--json" not in argv
                           else _argv(argv, inputs, tmp_path))[1])
    end = ref[-1]
    assert end["type"] == "end" and end["findings"] and ns["findings"] == end["findings"]
    if "--gate" in argv:
        assert ns["result"].exit_code == cmd.rc == end["gate"]["exit_code"]
        assert code.out.decode().splitlines()[-1] == f"exit code {cmd.rc}"


CASES = [
    # info
    ("info", check_info, ["info", PG]),
    ("info", check_info, ["info", PG, "--json", "--xen-version", "4.17", "--catalog", "{catalog}", "--threads", "1"]),
    ("info", check_info, ["info", "{cut}", "--tolerance", "truncate"]),
    ("info", check_info, ["info", "{dump}"]),
    ("info", check_info, ["info", "{dump}", "--json"]),
    # decode
    ("decode", check_decode, ["decode", PG, "-o", "@out.parquet"]),
    ("decode", check_decode, ["decode", "{cut}", "--output", "@out.arrow", "--tolerance", "skip", "--xen-version",
                              "4.17", "--cpu-hz", "2e9", "--catalog", "{catalog}", "--batch-mb", "1", "--threads",
                              "1"]),
    # events
    ("events", check_events, ["events", PG, "--class", "MEM", "--limit", "30"]),
    ("events", check_events, ["events", PG, "--event", "MEM_PAGE_GRANT_*", "-e", "0x00021011", "--dom", "0",
                              "--dom", "1", "--cpu", "0", "--from", "11000000", "--to", "13000000", "-n", "40",
                              "--json"]),
    ("events", check_events, ["events", "{cut}", "--tolerance", "skip", "--xen-version", "4.17", "--cpu-hz", "2e9",
                              "--catalog", "{catalog}", "--threads", "1", "--event", "MY_GRANT_MAP", "--json"]),
    ("events", check_same_output, ["events", "--list", "--catalog", "{catalog}"]),
    # analyze
    ("analyze", check_same_output, ["analyze", PG]),
    ("analyze", check_same_output, ["analyze", PG, "--format", "json", "--boundary", "1@5ms", "--cpu-hz", "1e9",
                                    "--trace-mask", "sched,mem"]),
    ("analyze", check_same_output, ["analyze", "{cut}", "-f", "md", "--tolerance", "truncate", "--xen-version",
                                    "4.17", "--catalog", "{catalog}", "--threads", "1"]),
    ("analyze", check_same_output, ["analyze", PG, "--format", "html", "-o", "@report.html", "--vmcore", "{dump}",
                                    "--vmcore-dom", "1"]),
    ("analyze", check_same_output, ["analyze", CLEAN, "--output", "@report.txt", "--boundary", "1@0x10"]),
    # dmesg
    ("dmesg", check_same_output, ["dmesg", "{dump}"]),
    ("dmesg", check_same_output, ["dmesg", "{dump}", "--format", "makedumpfile", "--vmcoreinfo", "{vmcoreinfo}"]),
    ("dmesg", check_same_output, ["dmesg", "{dump}", "--json"]),
    ("dmesg", check_same_output, ["dmesg", "{dump}", "--xen", "--json"]),
    ("dmesg", check_dmesg_xen_table, ["dmesg", "{dump}", "--xen"]),
    # pages
    ("pages", check_pages_table, ["pages", "{dump}"]),
    ("pages", check_same_output, ["pages", "{dump}", "--json"]),
    ("pages", check_same_output, ["pages", "{dump}", "-o", "@pages.parquet"]),
    ("pages", check_same_output, ["pages", "{dump}", "--output", "@pages.parquet"]),
    # read
    ("read", check_read_dump, ["read", "{dump}", hex(TEXT_ADDR), "9"]),
    ("read", check_same_output, ["read", "{dump}", hex(TEXT_ADDR), "9", "--raw"]),
    ("read", check_same_output, ["read", "{dump}", hex(TEXT_ADDR), "32", "--hex", "--zero-excluded"]),
    ("read", check_same_output, ["read", "{dump}", hex(0xFFFF888000000000 + TEXT_ADDR), "16", "--virtual",
                                 "--hex"]),
    # gate
    ("gate", check_gate, ["gate", PG, "--json", "@gate.jsonl", "--sarif", "@gate.sarif", "--junit", "@gate.xml"]),
    ("gate", check_gate, ["gate", PG, CLEAN, "--policy", "{policy}", "--fail-on", "note", "--xen-version", "4.17",
                          "--catalog", "{catalog}", "--threads", "1", "--trace-mask", "all", "-q"]),
    ("gate", check_gate, ["gate", PG, "--baseline", "{baseline}", "--quiet", "--json", "@gate.jsonl"]),
    ("gate", check_gate, ["gate", PG, "--write-baseline", "@baseline.json"]),
    ("gate", check_gate, ["gate", PG, "--vmcore", "{dump}", "--vmcore-dom", "1", "--json", "@gate.jsonl"]),
    ("gate", check_gate, ["gate", PG, CLEAN, "--workers", "1", "--json", "@gate.jsonl"]),
    ("gate", check_gate, ["gate", PG, "--scheduler", "{scheduler}", "--json", "@gate.jsonl"]),
    # query
    ("query", check_same_output, ["query", PG, "SELECT rule, domid, epoch FROM findings ORDER BY rule",
                                  "--format", "csv"]),
    ("query", check_same_output, ["query", PG, "SELECT name, time_ns FROM records ORDER BY tsc LIMIT 5",
                                  "-f", "json", "--cpu-hz", "2e9", "--catalog", "{catalog}", "--threads", "1",
                                  "--xen-version", "4.17"]),
    ("query", check_same_output, ["query", "{cut}", "SELECT domid, epoch, verdict FROM safety ORDER BY domid",
                                  "--tolerance", "truncate", "--trace-mask", "sched", "--timeout", "60",
                                  "--max-rows", "100"]),
    ("query", check_same_output, ["query", PG, "{dump}", "SELECT count(*) AS n FROM records", "-o", "@n.parquet",
                                  "--format", "parquet"]),
    ("query", check_same_output, ["query", PG, "SELECT f.rule, x.team FROM findings f JOIN read_csv('{csv}') x "
                                  "ON f.rule = x.rule", "--allow-files", "--output", "@joined.csv"]),
    ("query", check_same_output, ["query", "{dump}", "SELECT seq, text FROM dmesg ORDER BY seq"]),
    # export (needs the perfetto package)
    ("export", check_export, ["export", PG, "-o", "@out.pftrace"]),
    ("export", check_export, ["export", "{cut}", "--output", "@out.pftrace", "--cpu-hz", "2.4e9", "--boundary",
                              "1@1ms", "--xen-version", "4.17", "--tolerance", "truncate", "--catalog", "{catalog}",
                              "--threads", "1", "--trace-mask", "all", "--vmcore", "{dump}", "--vmcore-dom", "1",
                              "--no-pcpus"]),
    # watch: a finished capture, ended by --idle-exit
    ("watch", check_watch, ["watch", PG, "--idle-exit", "0"]),
    ("watch", check_watch, ["watch", PG, "--idle-exit", "0", "--json", "--cpu-hz", "2e9", "--xen-version", "4.17",
                            "--catalog", "{catalog}", "--threads", "1", "--boundary", "1@0x10", "--trace-mask", "all"]),
    ("watch", check_watch, ["watch", "{cut}", "--idle-exit", "0", "--tolerance", "truncate"]),
    ("watch", check_watch, ["watch", PG, "--idle-exit", "0", "--gate", "--policy", "{policy}", "--fail-on", "note"]),
    # scan
    ("scan", check_scan, ["scan", "{fleet}", "-o", "@out", "--workers", "0", "-q"]),
    ("scan", check_scan, ["scan", "{fleet}", "--output", "@out", "--workers", "0", "--vmcore-map", "{vmap}",
                          "--on-error", "raise", "--policy", "{policy}", "--fail-on", "note", "--xen-version",
                          "4.17", "--tolerance", "truncate", "--catalog", "{catalog}", "--trace-mask", "all",
                          "--quiet"]),
    ("scan", check_scan, ["scan", PG, "-o", "@out", "--workers", "1", "--retries", "1", "-q"]),
    ("scan", check_scan, ["scan", PG, "-o", "@out", "--scheduler", "{scheduler}", "-q"]),
]


def _case_id(i, case) -> str:
    return f"{i:02d}-{case[0]}" + "".join(f" {a}" for a in case[2][1:] if a.startswith("-"))[:70]


@pytest.mark.parametrize("command,check,argv", CASES, ids=[_case_id(i, c) for i, c in enumerate(CASES)])
def test_show_code_is_equivalent(command, check, argv, capsysbinary, tmp_path, spy, inputs, request):
    if command == "export":
        pytest.importorskip("perfetto", reason="tracelens export needs the perfetto package (pip install perfetto)")
    values = dict(inputs)
    if any("{scheduler}" in a for a in argv):
        values["scheduler"] = request.getfixturevalue("scheduler")
    check(capsysbinary, tmp_path, spy, values, argv)


def _options():
    """command -> {option: all its names} of the typer application (--help and --show-code left out)."""
    import typer.main

    from tracelens.cli import app

    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        out[name] = {p.opts[0]: set(p.opts) | set(getattr(p, "secondary_opts", []))
                     for p in cmd.params if getattr(p, "opts", None) and p.opts[0].startswith("-")
                     and p.opts[0] not in ("--help", "--show-code")}
    return out


def test_every_option_of_every_command_has_a_case():
    used: dict[str, set] = {}
    for command, _check, argv in CASES:
        used.setdefault(command, set()).update(a for a in argv if a.startswith("-"))
    missing = {}
    for command, options in _options().items():
        assert command in used, f"no --show-code case for {command}"
        lost = sorted(o for o, names in options.items() if not names & used[command])
        if lost:
            missing[command] = lost
    assert not missing, f"options without a --show-code equivalence case: {missing}"
