"""The gate policy: the ``[gate]`` table of ``tracelens.toml`` (docs/gate.md), parsed with :mod:`tomllib` and
validated into a :class:`Policy`.

Every error is a :class:`~tracelens.errors.PolicyError` whose message starts with ``FILE:LINE:`` (exit code 2).
tomllib reports the line of syntax errors; for errors of meaning (an unknown rule, a bad date, a wrong type) the line
is found by :class:`_Lines`, a small scan of the file's table headers and keys, because tomllib keeps no positions.

The policy never decides on its own: :mod:`tracelens.gate.evaluate` applies it to findings.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from datetime import date

from tracelens.analysis.findings import SEVERITIES, SEVERITY_RANK
from tracelens.errors import PolicyError

RULE_LEVELS = SEVERITIES + ("off",)
#: rules that describe the capture itself (records lost): they make the capture inconclusive, whatever the policy
#: says, so they can be neither turned off nor allow-listed (the gate fails closed)
UNSUPPRESSIBLE_PREFIX = "TL-LOST-"

#: name -> (rule it applies to, evidence member compared, evidence member naming the domain it is counted per)
THRESHOLDS = {
    "outstanding_grants": ("TL-GNT-001", "outstanding", "mapper"),
    "late_unmaps": ("TL-GNT-002", "late_unmaps", "mapper"),
    "balloon_pages": ("TL-BAL-001", "pages", None),  # per ballooning domain: the finding's domid
}

_GATE_KEYS = {"fail_on", "baseline", "max_lost_records", "rules", "thresholds", "allow", "trace_mask",
              "min_records", "min_span_cycles"}
_ALLOW_KEYS = {"rule", "domid", "object", "reason", "expires"}


def known_rules() -> dict:
    """rule id -> (default severity, one line), from the analysis' findings table."""
    from tracelens.analysis.findings import RULES

    return RULES


@dataclass(frozen=True)
class AllowEntry:
    """One ``[[gate.allow]]`` entry: suppresses findings of ``rule`` (for ``domid`` and/or ``object``, a
    shell-style pattern) up to and including the day ``expires`` (UTC)."""

    rule: str
    domid: int | None
    object: str | None
    reason: str
    expires: date
    source: str  # FILE:LINE of the entry

    def matches(self, finding) -> bool:
        if finding.rule != self.rule:
            return False
        if self.domid is not None and finding.domid != self.domid:
            return False
        if self.object is not None and not fnmatch.fnmatchcase(str(finding.object), self.object):
            return False
        return True

    def expired(self, today: date) -> bool:
        return today > self.expires


@dataclass(frozen=True)
class Threshold:
    """An allowance for a counting rule: findings whose evidence count is <= the allowance pass."""

    name: str
    rule: str
    measure: str
    per: str | None
    default: int | None
    by_domain: dict = field(default_factory=dict)  # domid -> allowance
    source: str = ""

    def allowance(self, finding) -> int | None:
        who = finding.domid if self.per is None else (finding.evidence or {}).get(self.per)
        if who is not None and who in self.by_domain:
            return self.by_domain[who]
        return self.default


@dataclass
class Policy:
    path: str | None = None
    fail_on: str | None = None  # None: the command's default (or --fail-on)
    severity: dict = field(default_factory=dict)  # rule -> error|warning|note|off
    severity_source: dict = field(default_factory=dict)  # rule -> FILE:LINE
    thresholds: dict = field(default_factory=dict)  # rule -> Threshold
    allow: list = field(default_factory=list)  # [AllowEntry]
    baseline: str | None = None  # path, resolved against the policy file's folder
    max_lost_records: int = 0
    trace_mask: int | None = None  # the mask the captures were recorded with (xentrace -e): coverage by declaration
    trace_mask_source: str | None = None
    min_records: int = 0  # fewer records make a capture inconclusive (cut short, or nothing happened)
    min_span_cycles: int = 0  # a shorter TSC span (last - first timed record) makes it inconclusive


# -- locating keys in the TOML text ------------------------------------------------------------------------------
_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_AOT = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]")
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_INLINE_KEY = re.compile(rf"[{{,]\s*({_DOTTED})\s*=")


