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

    def column(self, name: str, words):
        """Field ``name`` of many records at once (i64 array): ``words[j]`` holds payload word j (d<j+1>) of every
        record. The vectorised twin of :func:`field_values`: halves joined, bit fields shifted and masked."""
        import numpy as np

        parts = [f for f in self.fields if f.name == name]
        if not parts:
            raise KeyError(f"the layout has no field {name!r}")
        out = None
        for f in parts:
            w = np.asarray(words[f.word], np.int64)
            if f.half is not None:
                v = w << 32 if f.half == "hi" else w
                out = v if out is None else out | v
            else:
                out = (w >> f.lo) & ((1 << (f.hi - f.lo)) - 1)
        return out


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


def _check_entry(c, here: str, numbers: tuple[str, ...]) -> None:
    """A [[class]], [[subclass]] or [[family]] table: a non-empty name and 28-bit integers."""
    if not isinstance(c, dict):
        raise UsageError(f"{here}: an entry is a table with {', '.join(numbers)} and name")
    for k in numbers:
        if type(c.get(k)) is not int or not 0 <= c[k] <= 0x0FFFFFFF:
            raise UsageError(f"{here}: '{k}' must be an integer between 0 and 0x0fffffff, not {c.get(k)!r}")
    if not isinstance(c.get("name"), str) or not c["name"]:
        raise UsageError(f"{here}: 'name' must be a non-empty string")


class Catalog:
    """Event definitions, indexed by id; built from the shipped catalog.toml plus optional override files."""

    def __init__(self, data: dict, extra: list[tuple[str, dict]] = ()):
        self.events: dict[int, Event] = {}
        self.ids: dict[str, int] = {}  # event name -> id
        self.classes: list[tuple[int, int, str]] = []
        self.subclasses: dict[str, int] = {}  # name -> class and subclass bits
        self.families: dict[str, tuple[int, int]] = {}  # name -> (value, mask): id & mask == value
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
        for key in ("event", "class", "subclass", "family"):
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
            old = self.events.get(eid)
            if old is not None and self.ids.get(old.name) == eid:
                del self.ids[old.name]
            self.events[eid] = Event(eid, name, layouts, bool(ev.get("hypercall", False)))
            self.ids[name] = eid
        for i, c in enumerate(data.get("class", [])):
            _check_entry(c, f"{where}: class #{i + 1}", ("mask", "value"))
            self.classes.append((c["mask"], c["value"], c["name"]))
        for i, c in enumerate(data.get("subclass", [])):
            _check_entry(c, f"{where}: subclass #{i + 1}", ("value",))
            self.subclasses[c["name"]] = c["value"]
        for i, c in enumerate(data.get("family", [])):
            _check_entry(c, f"{where}: family #{i + 1}", ("mask", "value"))
            self.families[c["name"]] = (c["value"], c["mask"])
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
        if event & SUBCLASS_ID_MASK == self.subclasses.get("SCHED_CLASS"):
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


# -- ids by name -------------------------------------------------------------------------------------------------
# catalog.toml is the one source of the ids code reads: code names an event, a subclass or a family, and takes the
# number from the shipped catalog (user catalogs name records; they do not change what the decoder and the analysis
# mean by a name). The numba kernels resolve theirs at import into module constants (see tracelens._jit.pin_constants).


def event_id(name: str) -> int:
    """The id of the event ``name`` (the catalog's name: ``"MEM_PAGE_GRANT_MAP"``)."""
    try:
        return load_catalog().ids[name]
    except KeyError:
        raise KeyError(f"catalog.toml defines no event named {name!r}") from None


def subclass_id(name: str) -> int:
    """The class and subclass bits of subclass ``name`` (``"SCHED_MIN"``: 0x00021000), the value ``xentrace -e``
    takes; an id belongs to it when ``id & SUBCLASS_ID_MASK == value``."""
    try:
        return load_catalog().subclasses[name]
    except KeyError:
        raise KeyError(f"catalog.toml defines no subclass named {name!r}") from None


def family(name: str) -> tuple[int, int]:
    """(value, mask) of the event family ``name``: an id belongs to it when ``id & mask == value``."""
    try:
        return load_catalog().families[name]
    except KeyError:
        raise KeyError(f"catalog.toml defines no family named {name!r}") from None


#: the class bits (16-27) and the subclass bits (12-15) of an id (spec §3.1); ``id & SUBCLASS_ID_MASK`` is the id of
#: its subclass (what :func:`subclass_id` returns)
CLASS_BITS = 0x0FFF0000
SUBCLASS_BITS = 0x0000F000
SUBCLASS_ID_MASK = CLASS_BITS | SUBCLASS_BITS


# -- Xen version guess -------------------------------------------------------------------------------------------


