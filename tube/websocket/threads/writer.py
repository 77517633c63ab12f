"""The write path of a :class:`~.connection.Connection`: queue, flush, deadline, abort.

Frames are queued in :attr:`ConnectionState._out` under the connection's ``lock`` in the order
the protocol produced them, and written under a separate write lock by whichever thread holds
it: a sender blocks until its frames are written or ``send_timeout`` passes (the connection is
then aborted); the timer thread only writes what can be written without blocking.
"""

from __future__ import annotations

import logging
import socket
import time

from ..core.errors import ConnectionClosed
from ..core.protocol import Protocol
from .state import ConnectionState

__all__ = ["ConnectionWriter"]

logger = logging.getLogger("tube.websocket")

# Queued buffers whose total stays under this are joined and written with one send call.
_JOIN_LIMIT = 64 * 1024


class ConnectionWriter(ConnectionState):
    """The write path of a connection (see ``Connection`` for the concurrency contract)."""

    __slots__ = ()

    def _deadline(self) -> float | None:
        timeout = self.send_timeout
        return None if timeout is None else time.monotonic() + timeout

    def _open_protocol_locked(self) -> Protocol:
        protocol = self._protocol
        if protocol is None:
            raise ConnectionClosed(1006, "the connection is not connected yet")
        if self._aborted:
            raise self._closed_error()
        return protocol

    def _flush(self, deadline: float | None) -> None:
        """Write every queued buffer (ours and any queued before), waiting until ``deadline``.

        Raises:
            ConnectionClosed: The connection was aborted (now or earlier).
        """
        lock = self._write_lock
        with lock:
            self._write_queued(deadline, True)
        # A timer may have queued a frame while we held the write lock and given up on taking
        # it: whoever releases the lock checks again, so no frame is left behind.
        while self._out and lock.acquire(blocking=False):
            try:
                self._write_queued(deadline, True)
            finally:
                lock.release()

    def _try_flush(self) -> None:
        """Write what can be written without blocking (timer thread); never raises."""
        lock = self._write_lock
        while self._out and lock.acquire(blocking=False):
            try:
                if not self._write_queued(None, False):
                    return  # the socket buffer is full: the next sender writes the rest
            except ConnectionClosed:
                return
            finally:
                lock.release()

    def _write_queued(self, deadline: float | None, block: bool) -> bool:
        """Write queued buffers (write lock held); False if stopped because it would block."""
        out = self._out
        io = self._io
        assert io is not None
        while out:
            if self._aborted:
                out.clear()
                raise self._closed_error()
            buffer = out[0]
            view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
            try:
                sent = io.send_nowait(view)
            except OSError as error:
                self._abort_locked_write(f"connection lost while sending: {error}")
                raise self._closed_error() from None
            if sent:
                if sent >= len(view):
                    del out[0]
                else:
                    out[0] = view[sent:]
                continue
            if not block:
                return False
            if not io.wait_writable(deadline):
                self._abort_locked_write(
                    f"send timed out after {self.send_timeout} s: the peer is not reading"
                )
                raise self._closed_error()
        return True

    def _abort_locked_write(self, reason: str) -> None:
        """Abort the connection (write lock held): shut the socket, wake the reader.

        Only the write lock is held here, never :attr:`lock` (a sender may hold :attr:`lock`
        while it waits for the write lock). Shutting down is safe under the write lock alone:
        the reader closes the socket only while holding it.
        """
        if not self._aborted:
            self._aborted = True
            self._abort_reason = reason
            logger.info("aborting WebSocket connection: %s", reason)
        self._out.clear()
        assert self._io is not None
        self._io.shutdown(socket.SHUT_RDWR)
        self.incoming._release()

    # ------------------------------------------------------------------ introspection

    @property
    def _buffered_bytes(self) -> int:
        """Bytes held for the application plus bytes waiting to be written (for tests)."""
        queued = 0
        for buffer in list(self._out):
            queued += len(buffer)
        return self.incoming.buffered_bytes + queued
