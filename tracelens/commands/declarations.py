"""Command-line options declared once, without the CLI framework: the typer commands build their ``typer.Option``
from these declarations (:meth:`Opt.typer`), and the console's fast paths (tracelens.console) parse their
arguments from the same ones (:func:`parse`), so the two cannot disagree about an option's names, whether it takes
a value, its type or its default (tests/test_console_parse.py checks every option of both fast commands against
click's own parser).

Each option names the library parameter it fills (``Opt.param``, e.g. ``xen_version`` of
:class:`tracelens.options.DecodeOptions`); a library error about that parameter is shown as this option
(tracelens.errors.cli_message).
"""

from __future__ import annotations


class Opt:
    """One option: ``param`` (the Python parameter and library field), ``names`` (``--xen-version``, ``-n``...),
    ``kind`` (str, int, float, or bool for a flag), ``default``, ``multiple`` (repeatable: a list), ``metavar``,
    ``help``, and ``fast``: whether the console's fast path may parse it (else the full CLI must). A plain class,
    not a dataclass: the fast paths import neither dataclasses nor inspect."""

    __slots__ = ("param", "names", "help", "kind", "default", "multiple", "metavar", "fast")

    def __init__(self, param: str, names: tuple[str, ...], help: str, kind: type = str, default=None,  # noqa: A002
                 multiple: bool = False, metavar: str | None = None, fast: bool = False):
        self.param, self.names, self.help, self.kind = param, tuple(names), help, kind
        self.default, self.multiple, self.metavar, self.fast = default, multiple, metavar, fast

    def but(self, **changes) -> Opt:
        """A copy with ``changes`` (help, default, fast... for one command)."""
        values = {k: getattr(self, k) for k in self.__slots__}
        values.update(changes)
        return Opt(**values)

    @property
    def flag(self) -> bool:
        return self.kind is bool

    def typer(self, **override):
        """The ``typer.Option`` of this declaration (``override``: help or default for one command)."""
        import typer

        o = self.but(**override) if override else self
        # typer renders help as rich markup, where "[decode]" would be a style tag and vanish: escape brackets
        return typer.Option(o.initial(), *o.names, help=o.help.replace("[", "\\["), metavar=o.metavar)

    def initial(self):
        """The value the parameter has when the option is not given."""
        if self.multiple:
            return []
        return False if self.flag and self.default is None else self.default

    def __repr__(self) -> str:
        return f"Opt({self.param!r}, {self.names!r})"


def parse(decls: tuple[Opt, ...], args: list[str]) -> dict | None:
    """The arguments of a command for the console's fast path, as click would parse them: {param: value} for every
    declared option plus "args" (the positional arguments); None when the fast path must leave them to the full
    CLI (an option it may not parse, ``--help``, ``--``, a missing or unconvertible value: typer reports those)."""
    by_name = {n: d for d in decls for n in d.names}
    out = {d.param: d.initial() for d in decls}
    positional = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
            d = by_name.get(name)
            if d is None or not d.fast:
                return None  # --help, --, an option the fast path does not serve or does not know
            if d.flag:
                if eq:
                    return None  # --json=x: click's error
                out[d.param] = True
            else:
                if not eq:
                    i += 1
                    if i == len(args):
                        return None
                    value = args[i]
                try:
                    v = d.kind(value)
                except ValueError:
                    return None
                if d.multiple:
                    out[d.param].append(v)
                else:
                    out[d.param] = v  # click keeps the last value given
        else:
            positional.append(a)
        i += 1
    out["args"] = positional
    return out


# -- options several commands share --------------------------------------------------------------------------------
TOLERANCE_HELP = ("What to do with damage: strict (stop with an error, the default), truncate (keep what comes "
                  "before the first damage), skip (resynchronise at the next window and report what was skipped).")
CONFIG_NOTE = " (default: [decode] of ./tracelens.toml)"

XEN_VERSION = Opt("xen_version", ("--xen-version",), "Xen release that wrote the capture, e.g. 4.17 (default: "
                  "[decode] of ./tracelens.toml, else guessed).", metavar="X.Y")
CPU_HZ = Opt("cpu_hz", ("--cpu-hz",), "TSC frequency in Hz: adds a time_ns column" + CONFIG_NOTE + ".", kind=float,
             metavar="HZ")
TOLERANCE = Opt("tolerance", ("--tolerance",), TOLERANCE_HELP[:-1] + CONFIG_NOTE + ".", metavar="MODE")
CATALOG = Opt("catalog_files", ("--catalog",), "Extra event definitions (TOML, see docs/xentrace.md); repeatable"
              + CONFIG_NOTE + ".", multiple=True, metavar="FILE")
THREADS = Opt("threads", ("--threads",), "Decoder threads (default: [decode] of ./tracelens.toml, else all cores).",
              kind=int, metavar="N")
TRACE_MASK = Opt("trace_mask", ("--trace-mask",), "The event mask the capture was recorded with (xentrace -e: "
                 "0x0010f000, or words such as sched,mem,all): zero records of a declared class are evidence "
                 "(default: [analyze] of ./tracelens.toml).", metavar="MASK")
