"""The send path of an asyncio :class:`~.connection.Connection`: coalescing, backpressure, deadline.

Frames are appended in the order the protocol produced them and handed to the transport once
per loop iteration (``loop.call_soon``), joined into one buffer when small: an echo that
answers every message of a read makes one system call for all of them. A batch larger than
:data:`FLUSH_AT` is handed over at once, so that a large message is never held back.

A large batch (a frame's header and its payload: two buffers) is written with one ``writev``
straight on the socket's file descriptor when nothing waits in the transport's buffer and the
transport is plain TCP (not TLS): one system call per frame and no copy of the payload, where
the transport would make one call per buffer (Python 3.11's selector transport: its
``writelines`` joins them, copying the payload). Whatever the kernel does not take
goes to the transport, which buffers it and waits for the socket as usual; an error is left to
the transport too (its ``write`` meets it again and reports it).

Backpressure: the transport calls ``pause_writing()`` above its high-water mark; a sender then
waits in :meth:`Sender.drain` until ``resume_writing()``. ``send_timeout`` means "no progress
for this long" (the rule and the abort's reason are the core's
:class:`~tube.websocket.core.actions.SendWatch`), and it is watched by the send path itself, not
by a waiting sender: from ``pause_writing()`` on, a timer looks at the deadline at how many bytes
have left the transport's buffer; when none left since the last look, the connection is
aborted. So a peer that floods pings and reads none of the pongs is dropped as surely as one
that stops reading an application's messages, although nobody is sending then (reading is
paused while the write side is full, so keepalive cannot notice it either).

The sender knows its connection only through what it is handed (the loop, the transport, two
callbacks): no import of the connection, no private member of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from ..core.actions import SendWatch
from ..core.errors import ConnectionClosed
from ..core.frames import Buffer
from ..sockets import unsent_bytes

__all__ = ["FLUSH_AT", "Sender"]

logger = logging.getLogger("tube.websocket.aio")

#: Bytes pending in one loop iteration above which they are handed to the transport at once.
FLUSH_AT = 64 * 1024

# Below this total, the pending buffers are joined into one before writing (one copy is cheaper
# than the transport's per-buffer bookkeeping and gives one TCP segment).
_JOIN_LIMIT = 64 * 1024

# At most this many buffers in one writev() (POSIX guarantees IOV_MAX >= 16; Linux has 1024).
_WRITEV_MAX = 16
_writev: Callable[[int, Sequence[Buffer]], int] | None = getattr(os, "writev", None)  # not Windows


class Sender:
    """The outgoing side of one connection.

    Args:
        loop: The connection's event loop.
        send_timeout: Seconds without progress, while the transport is full, before the
            connection is aborted; ``None`` waits for ever.
        abort: Aborts the connection with a reason (the connection's).
        closed_error: Builds the exception for a send on a connection that ended.

    Concurrency: asyncio only, on the connection's loop. Any number of tasks may send; frames
    are appended synchronously, so the frames of two messages never interleave.
    """

    __slots__ = (
        "_abort",
        "_closed_error",
        "_drain_waiters",
        "_fd",
        "_handed",
        "_last_look",
        "_loop",
        "_paused",
        "_pending",
        "_pending_size",
        "_released",
        "_scheduled",
        "_send_watch",
        "_transport",
        "_watchdog",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send_timeout: float | None,
        abort: Callable[[str], None],
        closed_error: Callable[[], ConnectionClosed],
    ) -> None:
        self._loop = loop
        self._abort = abort
        self._closed_error = closed_error
        self._send_watch = SendWatch(send_timeout)
        self._transport: asyncio.Transport | None = None
        # True once the connection is lost: senders stop waiting and raise.
        self._released = False
        self._pending: list[Buffer] = []
        self._pending_size = 0
        self._scheduled = False
        # True between the transport's pause_writing() and resume_writing().
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        # Every byte handed to the transport: minus what its buffer still holds, the bytes that
        # reached the kernel, which is how progress is measured (the buffer's size alone also
        # grows with what other senders add meanwhile).
        self._handed = 0
        # The send_timeout watchdog while paused, and what it saw at its last look.
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_look = (0, 0)
        # The socket's file descriptor for writev(), or -1 (TLS, no socket, no writev).
        self._fd = -1

    def attach(self, transport: asyncio.Transport) -> None:
        """The transport is known: may large batches go straight to its socket?"""
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if (
            _writev is not None
            and sock is not None
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("ssl_object") is None
        ):
            self._fd = sock.fileno()

    def queue(self, chunks: list[Buffer], *, schedule: bool = True) -> None:
        """Queue the protocol's output, in order; it is written at the end of this iteration
        (``schedule=False``: by the caller's own :meth:`flush`, which it promises)."""
        self._pending += chunks
        for chunk in chunks:
            self._pending_size += len(chunk)
        if self._pending_size >= FLUSH_AT:
            self.flush()
        elif schedule and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand every pending buffer to the transport (also the scheduled callback)."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        transport = self._transport
        self._pending = []
        size = self._pending_size
        self._pending_size = 0
        if transport is None or transport.is_closing():
            return  # aborted or lost: nothing can be written any more
        # Counted before each write: the transport may call pause_writing() inside it.
        if len(pending) == 1:
            self._handed += size
            transport.write(pending[0])
        elif size <= _JOIN_LIMIT:
            self._handed += size
            transport.write(b"".join(pending))
        else:
            written = 0
            if self._fd >= 0 and len(pending) <= _WRITEV_MAX:
                written = self._write_direct(transport, pending)
                self._handed += written
                if written == size:
                    return
            # The rest, one write each: writelines() would join them first (a copy of every
            # payload); the transport copies what the socket does not take at once. Each is
            # counted just before its write, not the batch at once: a pause_writing() inside
            # the first write looks at the count, and bytes not yet handed over would pass for
            # progress until they reach the buffer (the send_timeout watchdog then saw the
            # count fall and dropped a slow reader).
            for chunk in pending:
                length = len(chunk)
                if written >= length:
                    written -= length
                    continue
                self._handed += length - written
                transport.write(memoryview(chunk)[written:] if written else chunk)
                written = 0

    def _write_direct(self, transport: asyncio.Transport, pending: list[Buffer]) -> int:
        """Write ``pending`` with one ``writev`` if the transport's buffer is empty (else its
        bytes must go first); how many bytes the kernel took (0 if it took none or failed)."""
        if transport.get_write_buffer_size():
            return 0
        assert _writev is not None
        try:
            return _writev(self._fd, pending)
        except OSError:
            # Full (EAGAIN) or broken: the transport's write() tries again and, if the
            # connection is gone, reports it as it always does.
            return 0

    @property
    def paused(self) -> bool:
        """True while the transport's buffer is over its high-water mark."""
        return self._paused

    def write_head(self, data: bytes) -> None:
        """Write an HTTP head (the opening handshake, a refusal) straight to the transport."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._handed += len(data)
            transport.write(data)

    def pause(self) -> None:
        """The transport's buffer went over its high-water mark (``pause_writing``): from now
        on, no progress for ``send_timeout`` aborts the connection, whoever filled it."""
        self._paused = True
        if self._watchdog is None:
            self._last_look = self._look()
            self._send_watch.progressed()
            self._watch()

    def resume(self) -> None:
        """The transport's buffer drained under its low-water mark (``resume_writing``)."""
        self._paused = False
        self._stop_watching()
        self._wake_all()

    def _look(self) -> tuple[int, int]:
        """(bytes the transport passed to the kernel, bytes the kernel still holds): progress
        is the first rising or the second falling. The first alone moves only when the kernel
        reports the socket writable (a third of its buffer free): a slow reader's bytes would
        leave unseen for longer than ``send_timeout``; the second shows them leave."""
        transport = self._transport
        if transport is None:
            return self._handed, 0
        passed = self._handed - transport.get_write_buffer_size()
        held = unsent_bytes(transport.get_extra_info("socket"))
        return passed, 0 if held is None else held

    def _watch(self) -> None:
        deadline = self._send_watch.blocked(self._loop.time())
        if deadline is not None:
            self._watchdog = self._loop.call_at(deadline, self._check_progress)

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_progress(self) -> None:
        """The watchdog: ``send_timeout`` passed while paused; abort unless a byte left."""
        self._watchdog = None
        if not self._paused or self._released:
            return
        (passed, held), (passed_before, held_before) = self._look(), self._last_look
        if passed > passed_before or held < held_before:
            # Progress (a slow reader): give it another send_timeout. The abort thus comes
            # between one and two send_timeouts after the last byte left (nothing tells when
            # a byte leaves: the watchdog looks every send_timeout).
            self._last_look = (passed, held)
            self._send_watch.progressed()
            self._watch()
            return
        reason = self._send_watch.reason
        logger.info("aborting WebSocket connection: %s", reason)
        self._abort(reason)

    def _wake_all(self) -> None:
        waiters = self._drain_waiters
        self._drain_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport is over its high-water mark, or until the connection is
        lost (the watchdog aborts it after ``send_timeout`` without progress)."""
        while self._paused and not self._released:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def wait_writable(self) -> None:
        """Wait while the transport is full (:meth:`drain`).

        Raises:
            ConnectionClosed: The connection ended meanwhile: aborted after ``send_timeout``
                without progress (code 1006, the reason says so), or lost.
        """
        await self.drain()
        if self._released:
            raise self._closed_error()

    def shut(self, *, half: bool) -> None:
        """Write what is pending, then close TCP: ``half`` shuts only the write side (the
        transport closes once the peer's EOF arrives), when the transport can (TLS cannot)."""
        self.flush()
        transport = self._transport
        assert transport is not None
        if half and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError as exc:
                # The peer reset the connection meanwhile (ENOTCONN): asyncio's write_eof()
                # calls shutdown() unguarded. Nothing more can be said to it (this used to
                # escape into the application's `incoming` call).
                self._abort(f"connection lost while closing: {exc}")
        else:
            transport.close()  # TLS: close_notify, then asyncio waits for the peer's, bounded

    def release(self) -> None:
        """The connection is lost: wake every waiting sender (they see the end and raise)."""
        self._released = True
        self._pending = []
        self._pending_size = 0
        self._paused = False
        self._stop_watching()
        self._wake_all()
