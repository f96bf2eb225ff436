"""Renderings of one :class:`~tracelens.analysis.analyze.Analysis`: the JSON contract, rich text and Markdown.

The JSON object is a documented contract, written once in :data:`CONTRACT` (``schema_version`` 1): the table of
docs/analysis.md is checked against it, ``tracelens.Report``'s polars frames and the Parquet datasets of
``tracelens scan`` take their columns from it (:func:`row_columns`), and the tests check every analysis they make
against it (:func:`check`). Consumers must ignore members they do not know. TSCs are in cycles. Renderers never
decide exit codes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from tracelens import escape

SCHEMA_VERSION = 1

#: The JSON contract (``schema_version`` 1). An object is a dict of its members; an array of rows is a list holding
#: one dict, the row's members; a leaf is the member's type: "i64", "u64" (TSC cycles, byte offsets: non-negative
#: integers), "f64", "str", "bool", "json" (any JSON value: in frames and Parquet datasets, JSON text),
#: "list_i64" and "list_str". Every leaf may be null. A member whose name ends in "?" appears in some rows only
#: (``cmd_name`` of a hypercall row without a recorded command is absent, not null).
CONTRACT: dict = {
    "schema_version": "i64",
    "tool": {"name": "str", "version": "str"},
    "capture": {
        "path": "str", "sha256": "str", "records": "i64", "lost_records": "i64",
        "lost_intervals": [{"cpu": "i64", "first_tsc": "u64", "tsc": "u64", "count": "i64", "malformed?": "bool",
                            "dom?": "i64", "offset?": "u64"}],
        "malformed_lost_records": "i64", "first_tsc": "u64", "last_tsc": "u64", "layout": "str", "cpu_hz": "f64",
    },
    "coverage": {
        "declared_mask": "str",
        "classes": [{"class": "str", "id": "str", "records": "i64", "evidence": "str"}],
        "subclasses": [{"subclass": "str", "id": "str", "records": "i64", "evidence": "str", "needed_by": "str"}],
        "verdicts_need": "list_str", "uncovered": "list_str", "notes": "list_str",
    },
    "boundaries": [{"domid": "i64", "epoch": "i64", "kind": "str", "tsc": "u64", "evidence": "json"}],
    "grants": [{"mapper": "i64", "granter": "i64", "epoch": "i64", "maps": "i64", "unmaps": "i64",
                "late_unmaps": "i64", "outstanding_at_boundary": "i64", "outstanding_at_end": "i64",
                "first_tsc": "u64", "last_tsc": "u64", "late_first_tsc": "u64", "late_last_tsc": "u64",
                "other_mappers?": "i64"}],
    "grant_mappers": [{"mapper": "i64", "epoch": "i64", "maps": "i64", "unmaps": "i64", "first_map_tsc": "u64",
                       "outstanding_at_boundary": "i64", "outstanding_at_end": "i64", "granters": "list_i64"}],
    "grant_records_unattributed": "i64",
    "balloon": [{"domid": "i64", "epoch": "i64", "extents": "i64", "pages": "i64", "extents_by_order": "json",
                 "gfn_ranges": "json", "first_tsc": "u64", "last_tsc": "u64", "memory_op_calls": "i64",
                 "layout": "str"}],
    "hypercalls": [{"domid": "i64", "epoch": "i64", "source": "str", "op": "i64", "op_name": "str", "cmd": "i64",
                    "count": "i64", "cmd_name?": "str", "keys?": "i64"}],
    "irq_vectors": [{"irq": "i64", "assigns": "i64", "clears": "i64", "last_vector": "i64",
                     "assigned_at_end": "bool", "handled": "i64", "other_irqs?": "bool"}],
    "guest": {
        "instrumented": [{"domid": "i64", "epoch": "i64"}],
        "grefs_open": [{"domid": "i64", "epoch": "i64", "tsc": "u64", "offset": "u64", "ref": "i64",
                        "grantee": "i64", "frame": "u64"}],
        "pirqs_open": [{"domid": "i64", "epoch": "i64", "tsc": "u64", "offset": "u64", "pirq": "i64", "irq": "i64",
                        "kind": "i64", "gsi_or_vector": "i64", "port": "i64"}],
        "events": [{"domid": "i64", "epoch": "i64", "event": "str", "count": "i64"}],
    },
    "safety": [{"domid": "i64", "epoch": "i64", "start_tsc": "u64", "end_tsc": "u64", "boundary_kind": "str",
                "first_unsafe_tsc": "u64", "first_unsafe_kind": "str", "unsafe": "json", "outstanding_grants": "i64",
                "lost": "json", "removed_at_end": "bool", "possibly_unsafe": "json", "not_covered": "list_str",
                "verdict": "str"}],
    "findings": [{"rule": "str", "severity": "str", "domid": "i64", "epoch": "i64", "object": "str", "tsc": "u64",
                  "first_tsc": "u64", "last_tsc": "u64", "message": "str", "evidence": "json",
                  "fingerprint": "str"}],
    "dump": {
        "path": "str", "kind": "str", "domid": "i64", "epoch": "i64", "assumption": "str",
        "log_events": [{"seq": "u64", "ts_nsec": "u64", "event": "str", "category": "str", "text": "str"}],
        "grants_in_use": [{"ref": "i64", "domid": "i64", "frame": "u64", "reading": "bool", "writing": "bool",
                           "readonly": "bool"}],
        "grants_granted": "i64", "grant_frames": "list_i64",
        "pirqs": [{"pirq": "i64", "irq": "i64", "gsi": "i64", "ts_nsec": "u64"}],
        "pending_ports": "list_i64", "notes": "list_str",
        "readable": {"log": "bool", "grant_frames": "bool", "shared_info": "bool"},
        "hypervisor": "str", "xen_signs": "list_str", "log_last_ts_nsec": "u64", "warnings": "list_str",
    },
}


def _member(path: str):
    node = CONTRACT
    for part in path.split("."):
        node = node[part]
    return node


def row_columns(member: str) -> dict[str, str]:
    """The columns of a row member of the contract (``"grants"``, ``"guest.pirqs_open"``...) in order, with their
    leaf types; nested members are "json" and optional ones lose their "?"."""
    row = _member(member)[0]
    return {k.rstrip("?"): (v if isinstance(v, str) else "json") for k, v in row.items()}


_LEAF_OK = {
    "i64": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "f64": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "u64": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "json": lambda v: True,
    "list_i64": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    "list_str": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def check(obj, schema=None, where: str = "") -> list[str]:
    """Where ``obj`` (the JSON contract as a Python object, or a member of it with its ``schema``) departs from
    :data:`CONTRACT`: members missing, unknown or of the wrong type (an empty list when it conforms)."""
    schema = CONTRACT if schema is None else schema
    if obj is None:
        return []
    if isinstance(schema, str):
        return [] if _LEAF_OK[schema](obj) else [f"{where or '.'}: {obj!r} is not {schema}"]
    if isinstance(schema, list):
        if not isinstance(obj, list):
            return [f"{where}: not an array"]
        return [p for i, row in enumerate(obj) for p in check(row, schema[0], f"{where}[{i}]")]
    if not isinstance(obj, dict):
        return [f"{where}: not an object"]
    names = {k.rstrip("?"): k for k in schema}
    out = [f"{where}.{k}: not in the contract" for k in obj if k not in names]
    for name, key in names.items():
        if name in obj:
            out += check(obj[name], schema[key], f"{where}.{name}")
        elif not key.endswith("?"):
            out.append(f"{where}.{name}: missing")
    return out


def to_json_obj(a) -> dict:
    """The JSON contract as a Python object (lists and dicts of str/int/bool/None)."""
    from tracelens import __version__

    from tracelens.analysis.safety import lost_dict

    lost_total = int(a.lost[:, 3].sum()) if a.lost.size else 0
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "tracelens", "version": __version__},
        "capture": {
            "path": a.path, "sha256": a.sha256, "records": a.records, "lost_records": lost_total,
            "lost_intervals": [lost_dict(a.lost, a.lost_info, i) for i in range(a.lost.shape[0])],
            "malformed_lost_records": int(a.lost_info["malformed"].sum()) if a.lost_info is not None else 0,
            "first_tsc": a.first_tsc, "last_tsc": a.last_tsc, "layout": a.layout.get("label"),
            "cpu_hz": getattr(a, "cpu_hz", None),
        },
        "coverage": a.coverage,
        "boundaries": [b.to_dict() for b in a.boundaries],
        "grants": [dict(r) for r in a.grants.rows],
        "grant_mappers": [dict(r) for r in a.grants.by_mapper],
        "grant_records_unattributed": a.grants.unattributed,
        "balloon": [dict(r, gfn_ranges=[list(x) for x in r["gfn_ranges"]]) for r in a.balloon],
        "hypercalls": [dict(r) for r in a.hypercalls],
        "irq_vectors": [dict(r) for r in a.vectors],
        "guest": {"instrumented": [{"domid": d, "epoch": e} for d, e in sorted(a.guest.instrumented)],
                  "grefs_open": a.guest.grefs, "pirqs_open": a.guest.pirqs, "events": a.guest.events},
        "safety": [dict(r) for r in a.safety],
        "findings": [f.to_dict() for f in a.findings],
        "dump": a.dump,
    }


def to_json(a) -> str:
    return json.dumps(to_json_obj(a), indent=2) + "\n"


#: the hypercalls the text, Markdown and HTML reports list (the JSON has them all)
SHOWN_HYPERCALLS = ("memory_op", "grant_table_op", "sched_op", "event_channel_op", "physdev_op", "hvm_op", "domctl",
                    "vcpu_op")


def _dom(d) -> str:
    from tracelens.analysis.records import dom_name

    return dom_name(d)


def _opt(x) -> str:
    return "-" if x is None else str(x)


# -- words: verdicts, epochs, coverage, losses, dump (shared by the text, Markdown and HTML reports) ---------------
#: the rule that reports each unsafe kind of a kexec-safety row (docs/rules.md)
KIND_RULES = {"balloon": "TL-BAL-001", "foreign_map": "TL-GNT-003", "grant_outstanding": "TL-GNT-001",
              "grant_ref_active": "TL-GST-001", "pirq_bound": "TL-GST-002"}
KIND_WORDS = {"balloon": "memory ballooned out", "foreign_map": "mapped other domains' grants",
              "grant_outstanding": "grants still mapped by a backend", "grant_ref_active": "grant refs still granted",
              "pirq_bound": "PIRQs still bound"}
#: the order in which verdicts are worst (the overall verdict is the worst over the kexecs that happened)
VERDICT_RANK = {"safe": 0, "not covered": 1, "inconclusive": 2, "unsafe": 3}


def _holders(a, domid: int, epoch: int) -> str:
    """Who still had ``domid``'s grants mapped at the end of ``epoch`` (per mapper), e.g. ``d0: 2, d2: 2``."""
    out = []
    for r in (a.grants.rows if a is not None else ()):
        if r["granter"] != domid or r["epoch"] != epoch:
            continue
        v = r["outstanding_at_boundary"] if r["outstanding_at_boundary"] is not None else r["outstanding_at_end"]
        if v and v > 0:
            who = f"{r['other_mappers']} others" if "other_mappers" in r else _dom(r["mapper"])
            out.append(f"{who}: {v}")
    return ", ".join(out)