SHOW_CODE = Opt("show_code", ("--show-code",), "Print the equivalent Python and exit.", kind=bool)
JSON = Opt("json_out", ("--json",), "Print one JSON object instead of a table.", kind=bool)

# -- the commands the console's fast paths serve --------------------------------------------------------------------
#: ``tracelens info PATH...``: the fast path serves one xentrace capture
INFO = (
    JSON.but(fast=True),
    XEN_VERSION.but(fast=True),
    TOLERANCE.but(help="Captures: " + TOLERANCE.help, fast=True),
    CATALOG.but(fast=True),
    THREADS.but(fast=True),
    SHOW_CODE,
)

#: ``tracelens dmesg DUMP...``: the fast path serves the text forms
DMESG = (
    Opt("json_out", ("--json",), "One JSON object per record instead of text.", kind=bool),
    Opt("style", ("--format",), "Text layout: vmcore-dmesg (default) or makedumpfile (--dump-dmesg).",
        default="vmcore-dmesg", metavar="STYLE", fast=True),
    Opt("vmcoreinfo", ("--vmcoreinfo",), "Use the VMCOREINFO text in this file instead of the dump's.",
        metavar="FILE", fast=True),
    Opt("xen_events", ("--xen",), "Only the Xen-related events (PIRQ/GSI, grant table, balloon, event channels, "
        "shutdown, kexec).", kind=bool),
    SHOW_CODE,
)


#: ``tracelens analyze CAPTURE``: the fast path serves everything but --show-code
ANALYZE = (
    Opt("fmt", ("--format", "-f"), "text, json, md or html (self-contained, with timelines)", default="text",
        fast=True),
    Opt("output", ("-o", "--output"), "write the report to FILE (atomically)", fast=True),
    Opt("boundary", ("--boundary",), "add a boundary: DOMID@TSC, or DOMID@1.5ms with --cpu-hz; repeatable",
        multiple=True, fast=True),
    CPU_HZ.but(help="TSC frequency in Hz: reports show seconds from the capture's start (and --boundary takes "
                    "times)" + CONFIG_NOTE + ".", fast=True),
    XEN_VERSION.but(fast=True),
    TOLERANCE.but(fast=True),
    CATALOG.but(fast=True),
    THREADS.but(fast=True),
    SHOW_CODE,
    TRACE_MASK.but(fast=True),
    Opt("vmcore", ("--vmcore",), "the guest's dump (kdump, ELF vmcore or xl dump-core): adds its Xen evidence",
        fast=True),
    Opt("vmcore_dom", ("--vmcore-dom",), "the domid the dump belongs to (default: inferred, see docs/analysis.md)",
        kind=int, fast=True),
)


#: ``tracelens gate CAPTURE...``: the fast path serves everything but --show-code
GATE = (
    Opt("vmcore", ("--vmcore",), "the guest's dump from the run of the (one) CAPTURE: adds TL-DMP-* findings",
        metavar="DUMP", fast=True),
    Opt("vmcore_dom", ("--vmcore-dom",), "the domain the dump belongs to (default: inferred, see docs/analysis.md)",
        kind=int, metavar="DOMID", fast=True),
    Opt("policy", ("--policy",), "policy file, a tracelens.toml whose [decode] and [analyze] apply too (default: "
        "./tracelens.toml if present; see docs/gate.md)", metavar="FILE", fast=True),
    Opt("fail_on", ("--fail-on",), "error, warning or note: the lowest severity that fails (default: the "
        "policy's, else error)", metavar="SEVERITY", fast=True),
    Opt("baseline", ("--baseline",), "accepted fingerprints: only new findings fail (overrides gate.baseline)",
        metavar="FILE", fast=True),
    Opt("write_baseline", ("--write-baseline",), "accept the current findings: write their fingerprints to FILE, "
        "then gate against it", metavar="FILE", fast=True),
    Opt("sarif", ("--sarif",), "write SARIF 2.1.0 to FILE (GitHub code scanning)", metavar="FILE", fast=True),
    Opt("junit", ("--junit",), "write JUnit XML to FILE", metavar="FILE", fast=True),
    Opt("json_out", ("--json",), "write JSON Lines to FILE (one finding a line)", metavar="FILE", fast=True),
    XEN_VERSION.but(fast=True),
    CATALOG.but(fast=True),
    THREADS.but(fast=True),
    TRACE_MASK.but(help=TRACE_MASK.help.replace("(default: [analyze] of ./tracelens.toml)",
                                                "(default: gate.trace_mask, else analyze.trace_mask)"), fast=True),
    Opt("workers", ("--workers",), "check the captures on a local Dask cluster of N worker processes (as "
        "tracelens scan; needs tracelens[fleet])", kind=int, metavar="N", fast=True),
    Opt("scheduler", ("--scheduler",), "check them on an existing Dask cluster, e.g. tcp://HOST:8786",
        metavar="ADDRESS", fast=True),
    Opt("quiet", ("-q", "--quiet"), "no summary on stdout", kind=bool, fast=True),
    SHOW_CODE,
)


def declared(decls: tuple[Opt, ...], param: str) -> Opt:
    """The declaration of ``param`` in ``decls``."""
    return next(d for d in decls if d.param == param)
