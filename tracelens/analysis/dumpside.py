"""Evidence from the guest's dump (``tracelens analyze --vmcore DUMP``), correlated with the capture's epochs.

The dump is read with the project's vmcore readers (tracelens.parsers.vmcore; Xen views in
``tracelens.parsers.vmcore.xen``: the Xen-related kernel log events, v1 grant frames found by shape, and the
shared_info page that ``xl dump-core`` files carry). What it adds to the trace (spec §4.1-4.2 say the trace cannot
see grant refs, PIRQs or event channels):

* the **grant entries** of the dumped kernel's grant table with Xen's GTF_reading/GTF_writing flags set: pages some
  domain still had mapped when the dump was taken; compared with the trace's outstanding count per mapper;
* the **PIRQs** the dumped kernel mapped (``xen: --> pirq=P -> irq=I (gsi=G)`` lines of its log), compared with the
  physdev_op hypercalls the next kernel issued after the boundary;
* the **event channels** pending and not masked in shared_info (events the dumped kernel never handled);
* every Xen-related log event (grant table set-up, balloon, kexec, shutdown requests...), listed with the epoch the
  dump belongs to. Kernel log times are the guest's own clock (ns since its boot) and cannot be put on the TSC axis.

Which domain and epoch the dump belongs to: ``domid`` when given, else the only domain with a ``crash`` boundary,
else the only domain with any boundary, else the only guest domain. The epoch is the one ending at the domain's last
crash boundary (a kdump of the crashed kernel), else its last, open epoch (a dump taken at the end, e.g. ``xl
dump-core``). The choice and its reason are in ``assumption``.
"""

from __future__ import annotations

import os

from tracelens.errors import FormatError

MAX_LISTED = 64  # refs / ports listed in one finding's evidence


def _pick(analysis, domid: int | None) -> tuple[int | None, int | None, str]:
    bounds = analysis.boundaries
    if domid is not None:
        why = "given with --vmcore-dom"
    else:
        crash = sorted({b.domid for b in bounds if b.kind == "crash"})
        anyb = sorted({b.domid for b in bounds})
        guests = sorted({s["domid"] for s in analysis.safety})
        if len(crash) == 1:
            domid, why = crash[0], "the only domain with a crash boundary"
        elif len(anyb) == 1:
            domid, why = anyb[0], "the only domain with a kexec boundary"
        elif len(guests) == 1:
            domid, why = guests[0], "the only guest domain in the capture"
        else:
            return None, None, "cannot tell which domain the dump belongs to: give --vmcore-dom"
    crashes = [b for b in bounds if b.domid == domid and b.kind == "crash"]
    if crashes:
        b = crashes[-1]
        return domid, b.epoch, f"d{domid} ({why}); epoch {b.epoch}, which ended at its crash boundary (tsc {b.tsc})"
    last = analysis.epochs.count(domid)
    return domid, last, f"d{domid} ({why}); its last epoch {last} (no crash boundary: a dump taken at the end)"


def dump_evidence(path, analysis, domid: int | None = None) -> dict:
    """Read the dump at ``path`` and correlate it with ``analysis`` (a tracelens.analysis.api.Analysis). Returns a
    dict: path, kind, domid, epoch, assumption, log_events, grants_in_use, grants_granted, pirqs, pending_ports,
    notes (what could not be read and why)."""
    from tracelens.parsers import vmcore
    from tracelens.parsers.vmcore import xen

    d_id, epoch, assumption = _pick(analysis, domid)
    out = {"path": os.fspath(path), "kind": None, "domid": d_id, "epoch": epoch, "assumption": assumption,
           "log_events": [], "grants_in_use": [], "grants_granted": 0, "grant_frames": [], "pirqs": [],
           "pending_ports": [], "notes": []}
    with vmcore.open(path) as dump:
        out["kind"] = dump.kind
        try:
            events = xen.log_events(dump).to_pylist()
        except FormatError as e:  # a damaged or absent log (the readers' documented error); anything else is a bug
            events = []
            out["notes"].append(f"kernel log not readable: {e}")
        out["log_events"] = [{k: e[k] for k in ("seq", "ts_nsec", "event", "category", "text")} for e in events]
        seen = {}
        for e in events:
            if e["event"] == "pirq_mapped" and e["pirq"] is not None:
                seen[e["pirq"]] = {"pirq": e["pirq"], "irq": e["irq"], "gsi": e["gsi"], "ts_nsec": e["ts_nsec"]}
        out["pirqs"] = [seen[p] for p in sorted(seen)]
        try:
            frames = xen.find_grant_frames(dump)
            entries = xen.grant_entries(dump, frames).to_pylist() if frames else []
        except FormatError as e:
            frames, entries = [], []
            out["notes"].append(f"grant frames not readable: {e}")
        out["grant_frames"] = frames
        if not frames:
            out["notes"].append("no page shaped like a v1 grant frame in the dump (v2 tables or excluded pages)")
        granted = [g for g in entries if g["type"] == "permit_access" and g["ref"] >= xen.RESERVED_REFS]
        out["grants_granted"] = len(granted)
        out["grants_in_use"] = [{k: g[k] for k in ("ref", "domid", "frame", "reading", "writing", "readonly")}
                                for g in granted if g["in_use"]]
        page = getattr(dump, "shared_info_page", None)
        if page:
            ports = xen.shared_info(page)["ports"].to_pylist()
            out["pending_ports"] = [p["port"] for p in ports if p["pending"] and not p["masked"]]
        else:
            out["notes"].append("no shared_info page in this dump format (only xl dump-core files carry it)")
    return out