def epoch_words(s: dict, findings=(), a=None) -> tuple[str, str, str]:
    """(label, css class, explanation) of one kexec-safety row, in words that agree with the findings.

    An epoch that ended in a boundary carries its verdict (the kexec happened). An epoch still open at the end of
    the capture has had no kexec: what it holds (a backend's live mappings, ballooned pages) says only whether a
    kexec *now* would be safe, so it is shown as ``open`` in a neutral colour, unless a finding is about it (a
    dump's findings can be)."""
    kinds = [k for k in KIND_RULES if k in (s.get("unsafe") or {})]
    possibly = [k for k in KIND_RULES if k in (s.get("possibly_unsafe") or {})]
    lost = sum(x["count"] for x in s.get("lost") or ())
    mine = [f for f in findings if f.domid == s["domid"] and f.epoch == s["epoch"]]
    if s["end_tsc"] is not None:
        v = s["verdict"]
        if v == "unsafe":
            why = "; ".join(f"{KIND_WORDS[k]} ({KIND_RULES[k]})" for k in kinds)
            if "grant_outstanding" in kinds:
                held = _holders(a, s["domid"], s["epoch"])
                why = why.replace("grants still mapped by a backend",
                                  f"{s['outstanding_grants']} grant(s) still mapped" + (f" ({held})" if held else ""),
                                  1)
        elif v == "inconclusive":
            why = (f"{lost} record(s) lost before the boundary" if lost else "records lost before the boundary")
            if possibly:
                why += "; possibly " + ", ".join(KIND_WORDS[k] for k in possibly)
            why += " (TL-LOST-001)"
        elif v == "not covered":
            why = "the capture has no " + ", ".join(s.get("not_covered") or ()) + " records to tell"
        else:
            why = "nothing the capture records crossed the boundary"
        return v.upper(), v.replace(" ", "-"), why
    # open: no kexec yet
    parts = []
    if "grant_outstanding" in kinds or "grant_outstanding" in possibly:
        held = _holders(a, s["domid"], s["epoch"])
        parts.append(f"{s['outstanding_grants']} grant(s) mapped by other domains" + (f" ({held})" if held else ""))
    parts += [KIND_WORDS[k] for k in kinds + possibly if k != "grant_outstanding"]
    if s.get("removed_at_end"):
        state = "destroyed before the end of the capture"
    elif parts:
        state = "live: " + ", ".join(parts) + "; a kexec now would not be safe"
    elif s["verdict"] == "inconclusive":
        state = f"live; inconclusive: {lost} record(s) lost, a kexec now cannot be judged"
    elif s["verdict"] == "not covered":
        state = "live; not covered: the capture has no " + ", ".join(s.get("not_covered") or ()) + " records to tell"
    else:
        state = "live; nothing that would make a kexec now unsafe"
    css = "open"
    if mine:
        worst = min(mine, key=lambda f: SEVERITY_RANK.get(f.severity, 9))
        css = "unsafe" if worst.severity == "error" else "inconclusive"
        state += "; findings: " + ", ".join(sorted({f.rule for f in mine}))
    return "OPEN", css, state


