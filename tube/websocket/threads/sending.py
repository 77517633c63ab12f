"""The send path of a threaded connection: the queue of bytes to write, the write lock, the
``send_timeout`` deadline and the socket I/O.

Frames are queued (:meth:`SendPath.queue`) under the connection's lock, in the order the
protocol produced them, and written under this part's own write lock by whichever thread holds
it: a sender writes until the queue is empty, a timer callback only what the socket takes at
once. The two locks never nest the wrong way round: the write lock is never held while taking
the connection's lock, and list appends and pops are atomic.

``send_timeout`` bounds the time *without progress*, not the whole send: a slow reader that
keeps taking bytes is never aborted, a peer that stops reading is aborted ``send_timeout``
after the last byte it took (Linux reports a TCP socket writable only once a third of its send
buffer is free, so waiting for writability alone would abort slow readers). The rule and the
abort's reason are the core's :class:`~tube.websocket.core.actions.SendWatch`; it lives here,
under the write lock, because the blocked writer is the one thread that waits on the socket.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from ..core.actions import SendWatch
from ..core.errors import ConnectionClosed, closed_error
from ..core.frames import Buffer
from .io import BaseIO

__all__ = ["SendPath"]

logger = logging.getLogger("tube.websocket")

# Queued buffers whose total stays under this are joined and written with one send call.
JOIN_LIMIT = 64 * 1024

# While the send buffer is full, try a non-blocking send at least this often (seconds): it
# succeeds as soon as any space is free, which the writability poll reports much later.
_PROGRESS_PROBE = 0.25


class SendPath:
    """The bytes waiting to be written to one socket and the lock that serialises the writes.

    Args:
        io: The socket I/O.
        send_timeout: Seconds without progress after which a blocked send aborts the
            connection; ``None`` waits for ever.
        on_abort: Called once with the reason (the write lock held, never the connection's
            lock) when the connection is aborted here: the connection records the reason and
            releases a reader blocked on a full incoming channel.

    Concurrency: :meth:`queue` is called with the connection's lock held; :meth:`flush` from
    any sending thread; :meth:`try_flush` from the timer thread; :meth:`close_socket` from the
    reader thread once it is done.
    """

    __slots__ = ("_on_abort", "_out", "_watch", "_write_lock", "abort_reason", "aborted", "io")

    def __init__(
        self, io: BaseIO, send_timeout: float | None, on_abort: Callable[[str], None]
    ) -> None:
        self.io = io
        self._watch = SendWatch(send_timeout)
        self._on_abort = on_abort
        # Buffers to write, in protocol order. A list, not a deque: it holds one or two items
        # and costs 56 bytes empty.
        self._out: list[Buffer] = []
        self._write_lock = threading.Lock()
        self.aborted = False
        self.abort_reason = ""

    def queue(self, chunks: list[Buffer]) -> None:
        """Append the protocol's output (connection lock held), joining small frames."""
        buffer = _joined(chunks)
        if buffer is None:
            self._out.extend(chunks)
        else:
            self._out.append(buffer)

    def write_or_queue(self, buffer: Buffer) -> bool:
        """Write ``buffer`` at once if nobody else writes; queue what is left.

        Called with the connection's lock held, which every producer of frames holds, so
        nothing can be queued meanwhile. The write never blocks (``MSG_DONTWAIT``), so holding
        that lock through it is fine. Returns True if everything was written: the caller has
        nothing to flush. On any other outcome (a partial write, a full socket buffer, an
        error, another writer busy) the rest is queued and the caller flushes as usual, which
        also reports an error or a ``send_timeout``.
        """
        out = self._out
        if out or self.aborted or not self._write_lock.acquire(blocking=False):
            out.append(buffer)
            return False
        try:
            try:
                sent = self.io.send_nowait(buffer)  # type: ignore[arg-type]
            except OSError:
                sent = 0  # flush() meets the error again and aborts
            if sent >= len(buffer):
                return True
            out.append(memoryview(buffer)[sent:] if sent else buffer)
            return False
        finally:
            self._write_lock.release()

    def write_or_queue_all(self, chunks: list[Buffer]) -> bool:
        """:meth:`write_or_queue` for the protocol's output, joined as :meth:`queue` joins it."""
        buffer = _joined(chunks)
        if buffer is None:
            self._out.extend(chunks)  # large: written by flush(), chunk by chunk
            return False
        return self.write_or_queue(buffer)

    @property
    def pending(self) -> bool:
        """True while some queued bytes are not written yet."""
        return bool(self._out)

    @property
    def queued_bytes(self) -> int:
        """How many bytes wait to be written."""
        return sum(len(buffer) for buffer in list(self._out))

    def flush(self, closed_error: Callable[[], ConnectionClosed]) -> None:
        """Write every queued buffer (ours and any queued before), blocking as needed.

        Raises:
            ConnectionClosed: The connection was aborted (now, by ``send_timeout``, or earlier);
                ``closed_error()`` builds the exception.
        """
        lock = self._write_lock
        with lock:
            self._write_queued(True, closed_error)
        # A timer may have queued a frame while we held the write lock and given up on taking
        # it: whoever releases the lock checks again, so no frame is left behind.
        while self._out and lock.acquire(blocking=False):
            try:
                self._write_queued(True, closed_error)
            finally:
                lock.release()

    def try_flush(self) -> None:
        """Write what can be written without blocking (timer thread); never raises."""
        lock = self._write_lock
        while self._out and lock.acquire(blocking=False):
            try:
                if not self._write_queued(False, _aborted_error):
                    return  # the socket buffer is full: the next sender writes the rest
            except ConnectionClosed:
                return
            finally:
                lock.release()

    def _write_queued(self, block: bool, closed_error: Callable[[], ConnectionClosed]) -> bool:
        """Write queued buffers (write lock held); False if stopped because it would block."""
        out = self._out
        io = self.io
        watch = self._watch
        watch.progressed()  # a new write: time without progress counts from its first block
        while out:
            if self.aborted:
                out.clear()
                raise closed_error()
            buffer = out[0]
            view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
            try:
                sent = io.send_nowait(view)
            except OSError as error:
                self._abort_write_locked(f"connection lost while sending: {error}")
                raise closed_error() from None
            if sent:
                if sent >= len(view):
                    del out[0]
                else:
                    out[0] = view[sent:]
                watch.progressed()  # progress: the send_timeout starts again
                continue
            if not block:
                return False
            now = time.monotonic()
            deadline = watch.blocked(now)
            if watch.expired(now):
                self._abort_write_locked(watch.reason)
                raise closed_error()
            probe = now + _PROGRESS_PROBE
            io.wait_writable(probe if deadline is None else min(probe, deadline))
        return True

    def _abort_write_locked(self, reason: str) -> None:
        # Only the write lock is held here, never the connection's lock (a sender may hold that
        # lock while it waits for the write lock). Shutting down is safe under the write lock
        # alone: the socket is closed only under it (close_socket).
        first = not self.aborted
        if first:
            self.aborted = True
            self.abort_reason = reason
            logger.info("aborting WebSocket connection: %s", reason)
            # Before the shutdown, which wakes the reader: the end it records must say why.
            self._on_abort(reason)
        self._out.clear()
        self.io.shutdown(socket.SHUT_RDWR)

    def close_socket(self) -> None:
        """Close the socket, once no writer uses its file descriptor (reader thread, at the end)."""
        with self._write_lock:
            self._out.clear()
            self.io.close()


def _aborted_error() -> ConnectionClosed:
    return closed_error(1006, "the connection was aborted")


def _joined(chunks: list[Buffer]) -> Buffer | None:
    """The protocol's output as one buffer (one send call, fewer TCP segments); None if large."""
    if len(chunks) == 1:
        return chunks[0]
    if sum(len(chunk) for chunk in chunks) <= JOIN_LIMIT:
        return b"".join(chunks)
    return None
