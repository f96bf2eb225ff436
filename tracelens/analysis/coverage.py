"""Coverage: which event classes a capture can speak for (spec ../shared/spec/xentrace.md §3.1-3.3, §2.2).

xentrace records only the classes its event mask selects (``xentrace -e``, Xen's ``tevt_mask``): Xen's ``trace()``
drops a record whose class bits (16-27) share no bit with the mask, or whose subclass bits (12-15) share none. A
capture recorded with ``-e 0x0002f000`` (scheduler only) has no MEM record *because none could be written*, not
because no grant was mapped, so a verdict built on "no MEM record" would be a verdict from records that could not
exist.

A class or subclass is **covered** when the capture holds at least one record of it (then the mask selected it),
or when the user declares the mask it was recorded with (``--trace-mask``, ``gate.trace_mask``): for a host that was
simply idle, zero records of a declared class are evidence. Counts come from the per-event-id record counts, which
the streamed analysis has from its first pass and the in-memory one computes from the event column
(:func:`tracelens.analysis.records.event_counts`), so both give the same object.

What the verdicts and rules rely on is data (:data:`SUBCLASSES`): a ``safe`` kexec-safety verdict says that no
balloon-out, no foreign map and no outstanding grant were recorded in an epoch whose boundaries are where the
analysis put them, so it needs MEM, SCHED_MIN and SCHED_VERBOSE covered (:data:`VERDICT_NEEDS`); when one is not, the
verdict is ``not covered`` (tracelens/analysis/safety.py).
"""

from __future__ import annotations

from tracelens.parsers.xentrace.catalog import CLASS_BITS as CLASS_MASK
from tracelens.parsers.xentrace.catalog import SUBCLASS_BITS as SUBCLASS_MASK
from tracelens.parsers.xentrace.catalog import load_catalog, subclass_id

#: the trace classes of Xen's public trace.h (spec §3.2), from the catalog's [[class]] table: name -> class id with
#: every subclass bit set (what ``xentrace -e`` takes for the whole class)
CLASSES = {name: value | SUBCLASS_MASK for _mask, value, name in load_catalog().classes}

#: the subclasses the analysis reads (spec §3.3; ids from the catalog's [[subclass]] table): name -> (id, what needs it)
SUBCLASSES = {name: (subclass_id(name), why) for name, why in (
    ("SCHED_MIN", "runstate changes: where a kexec'd domain runs again, who wrote each record"),
    ("SCHED_VERBOSE", "SCHED_SHUTDOWN (soft_reset and crash boundaries), SCHED_DOM_REM"),
    ("DOM0_DOMOPS", "DOM0_DOM_ADD/REM: recreate boundaries"),
    ("MEM", "grant MAP/UNMAP (TL-GNT-*), DECREASE_RESERVATION (TL-BAL-001)"),
    ("HVM_HANDLER", "VMMCALL: hypercalls of HVM and PVH guests"),
    ("PV_ENTRY", "PV_HYPERCALL_V2: hypercalls of PV guests"),
    ("PV_SUBCALL", "multicall entries"),
    ("HW_IRQ", "IRQ vector assignments and deliveries"),
    ("GUEST", "TRC_GUEST tracepoints of instrumented guests (TL-GST-*)"),
)}

#: the subclasses a ``safe`` verdict depends on
VERDICT_NEEDS = ("SCHED_MIN", "SCHED_VERBOSE", "MEM")

#: the words ``xentrace -e`` accepts (tools/xentrace/xentrace.c), plus the other class names
MASK_WORDS = {"all": CLASS_MASK | SUBCLASS_MASK, "gen": CLASSES["GEN"], "sched": CLASSES["SCHED"], "dom0op": CLASSES["DOM0OP"],
              "hvm": CLASSES["HVM"], "mem": CLASSES["MEM"], "pv": CLASSES["PV"], "shadow": CLASSES["SHADOW"],
              "hw": CLASSES["HW"], "guest": CLASSES["GUEST"]}


def parse_mask(text) -> int:
    """A trace mask as ``xentrace -e`` takes it: a number (``0x0010f000``, decimal) or words (``sched``,
    ``all``; several joined with ``,`` or ``|``). Raises ValueError with the reason."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip().lower()
        if not s:
            raise ValueError("an empty trace mask")
        value = 0
        for part in s.replace("|", ",").split(","):
            part = part.strip()
            if part in MASK_WORDS:
                value |= MASK_WORDS[part]
                continue
            try:
                value |= int(part, 0)
            except ValueError:
                raise ValueError(f"not a trace mask: {part!r} (a number such as 0x0010f000, or words: "
                                 f"{', '.join(MASK_WORDS)})") from None
    if not 0 < value <= 0xFFFFFFFF:
        raise ValueError(f"a trace mask must be a 32-bit value with some class bit set, not {value:#x}")
    if not value & CLASS_MASK or not value & SUBCLASS_MASK:
        raise ValueError(f"trace mask {value:#010x} selects nothing: Xen needs a class bit (16-27) and a subclass "
                         "bit (12-15)")
    return value


def mask_selects(mask: int, ident: int) -> bool:
    """Whether Xen's filter (spec §3.1) keeps records of the class/subclass ``ident`` under ``mask``."""
    return bool(mask & ident & CLASS_MASK) and bool(mask & ident & SUBCLASS_MASK)


def coverage(event_counts: dict, declared_mask: int | None = None) -> dict:
    """The ``coverage`` object of the JSON contract (docs/analysis.md) from records per event id (a dict
    ``{event: count}``; (event, n_extra) keys are summed)."""
    per_class = {name: 0 for name in CLASSES}
    per_sub = {name: 0 for name in SUBCLASSES}
    for key, n in event_counts.items():
        ev = key[0] if isinstance(key, tuple) else key
        for name, ident in CLASSES.items():
            if ev & CLASS_MASK == ident & CLASS_MASK:
                per_class[name] += n
        for name, (ident, _why) in SUBCLASSES.items():
            if ev & (CLASS_MASK | SUBCLASS_MASK) == ident:
                per_sub[name] += n

    def evidence(count, ident):
        if count:
            return "records"
        if declared_mask is not None and mask_selects(declared_mask, ident):
            return "declared"
        return None

    classes = [{"class": name, "id": f"{ident:#010x}", "records": per_class[name],
                "evidence": evidence(per_class[name], ident)} for name, ident in CLASSES.items()]
    subs = [{"subclass": name, "id": f"{ident:#010x}", "records": per_sub[name],
             "evidence": evidence(per_sub[name], ident), "needed_by": why}
            for name, (ident, why) in SUBCLASSES.items()]
    notes = []
    if declared_mask is not None:
        for c in classes:
            if c["records"] and not mask_selects(declared_mask, int(c["id"], 16)) and c["class"] != "GEN":
                notes.append(f"{c['records']} {c['class']} record(s) although the declared mask "
                             f"{declared_mask:#010x} does not select that class: is it the mask of this capture?")
    covered = {s["subclass"] for s in subs if s["evidence"]}
    return {
        "declared_mask": f"{declared_mask:#010x}" if declared_mask is not None else None,
        "classes": classes,
        "subclasses": subs,
        "verdicts_need": list(VERDICT_NEEDS),
        "uncovered": [n for n in VERDICT_NEEDS if n not in covered],
        "notes": notes,
    }