SEVERITY_RANK = {"error": 0, "warning": 1, "note": 2}


def verdict_summary(a) -> dict:
    """The report's first screen, as data: ``headline`` (words), ``css`` (the worst verdict's class), ``epochs``
    (per guest epoch: domain, epoch, span words, label, css, explanation), ``coverage``, ``losses`` and ``dump``
    (lists of sentences: what the capture could and could not show)."""
    from tracelens.timebase import TimeBase

    tb = TimeBase.of(a)
    closed = [s for s in a.safety if s["end_tsc"] is not None]
    errors = sum(f.severity == "error" for f in a.findings)
    warnings = sum(f.severity == "warning" for f in a.findings)
    nf = f"{len(a.findings)} finding(s): {errors} error(s), {warnings} warning(s)" if a.findings else "no findings"
    if closed:
        worst = max(closed, key=lambda s: VERDICT_RANK.get(s["verdict"], 3))["verdict"]
        bad = [s for s in closed if s["verdict"] == worst]
        if len(bad) <= 3:
            which = ", ".join(f"{_dom(s['domid'])} epoch {s['epoch']} ({s['boundary_kind']})" for s in bad)
        else:  # per domain, so the headline stays one line
            per: dict = {}
            for s in bad:
                per.setdefault(s["domid"], []).append(str(s["epoch"]))
            which = f"{len(bad)} of {len(closed)} kexecs: " + ", ".join(
                f"{_dom(d)} (epochs {', '.join(e)})" for d, e in per.items())
        headline = {"unsafe": f"UNSAFE kexec: {which}",
                    "inconclusive": f"INCONCLUSIVE: records were lost before the kexec of {which}",
                    "not covered": f"NOT COVERED: the capture cannot show whether the kexec of {which} was safe",
                    "safe": f"SAFE: {len(closed)} kexec(s), nothing the capture records crossed a boundary"}[worst]
        css = worst.replace(" ", "-")
    else:
        headline = "No kexec boundary in this capture"
        if (a.coverage or {}).get("uncovered"):
            headline += " (and NOT COVERED: no " + ", ".join(a.coverage["uncovered"]) + " records)"
        css = "open"
        if any(f.severity == "error" for f in a.findings):
            css = "unsafe"
    headline += f"; {nf}"
    epochs = []
    for s in a.safety:
        label, ecss, why = epoch_words(s, a.findings, a)
        start = "capture start" if s["start_tsc"] is None else tb.fmt(s["start_tsc"])
        end = (f"{s['boundary_kind']} at {tb.fmt(s['end_tsc'])}" if s["end_tsc"] is not None
               else "open at the end")
        epochs.append({"domid": s["domid"], "epoch": s["epoch"], "span": f"{start} → {end}", "label": label,
                       "css": ecss, "why": why})
    return {"headline": headline, "css": css, "epochs": epochs, "coverage": coverage_words(a),
            "losses": loss_words(a, tb), "dump": dump_words(a)}


