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

from tracelens.analysis import _kernels as K
from tracelens.analysis import records as R
from tracelens.parsers.xentrace.catalog import load_catalog

#: SHUTDOWN_* reason codes (public/sched.h), from the catalog's table
SHUTDOWN_REASONS = load_catalog().tables["shutdown_reasons"]
#: the reasons whose shutdown is followed by a new kernel in the same domain: the boundary kinds they give
KEXEC_REASONS = {code: name for code, name in SHUTDOWN_REASONS.items() if name in ("crash", "soft_reset")}
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
        self.by_dom = {d: np.asarray(sorted(v), np.uint64) for d, v in sorted(tmp.items())}
        self._bdom = np.asarray(list(self.by_dom), np.int64)
        self._bstart = np.zeros(len(self.by_dom) + 1, np.int64)
        np.cumsum([v.size for v in self.by_dom.values()], out=self._bstart[1:])
        self._btsc = (np.concatenate(list(self.by_dom.values())) if self.by_dom else np.empty(0)).astype(np.uint64)

    def count(self, domid: int) -> int:
        """Number of boundaries of ``domid`` (its epochs are 0..count)."""
        return int(self.by_dom.get(int(domid), np.empty(0)).size)

    def of(self, domids: np.ndarray, tscs: np.ndarray) -> np.ndarray:
        """Epoch (i64) of each (domid, tsc): the number of the domain's boundaries at or before tsc."""
        from tracelens.analysis._kernels import epochs_of

        domids = np.ascontiguousarray(domids, np.int64)
        tscs = np.ascontiguousarray(tscs, np.uint64)
        if not self.by_dom:
            return np.zeros(domids.shape, np.int64)
        return epochs_of(domids, tscs, self._bdom, self._bstart, self._btsc)

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(domids, starts, TSCs): the boundaries in the CSR form the kernels take."""
        return self._bdom, self._bstart, self._btsc

    def boundary(self, domid: int, epoch: int) -> Boundary | None:
        """The boundary that ends ``epoch`` of ``domid`` (None for its open last epoch)."""
        for b in self.boundaries:
            if b.domid == domid and b.epoch == epoch:
                return b
        return None


def kexec_shutdowns(rec: R.Records) -> list[tuple[int, int, int, int, int]]:
    """(row, domid, vcpu, reason, effective reason) of the shutdowns that can start a kexec, in time order: a
    SHUTDOWN_CODE stores the reason Xen will use for the domain's next SHUTDOWN (§4.3)."""
    ev = rec.event
    sd = rec.rows(K.CAT_SHUTDOWN)
    sd_dom, sd_vcpu, sd_reason = rec.word(1, sd) & 0xFFFF, rec.word(2, sd), rec.word(3, sd)
    stored: dict[int, int] = {}
    kexecs = []
    for i, domid, vcpu, reason in zip(sd.tolist(), sd_dom.tolist(), sd_vcpu.tolist(), sd_reason.tolist()):
        if ev[i] == R.SCHED_SHUTDOWN_CODE:
            stored[domid] = reason
            continue
        effective = stored.pop(domid, reason)
        if effective in KEXEC_REASONS:
            kexecs.append((i, domid, vcpu, reason, effective))
    return kexecs


def first_offline(rec: R.Records, start: int, domid: int) -> int:
    """Row of the domain's first offline transition at or after row ``start`` (-1 when none), as find_resumes
    reads it."""
    rows = rec.rows(K.CAT_OFFLINE)
    rows = rows[np.searchsorted(rows, start):]
    if not rows.size:
        return -1
    hit = np.flatnonzero((rec.word(1, rows) >> 16) == domid)
    return int(rows[hit[0]]) if hit.size else -1


def find_boundaries(rec: R.Records, user: list[tuple[int, int]] | tuple = ()) -> Epochs:
    """All boundaries of the capture (see the module docstring), numbered per domain in TSC order."""
    found: list[Boundary] = []
    ev = rec.event
    life = rec.rows(K.CAT_LIFE)
    life_dom = rec.word(1, life) & 0xFFFF
    is_add = ev[life] == R.DOM0_DOM_ADD
    removed, rem_dom = life[~is_add], life_dom[~is_add]

    d1, _, _ = rec.buffer("d1")  # read where n_extra says the word is there
    d3, _, _ = rec.buffer("d3")
    used_resume: set[int] = set()
    kexecs = kexec_shutdowns(rec)
    # where each of those domains runs again
    rows, offline = K.find_resumes(np.array([k[0] + 1 for k in kexecs], np.int64),
                                   np.array([k[1] for k in kexecs], np.int64), rec.rows(K.CAT_OFFLINE),
                                   rec.event, rec.n_extra, d1, d3)
    for (i, domid, vcpu, reason, effective), j, after_offline in zip(kexecs, rows.tolist(), offline.tolist()):
        if j < 0:
            continue
        note = None if after_offline else (
            "no offline transition of the domain seen after the shutdown; first running record used")
        rem = removed[(rem_dom == domid) & (removed > i) & (removed < j)]
        if rem.size:
            continue  # destroyed, not reset: a re-creation is a "recreate" boundary
        if j in used_resume:
            continue  # another vCPU's SHUTDOWN for the same reset
        used_resume.add(j)
        evidence = {"shutdown_tsc": int(rec.tsc[i]), "shutdown_offset": int(rec.offset[i]), "reason": effective,
                    "reason_name": SHUTDOWN_REASONS.get(effective, str(effective)), "shutdown_vcpu": vcpu,
                    "resume_offset": int(rec.offset[j]), "resume_cpu": int(rec.cpu[j])}
        if effective != reason:
            evidence["shutdown_code"] = effective
            evidence["shutdown_record_reason"] = reason
        if note:
            evidence["note"] = note
        found.append(Boundary(domid, -1, KEXEC_REASONS[effective], int(rec.tsc[j]), evidence))

    adds, add_dom = life[is_add], life_dom[is_add]
    for i, domid in zip(adds.tolist(), add_dom.tolist()):
        prior = removed[(rem_dom == domid) & (removed < i)]
        if not prior.size:
            continue
        prev_adds = adds[(adds < i) & (add_dom == domid)]
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
        raise UsageError(f"boundaries: {text!r} does not look like DOMID@TSC (e.g. 1@123456789)", "boundaries")
    at = at.strip()
    units = (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0))
    for suffix, scale in units:
        if at.endswith(suffix) and not at.lower().startswith("0x"):
            if not cpu_hz:
                raise UsageError(f"boundaries: {text!r} gives a time: it needs cpu_hz to convert it to TSC cycles",
                                 "boundaries", "cpu_hz")
            try:
                return domid, int(round(float(at[: -len(suffix)]) * scale * float(cpu_hz)))
            except ValueError:
                break
    try:
        tsc = int(at, 0)
    except ValueError:
        raise UsageError(f"boundaries: {text!r}: {at!r} is neither a TSC nor a time like 1.5ms", "boundaries") from None
    if tsc < 0:
        raise UsageError(f"boundaries: {text!r}: the TSC must not be negative", "boundaries")
    return domid, tsc
