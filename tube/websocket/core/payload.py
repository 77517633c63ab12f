"""Payload buffers: a large frame's payload read in place, then handed out as ``bytes``.

A 1 MiB message used to be copied twice after the kernel's copy: from the transport's receive
buffer into the receiver's buffer (which grows as the frame arrives), then out of it into the
``bytes`` the application gets. When a large frame's header has arrived, the receiver now
allocates the destination of its payload once and the transport reads the rest of the payload
straight into it (:meth:`.Protocol.receive_buffer`); it is unmasked there, piece by piece while
the bytes are still in the cache, and handed out without a copy.

With the C accelerator, the destination is ``_speedups.PayloadBuffer``: a ``bytes`` object of
which it holds the only reference, filled in place through the buffer protocol, then taken
(no copy at all). In pure Python it is :class:`PythonPayloadBuffer`, a ``bytearray`` copied once
into ``bytes`` when taken (one copy fewer than before, and no growth of a buffer).
"""

from __future__ import annotations

from typing import Protocol

from .accelerator import speedups

__all__ = ["PayloadBuffer", "PythonPayloadBuffer", "first_size", "new_payload_buffer"]

# The C buffer's bytes are allocated uninitialised: a page of them costs memory only once the
# peer's bytes are written into it (the kernel commits anonymous memory when it is first
# touched), so a frame up to this size gets its whole buffer at once and is never copied to
# grow. Beyond it (and for the pure-Python bytearray, which is zeroed, so touched, when made)
# the buffer grows with what arrived: at least SMALLEST, at most twice the payload received.
RESERVE_AT_ONCE = 16 * 1024 * 1024
SMALLEST = 64 * 1024


class PayloadBuffer(Protocol):
    """What the receiver needs from a payload buffer (C or pure Python).

    Writable through the buffer protocol (``memoryview(buffer)``); :meth:`resize` keeps the
    bytes before the new size and raises :class:`BufferError` while a view is exported;
    :meth:`take` returns the ``bytes`` once, after which no view is given out.
    """

    def __len__(self) -> int: ...

    def __buffer__(self, flags: int, /) -> memoryview: ...

    def resize(self, size: int, /) -> None: ...

    def take(self) -> bytes: ...


class PythonPayloadBuffer(bytearray):
    """The pure-Python payload buffer: a ``bytearray`` that becomes ``bytes`` by one copy."""

    __slots__ = ()

    def resize(self, size: int, /) -> None:
        """Change the size, keeping the bytes before it (BufferError while exported)."""
        missing = size - len(self)
        if missing > 0:
            self.extend(bytes(missing))
        else:
            del self[size:]

    def take(self) -> bytes:
        """The bytes filled in (a copy).

        The buffer is left as it is: a transport may still hold a view of it (asyncio's does
        until ``buffer_updated`` returns), and a bytearray cannot be emptied while exported.
        """
        return bytes(self)


def first_size(length: int, received: int) -> int:
    """The size of the first payload buffer of a ``length``-byte payload of which ``received``
    bytes are in hand: all of it where that costs no memory before the bytes arrive."""
    if speedups is not None and length <= RESERVE_AT_ONCE:
        return length
    return min(length, max(2 * received, SMALLEST))


def new_payload_buffer(size: int) -> PayloadBuffer:
    """A payload buffer of ``size`` bytes: the C accelerator's when it is in use."""
    if speedups is not None:
        buffer: PayloadBuffer = speedups.PayloadBuffer(size)
        return buffer
    return PythonPayloadBuffer(size)
