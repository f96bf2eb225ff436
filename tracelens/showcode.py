"""``--show-code``: the Python a notebook user would write for a command, built from the options objects the
command itself runs with (as drgn builds its ``--drgn`` output from the parsed arguments), so that the printed code
and the command cannot drift apart.

A :class:`Code` collects imports and lines; :meth:`Code.value` writes any options object (a dataclass such as
:class:`tracelens.options.DecodeOptions`) as its constructor call with the fields that differ from their
defaults, nested objects included, and imports its class.
"""

from __future__ import annotations

import dataclasses
import os

#: where the code imports a class from, when that is not the module that defines it
_PUBLIC = {"Policy": "tracelens.gate.policy"}


class Code:
    """Python source: ``import`` lines (sorted, deduplicated) and then the body."""

    def __init__(self):
        self._modules: set[str] = set()
        self._names: dict[str, set[str]] = {}
        self.lines: list[str] = []

    def use(self, module: str, *names: str) -> Code:
        """``import module``, or ``from module import names``."""
        if names:
            self._names.setdefault(module, set()).update(names)
        else:
            self._modules.add(module)
        return self

    def add(self, *lines: str) -> Code:
        self.lines.extend(lines)
        return self

    def value(self, obj) -> str:
        """``obj`` as a Python expression: options objects as their constructor with the fields that differ from
        the defaults (their class imported), containers and plain values as literals."""
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            cls = type(obj)
            self.use(_PUBLIC.get(cls.__name__, cls.__module__), cls.__name__)
            args = []
            for f in dataclasses.fields(obj):
                if not f.init:
                    continue
                v = getattr(obj, f.name)
                if f.default is not dataclasses.MISSING and _same(v, f.default):
                    continue
                if f.default_factory is not dataclasses.MISSING and _same(v, f.default_factory()):
                    continue
                args.append(f"{f.name}={self.value(v)}")
            return f"{cls.__name__}({', '.join(args)})"
        if isinstance(obj, tuple):
            inner = ", ".join(self.value(v) for v in obj)
            return f"({inner},)" if len(obj) == 1 else f"({inner})"
        if isinstance(obj, list):
            return "[" + ", ".join(self.value(v) for v in obj) + "]"
        if isinstance(obj, dict):
            return "{" + ", ".join(f"{self.value(k)}: {self.value(v)}" for k, v in obj.items()) + "}"
        if isinstance(obj, os.PathLike):
            return repr(os.fspath(obj))
        return repr(obj)

    def call(self, func: str, *args, **kwargs) -> str:
        """``func(args..., name=value...)`` with every argument written by :meth:`value`; keyword arguments that are
        None, or options objects at their defaults, are left out."""
        parts = [self.value(a) for a in args]
        parts += [f"{k}={self.value(v)}" for k, v in kwargs.items() if v is not None and not _default_object(v)]
        return f"{func}({', '.join(parts)})"

    def text(self) -> str:
        head = [f"import {m}" for m in sorted(self._modules)]
        head += [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(self._names.items())]
        return "\n".join(head + ([""] if head else []) + self.lines) + "\n"

    def __str__(self) -> str:
        return self.text()


def _default_object(v) -> bool:
    """An options object equal to its class's default one (DecodeOptions())."""
    if not dataclasses.is_dataclass(v) or isinstance(v, type):
        return False
    try:
        return v == type(v)()
    except TypeError:  # a class whose fields have no defaults
        return False


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b
