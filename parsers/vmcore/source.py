"""Byte sources under the dump readers: a plain file, or a makedumpfile flattened stream read in place.

Flattened layout (shared/spec/vmcore.md §2.12): a 4096-byte header (``"makedumpfile"``, type and version as
big-endian i64 at 16 and 24), then records of (offset i64 BE, size i64 BE, size bytes) that belong at ``offset``
of the reassembled file, ended by an all-0xff header. ``FlattenedSource`` scans the record headers once and keeps
a sorted (offset, size, file position) index, so reads are served by binary search with no rewrite. Later records
win where records overlap, like ``makedumpfile -R``. Bytes no record covers read as zeros (a rearranged file is
sparse there) and are reported by ``covered()``. A stream without the end marker is *incomplete*, not an error.

Every read is bounded: ``pread`` never asks for more than the caller's size, and callers check sizes taken from
the file against ``size`` before they allocate.
"""

from __future__ import annotations

import mmap
import os

from tracelens.errors import FormatError

from . import constants as C
from . import structs as S


class FileSource:
    """A seekable dump file; ``pread`` is thread-safe (os.pread on one descriptor)."""

    kind = "file"

    def __init__(self, path):
        from tracelens.detect import open_input

        self.path = os.fspath(path)
        self._fd = open_input(self.path, "a dump")  # a directory, FIFO or device is a FormatError here
        self.size = os.fstat(self._fd).st_size
        self.complete = True
        self._mm = None

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (short at the end of the file)."""
        if size <= 0 or offset >= self.size or offset < 0:
            return b""
        return os.pread(self._fd, min(size, self.size - offset), offset)

    def view(self, offset: int, size: int):
        """Bytes [offset, offset+size) as a read-only uint8 array: a zero-copy window of a memory map when the
        file can be mapped, else a copy read with pread."""
        import numpy as np

        if self._mm is None and self._fd >= 0 and self.size > 0:
            try:
                self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self._mm = False
        if self._mm and offset >= 0 and offset + size <= len(self._mm):
            return np.frombuffer(self._mm, np.uint8, count=size, offset=offset)
        return np.frombuffer(self.pread(offset, size), np.uint8)

    def release(self, offset: int, size: int) -> None:
        """Drop the mapped pages of [offset, offset+size) from this process (MADV_DONTNEED on a read-only file
        map: later reads fault them back from the page cache). Keeps the RSS of a scan bounded."""
        if self._mm and hasattr(mmap, "MADV_DONTNEED"):
            start = offset - offset % mmap.PAGESIZE
            end = min(len(self._mm), offset + size)
            if end > start:
                try:
                    self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)
                except (OSError, ValueError):
                    pass

    def read_exact(self, offset: int, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes, or a FormatError naming ``what`` and the offset."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(self.path, offset, f"{what} ({size} bytes) runs past the end of the file ({self.size} bytes): truncated dump?")
        data = self.pread(offset, size)
        if len(data) != size:
            raise FormatError(self.path, offset, f"short read of {what}")
        return data

    def covered(self, offset: int, size: int) -> bool:
        return 0 <= offset and offset + size <= self.size

    def close(self) -> None:
        if self._mm:
            try:
                self._mm.close()
            except BufferError:  # arrays handed out still view the map; it closes when they are gone
                pass
        self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class FlattenedSource(FileSource):
    """The reassembled view of a flattened stream, addressed like the file ``makedumpfile -R`` would write."""

    kind = "flattened"

    def __init__(self, path):
        super().__init__(path)
        self.stream_size = self.size
        head = self.pread(0, C.FLAT_HEADER_SIZE)
        if len(head) < C.FLAT_HEADER_SIZE or not head.startswith(C.FLAT_SIGNATURE):
            raise FormatError(self.path, 0, "not a makedumpfile flattened stream (no 'makedumpfile' signature)")
        h = S.FLAT_HEADER.unpack(head)
        if h["type"] != C.FLAT_TYPE:
            raise S.member_error(self, S.FLAT_HEADER, 0, "type", f"flattened header type {h['type']}, expected {C.FLAT_TYPE}")
        if h["version"] != C.FLAT_VERSION:
            raise S.member_error(self, S.FLAT_HEADER, 0, "version",
                                 f"flattened header version {h['version']}, expected {C.FLAT_VERSION}")
        self._index_records()

    def _index_records(self) -> None:
        offsets: list[int] = []
        sizes: list[int] = []
        positions: list[int] = []
        pos = C.FLAT_HEADER_SIZE
        complete = False
        record = S.FLAT_RECORD_HEADER
        while pos + record.size <= self.stream_size:
            off, size = record.struct.unpack(self.pread(pos, record.size))
            if off == -1 and size == -1:
                complete = True
                break
            if off < 0 or size <= 0:
                raise FormatError(self.path, pos, f"flattened record with offset {off} and size {size} (offset must be >= 0, size > 0)")
            data_pos = pos + record.size
            if data_pos + size > self.stream_size:
                # truncated in the middle of a record: keep what is there, the rest is lost
                size = self.stream_size - data_pos
                if size > 0:
                    offsets.append(off)
                    sizes.append(size)
                    positions.append(data_pos)
                break
            offsets.append(off)
            sizes.append(size)
            positions.append(data_pos)
            pos = data_pos + size
        import numpy as np

        self.complete = complete
        self.records = len(offsets)
        # resolve overlaps: later records win. Build non-overlapping extents by painting in stream order.
        self._build_extents(np.array(offsets, np.int64), np.array(sizes, np.int64), np.array(positions, np.int64))

    def _build_extents(self, offs, sizes, poss) -> None:
        import numpy as np

        order = np.argsort(offs, kind="stable")
        overlapping = False
        ends = offs[order] + sizes[order]
        if len(order) > 1 and np.any(offs[order][1:] < ends[:-1]):
            overlapping = True
        if not overlapping:
            self._ext_off = offs[order]
            self._ext_size = sizes[order]
            self._ext_pos = poss[order]
        else:
            # rare: paint records in stream order into an interval list (later wins)
            extents: list[tuple[int, int, int]] = []  # sorted, non-overlapping (off, size, pos)
            for off, size, p in zip(offs.tolist(), sizes.tolist(), poss.tolist()):
                end = off + size
                keep = []
                for eo, es, ep in extents:
                    ee = eo + es
                    if ee <= off or eo >= end:
                        keep.append((eo, es, ep))
                        continue
                    if eo < off:
                        keep.append((eo, off - eo, ep))
                    if ee > end:
                        keep.append((end, ee - end, ep + (end - eo)))
                keep.append((off, size, p))
                keep.sort()
                extents = keep
            self._ext_off = np.array([e[0] for e in extents], np.int64)
            self._ext_size = np.array([e[1] for e in extents], np.int64)
            self._ext_pos = np.array([e[2] for e in extents], np.int64)
        self.size = int((self._ext_off + self._ext_size).max()) if len(self._ext_off) else 0

    def view(self, offset: int, size: int):
        import numpy as np

        return np.frombuffer(self.pread(offset, size), np.uint8)

    def release(self, offset: int, size: int) -> None:
        pass

    def pread(self, offset: int, size: int) -> bytes:
        if not hasattr(self, "_ext_off"):  # header parsing: raw stream
            return super().pread(offset, size)
        if size <= 0 or offset < 0 or offset >= self.size:
            return b""
        import numpy as np

        size = min(size, self.size - offset)
        out = bytearray(size)
        i = int(np.searchsorted(self._ext_off, offset, side="right")) - 1
        if i < 0:
            i = 0
        end = offset + size
        n = len(self._ext_off)
        while i < n:
            eo = int(self._ext_off[i])
            if eo >= end:
                break
            ee = eo + int(self._ext_size[i])
            if ee > offset:
                lo = max(eo, offset)
                hi = min(ee, end)
                chunk = os.pread(self._fd, hi - lo, int(self._ext_pos[i]) + (lo - eo))
                out[lo - offset : lo - offset + len(chunk)] = chunk
            i += 1
        return bytes(out)

    def covered(self, offset: int, size: int) -> bool:
        """True when [offset, offset+size) is known. In a complete stream bytes no record covers are zeros (the
        rearranged file has a hole there); in an incomplete one they may belong to records never written."""
        if size <= 0:
            return True
        if self.complete:
            return 0 <= offset and offset + size <= self.size
        import numpy as np

        i = int(np.searchsorted(self._ext_off, offset, side="right")) - 1
        if i < 0:
            return False
        pos = offset
        end = offset + size
        n = len(self._ext_off)
        while i < n and pos < end:
            eo = int(self._ext_off[i])
            ee = eo + int(self._ext_size[i])
            if eo > pos:
                return False
            if ee > pos:
                pos = ee
            i += 1
        return pos >= end
