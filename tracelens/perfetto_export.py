"""Export a capture and its analysis as a native Perfetto trace (``tracelens export CAPTURE -o OUT.pftrace``).

The file is a ``perfetto.protos.Trace`` (TracePacket messages, written one by one with the ``perfetto`` package's
``StreamingTraceProtoBuilder``) that ui.perfetto.dev and trace_processor open. Tracks (TrackDescriptor) and events
(TrackEvent, on one packet sequence with interned names):

* **pCPUs**: a track per pCPU, a slice per run of one vCPU on it (named ``d1v0``, :func:`~tracelens.analysis.records
  .vcpu_name`); a gap is the idle vCPU or a time the capture cannot attribute. A run begins at the first record
  the vCPU is current for (the decoder's ``dom``/``vcpu``: the runstate change into running names it) and ends at
  the first record of the next one. This is the one part that needs a pass over every record: it walks
  :func:`tracelens.parsers.xentrace.decode.iter_batches` (only the columns cpu, tsc, dom, vcpu), batch by batch,
  and writes packets as it goes, so memory is bounded by a batch, not by the capture.
* **per guest domain** (a parent track ``d1``): ``epochs`` (a slice per epoch, annotated with its kexec-safety words,
  and the boundaries as instants), ``teardown`` (shutdown to resume), ``unsafe`` (instants: the first unsafe
  operation of each kind per epoch), ``findings`` (instants with rule, severity, message, fingerprint), counters
  ``grants mapped by dN`` (one per (mapper, granter) pair: the pair's outstanding mappings after each MAP/UNMAP;
  every k-th record on captures with more than a million, as in the analysis' series) and ``ballooned pages`` (pages
  given back by DECREASE_RESERVATION so far in the epoch), and with a dump ``dump log``: the dump's Xen log lines as
  instants.
* **lost records**: a counter per pCPU with LOST_RECORDS: the count lost while the loss lasts, 0 otherwise.

**Clock.** With ``cpu_hz`` timestamps are nanoseconds (TSC * 1e9 / cpu_hz); without, the TSC cycles are written as
if they were nanoseconds. The trace says which in its metadata (``trace_attributes``: ``tracelens.time_unit``
``ns`` or ``tsc_cycles_as_ns``, ``tracelens.cpu_hz``) and on its first track (``tracelens``), whose one slice spans
the capture and names the unit. **Dump log lines** carry the guest's own clock (ns since its boot); they are put on
the trace clock by taking the log's last line as the moment the domain's epoch ended: the SCHED_SHUTDOWN of its
crash boundary when the dump's epoch ended in one (a kdump of the crashed kernel), else the end of the capture. That
needs ``cpu_hz`` (nanoseconds on both sides), so ``--vmcore`` without ``--cpu-hz`` is refused.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

import numpy as np

from tracelens.errors import UsageError

SEQ = 1  # the one packet sequence (trusted_packet_sequence_id)
SEQ_INCREMENTAL_STATE_CLEARED, SEQ_NEEDS_INCREMENTAL_STATE = 1, 2
ROOT, PCPUS, LOST = 1, 2, 3  # track uuids; pCPU c: PCPU_BASE + c; domain d: DOM_BASE + d * DOM_STRIDE + k
PCPU_BASE, LOST_BASE, DOM_BASE, DOM_STRIDE = 0x1000, 0x3000, 0x100000, 0x100
PAIR_BASE = 0x10000000  # counter track of a grant pair: PAIR_BASE + pair index
DOM_TRACKS = {"epochs": 1, "teardown": 2, "unsafe": 3, "findings": 4, "balloon": 5, "dump": 6}
BATCH_BYTES = 16 << 20


@dataclass
class ExportOptions:
    """``pcpus``: the per-pCPU running-vCPU slices (a pass over every record); ``batch_bytes``: how much of the
    capture that pass decodes at a time (its memory)."""

    pcpus: bool = True
    batch_bytes: int = BATCH_BYTES


@dataclass
class ExportStats:
    """What an export wrote: packets, bytes, slices per pCPU run, counter values, instants, the time unit."""

    packets: int = 0
    bytes: int = 0
    pcpu_slices: int = 0
    counter_values: int = 0
    instants: int = 0
    time_unit: str = ""
    tracks: dict = field(default_factory=dict)


def _protos():
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as P
        from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder
    except ImportError:
        raise UsageError("tracelens export needs the perfetto package: pip install perfetto "
                         "(or pip install 'tracelens[perfetto]')") from None
    return P, StreamingTraceProtoBuilder


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Writer:
    """Packets on one sequence, with interned event names (an iid per distinct name).

    Descriptors, metadata and annotated events go through the perfetto package's ``StreamingTraceProtoBuilder``.
    The millions of bare slice and counter events reuse one ``TracePacket`` per (track, type, name): only the
    timestamp (and a counter's value) changes, and the packet is framed as the builder frames it (``Trace`` field 1,
    length-delimited): the same bytes, without a new ``Trace`` message per packet (tests compare the two)."""

    def __init__(self, f, P, Builder, stats: ExportStats):
        self.P = P
        self.b = Builder(f)
        self.f = f
        self.stats = stats
        self.names: dict[str, int] = {}
        self.first = True
        self._cache: dict[tuple, object] = {}

    def packet(self, ts: int | None = None):
        p = self.P.TracePacket()
        p.trusted_packet_sequence_id = SEQ
        if self.first:
            p.sequence_flags = SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        if ts is not None:
            p.timestamp = int(ts)
        return p

    def write(self, p) -> None:
        self.b.write_packet(p)
        self.stats.packets += 1

    def track(self, uuid: int, name: str, parent: int | None = None, counter: dict | None = None,
              description: str = "", rank: int | None = None) -> None:
        p = self.packet()
        d = p.track_descriptor
        d.uuid = uuid
        d.name = name
        if parent is not None:
            d.parent_uuid = parent
        if description:
            d.description = description
        if rank is not None:
            d.sibling_order_rank = rank
        if counter is not None:
            d.counter.SetInParent()
            if counter.get("unit_name"):
                d.counter.unit_name = counter["unit_name"]
        self.write(p)
        self.stats.tracks[uuid] = name

    def event(self, ts: int, track: int, kind: int, name: str | None = None, annotations: dict | None = None,
              value: int | None = None) -> None:
        if not annotations and (name is None or name in self.names) and not self.first:
            self._fast(ts, track, kind, name, value)
            return
        p = self.packet(ts)
        p.sequence_flags = SEQ_NEEDS_INCREMENTAL_STATE
        e = p.track_event
        e.type = kind
        e.track_uuid = track
        if name is not None:
            iid = self.names.get(name)
            if iid is None:
                iid = self.names[name] = len(self.names) + 1
                n = p.interned_data.event_names.add()
                n.iid = iid
                n.name = name
            e.name_iid = iid
        if value is not None:
            e.counter_value = int(value)
        for k, v in (annotations or {}).items():
            a = e.debug_annotations.add()
            a.name = k
            if isinstance(v, bool) or not isinstance(v, int):
                a.string_value = str(v)
            else:
                a.int_value = v
        self.write(p)

    def _fast(self, ts: int, track: int, kind: int, name: str | None, value: int | None) -> None:
        key = (track, kind, name)
        p = self._cache.get(key)
        if p is None:
            p = self.P.TracePacket()
            p.trusted_packet_sequence_id = SEQ
            p.sequence_flags = SEQ_NEEDS_INCREMENTAL_STATE
            p.track_event.type = kind
            p.track_event.track_uuid = track
            if name is not None:
                p.track_event.name_iid = self.names[name]
            self._cache[key] = p
        p.timestamp = int(ts)
        if value is not None:
            p.track_event.counter_value = int(value)
        data = p.SerializeToString()
        self.f.write(b"\n" + _varint(len(data)) + data)
        self.stats.packets += 1


def check_config(config) -> None:
    """An AnalysisConfig export can follow: a dump's log lines need the TSC frequency (nanoseconds on both sides)."""
    if config.vmcore and not config.decode.cpu_hz:
        raise UsageError("vmcore needs cpu_hz: the dump's kernel log counts nanoseconds and the capture TSC cycles; "
                         "give the TSC frequency (xl info, or the guest's boot log)", "vmcore", "cpu_hz")


