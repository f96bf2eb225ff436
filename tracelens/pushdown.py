"""What a polars query over :attr:`tracelens.capture.Capture.records` pushes into the batch reader, and how the
reader uses it to skip whole decoder batches.

polars hands the reader registered with ``polars.io.plugins.register_io_source`` the projected columns, the row
limit and the filter as a polars ``Expr``. An ``Expr`` offers no public way to walk its operators, so
:func:`plan_predicate` reads the expression's serialized form (``Expr.meta.serialize(format="json")``) for the two
kinds of terms that allow skipping: simple comparisons of ``tsc`` with an integer and terms over ``cpu`` alone.
Anything it does not recognise is left to the row filter, so skipping never changes a result. That the installed
polars still serializes those terms as expected is probed once per process (:func:`planner_works`: a warning, and
no skipping, when it does not) and checked by the tests (tests/test_api.py requires batches actually skipped for
every form the planner reads).
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from typing import Any

@dataclass
class ScanRequest:
    """What one scan of :attr:`Capture.records` was asked for by polars, and what it did.

    ``columns``: the projected columns (None: all); ``predicate``: the pushed-down filter (a polars ``Expr``) or
    None; ``n_rows``: the row limit; ``tsc_range``: the (low, high) TSC bounds inferred from the predicate (None
    when unbounded); ``batches``: the decoder batches read; ``batches_skipped``: those dropped because no row could
    match the predicate's TSC bounds or pCPU terms; ``rows``: the rows yielded; ``layout``, ``damage``: below. polars pushes only elementwise
    filters into a scan (``tsc == tsc.max()`` is applied after it), so a per-batch filter is exact."""

    columns: list[str] | None
    predicate: Any
    n_rows: int | None
    tsc_range: tuple[int | None, int | None] = (None, None)
    batches: int = 0
    batches_skipped: int = 0
    rows: int = 0
    #: the decoder's Xen layout ({"label", "version", "reasons"}) and damage (byte ranges the tolerance skipped),
    #: known once the first batch is decoded (they travel in the Arrow schema's metadata, which polars drops)
    layout: dict | None = None
    damage: list | None = None


def _literal_int(node) -> int | None:
    """The integer of a serialized polars literal ({"Scalar": {"UInt64": 5}} or {"Dyn": {"Int": 5}})."""
    if not isinstance(node, dict) or "Literal" not in node:
        return None
    lit = node["Literal"]
    for key in ("Scalar", "Dyn"):
        inner = lit.get(key) if isinstance(lit, dict) else None
        if isinstance(inner, dict) and len(inner) == 1:
            v = next(iter(inner.values()))
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def _conjuncts(node) -> list:
    if isinstance(node, dict) and "BinaryExpr" in node and node["BinaryExpr"].get("op") in ("And", "LogicalAnd"):
        b = node["BinaryExpr"]
        return _conjuncts(b["left"]) + _conjuncts(b["right"])
    return [node]


_FLIP = {"Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq", "Eq": "Eq"}


def _tsc_bound(node) -> tuple[int | None, int | None] | None:
    """(low, high) inclusive bounds on ``tsc`` implied by one conjunct, or None when it is not a simple one."""
    if isinstance(node, dict) and "BinaryExpr" in node:
        b = node["BinaryExpr"]
        op, left, right = b.get("op"), b.get("left"), b.get("right")
        if right == {"Column": "tsc"} and op in _FLIP:
            left, right, op = right, left, _FLIP[op]
        if left != {"Column": "tsc"}:
            return None
        v = _literal_int(right)
        if v is None:
            return None
        return {"Eq": (v, v), "Gt": (v + 1, None), "GtEq": (v, None), "Lt": (None, v - 1), "LtEq": (None, v)}.get(op)
    if isinstance(node, dict) and "Function" in node:
        f = node["Function"]
        fn = f.get("function", {})
        boolean = fn.get("Boolean") if isinstance(fn, dict) else None
        between = boolean.get("IsBetween") if isinstance(boolean, dict) else None
        inp = f.get("input", [])
        if between is not None and len(inp) == 3 and inp[0] == {"Column": "tsc"}:
            lo, hi = _literal_int(inp[1]), _literal_int(inp[2])
            if lo is None or hi is None:
                return None
            closed = between.get("closed", "Both")
            return (lo if closed in ("Both", "Left") else lo + 1, hi if closed in ("Both", "Right") else hi - 1)
    return None


def plan_predicate(predicate) -> tuple[tuple[int | None, int | None], list]:
    """Split a pushed-down predicate into what allows skipping whole batches: inclusive TSC bounds from its simple
    ``tsc`` comparisons, and its terms that involve only ``cpu`` (evaluated on the pCPUs present in a batch).
    Terms it does not understand are left to the row filter, so skipping stays sound. With a polars that
    serializes filters in another form (:func:`planner_works`), nothing is skipped."""
    if predicate is None or not planner_works():
        return (None, None), []
    return _plan(predicate)


def _plan(predicate) -> tuple[tuple[int | None, int | None], list]:
    tree = _tree(predicate)
    if tree is None:
        return (None, None), []
    lo = hi = None
    cpu_terms = []
    for c in _conjuncts(tree):
        b = _tsc_bound(c)
        if b is not None:
            if b[0] is not None:
                lo = b[0] if lo is None else max(lo, b[0])
            if b[1] is not None:
                hi = b[1] if hi is None else min(hi, b[1])
            continue
        expr = _expr(c)
        if expr is not None and set(expr.meta.root_names()) == {"cpu"}:
            cpu_terms.append(expr)
    return (lo, hi), cpu_terms


def _tree(expr) -> dict | None:
    """The serialized form of ``expr``; None for one polars cannot serialize (a Python function that cannot be
    pickled): no skipping then, the row filter still applies."""
    import polars.exceptions as plx

    try:
        return json.loads(expr.meta.serialize(format="json"))
    except plx.PolarsError:
        return None


def _expr(node):
    """The expression of one serialized conjunct, or None when polars cannot read it back."""
    import polars as pl
    import polars.exceptions as plx

    try:
        return pl.Expr.deserialize(io.StringIO(json.dumps(node)), format="json")
    except plx.PolarsError:
        return None


@functools.lru_cache(maxsize=1)
def planner_works() -> bool:
    """Whether the installed polars serializes the filters the planner reads in the form it reads them (probed
    once per process on known filters). When it does not, the records are still filtered exactly, only no batch
    is skipped, and a RuntimeWarning says so once; the tests fail (tests/test_api.py requires skipped batches)."""
    import warnings

    import polars as pl

    probes = [
        (pl.col("tsc") > 5, (6, None), 0),
        (pl.lit(9, dtype=pl.UInt64) >= pl.col("tsc"), (None, 9), 0),
        (pl.col("tsc").is_between(1, 9, closed="right"), (2, 9), 0),
        ((pl.col("tsc") == 4) & pl.col("cpu").is_in([1, 2]) & (pl.col("dom") == 0), (4, 4), 1),
    ]
    for expr, bounds, n_cpu in probes:
        got_bounds, cpu_terms = _plan(expr)
        if got_bounds != bounds or len(cpu_terms) != n_cpu:
            warnings.warn(f"polars {pl.__version__} serializes filters in a form tracelens does not read: scans of "
                          "Capture.records skip no batch (the results are the same, only slower)", RuntimeWarning,
                          stacklevel=2)
            return False
    return True
