"""Slow, obviously-correct pure-Python references for the analysis kernels (tracelens/analysis/_kernels.py).

They read the decoded capture row by row (dicts in the decoder's time order) and know nothing of the fast code.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict

MAP, UNMAP = 0x0010F001, 0x0010F002


def epoch_of(bounds: dict[int, list[int]], domid, tsc: int) -> int:
    """Number of boundaries of ``domid`` at or before ``tsc``."""
    return bisect_right(sorted(bounds.get(domid, [])), tsc)


def grant_ledger(rows: list[dict], boundaries: list[tuple[int, int]]) -> dict:
    """{(mapper or None, granter, granter epoch): {"maps", "unmaps", "late", "outstanding_at_boundary"}}.

    Every pair seen gets a row for each epoch of its granter. ``late`` counts unmaps made while handles that were
    outstanding at the granter's latest boundary remain unreleased (oldest first: every unmap releases one of them
    while any remain). ``outstanding_at_boundary`` is maps - unmaps of the pair over the whole capture before the
    boundary that ends the epoch (None for the last, open epoch).
    """
    bounds: dict[int, list[int]] = defaultdict(list)
    for d, t in boundaries:
        bounds[d].append(t)
    out: dict = {}
    balance: dict = defaultdict(int)
    carried: dict = defaultdict(int)
    seen_epoch: dict = defaultdict(int)
    history: dict = defaultdict(list)  # pair -> [(tsc, +1/-1)]
    for r in rows:
        if r["event"] not in (MAP, UNMAP) or r["n_extra"] < 1:
            continue
        mapper, granter = r["dom"], r["d1"] & 0xFFFF
        pair = (mapper, granter)
        e = epoch_of(bounds, granter, r["tsc"])
        if e > seen_epoch[pair]:
            carried[pair] = max(balance[pair], 0)
            seen_epoch[pair] = e
        row = out.setdefault((mapper, granter, e), {"maps": 0, "unmaps": 0, "late": 0})
        if r["event"] == MAP:
            balance[pair] += 1
            row["maps"] += 1
            history[pair].append((r["tsc"], 1))
        else:
            balance[pair] -= 1
            row["unmaps"] += 1
            history[pair].append((r["tsc"], -1))
            if carried[pair] > 0:
                carried[pair] -= 1
                row["late"] += 1
    for (mapper, granter), hist in history.items():
        bt = sorted(bounds.get(granter, []))
        for e in range(len(bt) + 1):
            row = out.setdefault((mapper, granter, e), {"maps": 0, "unmaps": 0, "late": 0})
            row["outstanding_at_boundary"] = sum(s for t, s in hist if t < bt[e]) if e < len(bt) else None
    return out


# -- record categories (tracelens.analysis._kernels.classify) ----------------------------------------------------
def category(event: int, n_extra: int) -> str | None:
    """Which analysis input a record is, straight from the spec's ids and minimum payloads (§2.5, §4.1-4.5).
    Scheduling records are not listed (the analysis reads them in place after a kexec shutdown), except runstate
    changes into or out of offline (state 3)."""
    if event in (0x00028007, 0x00028010):
        return "shutdown" if n_extra >= 3 else None
    if event in (0x00028002, 0x00041001, 0x00041002):
        return "life" if n_extra >= 1 else None
    if event in (0x0010F001, 0x0010F002):
        return "grant" if n_extra >= 1 else None
    if event == 0x0010F005:
        return "decrease" if n_extra >= 4 else None
    if event in (0x0020100D, 0x0020200E, 0x00082012):
        return "hypercall" if n_extra >= 1 else None
    if event in (0x00802004, 0x00802006, 0x00802008):
        return "irq" if n_extra >= 1 else None
    if 0x0800F000 <= event <= 0x0800FFFF:
        return "guest"
    if event == 0x0001F001:
        return "lost"  # any length: a short LOST_RECORDS is damage the analysis must see
    if event & 0xFFFFFC0F == 0x00021001:  # runstate change: old state bits 8-9, new state bits 4-5
        old, new = (event >> 8) & 3, (event >> 4) & 3
        if old != new and 3 in (old, new):
            return "offline" if n_extra >= 1 else None
    return None


# -- the ledgers' gathers (tracelens.analysis._kernels.grant_rows, irq_tallies) ---------------------------------
IRQ_CLEAR_VECTOR, IRQ_ASSIGN_VECTOR, IRQ_HANDLED = 0x00802004, 0x00802006, 0x00802008  # spec §4.2


def grant_rows(rows: list[dict]) -> list[tuple[int, int, int, bool]]:
    """(mapper, granter, tsc, is MAP) of each grant record, in order: the mapper is the running domain (-1 when the
    decoder does not know it), the granter the low 16 bits of d1 (0 when the record has no d1)."""
    return [(-1 if r["dom"] is None else r["dom"], 0 if r["d1"] is None else r["d1"] & 0xFFFF, r["tsc"],
             r["event"] == MAP) for r in rows]


def irq_tallies(rows: list[dict]) -> tuple[dict[int, int], list[tuple[int, bool]]]:
    """IRQ_HANDLED deliveries per irq (d1), and the (d1, is ASSIGN) of the ASSIGN_VECTOR / CLEAR_VECTOR records
    (irq in bits 0-15, vector in bits 16-31), in order."""
    handled: dict[int, int] = defaultdict(int)
    vectors = []
    for r in rows:
        if r["event"] == IRQ_HANDLED:
            handled[r["d1"]] += 1
        elif r["event"] in (IRQ_ASSIGN_VECTOR, IRQ_CLEAR_VECTOR):
            vectors.append((r["d1"], r["event"] == IRQ_ASSIGN_VECTOR))
    return dict(handled), vectors
