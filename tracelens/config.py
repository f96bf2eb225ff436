"""``tracelens.toml``: one file that fills the options objects of every command, of the gate, of the fleet scan
and of notebooks alike (docs/config.md).

==========  =====================================================================================================
table       keys (and the object they fill)
==========  =====================================================================================================
[decode]    xen_version, cpu_hz, tolerance, catalog (files, relative to tracelens.toml), threads:
            :class:`~tracelens.options.DecodeOptions` of every command that decodes a capture
[analyze]   trace_mask: :class:`~tracelens.options.AnalysisConfig` of analyze, query, gate and scan
[gate]      the gate policy (tracelens.gate.policy, docs/gate.md): :class:`~tracelens.options.GateConfig`
[scan]      workers, scheduler, retries, on_error: tracelens.fleet.scan.ScanConfig
==========  =====================================================================================================

:func:`load_config` reads the file (default: ``./tracelens.toml`` when there is one) into a :class:`Config`; a
command takes its options from there and lets the options given on the command line override them. Every error is
a :class:`~tracelens.errors.PolicyError` naming the file and line (exit code 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from tracelens.errors import PolicyError, UsageError
from tracelens.options import AnalysisConfig, DecodeOptions, GateConfig

#: the file commands read when it is in the working directory
DEFAULT_FILE = "tracelens.toml"

#: table -> key -> (the options field it fills, the TOML types it may have)
TABLES = {
    "decode": {"xen_version": ("xen_version", (str,)), "cpu_hz": ("cpu_hz", (int, float)),
               "tolerance": ("tolerance", (str,)), "catalog": ("catalog_files", (list,)),
               "threads": ("threads", (int,))},
    "analyze": {"trace_mask": ("trace_mask", (str, int))},
    "gate": None,  # validated by tracelens.gate.policy.parse_policy
    "scan": {"workers": ("workers", (int,)), "scheduler": ("scheduler", (str,)), "retries": ("retries", (int,)),
             "on_error": ("on_error", (str,))},
}


@dataclass(frozen=True)
class Config:
    """What a tracelens.toml holds, as the options objects the library takes. ``path``: the file (None: no file,
    every object at its defaults); ``decode``, ``analysis``: from [decode] and [analyze]; ``policy``: the [gate]
    table (a tracelens.gate.policy.Policy); ``scan``: the [scan] keys (workers, scheduler, retries, on_error)."""

    path: str | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    policy: object = None
    scan: dict = field(default_factory=dict)

    @property
    def gate(self) -> GateConfig:
        """The gate's options: this file's policy, its analysis decoded strictly (the gate never reads a damaged
        capture in part, whatever [decode].tolerance says)."""
        decode = replace(self.analysis.decode, tolerance="strict")
        mask = getattr(self.policy, "trace_mask", None)  # gate.trace_mask, when set, is the gate's
        analysis = replace(self.analysis, decode=decode, trace_mask=self.analysis.trace_mask if mask is None else mask)
        return GateConfig(analysis=analysis, policy=self.path)

    def scan_config(self, **override):
        """A tracelens.fleet.scan.ScanConfig from [scan], [decode] and [analyze], with ``override`` (ScanConfig or
        ClusterOptions fields) on top."""
        from tracelens.fleet.cluster import ClusterOptions
        from tracelens.fleet.scan import ScanConfig

        values = {**self.scan, **{k: v for k, v in override.items() if v is not None}}
        cluster = ClusterOptions(**{k: values.pop(k) for k in ("workers", "scheduler", "retries") if k in values})
        return ScanConfig(analysis=self.analysis, cluster=cluster, policy=values.pop("policy", self.path), **values)


def load_config(path=None) -> Config:
    """The options of the tracelens.toml at ``path`` (default: ``./tracelens.toml`` when it exists, else the
    defaults). Unknown tables and keys, wrong types and invalid values are PolicyErrors naming the file and line."""
    if path is None:
        if not os.path.isfile(DEFAULT_FILE):
            return Config()
        path = DEFAULT_FILE
    from tracelens.gate.policy import load_policy

    policy = load_policy(path)  # reads the file, reports TOML syntax errors with their line, validates [gate]
    return _from_document(os.fspath(path), policy)


def _from_document(path: str, policy) -> Config:
    import tomllib

    from tracelens.detect import read_capped
    from tracelens.gate.policy import _Checker, _tname

    text = read_capped(path).decode("utf-8")
    doc = tomllib.loads(text)
    c = _Checker(path, text)
    values: dict[str, dict] = {}
    for table, body in doc.items():
        if table not in TABLES:
            c.fail((table,), f"unknown table [{table}] (tables: {', '.join(TABLES)}; see docs/config.md)")
        if not isinstance(body, dict):
            c.fail((table,), f"'{table}' must be a table, not {_tname(body)}")
        keys = TABLES[table]
        if keys is None:
            continue
        values[table] = {}
        for k, v in body.items():
            if k not in keys:
                c.fail((table, k), f"unknown key '{table}.{k}' (known: {', '.join(keys)})")
            name, types = keys[k]
            if isinstance(v, bool) or not isinstance(v, types):
                c.fail((table, k), f"{table}.{k} must be {' or '.join(_tname(t()) for t in types)}, not "
                                   f"{_tname(v)} {v!r}")
            values[table][name] = v
    here = os.path.dirname(os.path.abspath(path))
    dec = values.get("decode", {})
    if "catalog_files" in dec:
        files = dec["catalog_files"]
        if not all(isinstance(f, str) and f for f in files):
            c.fail(("decode", "catalog"), "decode.catalog must be an array of file names (strings)")
        dec["catalog_files"] = tuple(f if os.path.isabs(f) else os.path.join(here, f) for f in files)
    decode = _build(c, "decode", DecodeOptions, dec)
    analysis = _build(c, "analyze", AnalysisConfig, {"decode": decode, **values.get("analyze", {})})
    scan = values.get("scan", {})
    if "on_error" in scan and scan["on_error"] not in ("record", "raise"):
        c.fail(("scan", "on_error"), f"scan.on_error must be record or raise, not {scan['on_error']!r}")
    for k in ("workers", "retries"):
        if k in scan and scan[k] < 0:
            c.fail(("scan", k), f"scan.{k} must be 0 or more, not {scan[k]}")
    return Config(path=path, decode=decode, analysis=analysis, policy=policy, scan=scan)


def _build(c, table: str, cls, values: dict):
    try:
        return cls(**values)
    except UsageError as e:  # "tolerance must be one of ..." -> "FILE:LINE: decode.tolerance must be one of ..."
        key = next((k for k, (name, _t) in TABLES[table].items() if name == e.param), e.param)
        text = str(e)
        if e.param and text.startswith(e.param):
            text = f"{table}.{key}" + text[len(e.param):]
        raise PolicyError(f"{c.where((table, key))}: {text}") from None
