"""``tracelens export``: the Perfetto trace read back with Perfetto's own protos (``perfetto.protos``) and checked
against references computed here from the decoded table: the running vCPU of every pCPU (a plain loop over the
records), the grant pairs' outstanding counts (a plain count of MAP/UNMAP records), and the analysis' boundaries,
epochs, findings, balloon pages and losses."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("perfetto", reason="the perfetto package is not installed (pip install perfetto)")

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent  # noqa: E402

import tracelens  # noqa: E402
from tracelens.analysis.analyze import analyze  # noqa: E402
from tracelens.cli import main  # noqa: E402
from tracelens.options import AnalysisConfig, DecodeOptions  # noqa: E402
from tracelens.perfetto_export import ExportOptions, export  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample-traces"
REAL = ROOT.parent / "shared" / "samples" / "xentrace-real"
HZ = 2_400_000_000
IDLE = 0x7FFF
GRANT_MAP, GRANT_UNMAP = 0x0010F001, 0x0010F002


class Read:
    """A .pftrace parsed: tracks by uuid, events per track in file order (ts, type, name, annotations, value)."""

    def __init__(self, path):
        self.trace = Trace()
        self.trace.ParseFromString(Path(path).read_bytes())
        self.tracks: dict[int, object] = {}
        self.events: dict[int, list] = defaultdict(list)
        self.attributes = {}
        self.order: list[int] = []
        names: dict[int, str] = {}
        for p in self.trace.packet:
            assert p.trusted_packet_sequence_id == 1
            if p.HasField("trace_attributes"):
                for a in p.trace_attributes.attribute:
                    self.attributes[a.key] = a.string_value if a.HasField("string_value") else a.long_value
            if p.HasField("track_descriptor"):
                d = p.track_descriptor
                assert d.uuid not in self.tracks, "a track described twice"
                assert not d.HasField("parent_uuid") or d.parent_uuid in self.tracks, "a parent described after"
                self.tracks[d.uuid] = d
            for n in p.interned_data.event_names:
                assert n.iid not in names or names[n.iid] == n.name
                names[n.iid] = n.name
            if p.HasField("track_event"):
                e = p.track_event
                assert e.track_uuid in self.tracks, "an event before its track's descriptor"
                name = None
                if e.HasField("name_iid"):
                    assert e.name_iid in names, "an interned name used before it was defined"
                    name = names[e.name_iid]
                ann = {a.name: (a.string_value if a.HasField("string_value") else a.int_value)
                       for a in e.debug_annotations}
                self.events[e.track_uuid].append((p.timestamp, e.type, name, ann,
                                                  e.counter_value if e.HasField("counter_value") else None))
                self.order.append(p.timestamp)

    def named(self, name: str) -> int:
        hits = [u for u, d in self.tracks.items() if d.name == name]
        assert len(hits) == 1, (name, hits)
        return hits[0]

    def children(self, parent: int) -> list[int]:
        return [u for u, d in self.tracks.items() if d.HasField("parent_uuid") and d.parent_uuid == parent]

    def slices(self, track: int) -> list[tuple]:
        """(begin, end, name, annotations) of a track's slices, checking that they nest."""
        stack, out = [], []
        for ts, kind, name, ann, _v in self.events[track]:
            if kind == TrackEvent.TYPE_SLICE_BEGIN:
                stack.append((ts, name, ann))
            elif kind == TrackEvent.TYPE_SLICE_END:
                assert stack, f"an end without a begin on {self.tracks[track].name}"
                b, name0, ann0 = stack.pop()
                assert ts >= b
                out.append((b, ts, name0, ann0))
        assert not stack, f"slices left open on {self.tracks[track].name}"
        return sorted(out)

    def instants(self, track: int) -> list[tuple]:
        return [(ts, name, ann) for ts, kind, name, ann, _v in self.events[track] if kind == TrackEvent.TYPE_INSTANT]

    def counter(self, track: int) -> list[tuple]:
        return [(ts, v) for ts, kind, _n, _a, v in self.events[track] if kind == TrackEvent.TYPE_COUNTER]


def ns(tsc, hz=HZ) -> int:
    return int(tsc) * 10**9 // hz if hz else int(tsc)