def coverage_words(a) -> list[str]:
    """What the capture's event classes let it show, and what not (tracelens.analysis.coverage)."""
    cov = a.coverage or {}
    subs = cov.get("subclasses") or []
    if not subs:
        return []
    need = set(cov.get("verdicts_need") or ())
    missing = [x for x in subs if x["evidence"] is None]
    out = []
    if cov.get("uncovered"):
        out.append("NOT COVERED: no " + ", ".join(cov["uncovered"]) + " records and no --trace-mask declaring "
                   "them, so a safe verdict is impossible (declare the mask if the host was idle)")
    elif need:
        how = "declared with --trace-mask" if any(x["evidence"] == "declared" for x in subs if x["subclass"] in need) \
            else "recorded"
        out.append(f"Covered: {', '.join(sorted(need))} {how} (what a verdict needs)")
    other = [x for x in missing if x["subclass"] not in need]
    if other:
        out.append("Not recorded, so not shown: "
                   + "; ".join(f"{x['subclass']} ({x['needed_by'].split(': ', 1)[-1]})" for x in other))
    return out


def loss_words(a, tb=None) -> list[str]:
    from tracelens.timebase import TimeBase

    tb = tb or TimeBase.of(a)
    if not a.lost.size:
        return ["No records lost."]
    total = int(a.lost[:, 3].sum())
    out = [f"{total} record(s) lost in {a.lost.shape[0]} interval(s); a verdict that depends on them is "
           "inconclusive, never safe:"]
    bad = a.lost_info["malformed"] if a.lost_info is not None else [False] * a.lost.shape[0]
    for i in range(min(a.lost.shape[0], 8)):
        c, f, t, n = (int(x) for x in a.lost[i, :4])
        out.append(f"pCPU {c}: {'an unknown number (malformed LOST_RECORDS)' if bad[i] else n} lost between "
                   f"{tb.fmt(f)} and {tb.fmt(t)}")
    if a.lost.shape[0] > 8:
        out.append(f"... and {a.lost.shape[0] - 8} more interval(s) (capture table)")
    return out


