"""The bounded channel of received messages of an asyncio :class:`~.connection.Connection`.

The connection's protocol callbacks put every message of one socket read in at once and wake
the waiting consumer once per read, not once per message. The channel is bounded by a message
count and by bytes, with high and low water marks: at a high mark the connection pauses reading
the transport (TCP then slows the peer down), under both low marks it resumes.

Besides messages, the channel ends in one of two ways: :meth:`Incoming._end` (the closing
handshake completed, or the connection failed or was lost) or :meth:`Incoming._end_after`, a
peer's protocol violation (RFC 6455 §7.1.7, never overtaking the messages before it: README,
"Closing and timeouts") or close frame that takes effect only when the application asks for the
message after the last one before it: the violation or the close is, in effect, the next item of
the channel.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from ..core.errors import ConnectionClosed
from ..core.utf8 import message_size
from .reading import PAUSED_BY_CHANNEL, ReadGate

__all__ = ["Incoming", "Message"]

Message = str | bytes
"""A received message: ``str`` for a text message, ``bytes`` for a binary one."""


class Incoming:
    """The messages received on a connection, in order.

    ``async for message in connection.incoming:`` yields every message (``bytes`` for binary,
    ``str`` for text) and ends once the closing handshake is complete (or the connection failed
    or was lost) and every message received before was delivered. :meth:`get` returns the next
    message and raises :class:`~tube.websocket.ConnectionClosed` at the end.

    Args:
        loop: The connection's event loop.
        reading: The connection's read gate: reading pauses while the channel is over a
            high-water mark.
        max_messages: ``incoming_size``.
        max_bytes: ``incoming_bytes``.

    Attributes:
        ended: True once no message can arrive any more (some may still wait to be taken).
        closed: The same (the threaded channel's name).

    Concurrency: asyncio only, on the connection's event loop. Several tasks may wait at once;
    each message goes to exactly one of them. Only the connection puts messages in.
    """

    __slots__ = (
        "_at_end",
        "_error",
        "_high_bytes",
        "_high_count",
        "_loop",
        "_low_bytes",
        "_low_count",
        "_messages",
        "_nbytes",
        "_paused",
        "_reading",
        "_waiter",
        "ended",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, reading: ReadGate, max_messages: int, max_bytes: int
    ) -> None:
        self._loop = loop
        self._reading = reading
        self._messages: deque[Message] = deque()
        self._nbytes = 0
        # High and low water marks, as documented for the options: reading resumes at half
        # the count and a quarter of the bytes.
        self._high_count, self._low_count = max_messages, max_messages // 2
        self._high_bytes, self._low_bytes = max_bytes, max_bytes // 4
        # Reading is paused because the channel is over a high mark.
        self._paused = False
        # One future shared by every waiting task, resolved once per batch put in.
        self._waiter: asyncio.Future[None] | None = None
        # A peer's violation or close frame waiting behind the messages: what commits it (sends
        # the close frame) when it is reached.
        self._at_end: Callable[[], None] | None = None
        # True once no message can arrive any more (some may still wait to be taken).
        self.ended = False
        self._error: Callable[[], ConnectionClosed] | None = None

    # ------------------------------------------------------------------ consumer side

    async def get(self, timeout: float | None = None) -> Message:
        """Return the next message, waiting for one if needed.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as the connection lives.

        Raises:
            ConnectionClosed: The channel ended and every message has been taken; it carries
                the connection's close code and reason.
            TimeoutError: No message arrived within ``timeout``.
        """
        messages = self._messages
        if not messages:
            await self._wait(timeout)
        message = messages.popleft()
        self._nbytes -= message_size(message)
        if self._paused:
            self._taken()
        return message

    async def get_many(
        self, max_count: int | None = None, timeout: float | None = None
    ) -> list[Message]:
        """Return every message waiting (at least one), waiting for the first if needed.

        An echo or a relay answers the batch with one :meth:`Connection.send_many`.

        Args:
            max_count: Return at most this many; ``None`` takes all that wait.
            timeout: Seconds to wait for the first message; ``None``: as long as it lives.

        Raises:
            ValueError: ``max_count`` is zero or negative.
            ConnectionClosed: The channel ended and every message has been taken.
            TimeoutError: Nothing arrived within ``timeout``.
        """
        if max_count is not None and max_count <= 0:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        messages = self._messages
        if not messages:
            await self._wait(timeout)
        count = len(messages) if max_count is None else min(max_count, len(messages))
        batch = [messages.popleft() for _ in range(count)]
        self._nbytes -= sum(map(message_size, batch))
        if self._paused:
            self._taken()
        return batch

    async def _wait(self, timeout: float | None) -> None:
        """Wait until a message is there; raise at the end of the channel."""
        if timeout is None:
            while not self._messages:
                self._check_end()
                await self._next_batch()
            return
        async with asyncio.timeout(timeout):
            while not self._messages:
                self._check_end()
                await self._next_batch()

    def _next_batch(self) -> asyncio.Future[None]:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = self._loop.create_future()
        return waiter

    def _check_end(self) -> None:
        # Called with the channel empty: every message before the end has been delivered.
        if self._at_end is not None:
            # The application asks for the item after the last message: commit the violation
            # or answer the close now; its replies to the earlier messages are queued before.
            self._commit_end()
        if self.ended:
            assert self._error is not None
            raise self._error()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._messages:  # the common case under load: no await at all
            return await self.get()
        try:
            await self._wait(None)
        except ConnectionClosed:
            raise StopAsyncIteration from None
        return await self.get()

    @property
    def closed(self) -> bool:
        """True once no message can arrive any more (:attr:`ended`; the threaded name)."""
        return self.ended

    @property
    def buffered_bytes(self) -> int:
        """The bytes of the messages waiting (UTF-8 bytes for text)."""
        return self._nbytes

    def __len__(self) -> int:
        """The number of messages waiting."""
        return len(self._messages)

    # ------------------------------------------------------------------ producer side

    def _put(self, batch: list[Message]) -> None:
        """Append the messages of one read and wake the waiting tasks once (the connection)."""
        self._messages.extend(batch)
        for message in batch:
            self._nbytes += message_size(message)
        self._wake()
        if not self._paused and (
            len(self._messages) >= self._high_count or self._nbytes >= self._high_bytes
        ):
            self._paused = True
            self._reading.pause(PAUSED_BY_CHANNEL)

    def _take_all(self) -> list[Message]:
        """Every message waiting, taken at once (the connection, for a message callback)."""
        batch = list(self._messages)
        self._messages.clear()
        self._nbytes = 0
        if self._paused:
            self._taken()
        return batch

    def _taken(self) -> None:
        # Resume reading once the application has taken the channel below both low marks.
        if len(self._messages) <= self._low_count and self._nbytes <= self._low_bytes:
            self._paused = False
            self._reading.resume(PAUSED_BY_CHANNEL)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _end_after(self, commit: Callable[[], None]) -> None:
        """Queue a peer's violation or close frame behind the messages already in (the
        connection, once): ``commit()`` sends our close frame and ends the channel."""
        self._at_end = commit
        self._wake()

    def _commit_end(self) -> None:
        """Commit the pending violation or close (reached, or its bound expired)."""
        commit = self._at_end
        if commit is not None:
            self._at_end = None
            commit()

    def _end(self, error: Callable[[], ConnectionClosed]) -> None:
        """Mark the end: once drained, :meth:`get` raises ``error()`` (the connection, once)."""
        if self.ended:
            return
        self.ended = True
        self._at_end = None
        self._error = error
        self._paused = False
        self._wake()
