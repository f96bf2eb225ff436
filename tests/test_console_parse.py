"""The console's fast paths parse ``tracelens info``, ``dmesg`` and ``analyze`` from the declarations their typer
commands are built from (tracelens.commands.declarations): for every option of both commands, and in every
spelling (``--opt value``, ``--opt=value``, repeated, before and after the paths), the fast parser gives what
click gives, or leaves the arguments to click; it never parses them differently."""

from __future__ import annotations

import itertools

import pytest
import typer.main

from tracelens import console
from tracelens.cli import app
from tracelens.commands.declarations import ANALYZE, DMESG, GATE, INFO, parse

COMMANDS = {"info": INFO, "dmesg": DMESG, "analyze": ANALYZE, "gate": GATE}
#: a value for each value option (and one click cannot convert, where the option has a type)
VALUES = {"xen_version": ["4.17", "--json"], "tolerance": ["truncate", "x"], "catalog_files": ["a.toml", "b.toml"],
          "threads": ["2", "two"], "style": ["makedumpfile", "vmcore-dmesg"], "vmcoreinfo": ["v.txt", "-"],
          "fmt": ["json", "html"], "output": ["r.json", "-"], "boundary": ["1@100", "2@1.5ms"],
          "cpu_hz": ["2.5e9", "fast"], "trace_mask": ["0x0010f000", "sched,mem"], "vmcore": ["d.kdump", "-x"],
          "vmcore_dom": ["3", "three"], "policy": ["p.toml", "-"], "fail_on": ["warning", "bogus"],
          "baseline": ["b.json", "b2"], "write_baseline": ["w.json", "w2"], "sarif": ["s.sarif", "s2"],
          "junit": ["j.xml", "j2"], "json_out": ["f.jsonl", "f2"], "workers": ["2", "two"],
          "scheduler": ["tcp://h:8786", "x"]}
#: the typer parameter of each command's positional arguments
POSITIONAL = {"info": "paths", "dmesg": "paths", "analyze": "capture", "gate": "captures"}


def _click(name):
    return typer.main.get_command(app).commands[name]


def _click_parse(name, args) -> dict | None:
    """What click parses (its parameters), or None when it refuses the arguments."""
    from tracelens.cli import _click_exceptions

    ClickException, _ = _click_exceptions()
    cmd = _click(name)
    try:
        ctx = cmd.make_context(name, list(args), resilient_parsing=False)
    except ClickException:
        return None
    return dict(ctx.params)


@pytest.mark.parametrize("name", COMMANDS)
def test_the_declarations_are_the_commands_options(name):
    """Every option of the typer command is declared (so the fast path knows what it must leave to click), with
    the same names, the same flag-ness, repeatability and default."""
    params = {p.name: p for p in _click(name).params if p.param_type_name == "option"}
    params.pop("help", None)
    decls = {d.param: d for d in COMMANDS[name]}
    typer_names = {"catalog_files": "catalog"}  # the typer parameter a declaration fills, where the names differ
    assert {typer_names.get(d, d) for d in decls} == set(params)
    for d in decls.values():
        p = params[typer_names.get(d.param, d.param)]
        assert set(p.opts) == set(d.names), d.param
        assert p.is_flag == d.flag and p.multiple == d.multiple, d.param
        assert (p.default if not d.multiple else list(p.default or [])) == d.initial(), d.param


def _spellings(name):
    """Argument lists that exercise every declared option, alone and together, in every spelling."""
    decls = COMMANDS[name]
    singles = []
    for d in decls:
        for n in d.names:
            if d.flag:
                singles += [[n], [n, n], [f"{n}=1"]]
            else:
                for v in VALUES[d.param]:
                    singles += [[n, v], [f"{n}={v}"], [n], [n, v, n, VALUES[d.param][0]]]
    cases = []
    for s in singles:
        cases += [["x.bin", *s], [*s, "x.bin"], [*s], ["x.bin", "y.bin", *s], ["x.bin", "--", *s]]
    for a, b in itertools.combinations([s for s in singles if len(s) == 2 or s[0].startswith("--json")], 2):
        cases.append([*a, "x.bin", *b])
    cases += [["x.bin", "--help"], ["x.bin", "--bogus"], ["-", "--json"], ["x.bin", "-h"]]
    return cases


@pytest.mark.parametrize("name", COMMANDS)
def test_the_fast_parser_agrees_with_click_for_every_option(name):
    served = 0
    serves = {"info": console.info_fast_args, "dmesg": console.dmesg_fast_args,
              "analyze": lambda a: console.main_job_fast_args("analyze", a),
              "gate": lambda a: console.main_job_fast_args("gate", a)}[name]
    for args in _spellings(name):
        if serves(args) is None:
            continue  # left to click: always allowed
        fast = parse(COMMANDS[name], args)
        served += 1
        ref = _click_parse(name, args)
        assert ref is not None, f"{args}: the fast path accepts what click refuses"
        positional = ref.pop(POSITIONAL[name])
        positional = [positional] if isinstance(positional, str) else positional
        typer_names = {"catalog": "catalog_files"}
        ref = {typer_names.get(k, k): (list(v) if isinstance(v, (list, tuple)) else v) for k, v in ref.items()}
        assert fast.pop("args") == list(positional), args
        assert fast == ref, args
    assert served > 30  # the fast path does serve the spellings it is for


def test_what_the_fast_paths_serve():
    assert console.info_fast_args(["x", "--json", "--catalog", "a", "--catalog=b", "--threads", "2"]) == {
        "json_out": True, "xen_version": None, "tolerance": None, "catalog_files": ["a", "b"], "threads": 2,
        "show_code": False, "path": "x"}
    for argv in (["x", "--show-code"], ["x", "y"], ["x", "--threads", "two"], ["--json"]):
        assert console.info_fast_args(argv) is None, argv
    assert console.dmesg_fast_args(["d", "--format=makedumpfile"]) == {"paths": ["d"], "style": "makedumpfile",
                                                                      "vmcoreinfo": None}
    for argv in (["d", "--json"], ["d", "--xen"], ["d", "--format", "nope"], ["d", "--show-code"]):
        assert console.dmesg_fast_args(argv) is None, argv
    assert console.main_job_fast_args("analyze", ["c", "-f", "json", "-o", "r", "--boundary", "1@5", "--boundary=2@6",
                                      "--vmcore-dom", "3"]) == {
        "fmt": "json", "output": "r", "boundary": ["1@5", "2@6"], "cpu_hz": None, "xen_version": None,
        "tolerance": None, "catalog_files": [], "threads": None, "show_code": False, "trace_mask": None,
        "vmcore": None, "vmcore_dom": 3, "capture": "c"}
    for argv in (["c", "--show-code"], ["c", "d"], ["c", "--cpu-hz", "x"], ["--format", "json"], ["c", "--help"]):
        assert console.main_job_fast_args("analyze", argv) is None, argv
    assert console.main_job_fast_args("gate", ["a", "b", "-q", "--fail-on", "warning", "--json=o.jsonl"]) == {
        "vmcore": None, "vmcore_dom": None, "policy": None, "fail_on": "warning", "baseline": None,
        "write_baseline": None, "sarif": None, "junit": None, "json_out": "o.jsonl", "xen_version": None,
        "catalog_files": [], "threads": None, "trace_mask": None, "workers": None, "scheduler": None,
        "quiet": True, "show_code": False, "captures": ["a", "b"]}
    for argv in (["c", "--show-code"], [], ["-q"], ["c", "--workers", "two"], ["c", "--quiet=1"]):
        assert console.main_job_fast_args("gate", argv) is None, argv
