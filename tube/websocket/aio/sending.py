"""The send path of an asyncio :class:`~.connection.Connection`: coalescing, backpressure, deadline.

Frames are appended in the order the protocol produced them and handed to the transport once
per loop iteration (``loop.call_soon``), joined into one buffer when small: an echo that
answers every message of a read makes one system call for all of them. A batch larger than
:data:`FLUSH_AT` is handed over at once, so that a large message is never held back.

Backpressure: the transport calls ``pause_writing()`` above its high-water mark; a sender then
waits in :meth:`Sender.drain` until ``resume_writing()``. ``send_timeout`` means "no progress
for this long": each time the wait expires, the transport's buffer is compared with what it
held before, and the deadline restarts if any byte left (issue 8 §6); a peer that reads nothing
for ``send_timeout`` gets the connection aborted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..core.errors import ConnectionClosed
from ..core.frames import Buffer

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["FLUSH_AT", "Sender"]

logger = logging.getLogger("tube.websocket.aio")

#: Bytes pending in one loop iteration above which they are handed to the transport at once.
FLUSH_AT = 64 * 1024

# Below this total, the pending buffers are joined into one before writing (one copy is cheaper
# than the transport's per-buffer bookkeeping and gives one TCP segment).
_JOIN_LIMIT = 64 * 1024


class Sender:
    """The outgoing side of one connection.

    Concurrency: asyncio only, on the connection's loop. Any number of tasks may send; frames
    are appended synchronously, so the frames of two messages never interleave.
    """

    __slots__ = (
        "_connection",
        "_drain_waiters",
        "_paused",
        "_pending",
        "_pending_size",
        "_scheduled",
    )

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._pending: list[Buffer] = []
        self._pending_size = 0
        self._scheduled = False
        # True between the transport's pause_writing() and resume_writing().
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    def queue(self, chunks: list[Buffer]) -> None:
        """Queue the protocol's output, in order; it is written at the end of this iteration."""
        self._pending += chunks
        for chunk in chunks:
            self._pending_size += len(chunk)
        if self._pending_size >= FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._connection._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand every pending buffer to the transport (also the scheduled callback)."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        transport = self._connection._transport
        self._pending = []
        size = self._pending_size
        self._pending_size = 0
        if transport is None or transport.is_closing():
            return  # aborted or lost: nothing can be written any more
        if len(pending) == 1:
            transport.write(pending[0])
        elif size <= _JOIN_LIMIT:
            transport.write(b"".join(pending))
        else:
            # One write each: writelines() would join them first (a copy of every payload).
            for chunk in pending:
                transport.write(chunk)

    @property
    def paused(self) -> bool:
        """True while the transport's buffer is over its high-water mark."""
        return self._paused

    def pause(self) -> None:
        """The transport's buffer went over its high-water mark (``pause_writing``)."""
        self._paused = True

    def resume(self) -> None:
        """The transport's buffer drained under its low-water mark (``resume_writing``)."""
        self._paused = False
        self._wake_all()

    def _wake_all(self) -> None:
        waiters = self._drain_waiters
        self._drain_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self, send_timeout: float | None) -> bool:
        """Wait while the transport is over its high-water mark.

        Returns:
            True once under the mark (or the connection ended: the caller checks); False when no
            byte left for ``send_timeout`` seconds (the caller aborts the connection).
        """
        connection = self._connection
        while self._paused and not connection._lost:
            transport = connection._transport
            assert transport is not None
            before = transport.get_write_buffer_size()
            waiter = connection._loop.create_future()
            self._drain_waiters.append(waiter)
            try:
                async with asyncio.timeout(send_timeout):
                    await waiter
            except TimeoutError:
                # No resume_writing() within send_timeout; progress is any byte gone.
                if transport.get_write_buffer_size() >= before:
                    return False
        return True

    async def wait_writable(self) -> None:
        """Wait while the transport is full (:meth:`drain`); abort after ``send_timeout``.

        Raises:
            ConnectionClosed: No progress for ``send_timeout`` (the connection is aborted),
                or the connection ended meanwhile.
        """
        connection = self._connection
        send_timeout = connection.options.send_timeout
        if not await self.drain(send_timeout):
            reason = f"send timed out: no byte could be written for {send_timeout} s"
            logger.info(
                "aborting %s: %s (the peer is not reading)", connection._peer_name(), reason
            )
            connection._abort(reason)
            raise ConnectionClosed(1006, reason)
        if connection._lost:
            raise connection._closed_error()

    def shut(self, *, half: bool) -> None:
        """Write what is pending, then close TCP: ``half`` shuts only the write side (the
        transport closes once the peer's EOF arrives), when the transport can (TLS cannot)."""
        self.flush()
        transport = self._connection._transport
        assert transport is not None
        if half and transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()  # TLS: close_notify, then asyncio waits for the peer's, bounded

    def release(self) -> None:
        """The connection is lost: wake every waiting sender (they see the end and raise)."""
        self._pending = []
        self._pending_size = 0
        self._paused = False
        self._wake_all()
