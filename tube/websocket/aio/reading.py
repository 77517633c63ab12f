"""The read side of an asyncio :class:`~.connection.Connection`: the receive buffer and the gate.

Every connection of a thread reads into one shared receive buffer: the transport calls
``get_buffer`` then ``buffer_updated`` back to back, and the core copies what it keeps, so the
buffer is free again as soon as ``buffer_updated`` returns. An idle connection owns no receive
buffer. (One event loop per thread: a thread-local buffer is never used by two loops.)

:class:`ReadGate` pauses and resumes reading for several independent reasons at once, each a
bit: reading goes on only when no reason is left.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = [
    "PAUSED_BY_APPLICATION",
    "PAUSED_BY_CHANNEL",
    "PAUSED_BY_WRITING",
    "PAUSED_TO_HOLD",
    "ReadGate",
    "peer_name",
    "receive_buffer",
]

#: The channel is over a high-water mark (the application does not take messages).
PAUSED_BY_CHANNEL = 1
#: The transport's write buffer is over its high-water mark (what we read may make us write).
PAUSED_BY_WRITING = 2
#: The server holds frames back until the handshake is answered, or a violation stopped parsing.
PAUSED_TO_HOLD = 4
#: The application asked (:meth:`~.connection.Connection.pause_reading`).
PAUSED_BY_APPLICATION = 8

_RECEIVE_BUFFER_SIZE = 256 * 1024
_local = threading.local()


def receive_buffer() -> memoryview:
    """The calling thread's shared receive buffer."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(_RECEIVE_BUFFER_SIZE))
    return view


class ReadGate:
    """Why reading is paused, as bits; the transport reads only when none is set.

    Concurrency: asyncio only, on the connection's loop.
    """

    __slots__ = ("reasons", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reasons = 0

    def pause(self, why: int) -> None:
        """Stop reading for reason ``why`` (a bit)."""
        if not self.reasons and self.transport is not None:
            self.transport.pause_reading()
        self.reasons |= why

    def resume(self, why: int) -> None:
        """Drop the reasons in ``why``; read again if none is left."""
        if self.reasons & why:
            self.reasons &= ~why
            if not self.reasons and self.transport is not None:
                self.transport.resume_reading()


def peer_name(address: object) -> str:
    """``host:port`` of a socket address, for log messages."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "(unknown peer)"
