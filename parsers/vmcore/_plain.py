"""``@plain``: the small part of ``@dataclass`` the dump readers use, without importing ``dataclasses``.

Why: ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and ``tokenize``), and ``tracelens dmesg`` is
compared with makedumpfile's few milliseconds. Measured (issue 16, the six classes as ``dataclass(slots=True)``
against ``@plain``, bytecode compiled, 60 alternated runs, a shared 2-core VM): importing the dump readers 13-14 ms
instead of 4-5 ms, and ``python -m tracelens dmesg`` 68-76 ms instead of 56-64 ms (+19 %); the readers themselves
(open and render the log) the same 3.7 ms. Like ``dataclasses``, the ``__init__`` is generated source (``exec``).
A class decorated with ``@plain`` gets, from its annotated fields in order: an ``__init__`` taking them
positionally or by name (class attributes are defaults; ``Factory(list)`` is called per instance), ``__repr__``
and ``__eq__``; ``frozen=True`` forbids assignment and adds ``__hash__``. Nothing else (no ordering, no
``fields()``, no inheritance of fields).
"""

from __future__ import annotations

_MISSING = object()


class Factory:
    """A per-instance default: ``Factory(list)`` gives every instance its own empty list."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def plain(cls=None, *, frozen: bool = False):
    def wrap(cls):
        names = list(cls.__dict__.get("__annotations__", {}))
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        for n in defaults:  # defaults live in __init__, not as class attributes shared by instances
            delattr(cls, n)
        required = [n for n in names if n not in defaults]
        if any(names.index(r) > min((names.index(d) for d in defaults), default=len(names)) for r in required):
            raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")

        # a specialised __init__ (like dataclasses, generated source): keyword-or-positional parameters with the
        # defaults; per-instance factories are called; frozen classes set through object.__setattr__
        env = {"_set": object.__setattr__, "_MISSING": _MISSING}
        params = []
        body = []
        for n in names:
            d = defaults.get(n, _MISSING)
            if d is _MISSING:
                params.append(n)
                value = n
            elif isinstance(d, Factory):
                env[f"_f_{n}"] = d.make
                params.append(f"{n}=_MISSING")
                value = f"(_f_{n}() if {n} is _MISSING else {n})"
            else:
                env[f"_d_{n}"] = d
                params.append(f"{n}=_d_{n}")
                value = n
            body.append(f"    _set(self, {n!r}, {value})" if frozen else f"    self.{n} = {value}")
        src = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
        exec(src, env)  # noqa: S102 - field names come from the class's own annotations
        __init__ = env["__init__"]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"

        def __repr__(self):
            return f"{cls.__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        cls.__init__ = __init__
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        if frozen:
            def __setattr__(self, name, value):
                raise AttributeError(f"cannot assign to field {name!r} of a frozen {cls.__name__}")

            cls.__setattr__ = __setattr__
            cls.__hash__ = lambda self: hash(tuple(getattr(self, n) for n in names))
        else:
            cls.__hash__ = None
        return cls

    return wrap if cls is None else wrap(cls)
