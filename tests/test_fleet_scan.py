"""``tracelens scan`` on real Dask clusters: a LocalCluster of worker processes (module-scoped) and a ``dask
scheduler`` with two ``dask worker`` processes started here, all on 127.0.0.1.

Checked: every capture's rows in the Parquet datasets equal ``tracelens analyze --format json`` of that capture; a
damaged capture is an error row carrying the analyze error; other files are skipped rows; a worker SIGKILLed in
the middle of a scan (while it runs a task, after a first result is written) loses and duplicates nothing; a task whose workers keep dying is recorded as lost; a re-run
skips everything. Inputs are built here: the shipped samples, simulator hosts and a few MB-sized captures from
the benchmark generator (long enough tasks for a kill to land in the middle of the run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

distributed = pytest.importorskip("distributed", reason="dask distributed, the fleet extra, is not installed "
                                                    "(pip install 'tracelens[fleet]')")

from tracelens.cli import main as cli_main  # noqa: E402
from tracelens.fleet import tables as T  # noqa: E402
from tracelens.fleet.scan import ScanConfig, scan  # noqa: E402
from tracelens.fleet.cluster import ClusterOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample-traces"
#: JSON-text columns of the datasets (nested members of the JSON contract)
JSON_COLUMNS = {"evidence", "extents_by_order", "gfn_ranges", "unsafe", "lost", "possibly_unsafe", "not_covered"}
LOOPBACK = "127.0.0.1"


def _generate(path: Path, size: int, seed: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_xentrace import generate
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    generate(path, size, ncpu=2, seed=seed, kexecs=2)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder tree: the samples, three simulator hosts, a damaged capture, a text file and a sub-folder."""
    from synth import random_scenario

    d = tmp_path_factory.mktemp("fleet-inputs")
    for p in sorted(SAMPLES.glob("*.xentrace")):
        shutil.copy(p, d / p.name)
    sub = d / "host-b" / "2026-12-01"
    sub.mkdir(parents=True)
    for seed in (11, 12, 13):
        (sub / f"random-{seed}.xentrace").write_bytes(random_scenario(seed).to_bytes())
    (d / "damaged.xentrace").write_bytes((SAMPLES / "clean-soft-reset.xentrace").read_bytes()[:1000])
    (d / "NOTES.txt").write_text("not a capture\n")
    return d


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory) -> Path:
    """Ten 12 MB captures with kexecs and leaking grants: tasks of a tenth of a second or more each, long enough
    for a kill to find a worker in the middle of one."""
    d = tmp_path_factory.mktemp("fleet-big")
    for i in range(10):
        _generate(d / f"big-{i}.xentrace", 12 << 20, seed=100 + i)
    return d


def _analyze_json(path: Path, tmp: Path) -> dict | str:
    """``tracelens analyze PATH --format json``: the JSON object, or the error line it printed."""
    out = tmp / (path.name + ".json")
    rc = cli_main(["analyze", str(path), "--format", "json", "-o", str(out)])
    if rc:
        return "error"
    return json.loads(out.read_text())


def _rows(res, table: str, capture: str) -> list[dict]:
    from tracelens.analysis.report import CONTRACT

    # a member the contract marks optional ("name?") is absent from the JSON row, null in the fixed-schema dataset
    optional = {k[:-1] for k in CONTRACT[table][0] if k.endswith("?")}
    df = res.table(table).filter(pl.col("capture") == capture)
    out = []
    for r in df.to_dicts():
        for k in ("capture", "sha256", "level", "state", "blocking"):
            r.pop(k, None)
        r = {k: v for k, v in r.items() if not (k in optional and v is None)}
        out.append({k: json.loads(v) if k in JSON_COLUMNS and v is not None else v for k, v in r.items()})
    return out


