"""The stored chunk format: only a complete, intact chunk under the right key validates."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from connector.chunk import HEADER_BYTES, MAX_KEY_BYTES, ChunkFormatError, ChunkLayout, validate, write_header

KEY = "aibrix:0123456789abcdef0123456789abcdef:tp0pp0:" + "ab" * 32
LAYOUT = ChunkLayout(payload_len=1000, tokens_len=64)


def _chunk(key: str = KEY, layout: ChunkLayout = LAYOUT) -> bytearray:
    buf = np.random.default_rng(7).integers(0, 256, layout.total, dtype=np.uint8)
    buf[:HEADER_BYTES] = 0
    write_header(memoryview(buf), key, layout)
    return bytearray(buf.tobytes())


def test_round_trip_keeps_payload_and_tokens() -> None:
    buf = _chunk()
    before = bytes(buf[HEADER_BYTES:])
    assert validate(bytes(buf), KEY, LAYOUT) == LAYOUT
    assert validate(memoryview(buf), KEY) == LAYOUT
    assert bytes(buf[LAYOUT.payload_start : LAYOUT.total]) == before


def test_round_trip_without_tokens() -> None:
    layout = ChunkLayout(payload_len=10)
    assert validate(bytes(_chunk(layout=layout)), KEY, layout) == layout


@pytest.mark.parametrize("cut", [0, 10, HEADER_BYTES - 1, HEADER_BYTES, LAYOUT.total - 1])
def test_truncated_is_rejected(cut: int) -> None:
    with pytest.raises(ChunkFormatError):
        validate(bytes(_chunk()[:cut]), KEY, LAYOUT)


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(ChunkFormatError):
        validate(bytes(_chunk()) + b"\0", KEY, LAYOUT)


@pytest.mark.parametrize(
    "offset",
    [HEADER_BYTES, HEADER_BYTES + 500, LAYOUT.tokens_start - 1, LAYOUT.tokens_start, LAYOUT.total - 1],
)
def test_one_flipped_byte_in_payload_or_tokens_is_rejected(offset: int) -> None:
    buf = _chunk()
    buf[offset] ^= 0x01
    with pytest.raises(ChunkFormatError, match="checksum"):
        validate(bytes(buf), KEY, LAYOUT)


def test_wrong_key_is_rejected() -> None:
    other = KEY[:-1] + ("0" if KEY[-1] != "0" else "1")
    with pytest.raises(ChunkFormatError, match="key"):
        validate(bytes(_chunk()), other, LAYOUT)
    with pytest.raises(ChunkFormatError):
        validate(bytes(_chunk()), KEY + "x", LAYOUT)


def test_wrong_magic_and_version_are_rejected() -> None:
    buf = _chunk()
    buf[0:4] = b"XXXX"
    with pytest.raises(ChunkFormatError, match="magic"):
        validate(bytes(buf), KEY, LAYOUT)
    buf = _chunk()
    struct.pack_into("<H", buf, 4, 99)
    with pytest.raises(ChunkFormatError, match="version"):
        validate(bytes(buf), KEY, LAYOUT)


def test_wrong_layout_is_rejected() -> None:
    buf = bytes(_chunk())
    with pytest.raises(ChunkFormatError):
        validate(buf, KEY, ChunkLayout(payload_len=1000, tokens_len=0))
    with pytest.raises(ChunkFormatError):
        validate(buf, KEY, ChunkLayout(payload_len=1064, tokens_len=0))


def test_announced_length_must_match_the_buffer() -> None:
    buf = _chunk()
    struct.pack_into("<Q", buf, 12, LAYOUT.payload_len + 1)  # payload_len field
    with pytest.raises(ChunkFormatError):
        validate(bytes(buf), KEY, None)


def test_key_too_long_for_the_header_is_refused_at_write() -> None:
    buf = np.zeros(LAYOUT.total, dtype=np.uint8)
    with pytest.raises(ValueError):
        write_header(memoryview(buf), "k" * (MAX_KEY_BYTES + 1), LAYOUT)
