"""Masking of frame payloads (RFC 6455 §5.3), the hottest loop of the protocol.

Pure Python cannot XOR byte by byte at any useful speed, so two C-level tricks are used, each on
the sizes where it wins (measured on CPython 3.11, see ``bench/micro.py``):

* up to :data:`_INT_THRESHOLD` bytes, the payload and the repeated key are read as two big
  integers, XORed and written back: a handful of C calls, about 0.6 µs for 16 bytes;
* above it, ``bytes.translate`` with a per-key-byte 256-entry table on the four strided slices
  (byte ``i`` of the payload is XORed with key byte ``i % 4``), about 0.8 GB/s, roughly 1.2 ms
  per MiB. The integer method falls to about 0.25 GB/s at that size because its intermediate
  integers no longer fit in the cache.

When the optional C accelerator is available (see :mod:`.accelerator`), :func:`apply_mask` and
:func:`unmask_in_place` are its functions instead (a word at a time, vectorised): about 12x
faster at 64 B, 50x from 16 KiB, ~20 µs per MiB; :data:`IMPLEMENTATION` says which is in use.
The pure-Python functions stay, as :func:`python_apply_mask` and :func:`python_unmask_in_place`,
and give the same results.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Protocol

from .accelerator import IMPLEMENTATION, speedups

__all__ = [
    "IMPLEMENTATION",
    "MaskKeySource",
    "apply_mask",
    "python_apply_mask",
    "python_unmask_in_place",
    "unmask_in_place",
]

# Below this size the big-integer XOR beats four translate passes (crossover measured ~512 B).
_INT_THRESHOLD = 512


@functools.cache
def _xor_tables() -> list[bytes]:
    """``_xor_tables()[k]`` maps every byte b to b ^ k: 64 KiB, built on first use only.

    Building it takes ~40 ms, which every import would pay even with the C accelerator.
    """
    return [bytes(b ^ k for b in range(256)) for k in range(256)]


def python_apply_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
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
    python_unmask_in_place(buffer, key)
    return bytes(buffer)


def python_unmask_in_place(
    buffer: bytearray | memoryview, key: bytes, start: int = 0, stop: int | None = None
) -> None:
    """XOR ``buffer[start:stop]`` with the repeated 4-byte ``key``, in place.

    Any size works; it is the fastest method above 512 bytes. The key starts at ``start``.

    Args:
        buffer: A ``bytearray``, or a writable ``memoryview`` (of bytes).
        key: The masking key, exactly 4 bytes.
        start: The first byte to unmask (not negative).
        stop: The end of the range (None: the end of ``buffer``); clamped as in a slice.

    Raises:
        ValueError: ``start`` or ``stop`` is negative.
    """
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"expected non-negative offsets, got start={start}, stop={stop}")
    if stop is None:
        stop = len(buffer)
    if not isinstance(buffer, bytearray):
        # A memoryview has no translate(): copy the range out and back (the C accelerator
        # works in place on any writable buffer).
        buffer[start:stop] = python_apply_mask(buffer[start:stop], key)
        return
    tables = _xor_tables()
    for offset in range(4):
        # Each strided slice is a C-level copy of a quarter of the range; translate and the
        # slice assignment are C loops too. No Python-level work per byte. (Strided slices of
        # a memoryview would avoid nothing: their generic copy is about 15x slower.)
        position = start + offset
        if position >= stop:
            # Fewer than 4 bytes: assigning an empty slice is a deletion to CPython, which
            # refuses it (BufferError) while the bytearray is exported.
            break
        buffer[position:stop:4] = buffer[position:stop:4].translate(tables[key[offset]])


class _UnmaskInPlace(Protocol):
    """The signature :func:`unmask_in_place` has on both paths (positional arguments only)."""

    def __call__(
        self,
        buffer: bytearray | memoryview,
        key: bytes,
        start: int = 0,
        stop: int | None = None,
        /,
    ) -> None: ...


# The functions the protocol calls: the C accelerator's when it is in use, else the ones above.
# Both take their arguments by position only (the C functions accept no keywords).
apply_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes]
unmask_in_place: _UnmaskInPlace
if speedups is not None:
    apply_mask = speedups.apply_mask
    unmask_in_place = speedups.unmask_in_place
else:
    apply_mask = python_apply_mask
    unmask_in_place = python_unmask_in_place


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
