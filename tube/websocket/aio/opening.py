"""The bytes of an opening handshake, gathered before a connection becomes a WebSocket.

Until the handshake is done, a :class:`~.connection.Connection` appends what it reads to a
:class:`HeadBuffer`; the server or client task parses it with the core's bounded parsers and
waits for more with :meth:`HeadBuffer.more`. Bytes after the head (frames sent right behind
it) stay in the buffer and become the WebSocket's first input.

:class:`HandshakeSide` is what that code (``aio/server.py``, ``aio/client.py``, the uvicorn
integration) may do with a connection around its opening handshake: the connection's declared
internal handshake interface (``Connection.handshake``), so that none of them uses a private
member of the connection (as the threaded parts use ``ReaderOwner`` and ``MessageSource``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..core.deflate import DeflateParameters
from ..core.http import Request

__all__ = ["HandshakeSide", "HeadBuffer"]


class HeadBuffer:
    """What arrived of the opening handshake so far, and a waiter woken on every read.

    Concurrency: asyncio only, on the connection's loop; one task reads (the handshake task).
    """

    __slots__ = ("_ended", "_loop", "_waiter", "data", "on_feed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.data = bytearray()
        #: Called after each read is appended, inside the read callback (the server answers
        #: a complete head there when nothing may await); None: only the waiter is woken.
        self.on_feed: Callable[[], object] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False

    def feed(self, chunk: memoryview) -> None:
        """Append received bytes (the connection's ``buffer_updated``)."""
        self.data += chunk
        if self.on_feed is not None:
            self.on_feed()
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


class HandshakeSide(Protocol):
    """A connection as its opening handshake sees it (internal API: ``Connection.handshake``).

    Concurrency: asyncio only, on the connection's loop.
    """

    @property
    def head(self) -> HeadBuffer | None:
        """The opening handshake's bytes so far; ``None`` once it is done (open or refused)."""

    @property
    def opened(self) -> bool:
        """True once the opening handshake succeeded: the connection is a WebSocket."""

    @property
    def lost(self) -> bool:
        """True once the TCP connection is closed."""

    @property
    def closed(self) -> asyncio.Future[None]:
        """Resolved once the TCP connection is closed (for done callbacks: never cancel it)."""

    def peer_name(self) -> str:
        """The peer's address, for log lines."""

    def hold_reading(self) -> None:
        """Leave further bytes in the kernel until :meth:`open` (a complete request head)."""

    def write_head(self, data: bytes) -> None:
        """Write an HTTP head (and body) of the opening handshake."""

    def open(
        self, consumed: int, subprotocol: str | None, deflate: DeflateParameters | None
    ) -> None:
        """The opening handshake succeeded: become a WebSocket.

        Args:
            consumed: The size of the HTTP head in :attr:`head`; bytes after it are the first
                frames.
            subprotocol: The negotiated subprotocol.
            deflate: The negotiated permessage-deflate parameters, or None.
        """

    def adopt(
        self,
        transport: asyncio.BaseTransport,
        request: Request,
        subprotocol: str | None,
        deflate: DeflateParameters | None,
        data: bytes = b"",
    ) -> None:
        """Become an open WebSocket on a transport whose handshake another server parsed and
        answered with a 101 (the uvicorn integration), after ``transport.set_protocol()``.

        Args:
            transport: The transport, reading or paused.
            request: The opening request, as parsed.
            subprotocol: The subprotocol selected in the 101 response, or None.
            deflate: The permessage-deflate parameters of the 101 response, or None.
            data: Bytes already read past the request head: the first frames.
        """

    def refuse(self, data: bytes) -> None:
        """Answer with ``data`` (an HTTP response instead of the 101), then end TCP cleanly."""

    def abort(self, reason: str) -> None:
        """Close TCP at once, without a closing handshake (close code 1006 locally)."""

    def start_close(self, code: int, reason: str) -> bool:
        """Start the closing handshake unless it started already; True if a close frame was
        queued."""
