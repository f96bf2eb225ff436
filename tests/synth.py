"""A small Xen host simulator that writes realistic xentrace captures with known truth.

It drives :class:`tracelens.parsers.xentrace.writer.CaptureWriter` the way a Xen host would fill its trace rings
(spec ../shared/spec/xentrace.md): pCPUs that run vCPUs of domains (runstate changes, SWITCH with INFPREV/INFNEXT,
wake/sleep/block, the idle domain 32767), HVM guests (VMEXIT64 + handler records without TSC + VMENTRY, VMMCALL
carrying the hypercall number, §4.4), PV guests (PV_HYPERCALL_V2 with the argument encoding of §4.4), grant maps and
unmaps by a backend (MEM_PAGE_GRANT_MAP/UNMAP, d1 = granter, emitted while the mapper's vCPU runs, §4.1), balloon-down
(DECREASE_RESERVATION in the >= 4.18 layout or the pre-4.18 packing), balloon-up as bare memory_op hypercalls, the
kexec lifecycles of §4.3 (SCHED_SHUTDOWN reason 5 soft_reset or 3 crash, pause, backend teardown, domctl, resume of
the same domid), destroy/re-create (DOM0_DOM_REM, SCHED_DOM_REM, DOM0_DOM_ADD), TRC_GUEST tracepoints of an
instrumented guest (docs/guest-tracepoints.md), WRAP records and LOST_RECORDS.

Time is one global TSC clock (cycles) that strictly increases with every timed record, so the decoder's merge order
equals the order of emission and the truth can be kept while emitting. Records without a TSC inherit the last TSC
of their pCPU, exactly as the decoder assigns it.

The :class:`Truth` holds what the analysis must find: per (mapper, granter, granter epoch) map/unmap/late counts,
outstanding counts at each boundary, balloon extents, boundaries with their TSC, hypercall counts per domain and
epoch, the first unsafe operation per domain and epoch, lost-record intervals and the expected findings. Counts
are of *visible* records: a record dropped inside a simulated loss is not in the file and not in the truth.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from tracelens.parsers.xentrace.writer import CaptureWriter

# -- event ids (spec §2, §4) -------------------------------------------------------------------------------------
LOST_RECORDS = 0x0001F001
WRAP_BUFFER = 0x0001F002
RUNSTATE = 0x00021001  # | old << 8 | new << 4
CONTINUE_RUNNING = 0x00021002
SCHED_DOM_ADD = 0x00028001
SCHED_DOM_REM = 0x00028002
SCHED_SLEEP = 0x00028003
SCHED_WAKE = 0x00028004
SCHED_BLOCK = 0x00028006
SCHED_SHUTDOWN = 0x00028007
SCHED_SWITCH = 0x0002800A
SWITCH_INFPREV = 0x0002800E
SWITCH_INFNEXT = 0x0002800F
SCHED_SHUTDOWN_CODE = 0x00028010
DOM0_DOM_ADD = 0x00041001
DOM0_DOM_REM = 0x00041002
HVM_VMENTRY = 0x00081001
HVM_VMEXIT64 = 0x00081102
HVM_INTR = 0x0008200F
HVM_HLT = 0x00082013
HVM_VMMCALL = 0x00082012
HVM_CPUID = 0x0008200E
MEM_GRANT_MAP = 0x0010F001
MEM_GRANT_UNMAP = 0x0010F002
MEM_DECREASE_RESERVATION = 0x0010F005
PV_HYPERCALL_V2 = 0x0020100D
PV_HYPERCALL_SUBCALL = 0x0020200E
HW_IRQ_ASSIGN_VECTOR = 0x00802006
HW_IRQ_CLEAR_VECTOR = 0x00802004
HW_IRQ_HANDLED = 0x00802008
TRC_GUEST = 0x0800F000

DOMID_IDLE = 0x7FFF
RUNNING, RUNNABLE, BLOCKED, OFFLINE = 0, 1, 2, 3
SHUTDOWN_CRASH, SHUTDOWN_SOFT_RESET = 3, 5

# hypercall numbers and sub-ops (spec §4.4)
HC_MMU_UPDATE, HC_MEMORY_OP, HC_MULTICALL, HC_XEN_VERSION, HC_GRANT_TABLE_OP = 1, 12, 13, 17, 20
HC_VCPU_OP, HC_MMUEXT_OP, HC_SCHED_OP, HC_EVENT_CHANNEL_OP, HC_PHYSDEV_OP, HC_HVM_OP, HC_DOMCTL = 24, 26, 29, 32, 33, 34, 36
GNTTABOP_MAP, GNTTABOP_UNMAP, GNTTABOP_SETUP_TABLE, GNTTABOP_COPY = 0, 1, 2, 5
SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN = 0, 1, 2
VCPUOP_REGISTER_VCPU_INFO = 10
HVMOP_XENTRACE = 11
EXIT_EXTERNAL_INTERRUPT, EXIT_CPUID, EXIT_HLT, EXIT_VMCALL = 1, 10, 12, 18

# Which PV_HYPERCALL_V2 arguments Xen records (all 32-bit): op -> argument indices (spec §4.4 table).
PV_RECORDED_ARGS = {HC_MMU_UPDATE: (1,), HC_MULTICALL: (1,), HC_GRANT_TABLE_OP: (0, 2), HC_VCPU_OP: (0, 1),
                    HC_MMUEXT_OP: (1,), HC_SCHED_OP: (0,)}

# TRC_GUEST convention (docs/guest-tracepoints.md): guest event numbers, written as TRC_GUEST | n.
GT_HELLO = 0x100          # d1 magic 'TLGT', d2 convention version
GT_GRANT_ACCESS = 0x101   # d1 ref, d2 grantee domid, d3 frame, d4 flags (bit 0 readonly)
GT_END_ACCESS = 0x102     # d1 ref, d2 grantee domid, d3 frame
GT_PIRQ_BIND = 0x103      # d1 pirq, d2 irq, d3 kind (0 msi, 1 gsi), d4 gsi or msi vector, d5 event-channel port
GT_PIRQ_UNBIND = 0x104    # same payload as GT_PIRQ_BIND
GT_BALLOON_OUT = 0x105    # d1 gfn lo, d2 gfn hi, d3 order
GT_BALLOON_IN = 0x106     # d1 gfn lo, d2 gfn hi, d3 order
GT_KEXEC_LOAD = 0x107     # d1 kind (0 kexec, 1 crash kernel), d2 number of segments
GT_KEXEC_EXEC = 0x108     # d1 kind (0 kexec, 1 crash kernel)
GT_SHARED_INFO = 0x109    # d1 gfn lo, d2 gfn hi
GT_VCPU_INFO = 0x10A      # d1 vcpu, d2 gfn lo, d3 gfn hi, d4 offset in page
GT_MAGIC = 0x544C4754     # 'TLGT'
GT_VERSION = 1


def runstate_id(old: int, new: int) -> int:
    return RUNSTATE | (old << 8) | (new << 4)


def pv_hypercall_words(op: int, args: dict[int, int]) -> list[int]:
    """PV_HYPERCALL_V2 payload: d1 = op | 2-bit "recorded as 32-bit" flags at bits 20 + 2i, then the args."""
    d1 = op & 0xFFFFF
    words = []
    for i in PV_RECORDED_ARGS.get(op, ()):
        d1 |= 1 << (20 + 2 * i)
        words.append(int(args.get(i, 0)) & 0xFFFFFFFF)
    return [d1] + words


@dataclass
class Dom:
    domid: int
    kind: str  # "pv", "hvm" or "idle"
    homes: list[int]  # home pCPU of each vCPU
    epoch: int = 0
    alive: bool = True
    shutdown_reason: int | None = None

    @property
    def nvcpus(self) -> int:
        return len(self.homes)


@dataclass
class Truth:
    """What the analysis must find. Keys use domids; ``None`` as a mapper means "not attributable"."""

    event_counts: Counter = field(default_factory=Counter)  # event id -> visible records (CPU_CHANGE excluded)
    per_cpu: dict = field(default_factory=lambda: defaultdict(list))  # cpu -> [(event, tsc or None)] in order
    # cpu -> [(dom, vcpu)] parallel to per_cpu: Xen's `current` when each record was written (the previous vCPU for
    # everything sched_switch_units() writes before the context switch; the writer's own for LOST_RECORDS)
    running: dict = field(default_factory=lambda: defaultdict(list))
    grant_records: list = field(default_factory=list)  # (tsc, cpu, event, mapper, granter)
    grants: dict = field(default_factory=lambda: defaultdict(lambda: {"maps": 0, "unmaps": 0, "late": 0}))
    outstanding: dict = field(default_factory=dict)  # (mapper, granter, epoch) -> visible maps - unmaps at boundary
    boundaries: list = field(default_factory=list)  # dicts: domid, epoch, kind, tsc, shutdown_tsc
    balloon: dict = field(default_factory=lambda: defaultdict(lambda: {"extents": 0, "pages": 0, "gfns": []}))
    hypercalls: Counter = field(default_factory=Counter)  # (domid, epoch, source, op, cmd or None) -> count
    unsafe: dict = field(default_factory=lambda: defaultdict(dict))  # (domid, epoch) -> {kind: first tsc}
    lost: list = field(default_factory=list)  # (cpu, first_tsc, tsc, count)
    lost_dom: list = field(default_factory=list)  # parallel to lost: the domain the LOST record names
    guest_grefs: dict = field(default_factory=dict)  # (domid, epoch) -> sorted refs still granted at the boundary
    guest_pirqs: dict = field(default_factory=dict)  # (domid, epoch) -> sorted pirqs still bound at the boundary
    vectors: dict = field(default_factory=dict)  # Xen irq -> {"assigns", "clears", "last_vector", "handled"}
    findings: set = field(default_factory=set)  # (rule, domid, epoch, object)

    def epochs(self, domid: int) -> int:
        return sum(1 for b in self.boundaries if b["domid"] == domid)

    def first_unsafe(self, domid: int, epoch: int):
        """(tsc, kind) of the first unsafe operation of the domain in that epoch, or None."""
        kinds = self.unsafe.get((domid, epoch))
        if not kinds:
            return None
        kind = min(kinds, key=lambda k: (kinds[k], k))
        return kinds[kind], kind


class Sim:
    """A simulated Xen host writing one capture. See the module docstring."""

    def __init__(self, ncpus: int = 2, seed: int = 0, *, xen_version: str = "4.20", poll_period: int = 1_000_000,
                 max_window_records: int = 512, start_tsc: int = 10_000_000, step: tuple[int, int] = (200, 20_000)):
        self.rng = random.Random(seed)
        self.w = CaptureWriter(poll_period=poll_period, max_window_records=max_window_records, seed=seed)
        self.ncpus = ncpus
        self.pre_418 = tuple(int(x) for x in xen_version.split(".")[:2]) < (4, 18)
        self.now = int(start_tsc)
        self.step = step
        self.doms: dict[int, Dom] = {}
        self.vstate: dict[tuple[int, int], int] = {}
        self.running: dict[int, tuple[int, int]] = {}
        self.visible: dict[int, tuple[int, int] | None] = {c: None for c in range(ncpus)}
        self.losing: dict[int, list | None] = {c: None for c in range(ncpus)}
        self.destroyed: set[int] = set()
        self.truth = Truth()
        # the mapper's grant handles, oldest first: (mapper, granter) -> deque of granter epochs
        self.mapped: dict[tuple[int, int], deque] = defaultdict(deque)
        self.balance: Counter = Counter()  # visible maps - unmaps per (mapper, granter)
        self.carried: Counter = Counter()  # visible handles of an earlier granter epoch still to be released
        self.carried_lossy: dict = {}  # (mapper, granter) -> whether the boundary that set the carry was lossy
        self.lossy_leaks: list = []  # (granter, epoch, mapper, visible outstanding, tsc): decided in finish()
        self.grefs: dict[int, set] = defaultdict(set)  # guest tracepoints: refs granted now, per guest
        self.pirqs: dict[int, set] = defaultdict(set)
        self.instrumented: set[tuple[int, int]] = set()  # (domid, epoch) whose HELLO is in the capture
        self.shutdown_tsc: dict[int, int] = {}
        self.last_tsc = 0
        for c in range(ncpus):
            self.running[c] = (DOMID_IDLE, c)
            self.vstate[(DOMID_IDLE, c)] = RUNNING
        self.doms[DOMID_IDLE] = Dom(DOMID_IDLE, "idle", list(range(ncpus)))
        for c in range(ncpus):
            self._emit(c, runstate_id(RUNNABLE, RUNNING), [(DOMID_IDLE << 16) | c])

    # -- the clock and the rings ---------------------------------------------------------------------------------
    def _tick(self) -> int:
        self.now += self.rng.randint(*self.step)
        return self.now

    def _emit(self, cpu: int, event: int, data=(), timed: bool = True) -> int | None:
        """Write one record on ``cpu`` unless the ring is losing records. Returns its TSC (the inherited one for
        an untimed record), or None when it was dropped."""
        tsc = self._tick() if timed else None
        loss = self.losing[cpu]
        if loss is not None:
            if loss[0] == 0:
                loss[1] = tsc if tsc is not None else self.now
            loss[0] += 1
            return None
        self.w.record(cpu, event, list(data), tsc=tsc)
        if tsc is not None:
            self.last_tsc = tsc
        self.truth.event_counts[event] += 1
        self.truth.per_cpu[cpu].append((event, tsc))
        self.truth.running[cpu].append(self.running[cpu])
        self._track_visible(cpu, event, list(data))
        return tsc if tsc is not None else self.w.last_tsc(cpu)

    def _track_visible(self, cpu: int, event: int, d: list[int]) -> None:
        """What the decoder will believe runs on ``cpu`` after this record (docs/xentrace.md rule 4; SCHED_SWITCH
        moves nothing, LOST_RECORDS names the vCPU that runs)."""
        if event & 0xFFFFF00F == RUNSTATE and d:
            old, new = (event >> 8) & 3, (event >> 4) & 3
            who = (d[0] >> 16, d[0] & 0xFFFF)
            if new == RUNNING:
                self.visible[cpu] = who
            elif old == RUNNING and self.visible[cpu] == who:
                self.visible[cpu] = None
        elif event == CONTINUE_RUNNING and d:
            self.visible[cpu] = (d[0] >> 16, d[0] & 0xFFFF)
        elif event == LOST_RECORDS:
            self.visible[cpu] = (d[1] & 0xFFFF, d[1] >> 16) if len(d) >= 2 else None

    def wrap(self, cpu: int) -> None:
        """A WRAP padding record (4 to 32 bytes, no TSC, garbage payload)."""
        if self.losing[cpu] is None:
            self.w.wrap(cpu, 4 * self.rng.randint(1, 8), garbage=self.rng.getrandbits(32))
            self.truth.event_counts[WRAP_BUFFER] += 1
            self.truth.per_cpu[cpu].append((WRAP_BUFFER, None))
            self.truth.running[cpu].append(self.running[cpu])

    def begin_loss(self, cpu: int) -> None:
        """From now on the ring of ``cpu`` is full: its records are dropped until :meth:`end_loss`."""
        if self.losing[cpu] is None:
            self.losing[cpu] = [0, 0]

    def end_loss(self, cpu: int) -> None:
        loss, self.losing[cpu] = self.losing[cpu], None
        if loss is None or loss[0] == 0:
            return
        d, v = self.running[cpu]
        tsc = self._tick()
        self.w.lost(cpu, loss[0], d, v, first_tsc=loss[1], tsc=tsc)
        self.last_tsc = tsc
        self.truth.event_counts[LOST_RECORDS] += 1
        self.truth.per_cpu[cpu].append((LOST_RECORDS, tsc))
        self.truth.running[cpu].append((d, v))
        self.truth.lost.append((cpu, loss[1], tsc, loss[0]))
        self.truth.lost_dom.append(d)
        self.visible[cpu] = (d, v)  # the decoder takes the running vCPU from the LOST record

    # -- domains and scheduling ----------------------------------------------------------------------------------
    def add_domain(self, domid: int, kind: str, vcpus=1, homes=None) -> Dom:
        """A domain that exists when the capture starts: its vCPUs are runnable (or blocked) on their home pCPUs."""
        homes = list(homes) if homes is not None else [(domid + i) % self.ncpus for i in range(vcpus)]
        d = Dom(domid, kind, homes)
        self.doms[domid] = d
        for v in range(d.nvcpus):
            self.vstate[(domid, v)] = RUNNABLE
        return d

    def _switch(self, cpu: int, nxt: tuple[int, int], prev_state: int) -> int | None:
        """sched_switch_units(): INFPREV, INFNEXT, SWITCH, then the two runstate changes. Returns SWITCH's TSC."""
        prev = self.running[cpu]
        if prev == nxt:
            return self._emit(cpu, CONTINUE_RUNNING, [(nxt[0] << 16) | nxt[1]])
        r = self.rng
        self._emit(cpu, SWITCH_INFPREV, [prev[0], prev[1], r.randint(1000, 900000)])
        self._emit(cpu, SWITCH_INFNEXT, [nxt[0], nxt[1], r.randint(0, 50000), r.getrandbits(32)])
        t = self._emit(cpu, SCHED_SWITCH, [prev[0], prev[1], nxt[0], nxt[1]])
        self._emit(cpu, runstate_id(RUNNING, prev_state), [(prev[0] << 16) | prev[1]])
        self.vstate[prev] = prev_state
        self._emit(cpu, runstate_id(self.vstate[nxt], RUNNING), [(nxt[0] << 16) | nxt[1]])
        self.vstate[nxt] = RUNNING
        self.running[cpu] = nxt
        return t

    def _wake(self, domid: int, vcpu: int) -> None:
        cpu = self.doms[domid].homes[vcpu]
        old = self.vstate[(domid, vcpu)]
        self._emit(cpu, SCHED_WAKE, [domid, vcpu])
        if old in (BLOCKED, OFFLINE):
            self._emit(cpu, runstate_id(old, RUNNABLE), [(domid << 16) | vcpu])
            self.vstate[(domid, vcpu)] = RUNNABLE

    def run(self, domid: int, vcpu: int = 0) -> int:
        """Make (domid, vcpu) the running vCPU of its home pCPU; returns that pCPU."""
        dom = self.doms[domid]
        if not dom.alive or self.vstate[(domid, vcpu)] == OFFLINE:
            raise RuntimeError(f"d{domid}v{vcpu} is paused or dead")
        cpu = dom.homes[vcpu]
        if self.running[cpu] == (domid, vcpu):
            if self.visible[cpu] != (domid, vcpu) and self.losing[cpu] is None:
                self._emit(cpu, CONTINUE_RUNNING, [(domid << 16) | vcpu])  # the scheduler's next tick
            return cpu
        if self.vstate[(domid, vcpu)] == BLOCKED:
            self._wake(domid, vcpu)
        self._switch(cpu, (domid, vcpu), RUNNABLE)
        return cpu

    def block(self, domid: int, vcpu: int = 0) -> None:
        """The vCPU blocks (SCHEDOP_block / HLT) and its pCPU goes idle."""
        cpu = self.run(domid, vcpu)
        self._emit(cpu, SCHED_BLOCK, [domid, vcpu])
        self._switch(cpu, (DOMID_IDLE, cpu), BLOCKED)

    # -- hypercalls ----------------------------------------------------------------------------------------------
    def _epoch(self, domid: int) -> int:
        return self.doms[domid].epoch

    def _enter(self, domid: int, vcpu: int, op: int, args: dict | None = None) -> tuple[int, int | None]:
        """The guest enters hypercall ``op``: PV_HYPERCALL_V2 (PV) or VMEXIT64 + VMMCALL (HVM). Returns (cpu, tsc)."""
        cpu = self.run(domid, vcpu)
        dom = self.doms[domid]
        args = args or {}
        if dom.kind == "pv":
            t = self._emit(cpu, PV_HYPERCALL_V2, pv_hypercall_words(op, args))
            cmd = (args.get(0, 0) & 0xFFF) if 0 in PV_RECORDED_ARGS.get(op, ()) else None
            if t is not None:
                self.truth.hypercalls[(domid, dom.epoch, "pv", op, cmd)] += 1
        else:
            rip = 0xFFFFFFFF81000000 + self.rng.randrange(0, 1 << 20)
            t = self._emit(cpu, HVM_VMEXIT64, [EXIT_VMCALL, rip & 0xFFFFFFFF, rip >> 32])
            t2 = self._emit(cpu, HVM_VMMCALL, [op], timed=False)
            if t2 is not None:
                self.truth.hypercalls[(domid, dom.epoch, "hvm", op, None)] += 1
        return cpu, t

    def _leave(self, domid: int, cpu: int) -> None:
        if self.doms[domid].kind != "pv":
            self._emit(cpu, HVM_VMENTRY, [])

    def hypercall(self, domid: int, op: int, args: dict | None = None, vcpu: int = 0) -> None:
        cpu, _ = self._enter(domid, vcpu, op, args)
        self._leave(domid, cpu)

    def multicall(self, domid: int, entries, vcpu: int = 0) -> None:
        """A PV multicall (op 13, A1 = count) and one HYPERCALL_SUBCALL per entry (spec §4.4: same format as V2).
        ``entries``: (op, args) pairs."""
        if self.doms[domid].kind != "pv":
            raise ValueError("this simulator issues multicalls from PV domains only")
        cpu, _ = self._enter(domid, vcpu, HC_MULTICALL, {1: len(entries)})
        for op, args in entries:
            if self._emit(cpu, PV_HYPERCALL_SUBCALL, pv_hypercall_words(op, args)) is not None:
                cmd = (args.get(0, 0) & 0xFFF) if 0 in PV_RECORDED_ARGS.get(op, ()) else None
                self.truth.hypercalls[(domid, self._epoch(domid), "pv-multicall", op, cmd)] += 1

    def _unsafe(self, domid: int, tsc: int | None, kind: str) -> None:
        if tsc is not None:
            self.truth.unsafe[(domid, self._epoch(domid))].setdefault(kind, tsc)

    # -- grants (spec §4.1) --------------------------------------------------------------------------------------
    def grant_map(self, mapper: int, granter: int, n: int, vcpu: int = 0) -> None:
        """GNTTABOP_map_grant_ref of ``n`` entries of ``granter``'s grants, by ``mapper``: one MAP record each."""
        cpu, _ = self._enter(mapper, vcpu, HC_GRANT_TABLE_OP, {0: GNTTABOP_MAP, 2: n})
        for _ in range(n):
            t = self._emit(cpu, MEM_GRANT_MAP, [granter])
            self.mapped[(mapper, granter)].append(self._epoch(granter))
            if t is not None:
                self._grant_truth(t, cpu, MEM_GRANT_MAP, mapper, granter)
                self.balance[(mapper, granter)] += 1
                if mapper != 0 and self.doms[mapper].kind != "idle":
                    self._unsafe(mapper, t, "foreign_map")
        self._leave(mapper, cpu)

    def grant_unmap(self, mapper: int, granter: int, n: int | None = None, vcpu: int = 0) -> None:
        """GNTTABOP_unmap_grant_ref of the ``n`` oldest handles (all when None): one UNMAP record each."""
        q = self.mapped[(mapper, granter)]
        n = len(q) if n is None else min(n, len(q))
        if n == 0:
            return
        cpu, _ = self._enter(mapper, vcpu, HC_GRANT_TABLE_OP, {0: GNTTABOP_UNMAP, 2: n})
        for _ in range(n):
            q.popleft()
            t = self._emit(cpu, MEM_GRANT_UNMAP, [granter])
            if t is not None:
                self._grant_truth(t, cpu, MEM_GRANT_UNMAP, mapper, granter)
                self.balance[(mapper, granter)] -= 1
        self._leave(mapper, cpu)

    def _grant_truth(self, t, cpu, event, mapper, granter) -> None:
        self.truth.grant_records.append((t, cpu, event, mapper, granter))
        row = self.truth.grants[(mapper, granter, self._epoch(granter))]
        if event == MEM_GRANT_MAP:
            row["maps"] += 1
        else:
            row["unmaps"] += 1
            # the analysis' rule (docs/rules.md TL-GNT-002): an unmap while visible handles of an earlier epoch
            # remain releases one of them (the sim unmaps oldest first, so this is also the real pairing)
            if self.carried[(mapper, granter)] > 0:
                self.carried[(mapper, granter)] -= 1
                row["late"] += 1
                self.truth.findings.add(("TL-GNT-002", granter, self._epoch(granter), f"mapper:d{mapper}"))

    # -- memory (spec §4.1) --------------------------------------------------------------------------------------
    def balloon_down(self, domid: int, extents, vcpu: int = 0) -> None:
        """XENMEM_decrease_reservation by the guest itself: one DECREASE_RESERVATION (no TSC) per extent."""
        cpu, _ = self._enter(domid, vcpu, HC_MEMORY_OP)
        for gfn, order in extents:
            if self.pre_418:
                data = [gfn & 0xFFFFFFFF, gfn >> 32, (domid & 0xFFFF) | (order << 16), 0x80000000 | self.rng.getrandbits(31)]
            else:
                data = [gfn & 0xFFFFFFFF, gfn >> 32, domid, order]
            t = self._emit(cpu, MEM_DECREASE_RESERVATION, data, timed=False)
            if t is not None:
                b = self.truth.balloon[(domid, self._epoch(domid))]
                b["extents"] += 1
                b["pages"] += 1 << order
                b["gfns"].append((gfn, order))
                self._unsafe(domid, t, "balloon")
        self._leave(domid, cpu)

    def balloon_up(self, domid: int, calls: int = 1, vcpu: int = 0) -> None:
        """populate_physmap / increase_reservation: not traced beyond the memory_op hypercall itself."""
        for _ in range(calls):
            self.hypercall(domid, HC_MEMORY_OP, vcpu=vcpu)

    # -- HVM background ------------------------------------------------------------------------------------------
    def hvm_exit(self, domid: int, vcpu: int = 0) -> None:
        """An external-interrupt, CPUID or HLT exit with its handler record."""
        cpu = self.run(domid, vcpu)
        rip = 0xFFFFFFFF81000000 + self.rng.randrange(0, 1 << 20)
        kind = self.rng.choice((EXIT_EXTERNAL_INTERRUPT, EXIT_CPUID, EXIT_HLT))
        self._emit(cpu, HVM_VMEXIT64, [kind, rip & 0xFFFFFFFF, rip >> 32])
        if kind == EXIT_EXTERNAL_INTERRUPT:
            self._emit(cpu, HVM_INTR, [self.rng.choice((0xEF, 0xF3, 0x30))], timed=False)
        elif kind == EXIT_CPUID:
            self._emit(cpu, HVM_CPUID, [self.rng.choice((0, 1, 7, 0x40000000)), 0, 1, 2, 3, 4], timed=False)
        else:
            self._emit(cpu, HVM_HLT, [0], timed=False)
        self._emit(cpu, HVM_VMENTRY, [])

    def _vec_truth(self, irq: int) -> dict:
        return self.truth.vectors.setdefault(irq, {"assigns": 0, "clears": 0, "last_vector": None, "handled": 0})

    def irq(self, cpu: int, irq: int) -> None:
        """A guest-bound IRQ delivered on ``cpu`` (HW_IRQ_HANDLED)."""
        t = self.now
        if self._emit(cpu, HW_IRQ_HANDLED, [irq, t & 0xFFFFFFFF, (t + 300) & 0xFFFFFFFF]) is not None:
            self._vec_truth(irq)["handled"] += 1

    def vector(self, domid: int, irq: int, vector: int, assign: bool = True) -> None:
        """Xen (re)assigns or clears the host vector of ``irq`` while ``domid`` runs (e.g. inside its
        PHYSDEVOP_map_pirq / unmap_pirq): ASSIGN_VECTOR / CLEAR_VECTOR, d1 = irq | vector << 16, then 6 words
        of CPU mask (spec §4.2)."""
        cpu = self.run(domid)
        mask = [1 << cpu, 0, 0, 0, 0, 0]
        ev = HW_IRQ_ASSIGN_VECTOR if assign else HW_IRQ_CLEAR_VECTOR
        if self._emit(cpu, ev, [(irq & 0xFFFF) | (vector << 16)] + mask) is not None:
            v = self._vec_truth(irq)
            v["assigns" if assign else "clears"] += 1
            v["last_vector"] = vector

    # -- guest tracepoints (docs/guest-tracepoints.md) ------------------------------------------------------------
    def guest_trace(self, domid: int, n: int, words=(), vcpu: int = 0) -> bool:
        """HVMOP_xentrace from an HVM/PVH guest: hvm_op exit, then the TRC_GUEST | n record (no TSC).
        Returns whether the record is in the capture. Object state (grefs, pirqs) is kept as the capture shows
        it, and only for a guest whose HELLO of this epoch is in the capture (docs/guest-tracepoints.md)."""
        if self.doms[domid].kind == "pv":
            raise ValueError("PV guests cannot write trace records (spec §4.5)")
        cpu, _ = self._enter(domid, vcpu, HC_HVM_OP)
        seen = self._emit(cpu, TRC_GUEST | n, list(words), timed=False) is not None
        self._leave(domid, cpu)
        if seen and n == GT_HELLO and list(words)[:1] == [GT_MAGIC]:
            self.instrumented.add((domid, self._epoch(domid)))
        if seen and (domid, self._epoch(domid)) in self.instrumented and words:
            if n == GT_GRANT_ACCESS:
                self.grefs[domid].add(words[0])
            elif n == GT_END_ACCESS:
                self.grefs[domid].discard(words[0])
            elif n == GT_PIRQ_BIND:
                self.pirqs[domid].add(words[0])
            elif n == GT_PIRQ_UNBIND:
                self.pirqs[domid].discard(words[0])
        return seen

    def gt_hello(self, domid: int) -> None:
        """HELLO once per epoch (a new kernel announces itself again)."""
        if (domid, self._epoch(domid)) not in self.instrumented:
            self.guest_trace(domid, GT_HELLO, [GT_MAGIC, GT_VERSION])

    def gt_grant(self, domid: int, ref: int, grantee: int, frame: int) -> None:
        self.gt_hello(domid)
        self.guest_trace(domid, GT_GRANT_ACCESS, [ref, grantee, frame, 0])

    def gt_end(self, domid: int, ref: int, grantee: int, frame: int) -> None:
        self.gt_hello(domid)
        self.guest_trace(domid, GT_END_ACCESS, [ref, grantee, frame])

    def gt_pirq(self, domid: int, pirq: int, irq: int, gsi: int, port: int, bind: bool = True) -> None:
        self.gt_hello(domid)
        cpu, _ = self._enter(domid, 0, HC_PHYSDEV_OP)
        self._leave(domid, cpu)
        self.vector(domid, 100 + irq, 0x30 + (pirq * 7) % 0xB0, assign=bind)
        self.hypercall(domid, HC_EVENT_CHANNEL_OP)
        self.guest_trace(domid, GT_PIRQ_BIND if bind else GT_PIRQ_UNBIND, [pirq, irq, 1, gsi, port])

    # -- lifecycle (spec §4.3) -----------------------------------------------------------------------------------
    def _settle(self, domid: int) -> None:
        for c in set(self.doms[domid].homes):
            self.end_loss(c)

    def _pause_all(self, domid: int) -> None:
        dom = self.doms[domid]
        for v in range(dom.nvcpus):
            cpu = dom.homes[v]
            self._emit(cpu, SCHED_SLEEP, [domid, v])
            if self.running[cpu] == (domid, v):
                self._switch(cpu, (DOMID_IDLE, cpu), OFFLINE)
            else:
                old = self.vstate[(domid, v)]
                self._emit(cpu, runstate_id(old, OFFLINE), [(domid << 16) | v])
                self.vstate[(domid, v)] = OFFLINE

    def shutdown(self, domid: int, reason: int, vcpu: int = 0, code_first: bool = False) -> int | None:
        """SCHEDOP_shutdown from the guest (sched_op 29, cmd 2), SCHED_SHUTDOWN, then every vCPU paused.
        ``code_first``: the guest first stores the reason with SCHEDOP_shutdown_code and then issues a plain
        poweroff shutdown (Xen then uses the stored code, spec §4.3)."""
        self._settle(domid)
        ev_reason = reason
        if code_first:
            cpu, _ = self._enter(domid, vcpu, HC_SCHED_OP, {0: 5})
            self._emit(cpu, SCHED_SHUTDOWN_CODE, [domid, vcpu, reason])
            self._leave(domid, cpu)
            ev_reason = 0
        cpu, _ = self._enter(domid, vcpu, HC_SCHED_OP, {0: SCHEDOP_SHUTDOWN})
        t = self._emit(cpu, SCHED_SHUTDOWN, [domid, vcpu, ev_reason])
        self._pause_all(domid)
        self.doms[domid].shutdown_reason = reason
        self.shutdown_tsc[domid] = t
        return t

    def toolstack_reset(self, domid: int) -> None:
        """xc_domain_pause + XEN_DOMCTL_soft_reset + unpause from dom0: only a domctl hypercall is visible."""
        self.hypercall(0, HC_DOMCTL)

    def resume(self, domid: int) -> int:
        """domain_resume(): WAKE and offline->runnable per vCPU, then vCPU 0 runs: the epoch boundary."""
        self._settle(domid)
        dom = self.doms[domid]
        for v in range(dom.nvcpus):
            self._wake(domid, v)
        cpu = dom.homes[0]
        t = self._switch(cpu, (domid, 0), RUNNABLE)
        self._open_epoch(domid, t, "soft_reset" if dom.shutdown_reason == SHUTDOWN_SOFT_RESET else "crash")
        dom.shutdown_reason = None
        return t

    def _open_epoch(self, domid: int, t: int, kind: str) -> None:
        """Record the boundary that ends the current epoch of ``domid`` at TSC ``t`` and start the next epoch."""
        dom = self.doms[domid]
        e = dom.epoch
        b = {"domid": domid, "epoch": e, "kind": kind, "tsc": t,
             "shutdown_tsc": self.shutdown_tsc.pop(domid, None)}
        self.truth.boundaries.append(b)
        lossy = any(first <= t for (_c, first, _t, _n) in self.truth.lost) or any(
            l is not None and l[0] > 0 for l in self.losing.values())
        for (m, g), bal in list(self.balance.items()):
            if g == domid:
                self.truth.outstanding[(m, g, e)] = bal
                self.carried[(m, g)] = max(bal, 0)
                self.carried_lossy[(m, g)] = lossy
                if bal > 0:  # reported whatever was lost, with its uncertainty
                    self.truth.findings.add(("TL-GNT-001", domid, e, f"mapper:d{m}"))
                    if lossy:
                        self.lossy_leaks.append((domid, e, m, bal, t))
                    else:
                        self.truth.unsafe[(domid, e)].setdefault("grant_outstanding", t)
        if "foreign_map" in self.truth.unsafe.get((domid, e), {}):
            self.truth.findings.add(("TL-GNT-003", domid, e, "grant-maps"))
        if (domid, e) in self.truth.balloon:
            self.truth.findings.add(("TL-BAL-001", domid, e, "balloon"))
        if lossy:
            self.truth.findings.add(("TL-LOST-001", domid, e, "lost-records"))
        if self.grefs[domid] and not lossy:
            self.truth.unsafe[(domid, e)].setdefault("grant_ref_active", t)
        if self.pirqs[domid] and not lossy:
            self.truth.unsafe[(domid, e)].setdefault("pirq_bound", t)
        if self.grefs[domid]:
            self.truth.guest_grefs[(domid, e)] = sorted(self.grefs[domid])
            for r in self.grefs[domid]:
                self.truth.findings.add(("TL-GST-001", domid, e, f"gref:{r}"))
        if self.pirqs[domid]:
            self.truth.guest_pirqs[(domid, e)] = sorted(self.pirqs[domid])
            for p in self.pirqs[domid]:
                self.truth.findings.add(("TL-GST-002", domid, e, f"pirq:{p}"))
        # a new kernel starts with nothing granted and no PIRQ bound
        self.grefs[domid] = set()
        self.pirqs[domid] = set()
        dom.epoch += 1

    def soft_reset(self, domid: int, teardown=None, after_resume=None) -> int:
        """The whole §4.3 sequence. ``teardown`` runs between the pause and the domctl (backends unmapping);
        ``after_resume`` runs right after the boundary. Returns the boundary TSC."""
        self.shutdown(domid, SHUTDOWN_SOFT_RESET)
        if teardown:
            teardown()
        self.toolstack_reset(domid)
        t = self.resume(domid)
        if after_resume:
            after_resume()
        return t

    def crash(self, domid: int, teardown=None, code_first: bool = False) -> int:
        """SHUTDOWN with reason crash (3), then the same domid resumed into a kdump kernel."""
        self.shutdown(domid, SHUTDOWN_CRASH, code_first=code_first)
        if teardown:
            teardown()
        self.toolstack_reset(domid)
        return self.resume(domid)

    def destroy(self, domid: int) -> None:
        """xl destroy: the domain unmaps its own foreign maps, is paused, DOM0_DOM_REM, SCHED_DOM_REM."""
        for (m, g) in list(self.mapped):
            if m == domid and self.mapped[(m, g)]:
                self.grant_unmap(m, g)
        self._settle(domid)
        self._settle(0)
        self._pause_all(domid)
        cpu, _ = self._enter(0, 0, HC_DOMCTL)
        self.shutdown_tsc[domid] = self._emit(cpu, DOM0_DOM_REM, [domid])
        self._leave(0, cpu)
        self._emit(cpu, SCHED_DOM_REM, [domid])
        self.doms[domid].alive = False
        self.destroyed.add(domid)

    def create(self, domid: int, kind: str, vcpus: int = 1, homes=None) -> int | None:
        """xl create: dom0's domctl, DOM0_DOM_ADD, SCHED_DOM_ADD, then the vCPUs are unpaused. A re-created domid
        starts a new epoch at the DOM0_DOM_ADD record."""
        old = self.doms.get(domid)
        self._settle(0)
        if old is not None:
            self._settle(domid)
        cpu, _ = self._enter(0, 0, HC_DOMCTL)
        t = self._emit(cpu, DOM0_DOM_ADD, [domid])
        self._leave(0, cpu)
        self._emit(cpu, SCHED_DOM_ADD, [domid])
        homes = list(homes) if homes is not None else [(domid + i) % self.ncpus for i in range(vcpus)]
        dom = Dom(domid, kind, homes, epoch=old.epoch if old else 0)
        self.doms[domid] = dom
        for v in range(dom.nvcpus):
            self.vstate[(domid, v)] = OFFLINE
        if domid in self.destroyed:
            self.destroyed.discard(domid)
            self._open_epoch(domid, t, "recreate")
        for v in range(dom.nvcpus):
            self._wake(domid, v)
        return t

    # -- output --------------------------------------------------------------------------------------------------
    def finish(self) -> "Sim":
        """End every loss (writing its LOST record) and fill the truth of the epochs that do not end in a boundary."""
        for c in range(self.ncpus):
            self.end_loss(c)
        # a visible leak across lossy boundaries is certain when even every record its losses could hide were an
        # unmap of the pair it would stay above 0 (tracelens.analysis.safety.grant_uncertainty)
        for g, e, m, bal, t in self.lossy_leaks:
            if bal - self.hideable(m, t) > 0:
                self.truth.unsafe[(g, e)].setdefault("grant_outstanding", t)
        # the open epoch of a live guest: grants still mapped at the end of the capture
        for (m, g), bal in self.balance.items():
            if bal > 0 and g in self.doms and self.doms[g].alive and 0 < g < DOMID_IDLE:
                if not self.truth.lost or bal - self.hideable(m, self.last_tsc) > 0:
                    self.truth.unsafe[(g, self.doms[g].epoch)].setdefault("grant_outstanding", self.last_tsc)
        if not self.truth.lost:
            for g, dom in self.doms.items():
                if dom.alive and 0 < g < DOMID_IDLE:
                    if self.grefs[g]:
                        self.truth.unsafe[(g, dom.epoch)].setdefault("grant_ref_active", self.last_tsc)
                    if self.pirqs[g]:
                        self.truth.unsafe[(g, dom.epoch)].setdefault("pirq_bound", self.last_tsc)
        for (m, g), _bal in self.balance.items():
            for e in range(self.doms[g].epoch + 1) if g in self.doms else ():
                self.truth.grants[(m, g, e)]  # every epoch of the granter has a row for every pair seen
        return self

    def hideable(self, mapper: int, t: int) -> int:
        """Lost records before ``t`` that could be ``mapper``'s: a loss of one record is scoped to the domain its
        LOST record names (Xen would have written a runstate record to switch to another), longer ones to none."""
        return sum(n for (_c, first, _t, n), d in zip(self.truth.lost, self.truth.lost_dom)
                   if first <= t and (n > 1 or d == mapper))

    def to_bytes(self) -> bytes:
        return self.w.to_bytes()

    def write(self, path) -> int:
        return self.w.write(path)


