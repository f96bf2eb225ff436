"""Which records ``tracelens events`` shows: :class:`EventSelection`, turned into one polars filter expression
over the decoded records (columns: docs/xentrace.md) that :meth:`tracelens.capture.Capture.events` pushes into the
batch reader (tracelens.pushdown: TSC bounds and pCPU terms skip whole batches).

Event ids and classes come from the event catalog (tracelens.parsers.xentrace.catalog): a name selects its id, a
name ending in ``*`` every id whose name starts so, and a class every id the catalog's class rules put in it (the
first rule that matches an id names its class, as ``Catalog.class_name`` does). TSCs are cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracelens.errors import UsageError
from tracelens.options import check_int


def _ints(value, param: str, bits: int) -> tuple[int, ...]:
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < (1 << bits):
            raise UsageError(f"{param} must be integers between 0 and {(1 << bits) - 1}, not {v!r}", param)
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class EventSelection:
    """``events``: event ids (int) or names (``MEM_PAGE_GRANT_MAP``, ``MEM_*``); ``classes``: event class names
    (``MEM``, ``SCHED``...: the catalog's); ``doms``: the domains the records are attributed to; ``cpus``: pCPUs;
    ``tsc_from``/``tsc_to``: the first and last TSC (cycles, inclusive); ``limit``: at most that many records.
    Every criterion given must hold; an empty one selects everything."""

    events: tuple[int | str, ...] = ()
    classes: tuple[str, ...] = ()
    doms: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()
    tsc_from: int | None = None
    tsc_to: int | None = None
    limit: int | None = None

    def __post_init__(self):
        events = []
        for e in self.events:
            if isinstance(e, str):
                try:  # "0x0010f001" as the command line gives it
                    e = int(e, 0)
                except ValueError:
                    pass
            if isinstance(e, bool) or not isinstance(e, (int, str)) or (isinstance(e, int) and not 0 <= e <= 0x0FFFFFFF):
                raise UsageError(f"events must be 28-bit event ids or names, not {e!r}", "events")
            events.append(e)
        object.__setattr__(self, "events", tuple(events))
        object.__setattr__(self, "classes", tuple(str(c).upper() for c in self.classes))
        object.__setattr__(self, "doms", _ints(self.doms, "doms", 16))
        object.__setattr__(self, "cpus", _ints(self.cpus, "cpus", 16))
        check_int(self.tsc_from, "tsc_from", 0, (1 << 64) - 1)
        check_int(self.tsc_to, "tsc_to", 0, (1 << 64) - 1)
        check_int(self.limit, "limit", 0)

    def event_ids(self, catalog) -> list[int] | None:
        """The ids ``events`` names (None: no event criterion); an unknown name is a UsageError."""
        if not self.events:
            return None
        out: set[int] = set()
        for e in self.events:
            if isinstance(e, int):
                out.add(e)
                continue
            pat = e.upper()
            hits = {ev.id for ev in catalog.events.values()
                    if ev.name.upper() == pat or (pat.endswith("*") and ev.name.upper().startswith(pat[:-1]))}
            if not hits:
                raise UsageError(f"events {e!r}: no such event id or name in the event catalog", "events")
            out |= hits
        return sorted(out)

    def predicate(self, catalog):
        """The polars expression that selects these records (None: no criterion)."""
        import polars as pl

        terms = []
        ids = self.event_ids(catalog)
        if ids is not None:
            terms.append(pl.col("event").is_in(ids))
        if self.classes:
            known = {name for _m, _v, name in catalog.classes}
            unknown = sorted(set(self.classes) - known)
            if unknown:
                raise UsageError(f"classes {', '.join(unknown)}: no such event class (known: "
                                 f"{', '.join(sorted(known))})", "classes")
            terms.append(class_of(catalog).is_in(list(self.classes)))
        if self.doms:
            terms.append(pl.col("dom").is_in(list(self.doms)))
        if self.cpus:
            terms.append(pl.col("cpu").is_in(list(self.cpus)))
        if self.tsc_from is not None:
            terms.append(pl.col("tsc") >= self.tsc_from)
        if self.tsc_to is not None:
            terms.append(pl.col("tsc") <= self.tsc_to)
        if not terms:
            return None
        expr = terms[0]
        for t in terms[1:]:
            expr = expr & t
        return expr


def class_of(catalog):
    """A polars expression: the class name of each record's ``event`` under the catalog's class rules (the first
    rule whose mask and value match), "UNKNOWN" when none does."""
    import polars as pl

    if not catalog.classes:
        return pl.lit("UNKNOWN")
    chain = None
    for mask, value, name in catalog.classes:
        cond = (pl.col("event") & mask) == value
        chain = pl.when(cond).then(pl.lit(name)) if chain is None else chain.when(cond).then(pl.lit(name))
    return chain.otherwise(pl.lit("UNKNOWN"))


def listing(catalog) -> list[str]:
    """One line per event of the catalog, by id: id, class, name, payload fields (``tracelens events --list``)."""
    lines = []
    for e in sorted(catalog.events.values(), key=lambda e: e.id):
        fields = " ".join(f.name for f in e.layouts[-1].fields)
        lines.append(f"0x{e.id:08x}  {catalog.class_name(e.id):7s} {e.name:32s} {fields}")
    return lines
