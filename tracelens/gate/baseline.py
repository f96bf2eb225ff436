"""Baselines: the fingerprints of findings a team has accepted, so that only *new* findings fail the gate.

A finding's fingerprint (docs/rules.md) hashes rule, domid, epoch and object only, so it survives a re-capture of
the same scenario. The file is JSON (``schema_version`` 1)::

    {"schema_version": 1, "tool": "tracelens 0.1.0",
     "accepted": [{"fingerprint": "0637cd20f334c43d", "rule": "TL-GNT-001", "domid": 1, "epoch": 0,
                   "object": "mapper:d0", "capture": "sample-traces/persistent-grants.xentrace"}]}

Only ``fingerprint`` is used for matching; the other members say what was accepted, for reviewers. Errors are
:class:`~tracelens.errors.PolicyError` naming the file and line (exit code 2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from tracelens.errors import PolicyError

SCHEMA_VERSION = 1
_FP = re.compile(r"[0-9a-f]{16}")


@dataclass
class Baseline:
    path: str | None
    accepted: dict = field(default_factory=dict)  # fingerprint -> entry (dict)

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint in self.accepted


def _line_of(text: str, needle: str) -> int | None:
    i = text.find(needle)
    return text.count("\n", 0, i) + 1 if i >= 0 else None


def parse_baseline(text: str, path: str = "baseline.json") -> Baseline:
    def fail(message: str, line: int | None = None):
        raise PolicyError(f"{path}:{line}: {message}" if line else f"{path}: {message}")

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})", e.lineno)
    except RecursionError:
        fail("invalid JSON: arrays or objects nested too deeply")
    except ValueError as e:  # an integer of thousands of digits (Python's int conversion limit)
        fail(f"invalid JSON: {e}")
    if not isinstance(doc, dict):
        fail("a baseline is a JSON object with schema_version and accepted", 1)
    sv = doc.get("schema_version")
    if type(sv) is not int or sv != SCHEMA_VERSION:  # true and 1.0 compare equal to 1: not a version
        fail(f"schema_version must be {SCHEMA_VERSION} (an integer), not {json.dumps(sv)}",
             _line_of(text, '"schema_version"') or 1)
    acc = doc.get("accepted")
    if not isinstance(acc, list):
        fail("'accepted' must be an array of {fingerprint, ...} objects", _line_of(text, '"accepted"') or 1)
    out = Baseline(path=path)
    for i, e in enumerate(acc):
        fp = e.get("fingerprint") if isinstance(e, dict) else None
        if not isinstance(fp, str) or not _FP.fullmatch(fp):
            line = _line_of(text, json.dumps(fp)) if isinstance(fp, str) else None
            fail(f"accepted[{i}]: fingerprint must be 16 lowercase hex digits (as tracelens writes them), "
                 f"not {fp!r}", line)
        out.accepted[fp] = e
    return out


def load_baseline(path) -> Baseline:
    from tracelens.detect import read_capped

    path = os.fspath(path)
    try:
        text = read_capped(path).decode("utf-8")
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the baseline file: {e.strerror} "
                          "(write one with tracelens gate --write-baseline FILE CAPTURE...)") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 JSON") from None
    except ValueError as e:
        raise PolicyError(f"{path}: {e}") from None
    return parse_baseline(text, path)


def baseline_document(entries: list[dict]) -> dict:
    """The JSON object of a baseline accepting ``entries`` (dicts with fingerprint, rule, domid, epoch, object,
    capture), one per fingerprint, sorted for stable diffs."""
    from tracelens import __version__

    seen: dict[str, dict] = {}
    for e in entries:
        seen.setdefault(e["fingerprint"], e)
    rows = sorted(seen.values(), key=lambda e: (e["rule"], str(e["capture"]), e["fingerprint"]))
    return {"schema_version": SCHEMA_VERSION, "tool": f"tracelens {__version__}", "accepted": rows}


def write_baseline(path, entries: list[dict]) -> None:
    """Write the baseline atomically."""
    from tracelens.output import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(baseline_document(entries), f, indent=2)
            f.write("\n")
