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
import re

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


#: log event categories that only a kernel running on Xen writes (panic and kexec lines are any kernel's)
XEN_CATEGORIES = ("platform", "grant-table", "evtchn", "evtchn-error", "pirq", "pirq-error", "balloon", "xenbus",
                  "xen", "shutdown")
_HYPERVISOR = re.compile(r"^Hypervisor detected: (?P<name>\S+)")


def dump_evidence(path, analysis, domid: int | None = None) -> dict:
    """Read the dump at ``path`` and correlate it with ``analysis`` (a tracelens.analysis.analyze.Analysis). Returns a
    dict: path, kind, domid, epoch, assumption, log_events, grants_in_use, grants_granted, pirqs, pending_ports,
    notes (what could not be read and why), ``readable`` ({log, grant_frames, shared_info}: false when that part
    could not be read, so its empty lists mean "unknown", not "none"), ``hypervisor`` (what the kernel log says it
    detected, or None), ``xen_signs`` (what shows a Xen guest kernel), ``log_last_ts_nsec`` (the log's last
    timestamp, guest clock) and ``warnings`` (what a reader must know before trusting the rest)."""
    from tracelens.parsers import vmcore
    from tracelens.parsers.vmcore import xen
    from tracelens.parsers.vmcore.codecs import codec_available

    d_id, epoch, assumption = _pick(analysis, domid)
    out = {"path": os.fspath(path), "kind": None, "domid": d_id, "epoch": epoch, "assumption": assumption,
           "log_events": [], "grants_in_use": [], "grants_granted": 0, "grant_frames": [], "pirqs": [],
           "pending_ports": [], "notes": [], "readable": {"log": True, "grant_frames": True, "shared_info": None},
           "hypervisor": None, "xen_signs": [], "log_last_ts_nsec": None, "warnings": []}
    with vmcore.open(path) as dump:
        out["kind"] = dump.kind
        compression = (dump.info() or {}).get("compression") if hasattr(dump, "info") else None
        try:
            log = dump.dmesg()
            events = xen.log_events(log).to_pylist()
            texts = log.column("text").to_pylist()
            stamps = [t for t in log.column("ts_nsec").to_pylist() if t is not None]
            out["log_last_ts_nsec"] = max(stamps) if stamps else None
            for t in texts:
                m = _HYPERVISOR.match(t or "")
                if m:
                    out["hypervisor"] = m["name"]
                    break
        except FormatError as e:  # a damaged or absent log (the readers' documented error); anything else is a bug
            events = []
            out["readable"]["log"] = False
            out["notes"].append(f"kernel log not readable: {e}")
        out["log_events"] = [{k: e[k] for k in ("seq", "ts_nsec", "event", "category", "text")} for e in events]
        seen = {}
        for e in events:
            if e["event"] == "pirq_mapped" and e["pirq"] is not None:
                seen[e["pirq"]] = {"pirq": e["pirq"], "irq": e["irq"], "gsi": e["gsi"], "ts_nsec": e["ts_nsec"]}
        out["pirqs"] = [seen[p] for p in sorted(seen)]
        frames, entries = [], []
        if compression and not codec_available(compression):
            out["readable"]["grant_frames"] = False
            out["notes"].append(f"grant frames not readable: the dump's pages are {compression}-compressed and "
                                f"the {compression} codec is not installed (pip install python-{compression})")
        else:
            try:
                frames = xen.find_grant_frames(dump)
                entries = xen.grant_entries(dump, frames).to_pylist() if frames else []
            except FormatError as e:
                frames, entries = [], []
                out["readable"]["grant_frames"] = False
                out["notes"].append(f"grant frames not readable: {e}")
            if not frames and out["readable"]["grant_frames"]:
                out["notes"].append("no page shaped like a v1 grant frame in the dump (v2 tables or excluded pages)")
        out["grant_frames"] = frames
        granted = [g for g in entries if g["type"] == "permit_access" and g["ref"] >= xen.RESERVED_REFS]
        out["grants_granted"] = len(granted)
        out["grants_in_use"] = [{k: g[k] for k in ("ref", "domid", "frame", "reading", "writing", "readonly")}
                                for g in granted if g["in_use"]]
        page = getattr(dump, "shared_info_page", None)
        if page:
            out["readable"]["shared_info"] = True
            ports = xen.shared_info(page)["ports"].to_pylist()
            out["pending_ports"] = [p["port"] for p in ports if p["pending"] and not p["masked"]]
        else:
            out["notes"].append("no shared_info page in this dump format (only xl dump-core files carry it)")
    _judge(out)
    return out


def _judge(out: dict) -> None:
    """The dump's ``xen_signs`` and ``warnings``: unreadable parts (their zeros are unknowns) and a dump that shows
    no sign of a Xen guest kernel (then it may not be the domain's dump at all)."""
    signs = sorted({e["event"] for e in out["log_events"] if e["category"] in XEN_CATEGORIES})
    if out["grant_frames"]:
        signs.append(f"{len(out['grant_frames'])} grant frame(s)")
    if out["readable"]["shared_info"]:
        signs.append("a shared_info page")
    out["xen_signs"] = signs
    who = f"d{out['domid']}" if out["domid"] is not None else "the domain"
    if not out["readable"]["log"]:
        out["warnings"].append("the kernel log could not be read: its Xen events and PIRQs are unknown, not none ("
                               + next(n for n in out["notes"] if n.startswith("kernel log not readable")) + ")")
    if not out["readable"]["grant_frames"]:
        out["warnings"].append("the grant table could not be read: grants still mapped are unknown, not none")
    if out["domid"] is None:
        out["warnings"].append(out["assumption"])
    if not signs and (out["readable"]["log"] or out["readable"]["grant_frames"]):
        said = f"its log says \"Hypervisor detected: {out['hypervisor']}\"" if out["hypervisor"] and \
            out["hypervisor"].lower() != "xen" else "no Xen line in its kernel log"
        out["warnings"].append(f"this dump shows no sign of a Xen guest kernel ({said}, no grant frame, no "
                               f"shared_info): it may not be {who}'s dump")


def dump_findings(ev: dict, analysis) -> list:
    """Findings TL-DMP-001..003 (docs/rules.md) from :func:`dump_evidence` and the analysis."""
    from tracelens.analysis.findings import _mk
    from tracelens.analysis.ledgers import HYPERCALL_NUMBERS

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
                    if h["domid"] == d and h["epoch"] == e + 1 and h["op"] == HYPERCALL_NUMBERS["physdev_op"])
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
    from tracelens.analysis.findings import sort_key

    try:
        ev = dump_evidence(path, analysis, domid)
    except FileNotFoundError:
        raise FormatError(path, None, "no such dump file") from None
    analysis.dump = ev
    analysis.findings = sorted(analysis.findings + dump_findings(ev, analysis), key=sort_key)
