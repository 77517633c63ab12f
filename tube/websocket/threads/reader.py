"""The reading side of a threaded connection: who reads the socket, and when.

At most one thread reads a connection's socket at a time; the *turn* (:class:`Turn`) says which:

* ``CONSUMER``: an application thread waiting in ``incoming.get()`` on an empty channel reads
  the socket itself (:meth:`Reader.read_for_consumer`) and takes what it read. An echo or a
  request/response loop so runs on one thread, without a hand-off between two threads for
  every batch of messages: that hand-off (a wake-up, and the two threads taking turns at the
  GIL) cost more than everything else on a busy connection.
* ``AWAY``: nobody reads; the application thread that read last is handling what it got. If no
  consumer comes back within ``parking.LINGER`` seconds, the parking watcher's sweep parks the
  socket, so that pings, close frames and messages are still read.
* ``WATCHED``: parked; the watcher starts a reader thread as soon as the peer speaks.
* ``THREAD``: a reader thread reads, feeds the protocol and puts messages in the channel, and
  blocks while the channel is full (the backpressure). After ``parking.PARK_AFTER`` seconds
  without a byte it parks the socket and ends; once a consumer waits on an empty channel, it
  hands the turn back after its next read and ends.
* ``DONE``: the TCP connection is over.

A reader thread also runs the TCP teardown at the end, so that the application thread is never
held up by it. The socket is closed only by the thread that holds the turn, never while parked.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import threading
import time
from typing import Protocol as Interface

from ..core.errors import ConnectionClosed
from ..core.frames import Buffer
from ..core.session import Session
from . import parking
from .channel import Incoming
from .sending import SendPath

__all__ = ["Reader", "ReaderOwner", "Turn"]

logger = logging.getLogger("tube.websocket")

# The receive buffer starts small, so that an idle connection costs little memory, and grows
# once a read fills it (a busy connection then makes fewer, larger reads).
_RECV_SIZE_MIN = 2 * 1024
_RECV_SIZE_MAX = 64 * 1024


class Turn(enum.Enum):
    """Who reads the socket (see the module's docstring)."""

    AWAY = "away"
    CONSUMER = "consumer"
    THREAD = "thread"
    WATCHED = "watched"
    DONE = "done"


# The per-read paths compare with these names (see core/protocol.py on why).
_AWAY = Turn.AWAY
_CONSUMER = Turn.CONSUMER
_THREAD = Turn.THREAD
_WATCHED = Turn.WATCHED


class ReaderOwner(Interface):
    """What the reader needs from its connection (each method takes the locks it needs)."""

    lock: threading.RLock
    status_changed: threading.Condition

    def _process(self, data: Buffer, wait: bool, into: bool = False) -> bool:
        """Feed received bytes; True once the TCP connection should be closed.

        ``wait``: block while the channel is full (reader threads only). ``into``: ``data`` is
        what was just read into the view from :meth:`_receive_buffer` (its length counts).
        """

    def _receive_buffer(self) -> memoryview | None:
        """Where to read while a large message arrives (Protocol.receive_buffer), or None."""

    def _receive_eof(self) -> None:
        """The peer closed TCP."""

    def _may_park(self) -> bool:
        """True while the connection is open (lock held): a closing one keeps its reader."""

    def _await_end(self) -> None:
        """Wait until no message can arrive any more (a deferred violation is committed, or
        the peer's close frame answered)."""

    def _closes_transport_first(self) -> bool:
        """True if this end now closes TCP first (a server, or after a failure)."""

    def _closed_error(self) -> ConnectionClosed:
        """The exception of a failed write."""

    def _internal_error(self) -> None:
        """A bug in our code: fail with 1011."""

    def _finish(self) -> None:
        """The TCP connection is over: record it, close the socket."""


class Reader:
    """The reading side of one connection.

    Args:
        owner: The connection.
        sock: Its socket (registered with the parking watcher while idle).
        send: Its send path (for the I/O object and the last flush before the teardown).
        session: Its life cycle (every read records a sign of life in ``session.keepalive``).
        incoming: Its channel (consumers waiting there are woken when the turn is theirs).

    Attributes:
        thread: The current reader thread, or ``None``.
        turn: Who reads the socket now (:class:`Turn`).

    Concurrency: the turn changes under the connection's lock; only the thread holding the
    turn (or the watcher, for a parked socket) touches the socket's read side and the buffer.
    """

    __slots__ = (
        "_away_since",
        "_buffer",
        "_incoming",
        "_owner",
        "_send",
        "_session",
        "_sock",
        "consumer_waiting",
        "thread",
        "turn",
    )

    def __init__(
        self,
        owner: ReaderOwner,
        sock: socket.socket,
        send: SendPath,
        session: Session,
        incoming: Incoming,
    ) -> None:
        self._owner = owner
        self._sock = sock
        self._send = send
        self._session = session
        self._incoming = incoming
        self.thread: threading.Thread | None = None
        self.turn = Turn.AWAY
        self._away_since = 0.0
        # Set by a consumer that found a reader thread reading: the thread hands the turn back.
        self.consumer_waiting = False
        # The receive buffer of whoever holds the turn (None while idle: it is made on demand).
        self._buffer: bytearray | None = None

    @property
    def is_current(self) -> bool:
        """True when called from the reader thread itself."""
        return threading.current_thread() is self.thread

    # ------------------------------------------------------------------ starting

    def start(self, initial_data: bytes = b"") -> None:
        """Start reading a connection that was just attached (lock held).

        Bytes received behind the handshake are fed by a reader thread; otherwise the turn
        waits for the first consumer, and the sweep parks the socket if none comes.

        Raises:
            RuntimeError: Neither a reader thread nor the watcher could be started.
        """
        if initial_data:
            self._start_thread(initial_data, teardown=False)
        else:
            self._leave_locked()

    def _start_thread(self, initial_data: bytes, *, teardown: bool) -> None:
        """Start a reader thread (lock held); raises RuntimeError if none can be started."""
        thread = self._new_thread_locked(initial_data, teardown)
        try:
            thread.start()
        except RuntimeError:
            self.thread = None
            raise

    def _new_thread_locked(self, initial_data: bytes, teardown: bool) -> threading.Thread:
        thread = threading.Thread(
            target=self._run,
            args=(initial_data, teardown),
            name=f"tube-reader-{self._sock.fileno()}",
            daemon=True,
        )
        self.thread = thread
        self.turn = Turn.THREAD
        return thread

    def _go_away_locked(self) -> None:
        """Nobody reads for now (lock held): the sweep parks the socket if nobody comes back."""
        self.turn = _AWAY
        self._away_since = time.monotonic()
        parking.linger(self)

    def _leave_locked(self) -> None:
        """Leave the socket to whoever reads next (lock held); a reader thread without watcher.

        Raises:
            RuntimeError: Neither the watcher nor a reader thread could be started.
        """
        try:
            self._go_away_locked()
            return
        except (OSError, RuntimeError) as error:
            logger.debug("cannot start the parking watcher: %s", error)
        self._start_thread(b"", teardown=False)

    # ------------------------------------------------------------------ consumers

    def can_consume(self) -> bool:
        """True if a waiting consumer may read now; otherwise ask the reader to hand over.

        Called by a consumer on an empty channel (channel lock held, not the connection's).
        """
        turn = self.turn
        if turn is _AWAY:
            return True
        if turn is _THREAD or turn is _WATCHED:
            self.consumer_waiting = True
        return False

    def read_for_consumer(self, deadline: float | None) -> None:
        """Read the socket once on a consumer's thread (no lock held); see the docstring.

        Returns once something was read and processed (messages, if any, are in the channel),
        at ``deadline`` (monotonic), or at once if the turn is not free.
        """
        owner = self._owner
        with owner.lock:
            if self.turn is not _AWAY:
                return
            self.turn = _CONSUMER
        finish = teardown = False
        try:
            received, target = self._consumer_recv(deadline)
            if received == 0:
                owner._receive_eof()
                finish = True
            elif received > 0:
                if target is not None:  # into a large message's payload
                    teardown = self._deliver(target, received, False, into=True)
                else:
                    buffer = self._buffer
                    assert buffer is not None
                    teardown = self._deliver(buffer, received, False)
                    self._buffer = _grown(buffer, received)
            target = None  # the view is dropped before the next receive_buffer() (resizable)
        except Exception:
            logger.exception("internal error while reading a WebSocket; closing with 1011")
            owner._internal_error()
            finish = True
        if finish:
            self._finish()
            return
        with owner.lock:
            try:
                if teardown:
                    self._start_thread(b"", teardown=True)
                else:
                    self._leave_locked()
                return
            except RuntimeError:
                logger.exception("cannot start a WebSocket reader thread; aborting")
        self._abort()

    def _consumer_recv(self, deadline: float | None) -> tuple[int, memoryview | None]:
        """One read for a consumer: the byte count, 0 at EOF, -1 at ``deadline``; and the
        large message's payload view it was read into, if any (else ``self._buffer``)."""
        io = self._send.io
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return -1, None
            buffer = self._buffer
            if buffer is None or timeout is not None:
                # Idle (or a deadline to keep): wait without a buffer, which is made on demand.
                if not io.wait_readable(timeout):
                    continue
                if buffer is None:
                    buffer = self._buffer = bytearray(_RECV_SIZE_MIN)
            target = self._owner._receive_buffer()
            received = io.recv_into(buffer if target is None else target, deadline)
            if received >= 0:
                return received, target
            # Idle for PARK_AFTER seconds, or the deadline passed while a TLS record was
            # incomplete: free the buffer meanwhile (OpenSSL keeps the record's start).
            self._buffer = None

    def _deliver(
        self, buffer: bytearray | memoryview, received: int, wait: bool, into: bool = False
    ) -> bool:
        """Hand one read to the connection, a sign of life; True once TCP should be closed."""
        keepalive = self._session.keepalive
        if keepalive is not None:
            keepalive.last_received = time.monotonic()
        return self._owner._process(memoryview(buffer)[:received], wait, into)

    def _finish(self) -> None:
        """The TCP connection is over (the caller holds the turn): finish it."""
        with self._owner.lock:
            self.turn = Turn.DONE
        self._buffer = None
        self._owner._finish()

    def _abort(self) -> None:
        """Nothing can read the socket any more (the caller holds the turn): end it now."""
        self._send.io.shutdown(socket.SHUT_RDWR)
        self._finish()

    # ------------------------------------------------------------------ the sweep

    def _sweep(self, now: float, lingering: set[parking.Lingering]) -> None:
        """Park the socket if nobody came back for it within LINGER (watcher thread)."""
        with self._owner.lock:
            if self.turn is not Turn.AWAY:
                lingering.discard(self)
                return
            if now - self._away_since < parking.LINGER:
                return
            lingering.discard(self)
            self._buffer = None
            try:
                self._park_locked()
            except (OSError, RuntimeError) as error:
                # Out of descriptors for the watcher: a reader thread reads instead.
                logger.debug("cannot park a WebSocket connection: %s", error)
                self._start_thread(b"", teardown=False)

    def watch(self) -> None:
        """Make sure the socket is read soon (a close is starting): park it if nobody reads."""
        with self._owner.lock:
            if self.turn is Turn.AWAY:
                with contextlib.suppress(OSError, RuntimeError):  # the sweep does it later
                    self._park_locked()

    # ------------------------------------------------------------------ the reader thread

    def _run(self, initial_data: bytes, teardown: bool) -> None:
        """Read, hand over, repeat; then the TCP teardown (or park, or hand the turn back)."""
        owner = self._owner
        send = self._send
        io = send.io
        handed_over = False
        try:
            close_transport = teardown or (
                owner._process(initial_data, True) if initial_data else False
            )
            buffer = bytearray(_RECV_SIZE_MIN)
            while not close_transport:
                if self.consumer_waiting and self._hand_back():
                    handed_over = True
                    return
                # While a large message arrives, straight into its payload (no copy).
                target = owner._receive_buffer()
                received = io.recv_into(buffer if target is None else target)
                if received <= 0:
                    target = None
                    if received < 0:  # idle
                        if self._park():
                            handed_over = True
                            return
                        continue
                    owner._receive_eof()
                    break
                if target is not None:
                    close_transport = self._deliver(target, received, True, into=True)
                    target = None  # dropped before the next receive_buffer() (resizable)
                else:
                    close_transport = self._deliver(buffer, received, True)
                    buffer = _grown(buffer, received)
            else:
                # A peer's violation or close frame waits for the application to take the
                # messages before it.
                owner._await_end()
                # RFC 6455 §7.1.1: the server closes the TCP connection first (and a client
                # does after a failure). Shut the write side down (TLS: after close_notify) and
                # read until the peer's EOF, so that unread data does not turn our close frame
                # into a reset. The give-up timer bounds the wait. A client that answered the
                # server's close frame only waits for the server's EOF.
                with contextlib.suppress(ConnectionClosed):
                    send.flush(owner._closed_error)
                if owner._closes_transport_first():
                    io.shutdown(socket.SHUT_WR)
                while io.recv_into(buffer):  # -1 (idle) too: wait on, until EOF or give-up
                    pass
        except Exception:
            logger.exception("internal error in the WebSocket reader thread; closing with 1011")
            owner._internal_error()
        finally:
            if not handed_over:
                self._finish()

    def _hand_back(self) -> bool:
        """A consumer waits on an empty channel: give it the turn and end; False to read on."""
        owner = self._owner
        with owner.lock:
            self.consumer_waiting = False
            if not owner._may_park():
                return False
            try:
                self._go_away_locked()
            except (OSError, RuntimeError):
                self.turn = Turn.THREAD
                return False
            self.thread = None
        self._incoming._wake_consumers()
        return True

    def _park(self) -> bool:
        """Hand the idle socket to the parking watcher and end; False to read on."""
        owner = self._owner
        with owner.lock:
            if not owner._may_park():
                return False
            try:
                self._park_locked()
            except (OSError, RuntimeError) as error:
                # Out of file descriptors or threads for the watcher: keep this reader; the
                # connection stays open and simply does not save memory while idle.
                logger.debug("cannot park an idle WebSocket connection: %s", error)
                return False
            self.thread = None
            owner.status_changed.notify_all()  # lets tests observe parking
            return True

    def _park_locked(self) -> None:
        parking.park(self._sock, self._unpark)
        self.turn = Turn.WATCHED

    def _unpark(self) -> None:
        """The parked socket is readable (watcher thread): start a reader thread again."""
        # Under the lock only to record the turn; starting a thread takes tens of microseconds.
        with self._owner.lock:
            if self.turn is not Turn.WATCHED:
                return
            thread = self._new_thread_locked(b"", False)
        try:
            thread.start()
            return
        except RuntimeError:
            logger.exception("cannot start a WebSocket reader thread; aborting")
        self._abort()


def _grown(buffer: bytearray, received: int) -> bytearray:
    """The buffer for the next read: a larger one once a read filled this one."""
    if received == len(buffer) and received < _RECV_SIZE_MAX:
        return bytearray(_RECV_SIZE_MAX)
    return buffer