def _check_equal_to_analyze(res, files, tmp: Path) -> None:
    caps = res.captures
    for f in files:
        expected = _analyze_json(f, tmp)
        row = caps.filter(pl.col("capture") == str(f)).to_dicts()
        assert len(row) == 1, f
        row = row[0]
        if expected == "error":
            assert row["status"] == "error" and row["error_kind"] == "input", row
            continue
        assert row["status"] == "ok", row
        assert row["sha256"] == expected["capture"]["sha256"]
        assert row["records"] == expected["capture"]["records"]
        assert row["lost_records"] == expected["capture"]["lost_records"]
        assert row["findings"] == len(expected["findings"])
        assert json.loads(row["coverage"]) == expected["coverage"]
        for table in T.ROW_TABLES:
            assert _rows(res, table, str(f)) == expected[table], (f, table)
        # provenance: every row of every table carries the capture's path and digest
        for table in T.ROW_TABLES:
            df = res.table(table).filter(pl.col("capture") == str(f))
            assert df["sha256"].to_list() == [expected["capture"]["sha256"]] * df.height


def _capture_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*.xentrace"))


# -- LocalCluster ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_client():
    import dask

    # one worker death per task is allowed: the second kills it for good (the lost-task test); one task at a time
    # per worker, as tracelens.fleet.cluster.connect configures it
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host=LOOPBACK,
                                           dashboard_address=f"{LOOPBACK}:0", silence_logs=40)
        client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_local_cluster_equals_analyze(local_client, inputs, tmp_path):
    out = tmp_path / "out"
    res = scan([inputs], out, client=local_client)
    files = _capture_files(inputs)
    assert res.inputs == len(files) and res.analysed == len(files) - 1 and res.errors == 1 and res.skipped == 1
    caps = res.captures
    assert caps.height == len(files) + 1 and caps["capture"].n_unique() == caps.height  # one row per input
    _check_equal_to_analyze(res, files, tmp_path)
    workers = set(caps.filter(pl.col("status") == "ok")["worker"])
    assert workers and all(w.startswith(f"tcp://{LOOPBACK}:") for w in workers)
    # the damaged capture: an error row with analyze's one-line message, and no rows elsewhere
    bad = caps.filter(pl.col("capture") == str(inputs / "damaged.xentrace")).row(0, named=True)
    assert bad["status"] == "error" and bad["error"].startswith(str(inputs / "damaged.xentrace") + ": ")
    assert bad["sha256"] is not None
    assert res.findings.filter(pl.col("capture") == bad["capture"]).height == 0
    other = caps.filter(pl.col("capture") == str(inputs / "NOTES.txt")).row(0, named=True)
    assert other["status"] == "skipped" and "not a xentrace capture" in other["error"]
    # each table is a Parquet dataset that polars scans lazily; no temporary file is left behind
    lazy = pl.scan_parquet(str(out / "findings" / "*.parquet")).filter(pl.col("rule") == "TL-GNT-001")
    assert lazy.select(pl.len()).collect().item() == res.findings.filter(pl.col("rule") == "TL-GNT-001").height
    assert not os.listdir(out / ".tmp")

    # a re-run skips everything (same bytes), writes nothing, and the tables stay the same
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet") if "captures" not in p.parts}
    again = scan([inputs], out, client=local_client)
    assert again.resumed == len(files) and again.analysed == 0 and again.errors == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet") if "captures" not in p.parts} == mtimes
    assert again.captures.sort("capture").equals(caps.sort("capture"))

    # a capture whose bytes changed is analysed again, in place
    changed = inputs / "host-b" / "2026-12-01" / "random-11.xentrace"
    keep = changed.read_bytes()
    try:
        shutil.copy(SAMPLES / "persistent-grants.xentrace", changed)
        third = scan([inputs], out, client=local_client)
        assert third.analysed == 1 and third.resumed == len(files) - 1
        assert third.captures.height == caps.height
        assert _rows(third, "findings", str(changed)) == _analyze_json(changed, tmp_path)["findings"]
    finally:
        changed.write_bytes(keep)


def test_on_error_raise_stops(local_client, inputs, tmp_path):
    from tracelens.fleet.scan import ScanFailed

    with pytest.raises(ScanFailed) as e:
        scan([inputs / "damaged.xentrace"], tmp_path / "o", ScanConfig(on_error="raise"), client=local_client)
    assert e.value.exit_code == 3 and "damaged.xentrace" in str(e.value)


