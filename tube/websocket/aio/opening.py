"""The bytes of an opening handshake, gathered before a connection becomes a WebSocket.

Until the handshake is done, a :class:`~.connection.Connection` appends what it reads to a
:class:`HeadBuffer`; the server or client task parses it with the core's bounded parsers and
waits for more with :meth:`HeadBuffer.more`. Bytes after the head (frames sent right behind
it) stay in the buffer and become the WebSocket's first input.
"""

from __future__ import annotations

import asyncio

__all__ = ["HeadBuffer"]


class HeadBuffer:
    """What arrived of the opening handshake so far, and a waiter woken on every read.

    Concurrency: asyncio only, on the connection's loop; one task reads (the handshake task).
    """

    __slots__ = ("_ended", "_loop", "_waiter", "data")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.data = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False

    def feed(self, chunk: memoryview) -> None:
        """Append received bytes (the connection's ``buffer_updated``)."""
        self.data += chunk
        self._wake()

    def end(self) -> None:
        """No more bytes will come: EOF, or the connection is lost."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def more(self) -> bool:
        """Wait for more bytes; False once none can come."""
        if self._ended:
            return False
        self._waiter = waiter = self._loop.create_future()
        await waiter
        return not self._ended