def export(path, out, config=None, options: ExportOptions | None = None, progress=None) -> ExportStats:
    """Analyse the capture at ``path`` (``config``: an :class:`~tracelens.options.AnalysisConfig`; its
    ``decode.cpu_hz`` sets the clock, its ``vmcore`` adds the dump's log lines) and write the Perfetto trace to ``out``
    atomically. Returns what was written. ``progress(done, total)`` follows the three passes."""
    from tracelens.analysis.analyze import AnalysisConfig, analyze
    from tracelens.output import atomic_output

    config = config or AnalysisConfig()
    options = options or ExportOptions()
    check_config(config)
    P, Builder = _protos()
    size = max(_size(path), 1)
    passes = 3 if options.pcpus else 2
    # the analysis reports its two passes as (done, 2 * size); the pCPU pass its bytes: one bar over all three
    a = analyze(path, config, progress=(lambda d, t: progress(2 * size * d // max(t, 1), passes * size))
                if progress is not None else None)
    pcpu_progress = (lambda d, t: progress(2 * size + size * d // max(t, 1), passes * size)) \
        if progress is not None else None
    stats = ExportStats(time_unit="ns" if config.decode.cpu_hz else "tsc_cycles_as_ns")
    with atomic_output(out) as tmp:
        with open(tmp, "wb") as f:
            w = _Writer(f, P, Builder, stats)
            _write(w, a, path, config, options, pcpu_progress)
            stats.bytes = f.tell()
    return stats


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# -- what the analysis says, as timed events ---------------------------------------------------------------------
def _analysis_events(a, tb, P):
    """Every event from the analysis as (ns, order, track, kind, name, annotations, value), an iterator in time
    order; ``order`` puts slice ends before begins at one moment. Counter values stay in arrays until written."""
    from tracelens.analysis import report as R
    from tracelens.analysis.records import dom_name

    TE = P.TrackEvent
    ev: list[tuple] = []
    ns = tb.ns
    t0, t1 = tb.t0, tb.t1

    def add(t, order, track, kind, name=None, ann=None, value=None):
        ev.append((ns(max(int(t), 0)), order, track, kind, name, ann, value))

    for s in a.safety:
        d, e = s["domid"], s["epoch"]
        base = DOM_BASE + d * DOM_STRIDE
        start = s["start_tsc"] if s["start_tsc"] is not None else t0
        end = s["end_tsc"] if s["end_tsc"] is not None else t1
        label, _css, why = R.epoch_words(s, a.findings, a)
        name = f"epoch {e}" + (f" → {s['boundary_kind']}" if s["boundary_kind"] else " (open)")
        add(start, 2, base + DOM_TRACKS["epochs"], TE.TYPE_SLICE_BEGIN, name,
            {"verdict": s["verdict"], "words": f"{label}: {why}", "outstanding_grants": s["outstanding_grants"]})
        add(end, 0, base + DOM_TRACKS["epochs"], TE.TYPE_SLICE_END)
        for kind, t in sorted((s.get("unsafe") or {}).items(), key=lambda kv: kv[1]):
            add(t, 1, base + DOM_TRACKS["unsafe"], TE.TYPE_INSTANT, f"first {kind}",
                {"epoch": e, "what": R.KIND_WORDS[kind], "rule": R.KIND_RULES[kind], "tsc": int(t),
                 "open_epoch": s["end_tsc"] is None})
        for kind, t in sorted((s.get("possibly_unsafe") or {}).items(), key=lambda kv: kv[1]):
            add(t, 1, base + DOM_TRACKS["unsafe"], TE.TYPE_INSTANT, f"possibly {kind}",
                {"epoch": e, "what": R.KIND_WORDS[kind], "tsc": int(t), "why": "records were lost before it"})
    for b in a.boundaries:
        base = DOM_BASE + b.domid * DOM_STRIDE
        add(b.tsc, 1, base + DOM_TRACKS["epochs"], TE.TYPE_INSTANT, f"{b.kind} boundary",
            {"epoch_ended": b.epoch, "tsc": b.tsc, **{k: str(v) for k, v in b.evidence.items()}})
        start = b.evidence.get("shutdown_tsc", b.evidence.get("removed_tsc"))
        if start is not None and b.domid in {s["domid"] for s in a.safety}:
            add(start, 2, base + DOM_TRACKS["teardown"], TE.TYPE_SLICE_BEGIN, f"teardown → {b.kind}",
                {"from": "SCHED_SHUTDOWN" if "shutdown_tsc" in b.evidence else "domain destroyed",
                 "from_tsc": int(start), "resume_tsc": b.tsc})
            add(b.tsc, 0, base + DOM_TRACKS["teardown"], TE.TYPE_SLICE_END)
    guests = {s["domid"] for s in a.safety}
    for f in a.findings:
        if f.tsc is None:
            continue
        track = (DOM_BASE + f.domid * DOM_STRIDE + DOM_TRACKS["findings"]) if f.domid in guests else ROOT
        add(f.tsc, 1, track, TE.TYPE_INSTANT, f"{f.rule} {f.object}",
            {"rule": f.rule, "severity": f.severity, "domain": dom_name(f.domid) if f.domid is not None else "-",
             "epoch": f.epoch if f.epoch is not None else -1, "message": f.message, "fingerprint": f.fingerprint,
             "tsc": int(f.tsc)})
    # counters: grant pairs (the pair's outstanding count after each record: the analysis' series) and balloon
    # (pages given back so far in the epoch, 0 again at each boundary), as arrays: up to a million values
    c_ts, c_track, c_val = [], [], []
    s = a.grants.series
    if len(s.get("tsc", ())):
        keys = np.asarray(s["mapper"], np.int64) * 0x10000 + np.asarray(s["granter"], np.int64)
        uniq, inv = np.unique(keys, return_inverse=True)
        inv = inv.ravel()
        out_all = np.asarray(s["outstanding"], np.int64)
        firsts = np.searchsorted(np.sort(inv, kind="stable"), np.arange(uniq.size))
        first_row = np.argsort(inv, kind="stable")[firsts]
        c_ts += [np.full(uniq.size, t0, np.uint64), np.asarray(s["tsc"], np.uint64)]
        c_track += [PAIR_BASE + np.arange(uniq.size, dtype=np.int64), PAIR_BASE + inv.astype(np.int64)]
        c_val += [out_all[first_row] - np.asarray(s["delta"], np.int64)[first_row], out_all]
    bs = a.balloon_series or {}
    if len(bs.get("tsc", ())):
        bdom = np.asarray(bs["domid"], np.int64)
        bep = np.asarray(bs["epoch"], np.int64)
        bts = np.asarray(bs["tsc"], np.uint64)
        cum = np.zeros(bdom.size, np.int64)
        key = bdom * 4096 + bep
        for k in np.unique(key).tolist():
            m = key == k
            cum[m] = np.cumsum(np.asarray(bs["pages"], np.int64)[m])
        doms = np.unique(bdom)
        resets = [(t0, d) for d in doms.tolist()] + [(b.tsc, b.domid) for b in a.boundaries if b.domid in set(doms.tolist())]
        c_ts += [np.asarray([r[0] for r in resets], np.uint64), bts]
        c_track += [DOM_BASE + np.asarray([r[1] for r in resets], np.int64) * DOM_STRIDE + DOM_TRACKS["balloon"],
                    DOM_BASE + bdom * DOM_STRIDE + DOM_TRACKS["balloon"]]
        c_val += [np.zeros(len(resets), np.int64), cum]
    # lost records per pCPU
    bad = a.lost_info["malformed"] if a.lost_info is not None else [False] * a.lost.shape[0]
    for i in range(a.lost.shape[0]):
        c, f_, t_, n = (int(x) for x in a.lost[i, :4])
        track = LOST_BASE + c
        add(t0, 0, track, TE.TYPE_COUNTER, value=0)
        add(f_, 1, track, TE.TYPE_COUNTER, value=-1 if bad[i] else n)
        add(t_, 1, track, TE.TYPE_COUNTER, value=0)
    # the dump's Xen log lines, aligned on the moment its epoch ended
    dv = a.dump
    if dv is not None and dv.get("domid") is not None and dv["log_events"] and dv.get("log_last_ts_nsec") is not None:
        anchor, how = _dump_anchor(a, dv)
        track = DOM_BASE + dv["domid"] * DOM_STRIDE + DOM_TRACKS["dump"]
        last = int(dv["log_last_ts_nsec"])
        for e in dv["log_events"]:
            t_ns = ns(anchor) - (last - int(e["ts_nsec"]))
            ev.append((max(t_ns, 0), 1, track, TE.TYPE_INSTANT, e["event"],
                       {"text": e["text"], "guest_ts_nsec": int(e["ts_nsec"]), "category": e["category"],
                        "aligned": how}, None))
    ev.sort(key=lambda x: (x[0], x[1]))
    if not c_ts:
        return iter(ev)
    ts = _ns_array(tb, np.concatenate(c_ts))
    track = np.concatenate(c_track)
    val = np.concatenate(c_val)
    order = np.argsort(ts, kind="stable")

    def counters():
        for t, k, v in zip(ts[order].tolist(), track[order].tolist(), val[order].tolist()):
            yield (t, 1, k, TE.TYPE_COUNTER, None, None, v)

    return heapq.merge(ev, counters(), key=lambda x: (x[0], x[1]))


def _ns_array(tb, tsc: np.ndarray) -> np.ndarray:
    """:meth:`TimeBase.ns` of an array of TSCs (u64)."""
    t = np.asarray(tsc, np.uint64)
    if not tb.cpu_hz:
        return t
    hz = np.uint64(int(tb.cpu_hz))
    return (t // hz) * np.uint64(1_000_000_000) + ((t % hz) * np.uint64(1_000_000_000)) // hz


def _dump_anchor(a, dv) -> tuple[int, str]:
    """(TSC, words) of the moment the dump's log ends: the crash boundary's SCHED_SHUTDOWN, else the capture's end."""
    b = a.epochs.boundary(dv["domid"], dv["epoch"]) if dv.get("epoch") is not None else None
    if b is not None and b.kind == "crash" and "shutdown_tsc" in b.evidence:
        t = int(b.evidence["shutdown_tsc"])
        return t, f"the log's last line at d{dv['domid']}'s crash SCHED_SHUTDOWN (tsc {t})"
    return int(a.last_tsc), f"the log's last line at the end of the capture (tsc {a.last_tsc}; no crash boundary)"


def _tracks(w: _Writer, a, tb, cpus=()) -> None:
    from tracelens.analysis.records import dom_name

    unit = "ns" if tb.cpu_hz else "TSC cycles shown as ns (no --cpu-hz)"
    w.track(ROOT, f"tracelens: {os.path.basename(str(a.path))}", rank=0,
            description=f"timestamps: {unit}; capture {a.path}; sha256 {a.sha256}")
    w.track(PCPUS, "pCPUs", rank=1, description="the vCPU running on each pCPU (gaps: idle or unknown)")
    guests = sorted({s["domid"] for s in a.safety})
    for i, d in enumerate(guests):
        base = DOM_BASE + d * DOM_STRIDE
        w.track(base, dom_name(d), rank=10 + i)
        for k, (name, rank) in enumerate((("epochs", 0), ("teardown", 1), ("unsafe", 2), ("findings", 3))):
            w.track(base + DOM_TRACKS[name], f"{dom_name(d)} {name}", parent=base, rank=rank)
    s = a.grants.series
    if len(s.get("tsc", ())):
        keys = np.unique(np.asarray(s["mapper"], np.int64) * 0x10000 + np.asarray(s["granter"], np.int64))
        for k, key in enumerate(keys.tolist()):
            m, g = key // 0x10000, key % 0x10000
            who = dom_name(m) if m >= 0 else "unknown mapper"
            parent = DOM_BASE + g * DOM_STRIDE if g in guests else None
            if parent is None:
                w.track(DOM_BASE + g * DOM_STRIDE, dom_name(g), rank=10 + len(guests) + g)
                guests.append(g)
                parent = DOM_BASE + g * DOM_STRIDE
            w.track(PAIR_BASE + k, f"{dom_name(g)} grants mapped by {who}", parent=parent, rank=10 + k,
                    counter={"unit_name": "grants"},
                    description="outstanding mappings of the pair: maps minus unmaps since the capture started")
    bs = a.balloon_series or {}
    for d in (np.unique(bs["domid"]).tolist() if len(bs.get("tsc", ())) else []):
        base = DOM_BASE + d * DOM_STRIDE
        if d not in guests:
            w.track(base, dom_name(d), rank=10 + len(guests) + d)
            guests.append(d)
        w.track(base + DOM_TRACKS["balloon"], f"{dom_name(d)} ballooned pages", parent=base, rank=5,
                counter={"unit_name": "pages"}, description="4 KiB pages given back so far in the epoch")
    if a.lost.size:
        w.track(LOST, "lost records", rank=2)
        for c in sorted(set(int(x) for x in a.lost[:, 0])):
            w.track(LOST_BASE + c, f"pCPU {c} lost records", parent=LOST, counter={"unit_name": "records"})
    dv = a.dump
    if dv is not None and dv.get("domid") is not None:
        d = dv["domid"]
        base = DOM_BASE + d * DOM_STRIDE
        if d not in guests:
            w.track(base, dom_name(d), rank=10 + len(guests) + d)
        w.track(base + DOM_TRACKS["dump"], f"{dom_name(d)} dump log", parent=base, rank=6,
                description=f"Xen lines of {dv['path']}'s kernel log, guest clock aligned: see each line")


def _write(w: _Writer, a, path, config, options: ExportOptions, progress) -> None:
    from tracelens.timebase import TimeBase

    P = w.P
    TE = P.TrackEvent
    tb = TimeBase.of(a)
    # metadata: the clock, the capture
    p = w.packet()
    attrs = {"tracelens.time_unit": w.stats.time_unit, "tracelens.capture": str(a.path),
             "tracelens.sha256": str(a.sha256), "tracelens.first_tsc": int(a.first_tsc),
             "tracelens.last_tsc": int(a.last_tsc)}
    if config.decode.cpu_hz:
        attrs["tracelens.cpu_hz"] = int(config.decode.cpu_hz)
    for k, v in attrs.items():
        at = p.trace_attributes.attribute.add()
        at.key = k
        if isinstance(v, int):
            at.long_value = v
        else:
            at.string_value = v
    w.write(p)
    _tracks(w, a, tb)
    unit = "ns" if tb.cpu_hz else "TSC cycles written as ns (no --cpu-hz)"
    w.event(tb.ns(tb.t0), ROOT, TE.TYPE_SLICE_BEGIN, f"capture: timestamps are {unit}",
            {"capture": str(a.path), "first_tsc": tb.t0, "last_tsc": tb.t1,
             "cpu_hz": config.decode.cpu_hz or "not given", "records": a.records})
    events = _analysis_events(a, tb, P)
    nxt = [next(events, None)]

    def flush(upto):
        while nxt[0] is not None and (upto is None or nxt[0][0] <= upto):
            t, _o, track, kind, name, ann, value = nxt[0]
            w.event(t, track, kind, name, ann, value)
            if kind == TE.TYPE_COUNTER:
                w.stats.counter_values += 1
            elif kind == TE.TYPE_INSTANT:
                w.stats.instants += 1
            nxt[0] = next(events, None)

    if options.pcpus:
        for t, track, kind, name in _pcpu_runs(w, a, path, config, options, tb, progress):
            flush(t)
            w.event(t, track, kind, name)
            if kind == TE.TYPE_SLICE_BEGIN:
                w.stats.pcpu_slices += 1
    flush(None)
    w.event(tb.ns(tb.t1), ROOT, TE.TYPE_SLICE_END)


def _pcpu_runs(w: _Writer, a, path, config, options: ExportOptions, tb, progress):
    """(ns, track, kind, name) of the pCPU slices in time order: a pass over the records in batches; a slice per run
    of one (non-idle) vCPU on a pCPU."""
    from dataclasses import replace

    from tracelens.analysis.records import DOMID_IDLE, vcpu_name
    from tracelens.parsers.xentrace.decode import iter_batches

    TE = w.P.TrackEvent
    state: dict[int, int] = {}  # pCPU -> dom << 16 | vcpu of its open slice (-1: none)
    known: set[int] = set()
    t_first = tb.t0
    names: dict[int, str] = {}
    for table in iter_batches(path, replace(config.decode, cpu_hz=None), batch_bytes=options.batch_bytes,
                              columns=["cpu", "tsc", "dom", "vcpu"], progress=progress):
        cpu = table.column("cpu").to_numpy().astype(np.int64)
        tsc = np.maximum(table.column("tsc").to_numpy(), np.uint64(t_first))
        dom = table.column("dom")
        valid = dom.is_valid().to_numpy(zero_copy_only=False) if dom.null_count else np.ones(len(cpu), bool)
        d = dom.fill_null(0).to_numpy().astype(np.int64)
        v = table.column("vcpu").fill_null(0).to_numpy().astype(np.int64)
        st = np.where(valid & (d != DOMID_IDLE), (d << 16) | v, -1)
        order = np.argsort(cpu, kind="stable")  # per pCPU, in time order
        c_s, st_s = cpu[order], st[order]
        prev = np.empty_like(st_s)
        prev[1:] = st_s[:-1]
        first = np.r_[True, c_s[1:] != c_s[:-1]]
        prev[first] = [state.get(int(c), -1) for c in c_s[first].tolist()]
        change = np.flatnonzero(st_s != prev)
        if not change.size:
            continue
        ts_change = tsc[order[change]]
        o = np.argsort(ts_change, kind="stable")  # back to time order
        at = change[o]
        for c, new, old, t in zip(c_s[at].tolist(), st_s[at].tolist(), prev[at].tolist(),
                                  _ns_array(tb, ts_change[o]).tolist()):
            if c not in known:
                known.add(c)
                w.track(PCPU_BASE + c, f"pCPU {c}", parent=PCPUS, rank=c)
            if old >= 0:
                yield t, PCPU_BASE + c, TE.TYPE_SLICE_END, None
            if new >= 0:
                name = names.get(new)
                if name is None:
                    name = names[new] = vcpu_name(new >> 16, new & 0xFFFF)
                yield t, PCPU_BASE + c, TE.TYPE_SLICE_BEGIN, name
            state[c] = new
    end = tb.ns(tb.t1)
    for c in sorted(state):
        if state[c] >= 0:
            yield end, PCPU_BASE + c, TE.TYPE_SLICE_END, None