# -- scenarios ---------------------------------------------------------------------------------------------------
def _host(seed: int, ncpus: int = 2, xen_version: str = "4.20", guest_kind: str = "hvm", guest_vcpus: int = 1) -> Sim:
    """dom0 (PV, the backend, vCPU 0 on pCPU 0) and guest d1 on the other pCPUs."""
    s = Sim(ncpus=ncpus, seed=seed, xen_version=xen_version)
    s.add_domain(0, "pv", homes=[0])
    s.add_domain(1, guest_kind, homes=[1 + i % (ncpus - 1) for i in range(guest_vcpus)])
    return s


def _background(s: Sim, domids, n: int) -> None:
    """Ordinary activity: timer and HLT exits, a few harmless hypercalls, IRQs, blocking, WRAP records."""
    r = s.rng
    for _ in range(n):
        d = r.choice(domids)
        dom = s.doms[d]
        v = r.randrange(dom.nvcpus)
        x = r.random()
        if x < 0.35 and dom.kind == "hvm":
            s.hvm_exit(d, v)
        elif x < 0.55:
            s.hypercall(d, r.choice((HC_XEN_VERSION, HC_EVENT_CHANNEL_OP, HC_VCPU_OP)), {0: 4, 1: v}, vcpu=v)
        elif x < 0.65:
            s.irq(dom.homes[v], r.choice((28, 29, 40)))
        elif x < 0.75:
            s.block(d, v)
        elif x < 0.8:
            s.wrap(dom.homes[v])
        else:
            s.hypercall(d, HC_SCHED_OP, {0: SCHEDOP_YIELD}, vcpu=v)


