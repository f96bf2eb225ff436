"""Fixtures for the vmcore tests: the real dumps from ../shared/samples/vmcore (decompressed once into a cache
under the system temp dir and reused between runs) and the synthetic-dump writers."""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# the shared folder beside the repository checkout (CI clones the repo elsewhere with shared/ next to it)
SHARED = HERE.parents[1] / ".." / "shared"
SAMPLES = SHARED / "samples" / "vmcore"
CACHE = Path(tempfile.gettempdir()) / "tracelens-test-cache" / "vmcore"

#: dump file -> (archive, member or None, expected size, ground-truth JSON)
REAL_DUMPS = {
    "proc-vmcore.elf": ("kdump-boot-elf-bundle.tar.zst", "proc-vmcore.elf", 209_367_040, "kdump.proc-vmcore.elf.json"),
    "mdf-E31.elf": ("kdump-boot-elf-bundle.tar.zst", "mdf-E31.elf", 92_144_668, "kdump.host-mdf-E31.json"),
    "mdf-n31.kdump": ("kdump-boot-elf-bundle.tar.zst", "mdf-n31.kdump", 53_558_560, "kdump.host-mdf-n31.json"),
    "guest-mdf-l31.kdump": ("kdump-boot.guest-mdf-l31.kdump.zst", None, 20_653_067, "kdump.guest-mdf-l31.json"),
}


def _zstd_reader(path: Path):
    import zstandard

    return zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(open(path, "rb"), closefd=True)


def _extract(archive: Path, member: str | None, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with _zstd_reader(archive) as raw:
            if member is None:
                with open(tmp, "wb") as out:
                    while chunk := raw.read(1 << 22):
                        out.write(chunk)
            else:
                with tarfile.open(fileobj=raw, mode="r|") as tar:
                    for info in tar:
                        if info.name.lstrip("./") == member:
                            src = tar.extractfile(info)
                            with open(tmp, "wb") as out:
                                while chunk := src.read(1 << 22):
                                    out.write(chunk)
                            break
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


@pytest.fixture(scope="session")
def vmcore_samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"real vmcore samples not found at {SAMPLES} (the shared folder is expected beside the checkout)")
    return SAMPLES


@pytest.fixture(scope="session")
def real_dumps(vmcore_samples) -> dict:
    """name -> (path of the decompressed dump, ground-truth dict)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = {}
    pending = {}
    for name, (archive, member, size, truth) in REAL_DUMPS.items():
        dest = CACHE / name
        if not (dest.exists() and dest.stat().st_size == size):
            pending.setdefault(archive, []).append((member, dest))
        out[name] = (dest, json.loads((vmcore_samples / truth).read_text()))
    for archive, members in pending.items():
        if members[0][0] is None:
            _extract(vmcore_samples / archive, None, members[0][1])
        else:
            # one pass over the tar for every missing member
            wanted = {m: d for m, d in members}
            with _zstd_reader(vmcore_samples / archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                for info in tar:
                    dest = wanted.get(info.name.lstrip("./"))
                    if dest is None:
                        continue
                    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
                    src = tar.extractfile(info)
                    with open(tmp, "wb") as f:
                        while chunk := src.read(1 << 22):
                            f.write(chunk)
                    os.replace(tmp, dest)
    for name, (dest, _) in out.items():
        if dest.stat().st_size != REAL_DUMPS[name][2]:
            pytest.fail(f"{dest}: decompressed size {dest.stat().st_size}, expected {REAL_DUMPS[name][2]}")
    return out
