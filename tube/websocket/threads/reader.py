"""The read worker of a threaded connection: its thread, its receive buffer, and parking.

The reader thread reads the socket into a reusable buffer and hands each read to the
connection (which feeds the protocol and delivers messages); at the end it runs the TCP
teardown. After ``parking.PARK_AFTER`` seconds without a byte it *parks*: it hands the socket
to the shared watcher thread (:mod:`.parking`) and ends; the watcher starts a new reader thread
as soon as the peer speaks again. A connection so has at most one reader thread at a time, and
none while idle: a thread stack is ~16 KiB resident, most of an idle connection's memory.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Protocol as Interface

from ..core.errors import ConnectionClosed
from ..core.frames import Buffer
from . import parking
from .close_timers import CloseTimers
from .sending import SendPath

__all__ = ["Reader", "ReaderOwner"]

logger = logging.getLogger("tube.websocket")

# The receive buffer starts small, so that an idle connection costs little memory, and grows
# once a read fills it (a busy connection then makes fewer, larger reads).
_RECV_SIZE_MIN = 2 * 1024
_RECV_SIZE_MAX = 64 * 1024


class ReaderOwner(Interface):
    """What the reader needs from its connection (each method takes the locks it needs)."""

    lock: threading.RLock
    status_changed: threading.Condition

    def _process(self, data: Buffer) -> bool:
        """Feed received bytes; True once the TCP connection should be closed."""

    def _receive_eof(self) -> None:
        """The peer closed TCP."""

    def _may_park(self) -> bool:
        """True while the connection is open (lock held): a closing one keeps its reader."""

    def _closed_error(self) -> ConnectionClosed:
        """The exception of a failed write."""

    def _internal_error(self) -> None:
        """A bug in our code: fail with 1011."""

    def _finish(self) -> None:
        """The TCP connection is over: record it, close the socket."""


class Reader:
    """The read worker of one connection.

    Args:
        owner: The connection.
        sock: Its socket (registered with the parking watcher while idle).
        send: Its send path (for the I/O object and the last flush before the teardown).
        timers: Its timers (the reader records every sign of life in ``timers.keepalive``).

    Attributes:
        thread: The current reader thread, or ``None`` while parked.

    Concurrency: :meth:`start` is called once by the connection under its lock; everything
    else runs on the reader thread, or on the watcher thread for :meth:`_unpark`.
    """

    __slots__ = ("_owner", "_send", "_sock", "_timers", "thread")

    def __init__(
        self, owner: ReaderOwner, sock: socket.socket, send: SendPath, timers: CloseTimers
    ) -> None:
        self._owner = owner
        self._sock = sock
        self._send = send
        self._timers = timers
        self.thread: threading.Thread | None = None

    @property
    def is_current(self) -> bool:
        """True when called from the reader thread itself."""
        return threading.current_thread() is self.thread

    def start(self, initial_data: bytes = b"") -> None:
        """Start a reader thread (first, or after parking).

        Raises:
            RuntimeError: No thread could be started.
        """
        self._new_thread(initial_data).start()

    def _new_thread(self, initial_data: bytes) -> threading.Thread:
        thread = threading.Thread(
            target=self._run,
            args=(initial_data,),
            name=f"tube-reader-{self._sock.fileno()}",
            daemon=True,
        )
        self.thread = thread
        return thread

    def _run(self, initial_data: bytes) -> None:
        """Read, hand over, repeat; then the TCP teardown (or park when idle)."""
        owner = self._owner
        send = self._send
        io = send.io
        timers = self._timers
        parked = False
        try:
            close_transport = owner._process(initial_data) if initial_data else False
            buffer = bytearray(_RECV_SIZE_MIN)
            view = memoryview(buffer)
            while not close_transport:
                received = io.recv_into(buffer)
                if received <= 0:
                    if received < 0:  # idle
                        if self._park():
                            parked = True
                            return
                        continue
                    owner._receive_eof()
                    break
                keepalive = timers.keepalive
                if keepalive is not None:
                    keepalive.last_received = time.monotonic()
                close_transport = owner._process(view[:received])
                if received == len(buffer) and received < _RECV_SIZE_MAX:
                    buffer = bytearray(_RECV_SIZE_MAX)
                    view = memoryview(buffer)
            else:
                # RFC 6455 §7.1.1: the server closes the TCP connection first (and a client
                # does after a failure). Shut the write side down (TLS: after close_notify) and
                # read until the peer's EOF, so that unread data does not turn our close frame
                # into a reset. The give-up timer bounds the wait.
                with contextlib.suppress(ConnectionClosed):
                    send.flush(owner._closed_error)
                io.shutdown(socket.SHUT_WR)
                while io.recv_into(buffer):  # -1 (idle) too: wait on, until EOF or give-up
                    pass
        except Exception:
            logger.exception("internal error in the WebSocket reader thread; closing with 1011")
            owner._internal_error()
        finally:
            if not parked:
                owner._finish()

    def _park(self) -> bool:
        """Hand the idle socket to the parking watcher and end; False to read on."""
        owner = self._owner
        with owner.lock:
            if not owner._may_park():
                return False
            try:
                parking.park(self._sock, self._unpark)
            except (OSError, RuntimeError) as error:
                # Out of file descriptors or threads for the watcher: keep this reader; the
                # connection stays open and simply does not save memory while idle.
                logger.debug("cannot park an idle WebSocket connection: %s", error)
                return False
            self.thread = None
            owner.status_changed.notify_all()  # lets tests observe parking
            return True

    def _unpark(self) -> None:
        """The parked socket is readable (watcher thread): start a reader thread again."""
        # Under the lock only to record the thread after _park (which holds it) has finished;
        # starting a thread takes tens of microseconds, which senders need not wait for.
        with self._owner.lock:
            thread = self._new_thread(b"")
        try:
            thread.start()
            return
        except RuntimeError:
            logger.exception("cannot start a WebSocket reader thread; aborting")
        self._send.io.shutdown(socket.SHUT_RDWR)
        self._owner._finish()