def scenario_clean_soft_reset(seed: int = 1) -> Sim:
    """A guest kexecs with a soft reset; the backend unmaps every grant during the teardown."""
    s = _host(seed)
    _background(s, [0, 1], 60)
    s.grant_map(0, 1, 8)
    _background(s, [0, 1], 60)
    s.grant_unmap(0, 1, 2)
    s.grant_map(0, 1, 2)
    s.soft_reset(1, teardown=lambda: s.grant_unmap(0, 1))
    _background(s, [0, 1], 40)
    s.grant_map(0, 1, 4)
    _background(s, [0, 1], 40)
    return s.finish()


def scenario_persistent_grants(seed: int = 2) -> Sim:
    """The backend keeps 6 persistent grants mapped across the soft reset and releases them late."""
    s = _host(seed)
    _background(s, [0, 1], 50)
    s.grant_map(0, 1, 16)
    _background(s, [0, 1], 50)
    s.soft_reset(1, teardown=lambda: s.grant_unmap(0, 1, 10))
    _background(s, [0, 1], 30)
    s.grant_unmap(0, 1, 6)
    s.grant_map(0, 1, 4)
    _background(s, [0, 1], 30)
    return s.finish()


def scenario_balloon_before_kexec(seed: int = 3, xen_version: str = "4.20") -> Sim:
    """The guest balloons out 4k pages and a 2 MiB extent, balloons partly back in, then kexecs."""
    s = _host(seed, xen_version=xen_version)
    _background(s, [0, 1], 50)
    s.grant_map(0, 1, 4)
    s.balloon_down(1, [(0x12340 + i, 0) for i in range(6)])
    _background(s, [0, 1], 30)
    s.balloon_down(1, [(0x40000, 9)])
    s.balloon_up(1, 2)
    _background(s, [0, 1], 30)
    s.soft_reset(1, teardown=lambda: s.grant_unmap(0, 1))
    _background(s, [0, 1], 30)
    return s.finish()