def dump_words(a) -> list[str]:
    dv = a.dump
    if dv is None:
        return []
    out = [f"Dump {dv['path']} ({dv['kind']}): {dv['assumption']}"]
    out += [f"WARNING: {w}" for w in dv.get("warnings") or ()]
    return out


def _unknown_if(flag: bool, value: str, why: str) -> str:
    return value if flag else f"unknown ({why})"


# -- the tables ------------------------------------------------------------------------------------------------
@dataclass
class Section:
    """A table of the report: ``key`` (the HTML section id), title, header, rows (strings); ``row_ids`` (HTML
    anchors the findings link to), ``note`` (a sentence under the title), ``tsc_cols`` (header names whose cells
    are TSCs: the HTML shows them as times)."""

    key: str
    title: str
    header: list
    rows: list
    row_ids: list | None = None
    note: str = ""
    css: list | None = None  # per row, the css class of the verdict/severity cell
    pinned: set = field(default_factory=set)  # row indices always shown (findings link to them)


def evidence_id(f) -> str:
    """The HTML anchor of the table row that is a finding's evidence."""
    ev = f.evidence or {}
    if f.rule in ("TL-GNT-001", "TL-GNT-002"):
        m = "other" if f.object == "mapper:other" else ev.get("mapper")
        return f"grant-{m}-{f.domid}-{f.epoch}"
    if f.rule == "TL-GNT-003":
        return f"mapper-{f.domid}-{f.epoch}"
    if f.rule == "TL-BAL-001":
        return f"balloon-{f.domid}-{f.epoch}"
    if f.rule == "TL-GST-001":
        return f"gref-{f.domid}-{f.epoch}-{ev.get('ref')}"
    if f.rule == "TL-GST-002":
        return f"pirq-{f.domid}-{f.epoch}-{ev.get('pirq')}"
    if f.rule.startswith("TL-DMP-"):
        return "dump"
    return f"safety-{f.domid}-{f.epoch}"


