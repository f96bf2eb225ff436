"""The options objects (tracelens.options), tracelens.toml (tracelens.config) and the error classes: library errors
name the parameter and the command line shows the option; a damaged built-in catalog is an installation error, not
a usage error; damage under strict decoding is an IncompleteCaptureError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tracelens
from tracelens import console
from tracelens.cli import main
from tracelens.config import load_config
from tracelens.errors import EXIT_INTERNAL, FormatError, IncompleteCaptureError, PolicyError, TracelensError, \
    UsageError, cli_message
from tracelens.events import EventSelection
from tracelens.options import AnalysisConfig, DecodeOptions, GateConfig

ROOT = Path(__file__).resolve().parents[1]
PG = str(ROOT / "sample-traces" / "persistent-grants.xentrace")


@pytest.mark.parametrize("make, param, option", [
    (lambda: DecodeOptions(xen_version="latest"), "xen_version", "--xen-version"),
    (lambda: DecodeOptions(cpu_hz=0), "cpu_hz", "--cpu-hz"),
    (lambda: DecodeOptions(cpu_hz=float("nan")), "cpu_hz", "--cpu-hz"),
    (lambda: DecodeOptions(tolerance="lenient"), "tolerance", "--tolerance"),
    (lambda: DecodeOptions(threads=0), "threads", "--threads"),
    (lambda: DecodeOptions(catalog_files=5), "catalog_files", "--catalog"),
    (lambda: AnalysisConfig(trace_mask="nonsense"), "trace_mask", "--trace-mask"),
    (lambda: AnalysisConfig(boundaries=(("x", 1),)), "boundaries", "--boundary"),
    (lambda: AnalysisConfig(vmcore_dom=1), "vmcore_dom", "--vmcore-dom"),
    (lambda: GateConfig(fail_on="fatal"), "fail_on", "--fail-on"),
    (lambda: GateConfig(baseline="a", write_baseline="b"), "baseline", "--baseline"),
    (lambda: GateConfig(analysis=AnalysisConfig(decode=DecodeOptions(tolerance="skip"))), "tolerance", "--tolerance"),
])
def test_library_errors_name_the_parameter_and_the_cli_shows_the_option(make, param, option):
    with pytest.raises(UsageError) as e:
        make()
    assert e.value.param == param and param in str(e.value) and "--" not in str(e.value)
    shown = cli_message(e.value)
    assert option in shown and not re.search(rf"(?<![\w-]){param}(?![\w-])", shown), shown


def test_the_cli_maps_every_parameter_a_message_names():
    e = UsageError("vmcore_dom needs vmcore (the dump it names the domain of)", "vmcore_dom", "vmcore")
    assert cli_message(e) == "--vmcore-dom needs --vmcore (the dump it names the domain of)"
    assert cli_message(UsageError("no parameter here")) == "no parameter here"


def test_no_library_error_speaks_command_line():
    """Outside the command modules, no error message names a command-line option: the library names parameters."""
    lib = [p for p in (ROOT / "tracelens").rglob("*.py")
           if "commands" not in p.parts and p.name not in ("cli.py", "console.py", "errors.py")]
    lib += list((ROOT / "parsers").rglob("*.py"))
    pattern = re.compile(r"""(?:Error|UsageError)\(\s*f?["'][^"']*?(?<![\w])--[a-z]""")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in lib for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, offenders


def test_options_are_checked_and_normalised():
    d = DecodeOptions(catalog_files="one.toml", cpu_hz=2e9)
    assert d.catalog_files == ("one.toml",) and hash(d) == hash(DecodeOptions(catalog_files=["one.toml"], cpu_hz=2e9))
    a = AnalysisConfig(boundaries=[[1, 5]], trace_mask="sched,mem")
    assert a.boundaries == ((1, 5),) and a.declared_mask() == 0x0012F000
    with pytest.raises(UsageError, match="decode must be a DecodeOptions"):
        AnalysisConfig(decode={"xen_version": "4.17"})


def test_catalog_files_reach_the_library_from_every_entry_point(tmp_path):
    """An AnalysisConfig's catalog is no longer dropped: sql's records and Capture.analyze use it, and a broken
    catalog file is refused by the analysis too."""
    cat = tmp_path / "mine.toml"
    cat.write_text('[[event]]\nid = 0x0010f001\nname = "MY_GRANT_MAP"\nfields = ["granter"]\n')
    config = AnalysisConfig(decode=DecodeOptions(catalog_files=(str(cat),)))
    names = tracelens.sql("SELECT DISTINCT name FROM records WHERE event = 1110017", PG, config=config)
    assert names["name"].cast(str).to_list() == ["MY_GRANT_MAP"]
    cap = tracelens.open(PG, config.decode)
    assert cap.analyze().analysis.records == 514
    maps = sum(e == 0x0010F001 for e in tracelens.read_xentrace(PG).column("event").to_pylist())
    assert cap.events(EventSelection(events=("MY_GRANT_MAP",))).collect().height == maps > 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[[event]]\nid = 'x'\n")
    with pytest.raises(UsageError, match="bad.toml"):
        tracelens.open(PG, DecodeOptions(catalog_files=(str(bad),))).analyze()


def test_a_damaged_builtin_catalog_is_an_installation_error(monkeypatch, capsys):
    from tracelens.parsers.xentrace import catalog

    class Broken:
        def joinpath(self, name):
            return self

        def read_text(self, encoding=None):
            return "[[event]]\nid = 'not a number'\nname = 'X'\n"

        def __str__(self):
            return "/site-packages/tracelens/parsers/xentrace/catalog.toml"

    monkeypatch.setattr(catalog.resources, "files", lambda package: Broken())
    catalog._load_cached.cache_clear()
    try:
        with pytest.raises(TracelensError) as e:
            catalog.load_catalog()
        assert not isinstance(e.value, UsageError) and e.value.exit_code == EXIT_INTERNAL
        assert "built-in event catalog" in str(e.value) and "reinstall tracelens" in str(e.value)
        assert main(["events", "--list"]) == EXIT_INTERNAL
        assert "built-in event catalog" in capsys.readouterr().err
    finally:
        catalog._load_cached.cache_clear()


def test_damage_under_strict_decoding_is_an_incomplete_capture(tmp_path):
    cut = tmp_path / "cut.xentrace"
    cut.write_bytes(Path(PG).read_bytes()[:-6])
    with pytest.raises(IncompleteCaptureError) as e:
        tracelens.read_xentrace(cut)
    assert isinstance(e.value, FormatError) and e.value.offset is not None
    not_a_capture = tmp_path / "zeros.bin"
    not_a_capture.write_bytes(bytes(64))
    with pytest.raises(FormatError) as e:
        tracelens.read_xentrace(not_a_capture)
    assert not isinstance(e.value, IncompleteCaptureError)  # not a capture at all: nothing was incomplete
    assert tracelens.read_xentrace(cut, DecodeOptions(tolerance="truncate")).num_rows > 0


# -- tracelens.toml ---------------------------------------------------------------------------------------------------
def test_every_table_fills_its_object(tmp_path):
    (tmp_path / "site.toml").write_text('[[event]]\nid = 0x0010f001\nname = "MY_GRANT_MAP"\n')
    f = tmp_path / "tracelens.toml"
    f.write_text('[decode]\nxen_version = "4.17"\ncpu_hz = 2e9\ntolerance = "truncate"\ncatalog = ["site.toml"]\n'
                 'threads = 2\n\n[analyze]\ntrace_mask = "sched,mem"\n\n[gate]\nfail_on = "warning"\n'
                 'trace_mask = "all"\n\n[scan]\nworkers = 0\nretries = 1\non_error = "raise"\n')
    c = load_config(f)
    assert c.decode == DecodeOptions(xen_version="4.17", cpu_hz=2e9, tolerance="truncate",
                                     catalog_files=(str(tmp_path / "site.toml"),), threads=2)
    assert c.analysis == AnalysisConfig(decode=c.decode, trace_mask="sched,mem")
    assert c.policy.fail_on == "warning"
    g = c.gate  # strict, the policy's mask, this file as the policy
    assert g.analysis.decode.tolerance == "strict" and g.analysis.trace_mask == 0x0FFFF000 and g.policy == str(f)
    s = c.scan_config(fail_on="note")
    assert (s.cluster.workers, s.cluster.retries, s.on_error, s.fail_on, s.policy) == (0, 1, "raise", "note", str(f))
    assert s.analysis == c.analysis


def test_without_a_file_everything_is_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config()
    assert c.path is None and c.decode == DecodeOptions() and c.analysis == AnalysisConfig()
    assert c.gate == GateConfig()


@pytest.mark.parametrize("text, message", [
    ('[decode]\nxen_versoin = "4.17"\n', "tracelens.toml:2: unknown key 'decode.xen_versoin'"),
    ('[decode]\n\n\ntolerance = "lenient"\n', "tracelens.toml:4: decode.tolerance must be one of strict"),
    ("[decode]\nthreads = true\n", "tracelens.toml:2: decode.threads must be an integer, not a boolean"),
    ('[decode]\ncatalog = "one.toml"\n', "tracelens.toml:2: decode.catalog must be an array"),
    ('[analyze]\ntrace_mask = "bogus"\n', "tracelens.toml:2: analyze.trace_mask: not a trace mask"),
    ("[scan]\nworkers = -1\n", "tracelens.toml:2: scan.workers must be 0 or more"),
    ('[scan]\non_error = "ignore"\n', "tracelens.toml:2: scan.on_error must be record or raise"),
    ("x = 1\n", "tracelens.toml:1: unknown table [x]"),
    ("[decode\n", "tracelens.toml:1: invalid TOML"),
])
def test_file_errors_name_the_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tracelens.toml").write_text(text)
    with pytest.raises(PolicyError) as e:
        load_config()
    assert str(e.value).startswith(message), str(e.value)


def test_commands_read_the_file_and_options_override_it(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tracelens.toml").write_text('[decode]\nxen_version = "4.7"\n')
    for run in (console.main, main):  # the fast path and the typer command
        capsys.readouterr()
        assert run(["info", PG, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["xen_layout"]["label"] == "4.7 (given)"
    assert main(["info", PG, "--json", "--xen-version", "4.17"]) == 0
    assert json.loads(capsys.readouterr().out)["xen_layout"]["label"] == "4.17 (given)"
    assert main(["analyze", PG, "--show-code"]) == 0
    assert "DecodeOptions(xen_version='4.7')" in capsys.readouterr().out  # the code names what the file said
