"""The xentrace event catalog (catalog.toml) and the rules that apply it.

The catalog is data: every event of ../shared/spec/xentrace.md §2-4 with its name and payload field names, with
per-Xen-version layouts where the spec says they differ. This module loads it (plus user overrides), chooses a
layout for a record given the Xen version and the record's word count, names unknown ids by class, and renders
payload fields for people (``tracelens events``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tracelens.errors import TracelensError, UsageError

_FIELD_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<half>lo|hi))?(?:\[(?P<lo>\d+):(?P<hi>\d+)\])?$")


@dataclass(frozen=True)
class Field:
    """One named value inside a payload word: bits [lo, hi) of word ``word`` (0-based), or half of a u64."""

    name: str
    word: int
    lo: int = 0
    hi: int = 32
    half: str | None = None  # "lo" / "hi" halves of a 64-bit value
    hex: bool = False


@dataclass(frozen=True)
class Layout:
    fields: tuple[Field, ...]
    name: str | None = None
    xen: str | None = None  # condition, e.g. "<4.8", ">=4.19"
    n_extra: int | None = None


@dataclass
class Event:
    id: int
    name: str
    layouts: list[Layout] = field(default_factory=list)
    hypercall: bool = False


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``"4.17"`` or ``"4.17.2"`` -> (4, 17); None passes through."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", str(text))
    if not m:
        raise UsageError(f"xen_version must look like 4.17 or 4.17.2, not {text!r}", "xen_version")
    return int(m.group(1)), int(m.group(2))


def _version_ok(cond: str | None, version: tuple[int, int] | None) -> bool:
    if cond is None:
        return True
    if version is None:
        return False
    m = re.fullmatch(r"(<=|>=|<|>|==)(\d+)\.(\d+)", cond.replace(" ", ""))
    if not m:
        raise ValueError(f"bad xen condition {cond!r}")
    op, ref = m.group(1), (int(m.group(2)), int(m.group(3)))
    return {"<": version < ref, "<=": version <= ref, ">": version > ref, ">=": version >= ref, "==": version == ref}[op]


def _parse_fields(specs, where: str) -> tuple[Field, ...]:
    out = []
    for word, spec in enumerate(specs):
        if spec == "_":
            continue
        for part in str(spec).split("|"):
            is_hex = part.endswith("/x")
            part = part[:-2] if is_hex else part
            m = _FIELD_RE.match(part)
            if not m:
                raise UsageError(f"{where}: bad field spec {spec!r}")
            lo = int(m.group("lo")) if m.group("lo") is not None else 0
            hi = int(m.group("hi")) if m.group("hi") is not None else 32
            half = m.group("half")
            out.append(Field(m.group("name"), word, lo, hi, half, is_hex or half is not None))
    return tuple(out)


class Catalog:
    """Event definitions, indexed by id; built from the shipped catalog.toml plus optional override files."""

    def __init__(self, data: dict, extra: list[tuple[str, dict]] = ()):
        self.events: dict[int, Event] = {}
        self.classes: list[tuple[int, int, str]] = []
        self.tables: dict[str, dict[int, str]] = {}
        try:
            self._load(data, "catalog.toml")
        except UsageError as e:  # the shipped file: an installation problem, not the user's
            raise _damaged_install(e) from None
        for where, d in extra:
            self._load(d, where)

    def _load(self, data: dict, where: str) -> None:
        """Add one catalog document; every malformed entry is a UsageError naming the file and the entry's key."""
        try:
            self._load_checked(data, where)
        except UsageError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise UsageError(f"{where}: malformed catalog entry ({type(e).__name__}: {e})") from None

    def _load_checked(self, data: dict, where: str) -> None:
        for key in ("event", "class"):
            if not isinstance(data.get(key, []), list):
                raise UsageError(f"{where}: '{key}' must be an array of tables ([[{key}]])")
        for i, ev in enumerate(data.get("event", [])):
            here = f"{where}: event #{i + 1}"
            try:
                eid = int(ev["id"])
                name = str(ev["name"])
            except (KeyError, TypeError, ValueError):
                raise UsageError(f"{here}: every event needs an integer id and a name") from None
            if not 0 <= eid <= 0x0FFFFFFF:
                raise UsageError(f"{here}: id {eid:#x} is not a 28-bit event id")
            layouts = []
            for lay in ev.get("layout", []):
                layouts.append(Layout(_parse_fields(lay.get("fields", []), here), lay.get("name"), lay.get("xen"), lay.get("n_extra")))
            if "fields" in ev or not layouts:
                layouts.append(Layout(_parse_fields(ev.get("fields", []), here)))
            self.events[eid] = Event(eid, name, layouts, bool(ev.get("hypercall", False)))
        for i, c in enumerate(data.get("class", [])):
            here = f"{where}: class #{i + 1}"
            if not isinstance(c, dict):
                raise UsageError(f"{here}: a class is a table with mask, value and name")
            for k in ("mask", "value"):
                if type(c.get(k)) is not int or not 0 <= c[k] <= 0x0FFFFFFF:
                    raise UsageError(f"{here}: '{k}' must be an integer between 0 and 0x0fffffff, not {c.get(k)!r}")
            if not isinstance(c.get("name"), str) or not c["name"]:
                raise UsageError(f"{here}: 'name' must be a non-empty string")
            self.classes.append((c["mask"], c["value"], c["name"]))
        for key, val in data.items():
            if isinstance(val, dict):
                try:
                    self.tables.setdefault(key, {}).update({int(k): str(v) for k, v in val.items()})
                except ValueError:
                    raise UsageError(f"{where}: [{key}]: keys must be integers") from None

    # -- lookups -------------------------------------------------------------------------------------------------
    def class_name(self, event: int) -> str:
        for mask, value, name in self.classes:
            if event & mask == value:
                return name
        return "UNKNOWN"

    def layout(self, event: int, n_extra: int | None, version: tuple[int, int] | None) -> tuple[str, Layout | None]:
        """(name, layout) for a record; unknown ids get a generic name and no layout."""
        ev = self.events.get(event)
        if ev is None:
            return self.generic_name(event), None
        for lay in ev.layouts:
            if lay.xen is not None and not _version_ok(lay.xen, version):
                continue
            if lay.n_extra is not None and n_extra is not None and lay.n_extra != n_extra:
                continue
            return (lay.name or ev.name), lay
        return ev.name, ev.layouts[-1]

    def generic_name(self, event: int) -> str:
        cls = self.class_name(event)
        if cls == "GUEST":
            return f"GUEST_{event & 0xFFF:#05x}"
        if event & 0x0FFFF000 == 0x00022000:
            sched = self.tables.get("schedulers", {}).get((event >> 9) & 7, f"SCHED{(event >> 9) & 7}")
            return f"{sched}_EV{event & 0x1FF}"
        return f"{cls}_{event:#010x}"

    def hypercall_name(self, op: int) -> str:
        return self.tables.get("hypercalls", {}).get(op, f"hypercall_{op}")


