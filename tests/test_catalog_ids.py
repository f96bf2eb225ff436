"""The catalog (parsers/xentrace/catalog.toml) is the one source of the event ids code reads: the library writes no
id out, looks ids up by name, and numba's cache stays in step with the ids its kernels are compiled with."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest

from tracelens.parsers.xentrace.catalog import event_id, family, load_catalog, subclass_id

ROOT = Path(__file__).resolve().parent.parent
# the simulator (a test oracle being moved into tests/) keeps its own numbers
NOT_LIBRARY = {"tracelens/synth.py"}


def _catalog_numbers() -> dict[int, str]:
    cat = load_catalog()
    out = {eid | n << 28: f"{ev.name} header with {n} words" for eid, ev in cat.events.items() for n in range(1, 8)}
    out.update({eid: ev.name for eid, ev in cat.events.items()})
    out.update({v: f"subclass {n}" for n, v in cat.subclasses.items()})
    out.update({v: f"family {n}" for n, (v, _m) in cat.families.items()})
    return out


def _numbers(path: Path):
    """(line, value) of every integer literal of a Python file (comments and docstrings are not numbers)."""
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.NUMBER:
            try:
                yield tok.start[0], int(tok.string, 0)
            except ValueError:  # floats
                continue


def test_the_library_writes_no_event_id_out():
    known = _catalog_numbers()
    found = []
    for top in ("tracelens", "parsers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel in NOT_LIBRARY:
                continue
            for line, value in _numbers(path):
                if value >= 0x10000 and value in known:
                    found.append(f"{rel}:{line}: {value:#010x} is {known[value]}")
    # detection runs in every command and must not load the catalog: its one copy is checked below
    assert found == ["tracelens/detect.py:16: 0x2001f003 is TRACE_CPU_CHANGE header with 2 words"], found


def test_the_library_tests_no_subclass_by_its_number():
    """``(ev >> 12) == 0x21`` is SCHED_MIN written out: subclasses are compared as ``ev & SUBCLASS_ID_MASK``."""
    import re

    pattern = re.compile(r">>\s*12\)?\s*[!=]=\s*0x")
    found = [f"{path.relative_to(ROOT)}:{i}" for top in ("tracelens", "parsers") for path in sorted((ROOT / top).rglob("*.py"))
             if str(path.relative_to(ROOT)) not in NOT_LIBRARY
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_detection_and_the_decoder_agree_on_the_capture_header():
    from tracelens import detect
    from tracelens.parsers.xentrace import _kernels as K

    assert detect._CPU_CHANGE_HEADER == K.CPU_CHANGE_HEADER == event_id("TRACE_CPU_CHANGE") | 2 << 28


def test_names_resolve_to_the_spec_ids():
    # a few ids of ../shared/spec/xentrace.md, written out here on purpose: the test checks the catalog against them
    assert event_id("MEM_PAGE_GRANT_MAP") == 0x0010F001
    assert event_id("SCHED_SHUTDOWN") == 0x00028007
    assert event_id("PV_HYPERCALL_V2") == 0x0020100D
    assert subclass_id("SCHED_MIN") == 0x00021000 and subclass_id("GUEST") == 0x0800F000
    assert family("RUNSTATE_CHANGE") == (0x00021001, 0x0FFFF00F)
    with pytest.raises(KeyError, match="NO_SUCH_EVENT"):
        event_id("NO_SUCH_EVENT")


def test_names_are_unique_and_families_hold_their_members():
    cat = load_catalog()
    names = [ev.name for ev in cat.events.values()]
    assert len(names) == len(set(names))
    value, mask = cat.families["RUNSTATE_CHANGE"]
    runstates = [eid for eid, ev in cat.events.items() if ev.name.startswith("RUNSTATE ")]
    assert len(runstates) == 12 and all(eid & mask == value for eid in runstates)
    for name, sub in cat.subclasses.items():
        assert sub & 0x0FFF0000 and sub & 0x0000F000 and not sub & 0xFFF, name


def test_a_user_catalog_does_not_change_what_code_means_by_a_name(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text('[[event]]\nid = 0x0010f001\nname = "MY_GRANT_MAP"\n')
    mine = load_catalog([extra])
    assert mine.ids["MY_GRANT_MAP"] == 0x0010F001 and "MEM_PAGE_GRANT_MAP" not in mine.ids
    assert event_id("MEM_PAGE_GRANT_MAP") == 0x0010F001  # the shipped catalog


TOY = """
import os
from tracelens._jit import njit, pin_constants
K = int(os.environ["TOY_K"])

@njit(cache=True)
def add_k(x):
    return x + K
{pin}
print(add_k(1))
"""


@pytest.mark.parametrize("pinned", [True, False])
def test_pinned_constants_keep_the_numba_cache_in_step(tmp_path, pinned):
    """A constant a kernel module resolves at import from elsewhere (as the kernels resolve event ids from the
    catalog) changes without the module's source changing: numba's cache alone would keep running the code compiled
    with the old value (the unpinned case shows it); pin_constants drops it."""
    mod = tmp_path / "toy.py"
    mod.write_text(TOY.format(pin="pin_constants(globals())" if pinned else ""))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))

    def run(k):
        r = subprocess.run([sys.executable, "-c", "import toy"], env=dict(env, TOY_K=str(k)), capture_output=True,
                           text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    assert run(1) == 2
    assert run(1) == 2  # from the cache
    assert run(5) == (6 if pinned else 2)
    assert run(5) == (6 if pinned else 2)
    if pinned:
        assert [p.name for p in (tmp_path / "cache").rglob("*.constants")] == ["toy.constants"]