class _Killer(threading.Thread):
    """SIGKILLs a worker process in the middle of a scan: once a first result is written to OUTDIR, the first
    worker seen running a scan task (polled from the scheduler every few milliseconds)."""

    def __init__(self, client, outdir: Path, kill):
        super().__init__(daemon=True)
        self.client, self.outdir, self.kill = client, outdir, kill
        self.killed = None
        self.stop = threading.Event()

    def run(self):
        # a victim is a worker whose scan task was seen starting moments ago: killed then, the task is surely still
        # in flight (a task killed as it finishes would not be taken back, and the test could not tell)
        first_seen: dict = {}
        while not self.stop.is_set():
            now = time.monotonic()
            busy = _busy_tasks(self.client)
            for key in busy:
                first_seen.setdefault(key, now)
            if list((self.outdir / "captures").glob("*.parquet")):
                fresh = sorted(w for key, w in busy.items() if now - first_seen[key] < 0.03)
                if fresh:
                    self.kill(fresh[0])
                    self.killed = fresh[0]
                    return
            time.sleep(0.002)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)


def _expected_findings(files, tmp):
    return {str(f): _analyze_json(f, tmp)["findings"] for f in files}


def _check_complete(res, files, expected):
    caps = res.captures
    assert caps.height == len(files) and caps["capture"].n_unique() == len(files)
    assert set(caps["status"]) == {"ok"}, caps.filter(pl.col("status") != "ok").select("capture", "error")
    for f in files:
        assert _rows(res, "findings", str(f)) == expected[str(f)]
    # nothing duplicated: one part per input and table, exactly the analysis' rows
    assert res.findings.height == sum(len(v) for v in expected.values())


def _busy_tasks(client) -> dict:
    """{scan task key: the address of the worker running it} right now."""
    return {str(k): w for w, keys in client.processing().items() for k in keys if "tracelens-scan" in str(k)}


def _rescheduled(client) -> list:
    """Scan tasks the scheduler took back from a worker that was processing them (it died)."""
    def story(dask_scheduler):
        return sorted({str(t[0]) for t in dask_scheduler.transition_log
                       if "tracelens-scan" in str(t[0]) and t[1] == "processing" and t[2] in ("released", "waiting")})
    return client.run_on_scheduler(story)


def test_local_worker_killed_mid_run(local_client, big_inputs, tmp_path):
    files = _capture_files(big_inputs)
    expected = _expected_findings(files, tmp_path)
    pids = local_client.run(os.getpid)  # {worker address: pid}
    out = tmp_path / "out"
    before = set(_rescheduled(local_client))
    with _Killer(local_client, out, lambda victim: os.kill(pids[victim], signal.SIGKILL)) as killer:
        res = scan([big_inputs], out, client=local_client)
    assert killer.killed is not None
    assert set(_rescheduled(local_client)) - before  # the task in flight on it was run again elsewhere
    assert res.analysed + res.resumed == len(files) and res.lost == 0
    _check_complete(res, files, expected)
    local_client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def _suicide(item):
    """Kill the worker running it when the item says so."""
    import os
    import signal

    import time

    if item == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)  # the others are still waiting while "die" kills its workers
    return item.upper()


def test_task_whose_workers_keep_dying_is_recorded(local_client):
    from tracelens.fleet.cluster import run_tasks

    done, lost = [], []
    items = ["a", "b", "die", "c", "d", "e", "f"]
    run_tasks(local_client, _suicide, items, on_result=lambda i, r: done.append(r),
              on_lost=lambda i, m: lost.append((i, m)))
    assert sorted(done) == ["A", "B", "C", "D", "E", "F"]  # no task is lost with the one that kills its workers
    assert len(lost) == 1 and lost[0][0] == "die" and "died" in lost[0][1]
    local_client.wait_for_workers(2, timeout=60)