def sections(a) -> list[Section]:
    """Every detail table, in report order (strings only; shared by the text, Markdown and HTML renderers)."""
    from tracelens.timebase import TimeBase

    tb = TimeBase.of(a)

    def at(t) -> str:
        return "-" if t is None else f"{t} ({tb.fmt(t)})"

    out = []
    out.append(Section("boundaries", "Boundaries", ["domain", "epoch ended", "kind", "tsc", "teardown", "evidence"],
                       [[_dom(b.domid), str(b.epoch), b.kind, at(b.tsc),
                         _teardown(b, tb),
                         ", ".join(f"{k}={v}" for k, v in b.evidence.items()
                                   if k in ("reason_name", "note", "source"))]
                        for b in a.boundaries],
                       row_ids=[f"boundary-{b.domid}-{b.epoch}" for b in a.boundaries]))
    words = [epoch_words(s, a.findings, a) for s in a.safety]
    out.append(Section("safety", "kexec safety (per guest domain and epoch)",
                       ["domain", "epoch", "ends", "verdict", "why", "first unsafe", "outstanding grants"],
                       [[_dom(s["domid"]), str(s["epoch"]),
                         f"{s['boundary_kind']} at {tb.fmt(s['end_tsc'])}" if s["end_tsc"] is not None else "(open)",
                         w[0].lower(), w[2],
                         f"{s['first_unsafe_kind']} at {tb.fmt(s['first_unsafe_tsc'])}" if s["first_unsafe_kind"]
                         else "-", str(s["outstanding_grants"])]
                        for s, w in zip(a.safety, words)],
                       row_ids=[f"safety-{s['domid']}-{s['epoch']}" for s in a.safety],
                       css=[w[1] for w in words],
                       note="An epoch that ended in a boundary has its kexec's verdict; an open epoch had no kexec "
                            "in the capture: it says whether a kexec now would be safe."))
    grows = a.grants.rows
    out.append(Section("grants", "Grants (per mapper, granter and granter epoch)",
                       ["mapper", "granter", "epoch", "maps", "unmaps", "late unmaps", "outstanding at boundary"],
                       [[_dom(r["mapper"]) if "other_mappers" not in r else f"({r['other_mappers']} others)",
                         _dom(r["granter"]), str(r["epoch"]), str(r["maps"]), str(r["unmaps"]),
                         str(r["late_unmaps"]),
                         _opt(r["outstanding_at_boundary"]) if r["outstanding_at_boundary"] is not None
                         else f"(open: {r['outstanding_at_end']} at end)"] for r in grows],
                       row_ids=[f"grant-{'other' if 'other_mappers' in r else r['mapper']}-{r['granter']}-{r['epoch']}"
                                for r in grows]))
    maps = [r for r in a.grants.by_mapper if r["mapper"] is not None and r["mapper"] != 0 and r["maps"]]
    if maps:
        out.append(Section("grant-mappers", "Guests mapping other domains' grants (per mapper epoch)",
                           ["mapper", "epoch", "maps", "unmaps", "granters", "first map", "outstanding at boundary"],
                           [[_dom(r["mapper"]), str(r["epoch"]), str(r["maps"]), str(r["unmaps"]),
                             ", ".join(_dom(g) for g in r["granters"]), tb.fmt(r["first_map_tsc"]),
                             _opt(r["outstanding_at_boundary"]) if r["outstanding_at_boundary"] is not None
                             else f"(open: {r['outstanding_at_end']} at end)"] for r in maps],
                           row_ids=[f"mapper-{r['mapper']}-{r['epoch']}" for r in maps]))
    out.append(Section("balloon", "Balloon (DECREASE_RESERVATION)",
                       ["domain", "epoch", "extents", "pages", "by order", "gfn ranges", "memory_op calls"],
                       [[_dom(r["domid"]), str(r["epoch"]), str(r["extents"]), str(r["pages"]),
                         ", ".join(f"{o}:{c}" for o, c in r["extents_by_order"].items()),
                         ", ".join(f"{x:#x}-{y - 1:#x}" for x, y in r["gfn_ranges"][:4])
                         + (" …" if len(r["gfn_ranges"]) > 4 else ""), str(r["memory_op_calls"])] for r in a.balloon],
                       row_ids=[f"balloon-{r['domid']}-{r['epoch']}" for r in a.balloon]))
    from tracelens.analysis.ledgers import HYPERCALL_NUMBERS

    interesting = {HYPERCALL_NUMBERS[n] for n in SHOWN_HYPERCALLS}
    hc = sorted((h for h in a.hypercalls if h["op"] in interesting or h["source"] == "other"),
                key=lambda h: -h["count"])
    out.append(Section("hypercalls", "Hypercalls (memory, grant, sched, event channel, physdev, hvm, domctl, vcpu)",
                       ["domain", "epoch", "source", "op", "cmd", "count"],
                       [[_dom(h["domid"]), str(h["epoch"]), h["source"], h["op_name"], h.get("cmd_name", "-"),
                         str(h["count"])] for h in hc], note="Busiest first."))
    vec = a.vectors
    out.append(Section("irq-vectors", "Xen IRQ vectors", ["irq", "assigns", "clears", "last vector",
                                                         "assigned at end", "deliveries"],
                       [["(others)" if r.get("other_irqs") else str(r["irq"]), str(r["assigns"]), str(r["clears"]),
                         _opt(r["last_vector"]), "yes" if r["assigned_at_end"] else "no", str(r["handled"])]
                        for r in vec]))
    g = a.guest
    if g.instrumented or g.grefs or g.pirqs:
        out.append(Section("guest-grefs", "Guest grant refs still granted at the end of an epoch (TRC_GUEST)",
                           ["domain", "epoch", "ref", "grantee", "frame", "granted at"],
                           [[_dom(r["domid"]), str(r["epoch"]), str(r["ref"]), _dom(r["grantee"]), f"{r['frame']:#x}",
                             at(r["tsc"])] for r in g.grefs],
                           row_ids=[f"gref-{r['domid']}-{r['epoch']}-{r['ref']}" for r in g.grefs],
                           note="Instrumented epochs: " + ", ".join(f"{_dom(d)} epoch {e}"
                                                                     for d, e in sorted(g.instrumented))))
        out.append(Section("guest-pirqs", "Guest PIRQs still bound at the end of an epoch (TRC_GUEST)",
                           ["domain", "epoch", "pirq", "irq", "kind", "gsi/vector", "port", "bound at"],
                           [[_dom(r["domid"]), str(r["epoch"]), str(r["pirq"]), str(r["irq"]), str(r["kind"]),
                             str(r["gsi_or_vector"]), str(r["port"]), at(r["tsc"])] for r in g.pirqs],
                           row_ids=[f"pirq-{r['domid']}-{r['epoch']}-{r['pirq']}" for r in g.pirqs]))
    if a.dump is not None:
        dv = a.dump
        rd = dv.get("readable") or {"log": True, "grant_frames": True, "shared_info": None}
        log_ok, gnt_ok = rd.get("log", True), rd.get("grant_frames", True)
        out.append(Section("dump", "Dump (--vmcore)",
                           ["path", "kind", "belongs to", "Xen log events", "grants granted / in use",
                            "PIRQs in log", "pending ports", "notes"],
                           [[str(dv["path"]), str(dv["kind"]), dv["assumption"],
                             _unknown_if(log_ok, str(len(dv["log_events"])), "log not readable"),
                             _unknown_if(gnt_ok, f"{dv['grants_granted']} / {len(dv['grants_in_use'])}",
                                         "grant table not readable"),
                             _unknown_if(log_ok, str(len(dv["pirqs"])), "log not readable"),
                             str(len(dv["pending_ports"])) if rd.get("shared_info") else "unknown (no shared_info)",
                             "; ".join(dv.get("warnings", []) + dv["notes"]) or "-"]],
                           row_ids=["dump"]))
        out.append(Section("dump-log", "Dump kernel log (Xen events; guest clock, not on the TSC axis)",
                           ["ts (ns)", "event", "text"],
                           [[str(e["ts_nsec"]), e["event"], e["text"]] for e in dv["log_events"]]))
    cap = to_json_obj(a)["capture"]
    out.append(Section("capture", "Capture", ["path", "sha256", "records", "lost records", "span", "layout"],
                       [[str(cap["path"]), str(cap["sha256"])[:16] + "…" if cap["sha256"] else "-",
                         f"{cap['records']:,}", f"{cap['lost_records']} in {len(cap['lost_intervals'])} interval(s)",
                         f"TSC {a.first_tsc} .. {a.last_tsc} ({tb.fmt_span(a.first_tsc, a.last_tsc)})",
                         str(cap["layout"])]]))
    if a.lost.size:
        bad = a.lost_info["malformed"] if a.lost_info is not None else [False] * a.lost.shape[0]
        out.append(Section("lost", "Lost records (LOST_RECORDS)", ["pCPU", "count", "from", "to", "named vCPU's domain"],
                           [[str(int(a.lost[i, 0])), "unknown (malformed)" if bad[i] else str(int(a.lost[i, 3])),
                             at(int(a.lost[i, 1])), at(int(a.lost[i, 2])),
                             _dom(int(a.lost_info["dom"][i])) if a.lost_info is not None else "?"]
                            for i in range(a.lost.shape[0])],
                           row_ids=[f"lost-{i}" for i in range(a.lost.shape[0])]))
    cov = a.coverage or {}
    if cov:
        out.append(Section("coverage", "Coverage (event classes the capture can speak for; docs/analysis.md)",
                           ["subclass", "id", "records", "covered", "needed by"],
                           [[x["subclass"], x["id"], str(x["records"]),
                             {"records": "yes (records)", "declared": "yes (declared mask)", None: "NO"}[x["evidence"]]
                             + (" *" if x["subclass"] in cov["verdicts_need"] else ""), x["needed_by"]]
                            for x in cov["subclasses"]]
                           + [["declared mask", str(cov["declared_mask"] or "none (--trace-mask)"), "", "",
                               "* a safe verdict needs these; uncovered: " + (", ".join(cov["uncovered"]) or "none")]]
                           + [["note", "", "", "", n] for n in cov["notes"]]))
    return out


