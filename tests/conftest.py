"""Shared fixtures: where the read-only ../shared data lives, and the real xentrace captures in it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
# pytest runs with --import-mode=importlib, which does not put tests/ on sys.path; the reference decoder and
# other test helpers are plain modules here.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

SHARED_DIR = TESTS_DIR.parent.parent / "shared"
REAL_XENTRACE = SHARED_DIR / "samples" / "xentrace-real"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` folder beside the repository checkout; tests that need it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DIR} (it is expected beside the repository checkout)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def real_xentrace_dir(shared_dir) -> Path:
    d = shared_dir / "samples" / "xentrace-real"
    if not d.is_dir():
        pytest.skip(f"real xentrace captures not found at {d}")
    return d
