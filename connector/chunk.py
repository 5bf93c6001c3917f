"""The stored form of a chunk: a fixed-size header, the KV payload, optionally the token ids.

Layout (little-endian), `HEADER_BYTES` long, then `payload_len` bytes, then `tokens_len` bytes:

    magic "KVC1" | version u16 | flags u16 | key_len u16 | pad u16 | payload_len u64 |
    tokens_len u32 | crc32(payload + tokens) u32 | key (utf-8) | zero padding

Invariant: a buffer passes `validate` only if it is complete, its checksum matches and it was stored
under exactly the key it is read with. Anything else is a miss; callers never see a bad chunk.
The header is written only when a chunk leaves the process (L2): L1 holds chunks in memory it
owns, where a checksum would only cost bandwidth.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"KVC1"
VERSION = 1
HEADER_BYTES = 256
_FIXED = struct.Struct("<4sHHHHQII")
MAX_KEY_BYTES = HEADER_BYTES - _FIXED.size


class ChunkFormatError(ValueError):
    """A stored chunk failed validation; the message says why (for logs, not for users)."""


@dataclass(frozen=True)
class ChunkLayout:
    """Byte offsets of one chunk's parts in a buffer of `total` bytes."""

    payload_len: int
    tokens_len: int = 0

    @property
    def payload_start(self) -> int:
        return HEADER_BYTES

    @property
    def tokens_start(self) -> int:
        return HEADER_BYTES + self.payload_len

    @property
    def total(self) -> int:
        return HEADER_BYTES + self.payload_len + self.tokens_len


def _checksum(buf: memoryview, layout: ChunkLayout) -> int:
    crc = zlib.crc32(buf[layout.payload_start : layout.tokens_start])
    if layout.tokens_len:
        crc = zlib.crc32(buf[layout.tokens_start : layout.total], crc)
    return crc


def write_header(buf: memoryview, key: str, layout: ChunkLayout) -> None:
    """Fill the header of `buf` (payload and tokens already in place) for `key`."""
    raw_key = key.encode()
    if len(raw_key) > MAX_KEY_BYTES:
        raise ValueError(f"key of {len(raw_key)} bytes exceeds {MAX_KEY_BYTES}")
    if len(buf) < layout.total:
        raise ValueError("buffer is shorter than the chunk layout")
    crc = _checksum(buf, layout)
    header = _FIXED.pack(MAGIC, VERSION, 0, len(raw_key), 0, layout.payload_len, layout.tokens_len, crc)
    header += raw_key
    buf[: len(header)] = header
    buf[len(header) : HEADER_BYTES] = bytes(HEADER_BYTES - len(header))


def validate(buf: bytes | memoryview, key: str, expected: ChunkLayout | None = None) -> ChunkLayout:
    """Check `buf` is a complete, intact chunk stored under `key`; return its layout or raise."""
    view = memoryview(buf)
    if len(view) < HEADER_BYTES:
        raise ChunkFormatError(f"truncated: {len(view)} bytes, shorter than the header")
    magic, version, _flags, key_len, _pad, payload_len, tokens_len, crc = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise ChunkFormatError("bad magic")
    if version != VERSION:
        raise ChunkFormatError(f"unsupported format version {version}")
    stored_key = bytes(view[_FIXED.size : _FIXED.size + key_len]).decode(errors="replace")
    if stored_key != key:
        raise ChunkFormatError("stored under another key")
    layout = ChunkLayout(payload_len, tokens_len)
    if len(view) != layout.total:
        raise ChunkFormatError(f"length {len(view)} != {layout.total} announced by the header")
    if expected is not None and layout != expected:
        raise ChunkFormatError(f"layout {layout} != expected {expected}")
    if _checksum(view, layout) != crc:
        raise ChunkFormatError("checksum mismatch")
    return layout