# -- dask scheduler + dask worker processes ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes (no nanny: a killed worker stays dead), on 127.0.0.1."""
    d = tmp_path_factory.mktemp("dask")
    sfile = d / "scheduler.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=open(d / f"{args[0]}-{len(procs)}.log", "w"))
        procs.append(p)
        return p

    env["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] = "1.0"  # as docs/fleet.md recommends
    start("scheduler", "--host", LOOPBACK, "--port", "0", "--no-dashboard", "--scheduler-file", str(sfile))
    deadline = time.monotonic() + 60
    while not sfile.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sfile.exists(), (d / "scheduler-0.log").read_text()
    address = json.loads(sfile.read_text())["address"]
    assert address.startswith(f"tcp://{LOOPBACK}:")
    workers = [start("worker", "--scheduler-file", str(sfile), "--nthreads", "1", "--no-nanny", "--host", LOOPBACK,
                     "--no-dashboard", "--name", f"w{i}") for i in range(2)]
    with distributed.Client(address) as c:
        c.wait_for_workers(2, timeout=60)
    yield address, workers
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def test_external_cluster_worker_killed_then_rerun(external_cluster, inputs, big_inputs, tmp_path):
    address, workers = external_cluster
    files = _capture_files(big_inputs)
    expected = _expected_findings(files, tmp_path)
    out = tmp_path / "out"
    with distributed.Client(address, set_as_default=False) as watcher:
        names = {a: w["name"] for a, w in watcher.scheduler_info()["workers"].items()}
        procs = {a: workers[int(n[1:])] for a, n in names.items()}
        before = set(_rescheduled(watcher))
        with _Killer(watcher, out, lambda victim: os.kill(procs[victim].pid, signal.SIGKILL)) as killer:
            res = scan([big_inputs], out, ScanConfig(cluster=ClusterOptions(scheduler=address)))
        assert killer.killed is not None and procs[killer.killed].wait(10) == -signal.SIGKILL
        assert set(_rescheduled(watcher)) - before  # the task in flight on it was run again on the other one
    assert res.lost == 0
    _check_complete(res, files, expected)

    # the command line, on the same cluster (one worker left): the small inputs, then a re-run that skips them all
    out2 = tmp_path / "out2"
    r = subprocess.run([sys.executable, "-m", "tracelens", "scan", str(inputs), "-o", str(out2), "--scheduler",
                        address], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n = len(_capture_files(inputs))
    assert f"{n - 1} capture(s) analysed, 1 error(s)" in r.stderr
    from tracelens.fleet.scan import ScanResult

    _check_equal_to_analyze(ScanResult(outdir=str(out2)), _capture_files(inputs), tmp_path)
    r = subprocess.run([sys.executable, "-m", "tracelens", "scan", str(inputs), "-o", str(out2), "--scheduler",
                        address], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"0 capture(s) analysed, 0 error(s)" in r.stderr and f"{n} skipped as already done" in r.stderr


# -- without a cluster ---------------------------------------------------------------------------------------------
def test_in_process_runner_and_vmcore_map(tmp_path):
    """``--workers 0`` runs the same tasks in this process. --vmcore-map pairs a capture with its dump: the rows
    equal ``tracelens analyze CAPTURE --vmcore DUMP``, and the dump is no input of its own; an unpaired dump is a
    skipped row."""
    from test_gate_vmcore import guest_dump

    d = tmp_path / "in"
    d.mkdir()
    cap = d / "crash-kdump.xentrace"
    shutil.copy(SAMPLES / "crash-kdump.xentrace", cap)
    dump = guest_dump(d / "d1.vmcore")
    guest_dump(d / "stray.vmcore")
    (tmp_path / "pairs.csv").write_text("capture,dump,domid\nin/crash-kdump.xentrace,in/d1.vmcore,1\n")
    res = scan([d], tmp_path / "out", ScanConfig(vmcore_map=str(tmp_path / "pairs.csv"),
                                                 cluster=ClusterOptions(workers=0)))
    assert (res.analysed, res.skipped, res.errors) == (1, 1, 0)
    out = tmp_path / "a.json"
    assert cli_main(["analyze", str(cap), "--vmcore", str(dump), "--vmcore-dom", "1", "-f", "json", "-o", str(out)]) == 0
    expected = json.loads(out.read_text())
    assert _rows(res, "findings", str(cap)) == expected["findings"]
    assert "TL-DMP-001" in set(res.findings["rule"])
    row = res.captures.filter(pl.col("capture") == str(cap)).row(0, named=True)
    assert row["vmcore"] == str(dump) and row["vmcore_dom"] == 1 and row["gate_status"] == "fail"
    stray = res.captures.filter(pl.col("capture") == str(d / "stray.vmcore")).row(0, named=True)
    assert stray["status"] == "skipped" and stray["kind"] == "elf-vmcore" and "--vmcore-map" in stray["error"]
    assert res.captures.height == 2  # the paired dump is part of its capture's row
    # the equivalent Python of the command runs the same scan
    again = scan([d], tmp_path / "out", ScanConfig(vmcore_map=str(tmp_path / "pairs.csv"),
                                                   cluster=ClusterOptions(workers=0)))
    assert again.resumed == 1 and again.analysed == 0


def test_usage_errors(tmp_path):
    from tracelens.errors import UsageError

    with pytest.raises(UsageError):
        scan([tmp_path / "missing"], tmp_path / "o", ScanConfig(cluster=ClusterOptions(workers=0)))
    with pytest.raises(UsageError):
        scan([SAMPLES], tmp_path / "o", ScanConfig(on_error="ignore", cluster=ClusterOptions(workers=0)))
    with pytest.raises(UsageError):
        scan([SAMPLES], tmp_path / "o", ScanConfig(cluster=ClusterOptions(workers=2, scheduler="tcp://127.0.0.1:1")))
    bad = tmp_path / "map.csv"
    bad.write_text("a.xentrace\n")
    with pytest.raises(UsageError, match="map.csv:1"):
        scan([SAMPLES], tmp_path / "o", ScanConfig(vmcore_map=str(bad), cluster=ClusterOptions(workers=0)))


def test_gate_workers_equals_gate(inputs, tmp_path):
    """``tracelens gate --workers 2`` checks the captures on a LocalCluster: the same JSON Lines and exit code as
    the gate in one process."""
    files = [str(p) for p in _capture_files(inputs)]
    local = tmp_path / "local.jsonl"
    dist = tmp_path / "dist.jsonl"
    rc = cli_main(["gate", "-q", "--json", str(local), *files])
    rc2 = cli_main(["gate", "-q", "--workers", "2", "--json", str(dist), *files])
    assert rc == rc2 == 3  # the damaged capture is unreadable
    assert local.read_text() == dist.read_text()


def test_show_code_runs_the_same_scan(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["scan", str(inputs), "-o", "cli", "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert cli_main(["scan", str(inputs), "-o", "code", "--workers", "0", "--show-code"]) == 0
    code = capsys.readouterr().out
    assert "ClusterOptions(workers=0)" in code
    exec(compile(code, "<show-code>", "exec"), {})
    from tracelens.fleet.scan import ScanResult

    a, b = ScanResult(outdir="cli"), ScanResult(outdir="code")
    for t in T.TABLES:
        drop = ["elapsed_s", "scanned_at", "worker"] if t == "captures" else []
        assert a.table(t).drop(drop).sort("capture", maintain_order=True).equals(
            b.table(t).drop(drop).sort("capture", maintain_order=True)), t


def test_progress_bar_on_a_terminal(capsys):
    """The bar: done of total, failed and already-done counts, throughput, and the dashboard's address."""
    from tracelens.progress import ScanProgress

    p = ScanProgress(enabled=True)
    p.start(3, "http://127.0.0.1:8787/status")
    for status in ("ok", "error", "resumed"):
        p.update({"status": status, "size_bytes": 1000})
    p.stop()
    err = capsys.readouterr().err
    assert "Dask dashboard: http://127.0.0.1:8787/status" in err
    assert "3/3" in err and "1 failed" in err and "1 already done" in err and "captures/s" in err
    assert (p.done, p.failed, p.resumed) == (3, 1, 1)
