"""Kexec boundaries and domain epochs (spec ../shared/spec/xentrace.md §4.3).

A domain's timeline is cut into **epochs**, one per kernel: epoch N of a domain ends at its N-th boundary (counting
from 0) and the last epoch runs to the end of the capture. Boundaries come from:

``soft_reset`` / ``crash``
    TRC_SCHED_SHUTDOWN (0x00028007) of the domain with reason 5 (soft_reset) or 3 (crash) -- or the reason stored
    earlier by TRC_SCHED_SHUTDOWN_CODE (0x00028010), which Xen uses instead of the SHUTDOWN's own reason -- followed
    by the **same domid running again**. soft reset keeps the domid (§4.3), so "running again" is the first record
    that puts one of its vCPUs on a pCPU (runstate change to running, CONTINUE_RUNNING, or SCHED_SWITCH with it as
    next) after the shutdown *and* after one of its vCPUs went offline (the pause of step 3): a vCPU still finishing
    its time slice on another pCPU right after the SHUTDOWN is not a new kernel. The boundary's TSC is that record's.
    If the capture shows no offline transition (records lost, or a trimmed capture) the first running record after
    the shutdown is used and the evidence says so. A DOM0_DOM_REM of the domain before it runs again means it was
    destroyed, not reset: no boundary.
``recreate``
    TRC_DOM0_DOM_ADD (0x00041001) of a domid that an earlier DOM0_DOM_REM (0x00041002) or SCHED_DOM_REM (0x00028002)
    removed. The boundary is the DOM_ADD record.
``user``
    ``DOMID@TSC`` given by the user.

Records of a domain are assigned epochs by TSC: a record at or after a boundary's TSC belongs to the next epoch
(:meth:`Epochs.of`). Records without a TSC carry their pCPU's previous TSC (decoder rule), which places a guest's own
untimed records (VMMCALL, DECREASE_RESERVATION, TRC_GUEST) after the record that scheduled it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracelens.analysis import records as R

SHUTDOWN_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog", 5: "soft_reset"}
KEXEC_REASONS = {3: "crash", 5: "soft_reset"}
KINDS = ("soft_reset", "crash", "recreate", "user")


@dataclass
class Boundary:
    """A kexec boundary of one domain. ``epoch`` is the epoch it ends; ``tsc`` in cycles."""

    domid: int
    epoch: int
    kind: str
    tsc: int
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"domid": self.domid, "epoch": self.epoch, "kind": self.kind, "tsc": self.tsc,
                "evidence": dict(self.evidence)}


@dataclass
class Epochs:
    """Per-domain sorted boundary TSCs, and the epoch of (domid, tsc) pairs."""

    boundaries: list[Boundary]
    by_dom: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        tmp: dict[int, list[int]] = {}
        for b in self.boundaries:
            tmp.setdefault(b.domid, []).append(b.tsc)
        self.by_dom = {d: np.asarray(sorted(v), np.uint64) for d, v in tmp.items()}

    def count(self, domid: int) -> int:
        """Number of boundaries of ``domid`` (its epochs are 0..count)."""
        return int(self.by_dom.get(int(domid), np.empty(0)).size)

    def of(self, domids: np.ndarray, tscs: np.ndarray) -> np.ndarray:
        """Epoch (i64) of each (domid, tsc): the number of the domain's boundaries at or before tsc."""
        domids = np.asarray(domids, np.int64)
        tscs = np.asarray(tscs, np.uint64)
        out = np.zeros(domids.shape, np.int64)
        for d, bt in self.by_dom.items():  # one pass per domain with boundaries, not per record
            sel = np.flatnonzero(domids == d)
            if sel.size:
                out[sel] = np.searchsorted(bt, tscs[sel], side="right")
        return out

    def boundary(self, domid: int, epoch: int) -> Boundary | None:
        """The boundary that ends ``epoch`` of ``domid`` (None for its open last epoch)."""
        for b in self.boundaries:
            if b.domid == domid and b.epoch == epoch:
                return b
        return None