def scenario_foreign_map(seed: int = 4) -> Sim:
    """Guest d2 maps grants of guest d1 (e.g. a vchan) and kexecs with two of them still mapped."""
    s = Sim(ncpus=3, seed=seed)
    s.add_domain(0, "pv", homes=[0])
    s.add_domain(1, "hvm", homes=[1])
    s.add_domain(2, "hvm", homes=[2])
    _background(s, [0, 1, 2], 50)
    s.grant_map(0, 1, 2)
    s.grant_map(2, 1, 5)
    _background(s, [0, 1, 2], 40)
    s.grant_unmap(2, 1, 3)
    _background(s, [0, 1, 2], 20)
    s.soft_reset(2)
    _background(s, [0, 1, 2], 30)
    return s.finish()


def scenario_instrumented_guest(seed: int = 5) -> Sim:
    """An instrumented HVM guest (TRC_GUEST tracepoints) leaks grant ref 15 and PIRQ 35 across its kexec."""
    s = _host(seed)
    s.guest_trace(1, GT_HELLO, [GT_MAGIC, GT_VERSION])
    s.guest_trace(1, GT_SHARED_INFO, [0xFEFFF, 0])
    s.guest_trace(1, GT_VCPU_INFO, [0, 0xFEFFE, 0, 0x40])
    _background(s, [0, 1], 30)
    for ref in range(8, 16):
        s.gt_grant(1, ref, 0, 0x20000 + ref)
    s.grant_map(0, 1, 8)
    s.gt_pirq(1, 34, 28, 28, 5)
    s.gt_pirq(1, 35, 29, 29, 6)
    _background(s, [0, 1], 40)
    s.guest_trace(1, GT_KEXEC_LOAD, [0, 3])
    s.gt_pirq(1, 34, 28, 28, 5, bind=False)
    s.guest_trace(1, GT_KEXEC_EXEC, [0])
    for ref in range(8, 15):
        s.gt_end(1, ref, 0, 0x20000 + ref)
    s.soft_reset(1, teardown=lambda: s.grant_unmap(0, 1))
    s.guest_trace(1, GT_HELLO, [GT_MAGIC, GT_VERSION])
    _background(s, [0, 1], 30)
    return s.finish()