def _split_keys(dotted: str) -> tuple:
    parts = re.findall(_KEY, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class _Lines:
    """Line numbers (1-based) of the tables and keys of a TOML document, by key path; array-of-tables entries are
    numbered (``("gate", "allow", 2, "expires")``). A scan, not a parser: good enough to point at a line."""

    def __init__(self, text: str):
        self.at: dict[tuple, int] = {}
        counts: dict[tuple, int] = {}
        prefix: tuple = ()
        in_multiline = False
        for no, line in enumerate(text.splitlines(), 1):
            if in_multiline:
                if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                    in_multiline = False
                continue
            m = _AOT.match(line)
            if m:
                base = _split_keys(m.group(1))
                i = counts.get(base, 0)
                counts[base] = i + 1
                prefix = base + (i,)
                self.at.setdefault(prefix, no)
                continue
            m = _TABLE.match(line)
            if m:
                prefix = _split_keys(m.group(1))
                # a sub-table of the last array entry: [gate.allow.x] after [[gate.allow]]
                for base, n in counts.items():
                    if prefix[: len(base)] == base and len(prefix) > len(base):
                        prefix = base + (n - 1,) + prefix[len(base):]
                self.at.setdefault(prefix, no)
                continue
            m = _ASSIGN.match(line)
            if m:
                key = prefix + _split_keys(m.group(1))
                self.at.setdefault(key, no)
                rest = line[m.end():]
                for im in _INLINE_KEY.finditer(rest):
                    self.at.setdefault(key + _split_keys(im.group(1)), no)
                if rest.count('"""') == 1 or rest.count("'''") == 1:
                    in_multiline = True

    def line(self, path: tuple) -> int | None:
        """The line of ``path``, else of its nearest enclosing table or key."""
        path = tuple(path)
        while path:
            if path in self.at:
                return self.at[path]
            path = path[:-1]
        return None


class _Checker:
    def __init__(self, path: str, text: str):
        self.path = path
        self.lines = _Lines(text)

    def where(self, keys) -> str:
        line = self.lines.line(keys)
        return f"{self.path}:{line}" if line else self.path

    def fail(self, keys, message: str):
        raise PolicyError(f"{self.where(keys)}: {message}")

    def rule(self, keys, rule) -> str:
        rules = known_rules()
        if not isinstance(rule, str):
            self.fail(keys, f"a rule id must be a string, not {_tname(rule)}")
        if rule not in rules:
            self.fail(keys, f"unknown rule {rule!r} (known: {', '.join(sorted(rules))}; see docs/rules.md)")
        return rule

    def int_(self, keys, value, what: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(keys, f"{what} must be an integer, not {_tname(value)} {value!r}")
        if value < minimum:
            self.fail(keys, f"{what} must be >= {minimum}, not {value}")
        return value

    def domain(self, keys, value) -> int:
        """A domain: an integer domid, or ``"d<N>"``."""
        if isinstance(value, str) and re.fullmatch(r"d?\d+", value):
            return int(value.lstrip("d"))
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 0x10000:
            return value
        self.fail(keys, f"a domain must be a domid (an integer 0..65535) or 'd<N>', not {value!r}")


def _tname(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table", date: "a date"}.get(type(v), type(v).__name__)


def parse_policy(text: str, path: str = "tracelens.toml") -> Policy:
    """Validate the ``[gate]`` table of a tracelens.toml document. Other top-level tables belong to other
    commands and are ignored; a document without ``[gate]`` is the default policy."""
    import tomllib

    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise PolicyError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    except ValueError as e:
        if not isinstance(e, tomllib.TOMLDecodeError):  # e.g. an integer of thousands of digits
            raise PolicyError(f"{path}: invalid TOML: {e}") from None
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        if m:
            where = f"{path}:{m.group(1)}"
        elif "at end of document" in str(e):  # an unclosed array or string: point at the last line
            where = f"{path}:{max(len(text.splitlines()), 1)}"
        else:
            where = path
        raise PolicyError(f"{where}: invalid TOML: {e}") from None
    c = _Checker(path, text)
    pol = Policy(path=path)
    gate = doc.get("gate", {})
    if not isinstance(gate, dict):
        c.fail(("gate",), f"'gate' must be a table, not {_tname(gate)}")
    for k in gate:
        if k not in _GATE_KEYS:
            c.fail(("gate", k), f"unknown key 'gate.{k}' (known: {', '.join(sorted(_GATE_KEYS))})")

    if "fail_on" in gate:
        v = gate["fail_on"]
        if v not in SEVERITIES:
            c.fail(("gate", "fail_on"), f"gate.fail_on must be one of {', '.join(SEVERITIES)}, not {v!r}")
        pol.fail_on = v
    if "max_lost_records" in gate:
        pol.max_lost_records = c.int_(("gate", "max_lost_records"), gate["max_lost_records"], "gate.max_lost_records")
    for key in ("min_records", "min_span_cycles"):
        if key in gate:
            setattr(pol, key, c.int_(("gate", key), gate[key], f"gate.{key}"))
    if "trace_mask" in gate:
        from tracelens.analysis.coverage import parse_mask

        v = gate["trace_mask"]
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            c.fail(("gate", "trace_mask"), f"gate.trace_mask must be a mask (0x0010f000, or words such as "
                                           f"\"sched,mem\"), not {_tname(v)}")
        try:
            pol.trace_mask = parse_mask(v)
        except ValueError as e:
            c.fail(("gate", "trace_mask"), f"gate.trace_mask: {e}")
        pol.trace_mask_source = c.where(("gate", "trace_mask"))
    if "baseline" in gate:
        v = gate["baseline"]
        if not isinstance(v, str) or not v:
            c.fail(("gate", "baseline"), f"gate.baseline must be a file name (a string), not {_tname(v)}")
        pol.baseline = os.path.join(os.path.dirname(os.path.abspath(path)), v) if not os.path.isabs(v) else v

    rules = gate.get("rules", {})
    if not isinstance(rules, dict):
        c.fail(("gate", "rules"), f"gate.rules must be a table of rule = severity, not {_tname(rules)}")
    for rule, level in rules.items():
        keys = ("gate", "rules", rule)
        c.rule(keys, rule)
        if level not in RULE_LEVELS:
            c.fail(keys, f"the severity of {rule} must be one of {', '.join(RULE_LEVELS)}, not {level!r}")
        if level == "off" and rule.startswith(UNSUPPRESSIBLE_PREFIX):
            c.fail(keys, f"{rule} cannot be turned off: lost records make a capture inconclusive and the gate "
                         "fails closed (raise gate.max_lost_records only for loss that no finding depends on)")
        pol.severity[rule] = level
        pol.severity_source[rule] = c.where(keys)

    thresholds = gate.get("thresholds", {})
    if not isinstance(thresholds, dict):
        c.fail(("gate", "thresholds"), f"gate.thresholds must be a table, not {_tname(thresholds)}")
    for name, spec in thresholds.items():
        keys = ("gate", "thresholds", name)
        if name not in THRESHOLDS:
            c.fail(keys, f"unknown threshold {name!r} (known: {', '.join(sorted(THRESHOLDS))})")
        rule, measure, per = THRESHOLDS[name]
        default, by = None, {}
        if isinstance(spec, dict):
            for k, v in spec.items():
                if k == "default":
                    default = c.int_(keys + (k,), v, f"gate.thresholds.{name}.default")
                else:
                    by[c.domain(keys + (k,), k)] = c.int_(keys + (k,), v, f"gate.thresholds.{name}.{k}")
        else:
            default = c.int_(keys, spec, f"gate.thresholds.{name}")
        pol.thresholds[rule] = Threshold(name, rule, measure, per, default, by, c.where(keys))

    allow = gate.get("allow", [])
    if not isinstance(allow, list):
        c.fail(("gate", "allow"), "gate.allow must be an array of tables ([[gate.allow]] entries)")
    for i, entry in enumerate(allow):
        keys = ("gate", "allow", i)
        if not isinstance(entry, dict):
            c.fail(keys, f"every gate.allow entry must be a table, not {_tname(entry)}")
        for k in entry:
            if k not in _ALLOW_KEYS:
                c.fail(keys + (k,), f"unknown key {k!r} in a gate.allow entry (known: "
                                    f"{', '.join(sorted(_ALLOW_KEYS))})")
        for k in ("rule", "reason", "expires"):
            if k not in entry:
                c.fail(keys, f"gate.allow entry #{i + 1} has no {k!r} (every entry needs rule, reason and expires)")
        rule = c.rule(keys + ("rule",), entry["rule"])
        if rule.startswith(UNSUPPRESSIBLE_PREFIX):
            c.fail(keys + ("rule",), f"{rule} cannot be allow-listed: lost records make a capture inconclusive and "
                                     "the gate fails closed")
        if "domid" not in entry and "object" not in entry:
            c.fail(keys, f"gate.allow entry #{i + 1} names neither a domid nor an object: it would allow every "
                         f"{rule} finding (turn the rule off in [gate.rules] if that is meant)")
        domid = c.domain(keys + ("domid",), entry["domid"]) if "domid" in entry else None
        obj = entry.get("object")
        if obj is not None and (not isinstance(obj, str) or not obj):
            c.fail(keys + ("object",), f"object must be a non-empty string (a pattern such as 'mapper:d0' or "
                                       f"'gref:*'), not {_tname(obj)}")
        reason = entry["reason"]
        if not isinstance(reason, str) or not reason.strip():
            c.fail(keys + ("reason",), "reason must be a non-empty string: say why the finding is accepted")
        exp = entry["expires"]
        if isinstance(exp, str):
            try:
                exp = date.fromisoformat(exp) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", exp) else None
            except ValueError:
                exp = None
            if exp is None:
                c.fail(keys + ("expires",), f"expires must be a date (YYYY-MM-DD), not {entry['expires']!r}")
        elif not isinstance(exp, date) or hasattr(exp, "hour"):
            c.fail(keys + ("expires",), f"expires must be a date such as 2026-12-31, not {_tname(exp)} {exp!r}")
        pol.allow.append(AllowEntry(rule, domid, obj, reason.strip(), exp, c.where(keys)))
    return pol


def load_policy(path) -> Policy:
    """Read and validate the policy file at ``path``."""
    from tracelens.detect import read_capped

    path = os.fspath(path)
    try:
        raw = read_capped(path)
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the policy file: {e.strerror}") from None
    except ValueError as e:
        raise PolicyError(f"{path}: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PolicyError(f"{path}:{line}: not UTF-8 text (a TOML file must be UTF-8)") from None
    return parse_policy(text, path)