def _sched_rows(rec: R.Records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scheduling records only: (row indices, domid put on a pCPU or -1, domid of a vCPU entering or leaving the
    offline state or -1)."""
    ev = rec.event.astype(np.int64)
    is_rs = ((ev & R.RUNSTATE_MASK) == R.RUNSTATE_BASE) & (rec.n_extra >= 1)
    cont = (rec.event == R.CONTINUE_RUNNING) & (rec.n_extra >= 1)
    sw = (rec.event == R.SCHED_SWITCH) & (rec.n_extra >= 4)
    rows = np.flatnonzero(is_rs | cont | sw)
    e = ev[rows]
    old, new = (e >> 8) & 3, (e >> 4) & 3
    rs, c, s = is_rs[rows], cont[rows], sw[rows]
    dom1 = rec.word(1, rows) >> 16
    run = np.full(rows.size, -1, np.int64)
    to_run = (rs & (new == 0)) | c
    run[to_run] = dom1[to_run]
    run[s] = rec.word(3, rows[s]) & 0xFFFF
    off = np.full(rows.size, -1, np.int64)
    offl = rs & ((old == 3) | (new == 3)) & (old != new)
    off[offl] = dom1[offl]
    return rows, run, off


def find_boundaries(rec: R.Records, user: list[tuple[int, int]] | tuple = ()) -> Epochs:
    """All boundaries of the capture (see the module docstring), numbered per domain in TSC order."""
    found: list[Boundary] = []
    ev = rec.event
    srows, run_dom, off_dom = _sched_rows(rec)
    removed = np.flatnonzero(((ev == R.DOM0_DOM_REM) | (ev == R.SCHED_DOM_REM)) & (rec.n_extra >= 1))
    rem_dom = rec.word(1, removed) & 0xFFFF

    sd = np.flatnonzero(((ev == R.SCHED_SHUTDOWN) | (ev == R.SCHED_SHUTDOWN_CODE)) & (rec.n_extra >= 3))
    stored: dict[int, int] = {}
    used_resume: set[int] = set()
    for i in sd.tolist():  # shutdown records: a handful per domain
        domid = rec.at(i, 1) & 0xFFFF
        reason = rec.at(i, 3)
        if ev[i] == R.SCHED_SHUTDOWN_CODE:
            stored[domid] = reason
            continue
        effective = stored.pop(domid, reason)
        if effective not in KEXEC_REASONS:
            continue
        k0 = int(np.searchsorted(srows, i, side="right"))  # scheduling records after the shutdown
        runs = srows[k0:][run_dom[k0:] == domid]
        if runs.size == 0:
            continue
        offs = srows[k0:][off_dom[k0:] == domid]
        note = None
        if offs.size and offs[0] < runs[-1]:
            j = int(runs[np.searchsorted(runs, offs[0])])
        else:
            j = int(runs[0])
            note = "no offline transition of the domain seen after the shutdown; first running record used"
        rem = removed[(rem_dom == domid) & (removed > i) & (removed < j)]
        if rem.size:
            continue  # destroyed, not reset: a re-creation is a "recreate" boundary
        if j in used_resume:
            continue  # another vCPU's SHUTDOWN for the same reset
        used_resume.add(j)
        evidence = {"shutdown_tsc": int(rec.tsc[i]), "shutdown_offset": int(rec.offset[i]), "reason": effective,
                    "reason_name": SHUTDOWN_REASONS.get(effective, str(effective)), "shutdown_vcpu": rec.at(i, 2),
                    "resume_offset": int(rec.offset[j]), "resume_cpu": int(rec.cpu[j])}
        if effective != reason:
            evidence["shutdown_code"] = effective
            evidence["shutdown_record_reason"] = reason
        if note:
            evidence["note"] = note
        found.append(Boundary(domid, -1, KEXEC_REASONS[effective], int(rec.tsc[j]), evidence))

    adds = np.flatnonzero((ev == R.DOM0_DOM_ADD) & (rec.n_extra >= 1))
    for i in adds.tolist():
        domid = rec.at(i, 1) & 0xFFFF
        prior = removed[(rem_dom == domid) & (removed < i)]
        if not prior.size:
            continue
        prev_adds = adds[(adds < i) & ((rec.word(1, adds) & 0xFFFF) == domid)]
        if prev_adds.size and prev_adds[-1] > prior[-1]:
            continue  # already re-created after that removal
        found.append(Boundary(domid, -1, "recreate", int(rec.tsc[i]),
                              {"removed_tsc": int(rec.tsc[prior[-1]]), "removed_offset": int(rec.offset[prior[-1]]),
                               "created_offset": int(rec.offset[i])}))

    for domid, tsc in user:
        found.append(Boundary(int(domid), -1, "user", int(tsc), {"source": "--boundary"}))

    found.sort(key=lambda b: (b.domid, b.tsc, KINDS.index(b.kind)))
    counter: dict[int, int] = {}
    for b in found:
        b.epoch = counter.get(b.domid, 0)
        counter[b.domid] = b.epoch + 1
    return Epochs(found)


def parse_boundary(text: str, cpu_hz: float | None = None) -> tuple[int, int]:
    """``DOMID@TSC`` (cycles, decimal or 0x hex) or, with ``cpu_hz``, ``DOMID@<time><s|ms|us|ns>`` (time since TSC
    0, the decoder's ``time_ns`` origin). Returns (domid, tsc)."""
    from tracelens.errors import UsageError

    dom, sep, at = text.partition("@")
    try:
        domid = int(dom, 0)
    except ValueError:
        domid = -1
    if not sep or not 0 <= domid < 0x7FF0:
        raise UsageError(f"--boundary must look like DOMID@TSC (e.g. 1@123456789), not {text!r}")
    at = at.strip()
    units = (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0))
    for suffix, scale in units:
        if at.endswith(suffix) and not at.lower().startswith("0x"):
            if not cpu_hz:
                raise UsageError(f"--boundary {text!r} gives a time: it needs --cpu-hz to convert it to TSC cycles")
            try:
                return domid, int(round(float(at[: -len(suffix)]) * scale * float(cpu_hz)))
            except ValueError:
                break
    try:
        tsc = int(at, 0)
    except ValueError:
        raise UsageError(f"--boundary {text!r}: {at!r} is neither a TSC nor a time like 1.5ms") from None
    if tsc < 0:
        raise UsageError(f"--boundary {text!r}: the TSC must not be negative")
    return domid, tsc