def _damaged_install(reason) -> TracelensError:
    """The error for a built-in catalog that cannot be read: tracelens itself is damaged (exit code 70)."""
    where = resources.files(__package__).joinpath("catalog.toml")
    return TracelensError(f"the built-in event catalog {where} is damaged ({reason}): reinstall tracelens")


@lru_cache(maxsize=8)
def _load_cached(paths: tuple[str, ...]) -> Catalog:
    try:
        data = tomllib.loads(resources.files(__package__).joinpath("catalog.toml").read_text("utf-8"))
    except (OSError, ValueError) as e:  # missing, not UTF-8, not TOML
        raise _damaged_install(e) from None
    extra = []
    for p in paths:
        from tracelens.detect import read_capped

        try:
            text = read_capped(p).decode("utf-8")
        except OSError as e:
            raise UsageError(f"{p}: cannot read catalog file: {e.strerror}") from None
        except ValueError as e:  # too large, or not UTF-8
            raise UsageError(f"{p}: not a catalog file: {e}") from None
        try:
            extra.append((p, tomllib.loads(text)))
        except RecursionError:
            raise UsageError(f"{p}: not a valid TOML catalog: arrays or tables nested too deeply") from None
        except ValueError as e:  # TOMLDecodeError, or an integer of thousands of digits
            raise UsageError(f"{p}: not a valid TOML catalog: {e}") from None
    return Catalog(data, extra)


def load_catalog(extra_files=()) -> Catalog:
    """The shipped catalog plus user files (same TOML shape; later files override earlier ids)."""
    return _load_cached(tuple(str(p) for p in extra_files))


# -- Xen version guess -------------------------------------------------------------------------------------------


@dataclass
class LayoutGuess:
    """Which per-version layouts a capture uses, and why. ``version`` is what the field decoders use."""

    version: tuple[int, int] | None
    label: str
    reasons: list[str]


