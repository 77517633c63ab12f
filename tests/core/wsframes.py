"""An independent, deliberately naive frame builder for tests (byte-by-byte masking)."""

from __future__ import annotations

import struct


def mask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = b"\x37\xfa\x21\x3d",
    length: int | None = None,
) -> bytes:
    """Build one frame; ``key=None`` leaves it unmasked, ``length`` overrides the declared one."""
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if key is not None else 0
    if declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if key is None:
        return header + payload
    return header + key + mask(payload, key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def parse_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse unmasked or masked frames into (fin, opcode, unmasked payload) tuples."""
    frames = []
    position = 0
    while position < len(data):
        first, second = data[position], data[position + 1]
        length = second & 0x7F
        position += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, position)
            position += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, position)
            position += 8
        key = None
        if second & 0x80:
            key = data[position : position + 4]
            position += 4
        payload = data[position : position + length]
        position += length
        if key is not None:
            payload = mask(payload, key)
        frames.append((first >> 7, first & 0x0F, payload))
    return frames