@dataclass
class LayoutGuess:
    """Which per-version layouts a capture uses, and why. ``version`` is what the field decoders use."""

    version: tuple[int, int] | None
    label: str
    reasons: list[str]


def given_layout(version: tuple[int, int]) -> LayoutGuess:
    """The layouts of a Xen version the caller named (DecodeOptions.xen_version), instead of a guess."""
    return LayoutGuess(version, f"{version[0]}.{version[1]} (given)", ["given as xen_version"])


def guess_decrease_reservation(d3, d4) -> LayoutGuess:
    """Rule 3 of :func:`guess_layout`, from the d3/d4 words (u32 arrays) of the DECREASE_RESERVATION records with
    four payload words or more (spec §4.1): when every d4 is a small order (<= 18) and every d3 a plausible domid
    (below DOMID_FIRST_RESERVED 0x7ff0), the 4.18+ layout; otherwise the pre-4.18 packing (domid | order << 16 in
    d3, stale stack bytes in d4). The decoder's guess and the balloon ledger both decide with it."""
    import numpy as np

    d3, d4 = np.asarray(d3), np.asarray(d4)
    if bool(np.all((d4 <= 18) & (d3 < 0x7FF0))):
        return LayoutGuess((4, 18), ">=4.18",
                           ["DECREASE_RESERVATION payloads have a small order in d4 and a domid in d3 (4.18+)"])
    return LayoutGuess((4, 17), "<4.18",
                       ["DECREASE_RESERVATION payloads carry domid|order<<16 in d3 and stale d4 (pre-4.18)"])


def guess_layout(id_counts: dict[tuple[int, int], int], decrease_res=None) -> LayoutGuess:
    """The documented heuristic (docs/xentrace.md, "Xen layout guess"), from (event, n_extra) counts.

    1. SWITCH_INFPREV with 2 words or INFNEXT with 3 words: written by Xen < 4.8.
    2. SVM exit ids 0x00081003/0x00081103: Xen >= 4.19.
    3. DECREASE_RESERVATION payloads (``decrease_res``: the (d3, d4) arrays of its records with 4+ words; see
       :func:`guess_decrease_reservation`).
    4. Otherwise: assume the current layouts (>= 4.19) and say so.
    """
    reasons = []
    prev, nxt = event_id("SCHED_SWITCH_INFPREV"), event_id("SCHED_SWITCH_INFNEXT")
    svm = (event_id("HVM_SVM_EXIT"), event_id("HVM_SVM_EXIT64"))
    if id_counts.get((prev, 2)) or id_counts.get((nxt, 3)):
        reasons.append("2-word SWITCH_INFPREV / 3-word SWITCH_INFNEXT records (pre-4.8 layout)")
        return LayoutGuess((4, 7), "<4.8", reasons)
    if any(id_counts.get((ev, n)) for ev in svm for n in range(8)):
        reasons.append(f"SVM exit ids {svm[0]:#010x}/{svm[1]:#010x} (introduced in 4.19)")
        return LayoutGuess((4, 19), ">=4.19", reasons)
    if decrease_res is not None and len(decrease_res[0]):
        return guess_decrease_reservation(*decrease_res)
    if id_counts.get((prev, 3)) or id_counts.get((nxt, 4)):
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


#: hypercalls whose first argument is a command, and the catalog table that names it
SUBOP_TABLES = {"grant_table_op": "gnttabop", "sched_op": "schedop", "vcpu_op": "vcpuop"}


def format_fields(cat: Catalog, event: int, words: list[int], version) -> str:
    """``name=value`` pairs for a record, the way ``tracelens events`` prints them."""
    name, layout = cat.layout(event, len(words), version)
    ev = cat.events.get(event)
    if ev is not None and ev.hypercall and words:
        op, args = hypercall_args(words)
        parts = [f"op={cat.hypercall_name(op)}({op})"]
        sub = SUBOP_TABLES.get(cat.hypercall_name(op))
        for i, a in enumerate(args):
            if i == 0 and sub:
                label = cat.tables.get(sub, {}).get(a & 0xFFF, str(a))
                parts.append(f"cmd={label}")
            else:
                parts.append(f"a{i}={a:#x}")
        return " ".join(parts)
    parts = []
    for fname, v, is_hex in field_values(layout, words):
        if fname in ("reason",) and event in (event_id("SCHED_SHUTDOWN"), event_id("SCHED_SHUTDOWN_CODE")):
            parts.append(f"reason={cat.tables.get('shutdown_reasons', {}).get(v, v)}")
        elif fname == "op" and event == event_id("HVM_VMMCALL"):
            parts.append(f"op={cat.hypercall_name(v)}({v})")
        else:
            parts.append(f"{fname}={v:#x}" if is_hex else f"{fname}={v}")
    return " ".join(parts)