def reference_runs(path, first_tsc: int, last_tsc: int, hz=HZ) -> list[tuple]:
    """(pCPU, begin ns, end ns, vCPU name) of every run of one non-idle vCPU on a pCPU, from the decoded table."""
    t = tracelens.read_xentrace(str(path), columns=["cpu", "tsc", "dom", "vcpu"])
    runs, open_ = [], {}
    for c, ts, d, v in zip(*(t[k].to_pylist() for k in ("cpu", "tsc", "dom", "vcpu"))):
        ts = max(ts, first_tsc)
        key = None if d is None or d == IDLE else (d, v)
        cur = open_.get(c)
        if cur is not None and cur[0] != key:
            runs.append((c, ns(cur[1], hz), ns(ts, hz), f"d{cur[0][0]}v{cur[0][1]}"))
            del open_[c]
        if key is not None and c not in open_:
            open_[c] = (key, ts)
    for c, (key, ts) in open_.items():
        runs.append((c, ns(ts, hz), ns(last_tsc, hz), f"d{key[0]}v{key[1]}"))
    return sorted(runs)


def exported_runs(r: Read) -> list[tuple]:
    out = []
    for u in r.children(r.named("pCPUs")):
        c = int(r.tracks[u].name.split()[1])
        out += [(c, b, e, name) for b, e, name, _a in r.slices(u)]
    return sorted(out)


def reference_pairs(path) -> dict:
    """Per (mapper, granter): [(tsc, outstanding after it)], a plain count over the decoded table."""
    t = tracelens.read_xentrace(str(path), columns=["tsc", "event", "dom", "d1"])
    out, count = defaultdict(list), defaultdict(int)
    for ts, ev, dom, d1 in zip(*(t[k].to_pylist() for k in ("tsc", "event", "dom", "d1"))):
        if ev in (GRANT_MAP, GRANT_UNMAP):
            key = (dom if dom is not None else -1, d1 & 0xFFFF)
            count[key] += 1 if ev == GRANT_MAP else -1
            out[key].append((ts, count[key]))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("pf")
    out = {}
    for cap in sorted(SAMPLES.glob("*.xentrace")):
        p = d / f"{cap.stem}.pftrace"
        export(str(cap), str(p), AnalysisConfig(decode=DecodeOptions(cpu_hz=HZ)))
        out[cap.stem] = (cap, Read(p), analyze(str(cap), AnalysisConfig(decode=DecodeOptions(cpu_hz=HZ))))
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in SAMPLES.glob("*.xentrace")))
def test_sample_round_trip(exported, name):
    cap, r, a = exported[name]
    assert r.attributes["tracelens.time_unit"] == "ns" and r.attributes["tracelens.cpu_hz"] == HZ
    assert r.order == sorted(r.order), "packets out of time order"
    # pCPU tracks: the running vCPU, as a plain loop over the decoded records says
    assert exported_runs(r) == reference_runs(cap, a.first_tsc, a.last_tsc)
    # grant pairs: one counter per (mapper, granter), its values the plain count's
    ref = reference_pairs(cap)
    pair_tracks = {u: d for u, d in r.tracks.items() if " grants mapped by " in d.name}
    assert len(pair_tracks) == len(ref)
    for (m, g), values in ref.items():
        u = r.named(f"d{g} grants mapped by d{m}")
        got = r.counter(u)
        assert got[0][0] == ns(a.first_tsc) and [v for _t, v in got[1:]] == [v for _t, v in values]
        assert [t for t, _v in got[1:]] == [ns(t) for t, _v in values]
    # per guest: epochs with their verdicts, boundaries, findings
    for s in a.safety:
        ep = r.slices(r.named(f"d{s['domid']} epochs"))
        row = [x for x in ep if x[2].startswith(f"epoch {s['epoch']} ")]
        assert len(row) == 1 and row[0][3]["verdict"] == s["verdict"]
        assert row[0][1] == ns(s["end_tsc"] if s["end_tsc"] is not None else a.last_tsc)
        unsafe = {(n, t) for t, n, ann in r.instants(r.named(f"d{s['domid']} unsafe")) if ann["epoch"] == s["epoch"]}
        assert {(f"first {k}", ns(t)) for k, t in s["unsafe"].items()} <= unsafe
    for b in a.boundaries:
        hits = [x for x in r.instants(r.named(f"d{b.domid} epochs")) if x[1] == f"{b.kind} boundary"]
        assert (ns(b.tsc), b.epoch) in {(t, ann["epoch_ended"]) for t, _n, ann in hits}
        tear = r.slices(r.named(f"d{b.domid} teardown"))
        assert (ns(b.evidence["shutdown_tsc"]), ns(b.tsc)) in {(x[0], x[1]) for x in tear}
    got = {ann["fingerprint"]: (t, ann["rule"]) for u in r.tracks for t, _n, ann in r.instants(u)
           if "fingerprint" in ann}
    assert got == {f.fingerprint: (ns(f.tsc), f.rule) for f in a.findings}


