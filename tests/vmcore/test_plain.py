"""``@plain`` (parsers/vmcore/_plain.py), the dataclass subset the dump readers use, against the behaviour of
``dataclasses.dataclass`` for the same class."""

from __future__ import annotations

import dataclasses

import pytest

from tracelens.parsers.vmcore._plain import Factory, plain


def _pair(frozen=False):
    @plain(frozen=frozen)
    class P:
        a: int
        b: str = "x"
        c: list = Factory(list)

    @dataclasses.dataclass(frozen=frozen)
    class D:
        a: int
        b: str = "x"
        c: list = dataclasses.field(default_factory=list)

    return P, D


@pytest.mark.parametrize("frozen", [False, True])
def test_construction_equality_and_repr_follow_dataclass(frozen):
    P, D = _pair(frozen)
    for args, kw in (((1,), {}), ((1, "y"), {}), ((), {"a": 2, "c": [3]}), ((4,), {"b": "z"})):
        p, d = P(*args, **kw), D(*args, **kw)
        assert (p.a, p.b, p.c) == (d.a, d.b, d.c)
        assert repr(p) == f"P(a={d.a!r}, b={d.b!r}, c={d.c!r})"
    assert P(1) == P(1) and P(1) != P(2) and P(1, "y") != P(1)
    assert P(1).c is not P(1).c  # a fresh list per instance
    for bad in (lambda: P(), lambda: P(1, "y", [], 4), lambda: P(1, a=2), lambda: P(1, d=3)):
        with pytest.raises(TypeError):
            bad()


def test_frozen_forbids_assignment_and_hashes():
    P, _ = _pair(True)
    p = P(1)
    with pytest.raises(AttributeError):
        p.a = 2
    assert hash(P(1, "y", ())) == hash(P(1, "y", ())) == hash((1, "y", ()))
    Q, _ = _pair(False)
    q = Q(1)
    q.a = 5
    assert q.a == 5 and Q.__hash__ is None


def test_a_field_without_default_after_one_with_default_is_refused():
    with pytest.raises(TypeError):
        @plain
        class Bad:
            a: int = 1
            b: int