def dump_findings(ev: dict, analysis) -> list:
    """Findings TL-DMP-001..003 (docs/rules.md) from :func:`dump_evidence` and the analysis."""
    from tracelens.analysis.findings import _mk

    d, e = ev["domid"], ev["epoch"]
    if d is None:
        return []
    b = analysis.epochs.boundary(d, e)
    at = b.tsc if b is not None else analysis.last_tsc
    out = []
    by_mapper: dict[int, list[dict]] = {}
    for g in ev["grants_in_use"]:
        by_mapper.setdefault(g["domid"], []).append(g)
    trace_out = {}
    for r in analysis.grants.rows:
        if r["granter"] == d and r["epoch"] == e and r["mapper"] is not None:
            v = r["outstanding_at_boundary"] if r["outstanding_at_boundary"] is not None else r["outstanding_at_end"]
            trace_out[r["mapper"]] = v
    for m, gs in sorted(by_mapper.items()):
        t = trace_out.get(m)
        agree = "as the trace shows" if t == len(gs) else (
            f"the trace shows {t} outstanding" if t is not None else "the trace shows no grant records of this pair")
        refs = [g["ref"] for g in gs]
        out.append(_mk("TL-DMP-001", d, e, f"mapper:d{m}", at, None, at,
                       f"the dump of d{d} has {len(gs)} grant(s) to d{m} that Xen still marks mapped "
                       f"(GTF_reading/GTF_writing; refs {', '.join(map(str, refs[:8]))}{' ...' if len(refs) > 8 else ''}); "
                       f"{agree}",
                       {"mapper": m, "refs": refs[:MAX_LISTED], "in_use": len(gs), "trace_outstanding": t,
                        "frames": [g["frame"] for g in gs][:MAX_LISTED], "dump": ev["path"]}))
    if b is not None and ev["pirqs"]:
        after = sum(h["count"] for h in analysis.hypercalls
                    if h["domid"] == d and h["epoch"] == e + 1 and h["op"] == 33)
        for p in ev["pirqs"]:
            out.append(_mk("TL-DMP-002", d, e, f"pirq:{p['pirq']}", b.tsc, None, b.tsc,
                           f"the dumped kernel of d{d} mapped PIRQ {p['pirq']} (gsi {p['gsi']}, irq {p['irq']}); after "
                           f"the {b.kind} boundary the next kernel issued {after} physdev_op call(s)",
                           {"pirq": p["pirq"], "gsi": p["gsi"], "irq": p["irq"], "physdev_op_after": after,
                            "log_ts_nsec": p["ts_nsec"], "dump": ev["path"]}))
    if ev["pending_ports"]:
        ports = ev["pending_ports"]
        out.append(_mk("TL-DMP-003", d, e, "event-channels", at, None, at,
                       f"{len(ports)} event channel(s) pending and unmasked in d{d}'s shared_info "
                       f"(ports {', '.join(map(str, ports[:8]))}{' ...' if len(ports) > 8 else ''}): events the dumped "
                       "kernel never handled",
                       {"ports": ports[:MAX_LISTED], "count": len(ports), "dump": ev["path"]}))
    return out


def attach(analysis, path, domid: int | None = None) -> None:
    """Add the dump's evidence and findings to ``analysis`` (in place): ``analysis.dump`` and more findings."""
    from tracelens.analysis.findings import SEVERITY_ORDER

    try:
        ev = dump_evidence(path, analysis, domid)
    except FileNotFoundError:
        raise FormatError(path, None, "no such dump file") from None
    analysis.dump = ev
    analysis.findings = sorted(analysis.findings + dump_findings(ev, analysis),
                               key=lambda f: (SEVERITY_ORDER[f.severity], f.domid if f.domid is not None else -1,
                                              f.epoch if f.epoch is not None else -1, f.rule, f.object))