def scenario_lost_across_boundary(seed: int = 6) -> Sim:
    """The backend's pCPU loses records from before the guest's shutdown to after its resume: the teardown
    unmaps are not in the capture, so the grant state at the boundary is unknown."""
    s = _host(seed)
    _background(s, [0, 1], 50)
    s.grant_map(0, 1, 8)
    _background(s, [0, 1], 40)
    s.begin_loss(0)
    s.grant_map(0, 1, 1)
    s.soft_reset(1, teardown=lambda: s.grant_unmap(0, 1))
    _background(s, [1], 20)
    s.end_loss(0)
    s.grant_map(0, 1, 4)
    _background(s, [0, 1], 30)
    return s.finish()


def scenario_crash_kdump(seed: int = 7) -> Sim:
    """The guest crashes (SHUTDOWN reason 3); the toolstack restarts it into its kdump kernel before the backend
    has released two of its grants."""
    s = _host(seed)
    _background(s, [0, 1], 50)
    s.grant_map(0, 1, 6)
    _background(s, [0, 1], 40)
    s.crash(1, teardown=lambda: s.grant_unmap(0, 1, 4))
    # the kdump kernel starts: it registers vcpu_info and shared_info again, then the backend catches up
    s.hypercall(1, HC_VCPU_OP)
    s.hypercall(1, HC_MEMORY_OP)
    s.grant_unmap(0, 1, 2)
    _background(s, [0, 1], 30)
    return s.finish()


