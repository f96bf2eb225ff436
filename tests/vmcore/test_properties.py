"""Property tests: the flattened record index against a naive reassembly, and the kdump bitmap rank index
against a plain popcount, on generated inputs."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tracelens.parsers.vmcore.kdump import KdumpDump
from tracelens.parsers.vmcore.source import FlattenedSource

records = st.lists(st.tuples(st.integers(0, 3000), st.binary(min_size=1, max_size=300)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(recs=records, end_marker=st.booleans())
def test_flattened_reads_equal_a_naive_rearrange(tmp_path_factory, recs, end_marker):
    """``makedumpfile -R`` semantics: copy each record to its offset in stream order (later writes win);
    bytes never written are holes (zeros) in a complete stream."""
    head = bytearray(4096)
    head[:12] = b"makedumpfile"
    struct.pack_into(">qq", head, 16, 1, 1)
    stream = bytes(head) + b"".join(struct.pack(">qq", o, len(d)) + d for o, d in recs) + (b"\xff" * 16 if end_marker else b"")
    p = tmp_path_factory.mktemp("flat") / "s"
    p.write_bytes(stream)
    size = max(o + len(d) for o, d in recs)
    naive = bytearray(size)
    written = bytearray(size)
    for o, d in recs:
        naive[o : o + len(d)] = d
        written[o : o + len(d)] = b"\x01" * len(d)
    src = FlattenedSource(p)
    try:
        assert src.size == size and src.complete == end_marker
        assert src.pread(0, size) == bytes(naive)
        for a, b in ((0, 1), (size // 3, size // 2 + 1), (max(0, size - 7), size)):
            assert src.pread(a, b - a) == bytes(naive[a:b])
            expect_cov = end_marker or all(written[a:b])
            assert src.covered(a, b - a) == expect_cov
    finally:
        src.close()


@settings(max_examples=80, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=1, max_size=20000), probes=st.lists(st.integers(0, 20000), max_size=30))
def test_bitmap_rank_equals_plain_popcount(bits, probes):
    arr = np.packbits(np.array(bits, bool), bitorder="little")
    d = KdumpDump.__new__(KdumpDump)  # only the rank index: set up the two attributes it reads
    d._bm2b = arr.tobytes()
    from tracelens.parsers.vmcore.kdump import rank_prefix

    d._prefix = rank_prefix(d._bm2b)
    for p in probes + [0, len(bits)]:
        p = min(p, len(bits))
        assert d._rank(p) == sum(bits[:p])


@settings(max_examples=200, deadline=None)
@given(off=st.sampled_from([0, 100, 20000, 24576, 24577, 40000, 10**9]), size=st.sampled_from([0, 1, 100, 4095, 4096, 4097, 10**6]),
       flags=st.sampled_from([0, 1, 2, 4, 8, 0x20, 3, 0x21, 0x40, 0x100]))
def test_kdump_state_twins(off, size, flags):
    """The scalar descriptor classifier (used by read_page) agrees with the vectorised one (used by scans)."""
    from types import SimpleNamespace

    d = KdumpDump.__new__(KdumpDump)
    d.page_size = 4096
    d.data_start = 24576
    d.zero_page_offset = 24576
    d.source = SimpleNamespace(size=50000, complete=True, kind="file")
    arr = np.zeros(1, np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")]))
    arr[0] = (off, size, flags, 0)
    st_vec, _ = d._classify(arr)
    assert d._classify_one(off, size, flags)[0] == int(st_vec[0])