def test_balloon_and_lost_counters(exported):
    _cap, r, a = exported["balloon-before-kexec"]
    bal = r.counter(r.named("d1 ballooned pages"))
    assert max(v for _t, v in bal) == 518 == sum(x["pages"] for x in a.balloon)
    b = a.boundaries[0]
    after = [v for t, v in bal if t >= ns(b.tsc)]
    assert after and all(v == 0 for v in after)  # a new kernel: nothing ballooned yet
    _cap, r, a = exported["lost-across-boundary"]
    lost = r.counter(r.named("pCPU 0 lost records"))
    (_c, first, last, n), = a.lost.tolist()
    assert (ns(first), n) in lost and (ns(last), 0) in lost and n == 13


def test_cycles_without_cpu_hz(tmp_path):
    cap = SAMPLES / "persistent-grants.xentrace"
    out = tmp_path / "c.pftrace"
    assert main(["export", str(cap), "-o", str(out)]) == 0
    r = Read(out)
    a = analyze(str(cap))
    assert r.attributes["tracelens.time_unit"] == "tsc_cycles_as_ns" and "tracelens.cpu_hz" not in r.attributes
    (b, e, name, _ann), = r.slices(r.named(f"tracelens: {cap.name}"))
    assert (b, e) == (a.first_tsc, a.last_tsc) and "TSC cycles" in name
    assert exported_runs(r) == reference_runs(cap, a.first_tsc, a.last_tsc, hz=None)


def test_batches_do_not_change_the_trace(tmp_path):
    """The pCPU pass reads the capture in batches: tiny batches (many edges) give the same bytes as one."""
    import synth

    sim = synth.random_scenario(5, steps=2000)
    cap = tmp_path / "r.xentrace"
    sim.write(cap)
    one, many = tmp_path / "one.pftrace", tmp_path / "many.pftrace"
    export(str(cap), str(one), AnalysisConfig(decode=DecodeOptions(cpu_hz=HZ)), ExportOptions(batch_bytes=1 << 30))
    st = export(str(cap), str(many), AnalysisConfig(decode=DecodeOptions(cpu_hz=HZ)), ExportOptions(batch_bytes=4096))
    assert one.read_bytes() == many.read_bytes() and st.pcpu_slices > 50
    a = analyze(str(cap))
    assert exported_runs(Read(many)) == reference_runs(cap, a.first_tsc, a.last_tsc)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/samples/xentrace-real is absent (a fresh clone)")
def test_real_capture(tmp_path):
    cap = REAL / "hvm-credit2-8cpu.bin"
    out = tmp_path / "real.pftrace"
    export(str(cap), str(out), AnalysisConfig(decode=DecodeOptions(cpu_hz=HZ)))
    r = Read(out)
    a = analyze(str(cap))
    runs = exported_runs(r)
    assert runs == reference_runs(cap, a.first_tsc, a.last_tsc)
    assert {c for c, *_ in runs} == set(range(8)) and {n for *_, n in runs} >= {"d0v0", "d14v0"}