SCENARIOS = {
    "clean-soft-reset": scenario_clean_soft_reset,
    "persistent-grants": scenario_persistent_grants,
    "balloon-before-kexec": scenario_balloon_before_kexec,
    "foreign-map": scenario_foreign_map,
    "instrumented-guest": scenario_instrumented_guest,
    "lost-across-boundary": scenario_lost_across_boundary,
    "crash-kdump": scenario_crash_kdump,
}


def random_scenario(seed: int, steps: int | None = None) -> Sim:
    """A random host: 1-4 pCPUs, dom0 backend (PV), 1-3 guests (HVM or PV), random grant traffic by dom0 and by
    guests, ballooning, soft resets, crashes, destroy/re-create, WRAP records and record losses."""
    r = random.Random(seed ^ 0x5EED)
    ncpus = r.randint(1, 4)
    s = Sim(ncpus=ncpus, seed=seed, xen_version=r.choice(["4.20", "4.20", "4.17"]), step=(r.choice([1, 40]), 700),
            poll_period=r.choice([5_000, 50_000, 2_400_000]), max_window_records=r.choice([3, 64, 512]))
    s.add_domain(0, "pv", homes=[0])
    guests = []
    for i in range(r.randint(1, 3)):
        domid = r.choice([1, 2, 3, 5, 8, 13])
        if domid in s.doms:
            continue
        kind = r.choice(["hvm", "hvm", "pv"])
        s.add_domain(domid, kind, homes=[r.randrange(ncpus) for _ in range(r.randint(1, 2))])
        guests.append(domid)
    steps = steps if steps is not None else r.randint(20, 120)
    lossy_capture = r.random() < 0.5
    for _ in range(steps):
        alive = [g for g in guests if s.doms[g].alive]
        x = r.random()
        if not alive:
            g = r.choice(guests)
            s.create(g, r.choice(["hvm", "pv"]), vcpus=r.randint(1, 2))
            continue
        g = r.choice(alive)
        if x < 0.25:
            s.grant_map(0, g, r.randint(1, 6))
        elif x < 0.40:
            s.grant_unmap(0, g, r.randint(1, 6))
        elif x < 0.45 and len(alive) > 1:
            other = r.choice([h for h in alive if h != g])
            if r.random() < 0.6:
                s.grant_map(g, other, r.randint(1, 3))
            else:
                s.grant_unmap(g, other, r.randint(1, 3))
        elif x < 0.50:
            s.balloon_down(g, [(r.randrange(0x1000, 0xFFFFFF), r.choice([0, 0, 9]))
                               for _ in range(r.randint(1, 3))])
        elif x < 0.53:
            s.balloon_up(g, r.randint(1, 2))
        elif x < 0.58:
            if s.doms[g].kind == "hvm":
                n = r.randint(0, 6)
                s.soft_reset(g, teardown=lambda g=g, n=n: s.grant_unmap(0, g, n))
        elif x < 0.61:
            s.crash(g, teardown=lambda g=g: s.grant_unmap(0, g, r.randint(0, 4)), code_first=r.random() < 0.3)
        elif x < 0.63:
            s.destroy(g)
            if r.random() < 0.7:
                s.create(g, r.choice(["hvm", "pv"]), vcpus=r.randint(1, 2))
        elif x < 0.67 and lossy_capture:
            cpu = r.randrange(ncpus)
            if s.losing[cpu] is None:
                s.begin_loss(cpu)
            else:
                s.end_loss(cpu)
        elif x < 0.70 and s.doms[g].kind == "hvm":
            ref = r.randrange(8, 64)
            if ref in s.grefs[g]:
                s.gt_end(g, ref, 0, 0x1000 + ref)
            else:
                s.gt_grant(g, ref, 0, 0x1000 + ref)
        elif x < 0.72 and s.doms[g].kind == "hvm":
            p = r.randrange(16, 40)
            s.gt_pirq(g, p, p, p, p - 10, bind=p not in s.pirqs[g])
        elif x < 0.75:
            pv = [d for d in [0] + alive if s.doms[d].kind == "pv"]
            s.multicall(r.choice(pv), [(r.choice([HC_MMU_UPDATE, HC_GRANT_TABLE_OP, HC_VCPU_OP, HC_XEN_VERSION]),
                                        {0: r.choice([0, 1, 5, 0x1001]), 1: r.randrange(8), 2: r.randrange(1, 9)})
                                       for _ in range(r.randint(1, 4))])
        else:
            _background(s, [0] + alive, r.randint(1, 4))
    return s.finish()