def _teardown(b, tb) -> str:
    ev = b.evidence
    start = ev.get("shutdown_tsc", ev.get("removed_tsc"))
    if start is None:
        return "-"
    what = "shutdown" if "shutdown_tsc" in ev else "destroyed"
    return f"{what} at {tb.fmt(start)}, {tb.fmt_span(start, b.tsc)} before"


def findings_by_rule(findings) -> list[tuple[str, str, str, list]]:
    """(rule, severity, title, findings) groups: by severity, then rule; inside, by domain, epoch and object."""
    from tracelens.analysis.findings import RULES

    groups: dict[str, list] = {}
    for f in findings:
        groups.setdefault(f.rule, []).append(f)
    out = []
    for rule, fs in groups.items():
        sev = min((f.severity for f in fs), key=lambda s: SEVERITY_RANK.get(s, 9))
        title = RULES.get(rule, ("", rule))[1]
        fs = sorted(fs, key=lambda f: (f.domid if f.domid is not None else -1, f.epoch if f.epoch is not None else -1,
                                       f.object))
        out.append((rule, sev, title, fs))
    out.sort(key=lambda g: (SEVERITY_RANK.get(g[1], 9), g[0]))
    return out


# -- text and Markdown -----------------------------------------------------------------------------------------
def _summary_lines(a) -> list[str]:
    v = verdict_summary(a)
    out = [v["headline"]]
    for e in v["epochs"]:
        out.append(f"  {_dom(e['domid'])} epoch {e['epoch']} ({e['span']}): {e['label']}: {e['why']}")
    out += ["  " + x for x in v["coverage"] + v["losses"] + v["dump"]]
    return out


