"""The wheel: built from a copy of the sources, installed into a fresh virtual environment and run from ``/`` (no
checkout in sight). It carries the licence, the event catalog and the rule docs, so ``tracelens --version`` works and
``gate --sarif`` gives every rule its whole section of docs/rules.md as help, as a checkout does.

The new environment sees the running environment's dependencies through a .pth file (nothing is downloaded), and
not its editable tracelens: a .pth line adds a directory without running the .pth files in it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import tracelens

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample-traces" / "persistent-grants.xentrace"
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "tracelens", "parsers", "docs", "sample-traces")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:  # a copy: a build writes build/ and *.egg-info beside the sources
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
        else:
            shutil.copy2(p, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp / "dist").glob("tracelens-*.whl")
    return whl


def test_the_wheel_carries_licence_catalog_and_rule_docs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist = f"tracelens-{tracelens.__version__}.dist-info"
    assert wheel.name.startswith(f"tracelens-{tracelens.__version__}-")
    assert f"{dist}/licenses/LICENSE" in names
    assert "tracelens/docs/rules.md" in names and "tracelens/parsers/xentrace/catalog.toml" in names
    assert "tracelens/samples/persistent-grants.xentrace" in names  # what a first run compiles kernels on
    top = ("parsers/", "tests/", "docs/", "sample-traces/")
    assert not [n for n in names if n.startswith(top)]  # nothing at the top level
    meta = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta
    shipped = zipfile.ZipFile(wheel).read("tracelens/docs/rules.md")
    assert shipped == (REPO / "docs" / "rules.md").read_bytes()  # one source: the file itself


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    deps += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    (site / "zz-tracelens-test-deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


def _run_from_root(venv: Path, *argv, tmp: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["NUMBA_CACHE_DIR"] = str(tmp / "numba")
    return subprocess.run([str(venv / "bin" / "tracelens"), *map(str, argv)], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)


def test_an_installed_wheel_runs_from_root(installed, tmp_path):
    r = subprocess.run([installed / "bin" / "python", "-c", "import tracelens; print(tracelens.__file__)"],
                       cwd="/", capture_output=True, text=True, check=True)
    assert Path(r.stdout.strip()).is_relative_to(installed), r.stdout  # the wheel's tracelens, not the checkout's
    r = _run_from_root(installed, "--version", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(f"tracelens {tracelens.__version__} (Python "), r.stderr
    # the sample a first run compiles kernels on (tracelens._warm), read from the installed package
    r = subprocess.run([installed / "bin" / "python", "-c", "from tracelens._warm import sample_path; "
                        "print(len(sample_path().read_bytes()))"], cwd="/", capture_output=True, text=True, check=True)
    assert int(r.stdout) == SAMPLE.stat().st_size


def test_an_installed_wheel_gives_full_sarif_help(installed, tmp_path):
    sarif = tmp_path / "out.sarif"
    r = _run_from_root(installed, "gate", SAMPLE, "--sarif", sarif, "-q", tmp=tmp_path)
    assert r.returncode == 1, r.stderr  # the sample's TL-GNT-001 is an error: the default gate fails
    rules = {d["id"]: d for d in json.loads(sarif.read_text())["runs"][0]["tool"]["driver"]["rules"]}
    docs = (REPO / "docs" / "rules.md").read_text()
    ids = re.findall(r"^## (TL-[A-Z]+-\d+):", docs, flags=re.M)
    assert sorted(rules) == sorted(ids)
    for rid in ids:
        md = rules[rid]["help"]["markdown"]
        assert "See docs/rules.md of tracelens" not in md
        # the rule's section, as docs/rules.md has it: from after its heading to the next heading
        section = re.search(rf"^## {rid}:[^\n]*\n(.*?)(?=^## |^---\s*$|\Z)", docs, flags=re.M | re.S).group(1).strip()
        assert md == section and md.count("\n") >= 3
