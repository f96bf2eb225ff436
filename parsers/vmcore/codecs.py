"""Page codecs of kdump-compressed dumps (shared/spec/vmcore.md §2.8), each bounded to one page.

zlib pages are RFC 1950 streams (2-byte header), lzo pages lzo1x, snappy pages *raw* snappy, zstd pages one frame.
Every decoder refuses to produce more than ``page_size`` bytes (a decompression bomb is a corrupt page, never an
allocation) and anything but exactly ``page_size`` bytes is corruption: zlib through ``max_length``, lzo through
its output buffer (lzo1x_decompress_safe), snappy by checking the stated length before decoding, zstd by checking
the frame header's content size before decoding and capping the output of frames that state none. The codecs release the GIL, so pages
decode in parallel threads. python-lzo is optional: without it an lzo page is reported as needing it (how to install it), not as damaged.
"""

from __future__ import annotations

import zlib

from . import constants as C


class PageCodecError(Exception):
    """A page that does not decode to exactly one page (caught by the readers and turned into FormatError)."""


class CodecUnavailable(PageCodecError):
    """A page in a codec whose optional package is not installed: the page may be sound, this install cannot decode
    it (the readers raise CodecMissing, whose message says what to install)."""


#: what a page in lzo needs when python-lzo is missing (the end of a sentence about the page)
LZO_MISSING = ("lzo-compressed, and python-lzo, an optional package, is not installed: pip install python-lzo (the "
               "tracelens[lzo] extra; it builds against liblzo2: on Debian, apt-get install liblzo2-dev first)")


def _zlib(data: bytes, page_size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, page_size)
    except zlib.error as e:
        raise PageCodecError(f"zlib: {e}") from None
    if d.unconsumed_tail:
        raise PageCodecError(f"zlib data expands past one page ({page_size} bytes)")
    return out


try:
    import lzo as _lzo_mod
except ImportError:  # optional: an lzo page is then reported as unreadable, with the fix
    _lzo_mod = None


def _lzo(data: bytes, page_size: int) -> bytes:
    if _lzo_mod is None:
        raise CodecUnavailable(f"the page is {LZO_MISSING}")
    try:
        return _lzo_mod.decompress(bytes(data), False, page_size)
    except _lzo_mod.error as e:
        raise PageCodecError(f"lzo: {e}") from None


def _snappy(data: bytes, page_size: int) -> bytes:
    import cramjam

    # the raw format starts with the uncompressed length as a varint: check it before decoding
    n = shift = 0
    for i, b in enumerate(bytes(data[:10])):
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    else:
        raise PageCodecError("snappy: bad length prefix")
    if n != page_size:
        raise PageCodecError(f"snappy page claims {n} bytes, expected {page_size}")
    try:
        return bytes(cramjam.snappy.decompress_raw(bytes(data)))
    except Exception as e:  # cramjam raises its own DecompressionError
        raise PageCodecError(f"snappy: {e}") from None


_zstd_local = None


def _zstd(data: bytes, page_size: int) -> bytes:
    import threading

    import zstandard

    global _zstd_local
    if _zstd_local is None:
        _zstd_local = threading.local()
    dctx = getattr(_zstd_local, "dctx", None)
    if dctx is None:
        dctx = _zstd_local.dctx = zstandard.ZstdDecompressor()
    data = bytes(data)
    try:
        # python-zstandard ignores max_output_size when the frame header states its content size: it allocates
        # what the header claims (gigabytes from a 3 KB frame). Check the claim first; a frame that states
        # nothing is decoded through a stream reader that never produces more than one page and one byte.
        claimed = zstandard.get_frame_parameters(data).content_size
        if claimed != zstandard.CONTENTSIZE_UNKNOWN:
            if claimed != page_size:
                raise PageCodecError(f"zstd frame header claims {claimed} bytes, expected {page_size}")
            return dctx.decompress(data, max_output_size=page_size)
        with dctx.stream_reader(data, read_across_frames=False) as r:
            out = r.read(page_size + 1)
        if len(out) > page_size:
            raise PageCodecError(f"zstd data expands past one page ({page_size} bytes)")
        return out
    except zstandard.ZstdError as e:
        raise PageCodecError(f"zstd: {e}") from None


DECODERS = {
    C.COMPRESSION_CODE["zlib"]: _zlib,
    C.COMPRESSION_CODE["lzo"]: _lzo,
    C.COMPRESSION_CODE["snappy"]: _snappy,
    C.COMPRESSION_CODE["zstd"]: _zstd,
}


def decode_page(code: int, data: bytes, page_size: int) -> bytes:
    """Decode one stored page; raises PageCodecError unless the result is exactly ``page_size`` bytes."""
    if code == 0:
        if len(data) != page_size:
            raise PageCodecError(f"raw page of {len(data)} bytes, expected {page_size}")
        return data
    dec = DECODERS.get(code)
    if dec is None:
        raise PageCodecError(f"unknown compression code {code}")
    out = dec(data, page_size)
    if len(out) != page_size:
        raise PageCodecError(f"{C.COMPRESSION_NAMES[code]} page decodes to {len(out)} bytes, expected {page_size}")
    return out


def codec_available(name: str) -> bool:
    return name != "lzo" or _lzo_mod is not None
