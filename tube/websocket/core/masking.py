"""Masking of frame payloads (RFC 6455 §5.3), the hottest loop of the protocol.

Pure Python cannot XOR byte by byte at any useful speed, so two C-level tricks are used, each on
the sizes where it wins (measured on CPython 3.11, see ``bench/micro.py``):

* up to :data:`_INT_THRESHOLD` bytes, the payload and the repeated key are read as two big
  integers, XORed and written back: a handful of C calls, about 0.6 µs for 16 bytes;
* above it, ``bytes.translate`` with a per-key-byte 256-entry table on the four strided slices
  (byte ``i`` of the payload is XORed with key byte ``i % 4``), about 0.8 GB/s, roughly 1.2 ms
  per MiB. The integer method falls to about 0.25 GB/s at that size because its intermediate
  integers no longer fit in the cache.
"""

from __future__ import annotations

import os

__all__ = ["MaskKeySource", "apply_mask", "unmask_in_place"]

# Below this size the big-integer XOR beats four translate passes (crossover measured ~512 B).
_INT_THRESHOLD = 512

# _XOR_TABLES[k] maps every byte b to b ^ k: 64 KiB built once at import.
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def apply_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """Mask or unmask ``data`` with the 4-byte ``key`` (the operation is its own inverse).

    Args:
        data: The payload.
        key: The masking key, exactly 4 bytes.

    Returns:
        The masked payload as a new ``bytes`` object.
    """
    length = len(data)
    if length <= _INT_THRESHOLD:
        if length == 0:
            return b""
        repeated_key = (key * ((length >> 2) + 1))[:length]
        return (int.from_bytes(data, "little") ^ int.from_bytes(repeated_key, "little")).to_bytes(
            length, "little"
        )
    buffer = bytearray(data)
    unmask_in_place(buffer, key)
    return bytes(buffer)


def unmask_in_place(buffer: bytearray, key: bytes, start: int = 0, stop: int | None = None) -> None:
    """XOR ``buffer[start:stop]`` with the repeated 4-byte ``key``, in place.

    Any size works; it is the fastest method above 512 bytes. The key starts at ``start``.
    """
    if stop is None:
        stop = len(buffer)
    tables = _XOR_TABLES
    for offset in range(4):
        # Each strided slice is a C-level copy of a quarter of the range; translate and the
        # slice assignment are C loops too. No Python-level work per byte. (Strided slices of
        # a memoryview would avoid nothing: their generic copy is about 15x slower.)
        position = start + offset
        buffer[position:stop:4] = buffer[position:stop:4].translate(tables[key[offset]])


class MaskKeySource:
    """Fresh masking keys from the operating system's CSPRNG, drawn in batches.

    RFC 6455 §5.3 requires each key to be unpredictable, so keys come from ``os.urandom``
    (never ``random``); drawing 256 bytes (64 keys) at a time makes a key cost a slice, not a system
    call. Not thread-safe: each :class:`~tube.websocket.core.protocol.Protocol` owns one.
    """

    __slots__ = ("_pool", "_position")

    _BATCH = 256

    def __init__(self) -> None:
        self._pool = b""
        self._position = 0

    def __call__(self) -> bytes:
        """Return 4 fresh random bytes."""
        position = self._position
        if position + 4 > len(self._pool):
            self._pool = os.urandom(self._BATCH)
            position = 0
        self._position = position + 4
        return self._pool[position : position + 4]