def guess_layout(id_counts: dict[tuple[int, int], int], decrease_res=None) -> LayoutGuess:
    """The documented heuristic (docs/xentrace.md, "Xen layout guess"), from (event, n_extra) counts.

    1. SWITCH_INFPREV with 2 words or INFNEXT with 3 words: written by Xen < 4.8.
    2. SVM exit ids 0x00081003/0x00081103: Xen >= 4.19.
    3. DECREASE_RESERVATION payloads (``decrease_res``: (d3, d4) pairs): a new-layout d4 is a small order and d3 a
       plausible domid; otherwise the pre-4.18 packing with stale d4.
    4. Otherwise: assume the current layouts (>= 4.19) and say so.
    """
    reasons = []
    if id_counts.get((0x0002800E, 2)) or id_counts.get((0x0002800F, 3)):
        reasons.append("2-word SWITCH_INFPREV / 3-word SWITCH_INFNEXT records (pre-4.8 layout)")
        return LayoutGuess((4, 7), "<4.8", reasons)
    if any(id_counts.get((0x00081003, n)) or id_counts.get((0x00081103, n)) for n in range(8)):
        reasons.append("SVM exit ids 0x00081003/0x00081103 (introduced in 4.19)")
        return LayoutGuess((4, 19), ">=4.19", reasons)
    if decrease_res is not None and len(decrease_res):
        import numpy as np

        d3, d4 = decrease_res
        new_ok = np.all((d4 <= 18) & (d3 < 0x7FF0))
        if new_ok:
            reasons.append("DECREASE_RESERVATION payloads have a small order in d4 and a domid in d3 (4.18+)")
            return LayoutGuess((4, 18), ">=4.18", reasons)
        reasons.append("DECREASE_RESERVATION payloads carry domid|order<<16 in d3 and stale d4 (pre-4.18)")
        return LayoutGuess((4, 17), "<4.18", reasons)
    if any(id_counts.get((0x0002800E, 3)) or id_counts.get((0x0002800F, 4)) for _ in (0,)):
        reasons.append("3-word SWITCH_INFPREV / 4-word SWITCH_INFNEXT (4.8+); nothing narrows it further")
        return LayoutGuess(None, ">=4.8 (assuming current layouts)", reasons)
    reasons.append("no version-specific records; assuming current layouts")
    return LayoutGuess(None, "unknown (assuming current layouts)", reasons)


# -- rendering ---------------------------------------------------------------------------------------------------


def field_values(layout: Layout | None, words: list[int]) -> list[tuple[str, int, bool]]:
    """(name, value, hex) for each field present in ``words`` (the record's payload, d1 first)."""
    if layout is None:
        return [(f"d{i + 1}", w, True) for i, w in enumerate(words)]
    out: list[tuple[str, int, bool]] = []
    halves: dict[str, int] = {}
    for f in layout.fields:
        if f.word >= len(words):
            continue
        v = words[f.word]
        if f.half is not None:
            halves[f.name] = halves.get(f.name, 0) | (v << 32 if f.half == "hi" else v)
            if f.half == "lo" and not any(g.name == f.name and g.half == "hi" and g.word < len(words) for g in layout.fields):
                out.append((f.name, halves[f.name], True))
            if f.half == "hi":
                out.append((f.name, halves[f.name], True))
            continue
        v = (v >> f.lo) & ((1 << (f.hi - f.lo)) - 1)
        out.append((f.name, v, f.hex))
    return out


def hypercall_args(words: list[int]) -> tuple[int, list[int]]:
    """Decode a PV HYPERCALL_V2/SUBCALL payload (spec §4.4): (op, recorded arguments in increasing index)."""
    if not words:
        return -1, []
    d1 = words[0]
    op = d1 & 0xFFFFF
    args = []
    k = 1
    for i in range(6):
        kind = (d1 >> (20 + 2 * i)) & 3
        if kind == 1 and k < len(words):
            args.append(words[k])
            k += 1
        elif kind == 2 and k + 1 < len(words):
            args.append(words[k] | (words[k + 1] << 32))
            k += 2
    return op, args


def format_fields(cat: Catalog, event: int, words: list[int], version) -> str:
    """``name=value`` pairs for a record, the way ``tracelens events`` prints them."""
    name, layout = cat.layout(event, len(words), version)
    ev = cat.events.get(event)
    if ev is not None and ev.hypercall and words:
        op, args = hypercall_args(words)
        parts = [f"op={cat.hypercall_name(op)}({op})"]
        sub = {20: "gnttabop", 29: "schedop", 24: "vcpuop"}.get(op)
        for i, a in enumerate(args):
            if i == 0 and sub:
                label = cat.tables.get(sub, {}).get(a & 0xFFF, str(a))
                parts.append(f"cmd={label}")
            else:
                parts.append(f"a{i}={a:#x}")
        return " ".join(parts)
    parts = []
    for fname, v, is_hex in field_values(layout, words):
        if fname in ("reason",) and event in (0x00028007, 0x00028010):
            parts.append(f"reason={cat.tables.get('shutdown_reasons', {}).get(v, v)}")
        elif fname == "op" and event == 0x00082012:
            parts.append(f"op={cat.hypercall_name(v)}({v})")
        else:
            parts.append(f"{fname}={v:#x}" if is_hex else f"{fname}={v}")
    return " ".join(parts)