def to_text(a, width: int = 140) -> str:
    """rich tables, rendered to plain text (no colour codes) ``width`` columns wide: the verdict, the findings by
    rule, then the detail tables."""
    from rich.console import Console
    from rich.table import Table

    from tracelens.timebase import TimeBase

    tb = TimeBase.of(a)
    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False, markup=False)
    con.print("Verdict")
    for line in _summary_lines(a):
        con.print(escape.rich(line))
    con.print()
    if not a.findings:
        con.print("Findings: none")
    for rule, sev, title, fs in findings_by_rule(a.findings):
        t = Table(title=f"{rule} ({sev}): {title}", title_justify="left")
        for h in ("domain", "epoch", "object", "tsc", "message"):
            t.add_column(h, overflow="fold", no_wrap=h in ("object",))
        for f in fs:
            t.add_row(*(escape.rich(c) for c in (_dom(f.domid), _opt(f.epoch), f.object,
                                                 "-" if f.tsc is None else f"{f.tsc} ({tb.fmt(f.tsc)})",
                                                 f.message)))
        con.print(t)
    for sec in sections(a):
        if not sec.rows:
            con.print(f"{sec.title}: none")
            continue
        t = Table(title=sec.title, title_justify="left")
        for h in sec.header:
            t.add_column(h, overflow="fold")
        for r in sec.rows:
            t.add_row(*(escape.rich(c) for c in r))  # capture- and dump-derived: never markup, never raw controls
        con.print(t)
    errors = sum(f.severity == "error" for f in a.findings)
    con.print(f"{len(a.findings)} finding(s), {errors} error(s); {len(a.boundaries)} boundary(ies)")
    return buf.getvalue()


def _md_cell(s: str) -> str:
    return escape.markdown(s)


def _md_table(lines, header, rows):
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
    lines.append("")


def to_markdown(a) -> str:
    from tracelens.timebase import TimeBase

    tb = TimeBase.of(a)
    lines = [f"# tracelens analysis of {escape.markdown_code(a.path)}", "", "## Verdict", ""]
    summary = _summary_lines(a)
    lines += [f"**{_md_cell(summary[0])}**", ""] + [f"- {_md_cell(x.strip())}" for x in summary[1:]] + [""]
    lines += ["## Findings", ""]
    if not a.findings:
        lines += ["none", ""]
    for rule, sev, title, fs in findings_by_rule(a.findings):
        lines += [f"### {rule} ({sev}): {_md_cell(title)}", ""]
        _md_table(lines, ["domain", "epoch", "object", "tsc", "message"],
                  [[_dom(f.domid), _opt(f.epoch), f.object, "-" if f.tsc is None else f"{f.tsc} ({tb.fmt(f.tsc)})",
                    f.message] for f in fs])
    for sec in sections(a):
        lines.append(f"## {sec.title}")
        lines.append("")
        if not sec.rows:
            lines += ["none", ""]
            continue
        _md_table(lines, sec.header, sec.rows)
    return "\n".join(lines)


def to_html(a) -> str:
    """A self-contained HTML report (tracelens.analysis.report_html)."""
    from tracelens.analysis.report_html import to_html as render

    return render(a)


RENDERERS = {"text": to_text, "json": to_json, "md": to_markdown, "html": to_html}