def test_vmcore_log_lines_on_the_trace_clock(tmp_path):
    """The dump's Xen lines: the last one at the crash's SCHED_SHUTDOWN, the others before it by their guest-clock
    distance."""
    sys.path.insert(0, str(ROOT / "tests" / "vmcore"))
    from vmcore_writers import Kernel, LogRec, Memory, add_lockless_ring, standard_notes, write_elf

    mem = Memory(ram=[(0x100, 0x200)])
    k = Kernel(mem, image_pa=0x120000, heap_pa=0x160000, pt_pa=0x100000)
    add_lockless_ring(k, [LogRec(7_000_000, b"Hypervisor detected: Xen HVM"),
                          LogRec(8_500_000, b"xen: --> pirq=16 -> irq=8 (gsi=8)", level=7),
                          LogRec(9_000_000, b"Kernel panic - not syncing: test")])
    dump = tmp_path / "d.elf"
    write_elf(dump, mem, standard_notes(k.vmcoreinfo()))
    cap = SAMPLES / "crash-kdump.xentrace"
    out = tmp_path / "v.pftrace"
    assert main(["export", str(cap), "-o", str(out), "--vmcore", str(dump), "--cpu-hz", str(HZ)]) == 0
    r = Read(out)
    a = analyze(str(cap))
    shutdown = a.boundaries[0].evidence["shutdown_tsc"]
    lines = sorted(r.instants(r.named("d1 dump log")))
    assert [(t, n) for t, n, _a in lines] == [(ns(shutdown) - 2_000_000, "hypervisor_detected"),
                                              (ns(shutdown) - 500_000, "pirq_mapped"), (ns(shutdown), "panic")]
    assert "crash SCHED_SHUTDOWN" in lines[-1][2]["aligned"]


def test_cli_errors_and_show_code(tmp_path, capsys):
    cap = SAMPLES / "foreign-map.xentrace"
    assert main(["export", str(cap), "-o", str(tmp_path / "x.pftrace"), "--vmcore", str(cap)]) == 2  # no --cpu-hz
    assert main(["export", str(cap), "-o", str(cap)]) == 2  # an output is never an input
    assert main(["export", str(cap), "-o", str(tmp_path / "x.pftrace"), "--cpu-hz", "0"]) == 2
    bad = tmp_path / "bad.xentrace"
    bad.write_bytes(b"not a capture at all")
    assert main(["export", str(bad), "-o", str(tmp_path / "x.pftrace")]) == 3
    assert not (tmp_path / "x.pftrace").exists() and not list(tmp_path.glob(".x.pftrace*"))
    err = capsys.readouterr().err
    assert "--vmcore needs --cpu-hz" in err and "refusing to overwrite an input" in err and "Traceback" not in err
    # --show-code prints Python that writes the same trace
    out = tmp_path / "cli.pftrace"
    assert main(["export", str(cap), "-o", str(out), "--cpu-hz", "2.4e9"]) == 0
    capsys.readouterr()
    assert main(["export", str(cap), "-o", str(tmp_path / "code.pftrace"), "--cpu-hz", "2.4e9", "--show-code"]) == 0
    code = capsys.readouterr().out
    exec(compile(code, "<show-code>", "exec"), {})
    assert (tmp_path / "code.pftrace").read_bytes() == out.read_bytes()


def test_reused_packets_are_the_builders_bytes():
    """Bare slice and counter events reuse a packet and frame it themselves: the bytes of the perfetto package's
    StreamingTraceProtoBuilder for the same packets."""
    import io

    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TracePacket
    from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as P

    from tracelens.perfetto_export import ExportStats, _Writer

    buf = io.BytesIO()
    w = _Writer(buf, P, StreamingTraceProtoBuilder, ExportStats())
    w.track(5, "pCPU 0")
    w.event(100, 5, TrackEvent.TYPE_SLICE_BEGIN, "d1v0")  # interns the name: the builder's own path
    start = buf.tell()
    events = [(200, TrackEvent.TYPE_SLICE_END, None, None), (300, TrackEvent.TYPE_SLICE_BEGIN, 1, None),
              (2**40 + 7, TrackEvent.TYPE_COUNTER, None, 7), (2**40 + 9, TrackEvent.TYPE_COUNTER, None, 1 << 33)]
    for ts, kind, iid, value in events:
        w.event(ts, 5, kind, "d1v0" if iid else None, value=value)
    ref = io.BytesIO()
    b = StreamingTraceProtoBuilder(ref)
    for ts, kind, iid, value in events:
        p = TracePacket()
        p.timestamp = ts
        p.trusted_packet_sequence_id = 1
        p.sequence_flags = 2
        p.track_event.type = kind
        p.track_event.track_uuid = 5
        if iid:
            p.track_event.name_iid = iid
        if value is not None:
            p.track_event.counter_value = value
        b.write_packet(p)
    assert buf.getvalue()[start:] == ref.getvalue()
