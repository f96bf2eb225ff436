"""VMCOREINFO text: ``KEY=VALUE`` lines (shared/spec/vmcore.md §1.8, §4.1; Linux include/linux/vmcore_info.h).

Values are kept as the strings the kernel wrote; each accessor interprets its key form: ``SYMBOL()`` and
``KERNELOFFSET`` are hex without ``0x``, ``SIZE()``/``OFFSET()``/``LENGTH()`` decimal, ``NUMBER()`` signed decimal
(or ``0x`` hex for the few keys printed by hand). "Absent" and "0" are different answers (phys_base can be 0).
"""

from __future__ import annotations

from ._plain import Factory, plain



MISSING_VMCOREINFO_HINT = (
    "the dump has no VMCOREINFO note, so the kernel layout (symbols, printk ring, page tables) is unknown. "
    "For QEMU dumps start the guest with `-device vmcoreinfo` (QEMU >= 2.11, Linux >= 4.17); or save the dump "
    "in the capture kernel with makedumpfile from /proc/vmcore, which copies the note; or pass the text of "
    "/sys/kernel/vmcoreinfo's note (e.g. `makedumpfile -g VMCOREINFO -x vmlinux`) with vmcoreinfo=..."
)


@plain
class VmcoreInfo:
    """Parsed VMCOREINFO: an ordered ``key -> value`` mapping plus typed accessors."""

    entries: dict[str, str] = Factory(dict)
    raw: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> "VmcoreInfo":
        """Parse note text; stops at the first NUL (Xen pads its note with NULs) and accepts a last line
        without a newline (old kernels' CRASHTIME)."""
        nul = data.find(b"\0")
        if nul >= 0:
            data = data[:nul]
        entries: dict[str, str] = {}
        for line in data.split(b"\n"):
            if not line:
                continue
            key, sep, value = line.partition(b"=")
            if not sep:
                continue
            entries[key.decode("ascii", "replace")] = value.decode("ascii", "replace")
        return cls(entries, bytes(data))

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __bool__(self) -> bool:
        return bool(self.entries)

    def get(self, key: str, default=None):
        return self.entries.get(key, default)

    def symbol(self, name: str) -> int | None:
        v = self.entries.get(f"SYMBOL({name})")
        return _int(v, 16)

    def size(self, name: str) -> int | None:
        return _int(self.entries.get(f"SIZE({name})"), 10)

    def offset(self, name: str) -> int | None:
        return _int(self.entries.get(f"OFFSET({name})"), 10)

    def length(self, name: str) -> int | None:
        return _int(self.entries.get(f"LENGTH({name})"), 10)

    def number(self, name: str) -> int | None:
        v = self.entries.get(f"NUMBER({name})")
        if v is None:
            return None
        v = v.strip()
        if v.lower().startswith(("0x", "-0x")):
            return _int(v, 16)
        return _int(v, 10)

    @property
    def osrelease(self) -> str | None:
        return self.entries.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        return _int(self.entries.get("PAGESIZE"), 10)

    @property
    def kerneloffset(self) -> int | None:
        return _int(self.entries.get("KERNELOFFSET"), 16)

    @property
    def phys_base(self) -> int | None:
        """NUMBER(phys_base) as a signed integer (it is negative under some KASLR layouts)."""
        return self.number("phys_base")

    @property
    def crashtime(self) -> int | None:
        return _int(self.entries.get("CRASHTIME"), 10)

    def table(self):
        """VMCOREINFO as key/value rows (pyarrow Table: key string, value string)."""
        import pyarrow as pa

        return pa.table({"key": list(self.entries.keys()), "value": list(self.entries.values())})


def _int(v: str | None, base: int) -> int | None:
    if v is None:
        return None
    try:
        return int(v.strip(), base)
    except ValueError:
        return None
