"""The threaded WebSocket connection: the seed's ``Connection`` object.

A :class:`Connection` is created unattached (:func:`create_connection`), then attached to a
socket whose opening handshake is done: :func:`tube.websocket.upgrade_connection` on the server
side, ``connect()`` on the client side. From then on:

* one **reader thread** (the seed's read worker) reads the socket into a reusable buffer, feeds
  the sans-I/O :class:`~tube.websocket.core.protocol.Protocol`, writes what it answers (pongs,
  the close echo) and puts messages into :attr:`Connection.incoming`, a bounded channel: when
  the application stops taking messages, the reader stops reading and TCP slows the peer down;
* **any thread** may send; frames are queued under :attr:`Connection.lock` in the order the
  protocol produced them and written under a separate write lock, with a deadline
  (``send_timeout``) after which the connection is aborted;
* one **shared timer thread** (:mod:`.timers`) runs every connection's keepalive pings, close
  retry and close give-up, doing only non-blocking work;
* an **idle** connection (no byte received for ``parking.PARK_AFTER`` = 2 s) parks: its reader
  thread ends and one shared watcher thread (:mod:`.parking`) starts a new one as soon as the
  socket is readable again. A connection thus has at most one reader thread, and none while
  idle, which halves the memory an idle connection costs (a thread stack is ~16 KiB resident).

Close semantics: :func:`initiate_close` sends a close frame (``closing`` becomes True); if no
close frame has come back after ``close_retry_time`` seconds it is sent once more (RFC 6455
expects one close frame; the duplicate follows the seed and can be disabled with ``None``);
after ``close_give_up_time`` seconds the TCP connection is closed whatever happens. A server
closes TCP first once the closing handshake is complete (RFC 6455 §7.1.1): it shuts its write
side down and reads until the peer's EOF, bounded by the same give-up time. A client waits for
the server's EOF, with the same bound.

Layout: this module holds :class:`Connection` itself (options, attaching, the public methods and
the reader thread). It builds on :mod:`.state` (the fields and life cycle), :mod:`.writer` (the
write path) and :mod:`.keepalive` (the timers); the options' defaults and checks are in
:mod:`.options`, and the seed's module functions (:func:`create_connection`, ...) in
:mod:`.functions`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal

from ..core.errors import ConnectionClosed
from ..core.events import BinaryMessage, CloseReceived, ProtocolFailure, TextMessage
from ..core.frames import Buffer
from ..core.protocol import DEFAULT_MAX_MESSAGE_SIZE, Protocol, Role, State
from . import parking
from .channel import Incoming, Message
from .io import BaseIO, make_io
from .keepalive import ConnectionTimers
from .options import (
    DEFAULT_CLOSE_GIVE_UP_TIME,
    DEFAULT_CLOSE_RETRY_TIME,
    DEFAULT_INCOMING_BYTES,
    DEFAULT_INCOMING_SIZE,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    SubprotocolSelector,
    _byte_view,
    _check_message,
    _check_seconds,
    _check_size,
)
from .state import _ENDED, _FAILED, _NEW, _OPEN
from .timers import Timer, call_later

__all__ = ["Connection"]

logger = logging.getLogger("tube.websocket")

# The receive buffer starts small, so that an idle connection costs little memory, and grows
# once a read fills it (a busy connection then makes fewer, larger reads).
_RECV_SIZE_MIN = 2 * 1024
_RECV_SIZE_MAX = 64 * 1024


class Connection(ConnectionTimers):
    """One WebSocket connection on threads: the seed's ``Connection`` struct.

    Create it with :func:`create_connection` (same keyword-only options as this constructor),
    then hand it to :func:`~tube.websocket.upgrade_connection` (server) or let ``connect()``
    (client) attach it. Use the module functions (:func:`send_blob_data`, :func:`initiate_close`,
    ...) or the same operations as methods; iterate :attr:`incoming` to receive.

    Attributes:
        lock: The lock guarding the fields below and the protocol state (a ``threading.RLock``).
        status_changed: A ``threading.Condition`` on :attr:`lock`, notified whenever
            :attr:`connected` or :attr:`closing` changes (the seed's
            ``connectionStatusChangedSignal``).
        incoming: The bounded channel of received messages (:class:`Incoming`).
        connected: True from the moment the connection is attached to its socket until the TCP
            connection is closed.
        closing: True from the moment a close frame is sent (ours or the echo of the peer's) or
            the connection fails; stays True.
        conn: The socket (``socket.socket`` or ``ssl.SSLSocket``); ``None`` until attached.
        close_retry_time: Seconds after :func:`initiate_close` before the close frame is sent
            again, or ``None`` for no retry.
        close_give_up_time: Seconds after the closing starts before the TCP connection is
            closed whatever happens.
        close_code: Once the connection has ended (``connected`` False after being True), the
            code that ended it: the peer's close code, 1005 if its close frame carried none,
            the code we sent when we failed the connection (1011 for a keepalive timeout, 1002
            or 1007 or 1009 for a peer's protocol violation), or 1006 when the TCP connection
            ended without a close frame (including a send timeout). ``None`` before.
        close_reason: The reason that came with :attr:`close_code` (``""`` if none).
        subprotocol: The subprotocol selected in the opening handshake, or ``None``.

    Concurrency contract:
        * Every public method and module function may be called from any thread, at any time.
          Sends from several threads never interleave their frames; each thread's messages
          are sent in the order of its calls.
        * A send blocks the calling thread until its frame is written to the socket (or until
          ``send_timeout``, then the connection is aborted and :class:`ConnectionClosed`
          raised). Sending never waits for the application to read :attr:`incoming`.
        * Reading the fields without :attr:`lock` is safe (each is one atomic assignment);
          waiting for a change takes :attr:`status_changed`. Hold :attr:`lock` only briefly and
          never while waiting for a message: the reader thread needs it for every read.
        * The reader thread never runs application code and is never blocked by it, except by
          the bound of :attr:`incoming` (which is the backpressure). There is at most one reader
          thread per connection; while the connection is idle there is none (it is parked).
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        close_retry_time: float | None = DEFAULT_CLOSE_RETRY_TIME,
        close_give_up_time: float = DEFAULT_CLOSE_GIVE_UP_TIME,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_fragments: int | Literal["auto"] | None = "auto",
        incoming_size: int = DEFAULT_INCOMING_SIZE,
        incoming_bytes: int = DEFAULT_INCOMING_BYTES,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        subprotocols: Sequence[str] | SubprotocolSelector | None = None,
        origins: Sequence[str] | None = None,
        check_origin: bool = True,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        _check_seconds("close_retry_time", close_retry_time, allow_none=True)
        _check_seconds("close_give_up_time", close_give_up_time, allow_none=False)
        _check_size("max_message_size", max_message_size, allow_none=True)
        if max_fragments != "auto":
            _check_size("max_fragments", max_fragments, allow_none=True)
        _check_size("incoming_size", incoming_size, allow_none=False)
        _check_size("incoming_bytes", incoming_bytes, allow_none=False)
        _check_seconds("ping_interval", ping_interval, allow_none=True)
        _check_seconds("ping_timeout", ping_timeout, allow_none=True)
        _check_seconds("send_timeout", send_timeout, allow_none=True)
        _check_seconds("open_timeout", open_timeout, allow_none=True)
        if isinstance(subprotocols, str):
            raise ValueError("subprotocols must be a sequence of strings, not one string")
        if isinstance(origins, str):
            raise ValueError("origins must be a sequence of origins, not one string")
        self.close_retry_time = close_retry_time
        self.close_give_up_time = close_give_up_time
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.send_timeout = send_timeout
        self.open_timeout = open_timeout
        self.subprotocols = subprotocols
        self.origins = None if origins is None else tuple(origins)
        self.check_origin = check_origin
        self.extra_headers = tuple(extra_headers)

        self.lock = threading.RLock()
        self.status_changed = threading.Condition(self.lock)
        self.incoming = Incoming(incoming_size, incoming_bytes)
        self.connected = False
        self.closing = False
        self.conn: socket.socket | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.subprotocol: str | None = None

        self._state = _NEW
        self._claimed = False
        self._protocol: Protocol | None = None
        self._io: BaseIO | None = None
        self._reader: threading.Thread | None = None
        # Buffers to write, in protocol order. Appended under `lock`, written and removed under
        # `_write_lock` (list appends and pops are atomic, so the two locks never nest the wrong
        # way round). A list, not a deque: it holds one or two items and costs 56 bytes empty.
        self._out: list[Buffer] = []
        self._write_lock = threading.Lock()
        self._aborted = False
        self._abort_reason = ""
        self._close_initiator: str | None = None
        self._last_received = 0.0
        self._ping_sent_at: float | None = None
        self._keepalive_timer: Timer | None = None
        self._retry_timer: Timer | None = None
        self._give_up_timer: Timer | None = None
        self._give_up_at: float | None = None

    def __repr__(self) -> str:
        state = ("new", "open", "ended", "failed")[self._state]
        closing = ", closing" if self.closing and self._state == _OPEN else ""
        return f"<Connection {state}{closing}>"

    # ------------------------------------------------------------------ attaching

    def _make_protocol(self, role: Role) -> Protocol:
        """Build the sans-I/O protocol configured with this connection's limits."""
        if self.max_fragments == "auto":
            return Protocol(role, max_message_size=self.max_message_size)
        return Protocol(
            role, max_message_size=self.max_message_size, max_fragments=self.max_fragments
        )

    def _attach(
        self,
        sock: socket.socket,
        protocol: Protocol,
        *,
        initial_data: bytes = b"",
        subprotocol: str | None = None,
    ) -> None:
        """Take ownership of a socket whose opening handshake is complete, and start.

        Internal API of the transports (``upgrade_connection``, ``connect``).

        Args:
            sock: A connected ``socket.socket`` or ``ssl.SSLSocket``; from now on only this
                connection reads, writes or closes it.
            protocol: The protocol, in the role of this end (``Role.SERVER`` or ``Role.CLIENT``).
            initial_data: Bytes received behind the handshake; fed to the protocol first.
            subprotocol: The negotiated subprotocol.

        Raises:
            RuntimeError: The connection was already attached (or its handshake failed), or
                the reader thread could not be started (the socket is then closed).
        """
        with self.lock:
            if self._state != _NEW:
                raise RuntimeError(f"{self!r} cannot be attached twice")
            # Frames are written whole; Nagle's algorithm would only delay small ones.
            with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to tune
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._io = make_io(sock, parking.PARK_AFTER)
            self._protocol = protocol
            self.conn = sock
            self.subprotocol = subprotocol
            self._last_received = time.monotonic()
            reader = self._new_reader(bytes(initial_data))
            self._state = _OPEN
            self.connected = True
            if self.ping_interval is not None:
                self._keepalive_timer = call_later(self.ping_interval, self._on_keepalive)
            try:
                reader.start()
            except RuntimeError:
                # Out of threads: nothing will ever read this socket, so close it now.
                self._state = _ENDED
                self.connected = False
                self.closing = True
                self.close_code = 1006
                self._cancel_timers_locked()
                self.status_changed.notify_all()
                self._io.close()
                self.incoming._close(lambda: ConnectionClosed(1006, "not started"))
                raise
            self.status_changed.notify_all()

    def _claim(self) -> None:
        """Reserve an unused connection for one opening handshake (internal API).

        Raises:
            RuntimeError: Another handshake already claimed it, or it is attached.
        """
        with self.lock:
            if self._state != _NEW or self._claimed:
                raise RuntimeError(f"{self!r} is already used by another handshake")
            self._claimed = True

    def _new_reader(self, initial_data: bytes) -> threading.Thread:
        """Create (not start) a reader thread and record it as the connection's reader."""
        fileno = self.conn.fileno() if self.conn is not None else -1
        reader = threading.Thread(
            target=self._run, args=(initial_data,), name=f"tube-reader-{fileno}", daemon=True
        )
        self._reader = reader
        return reader

    def _fail_open(self) -> None:
        """Record that the opening handshake failed: waiters of the connection give up."""
        with self.lock:
            if self._state == _NEW:
                self._state = _FAILED
                self.closing = True
                self.close_code = 1006
                self.incoming._close(lambda: ConnectionClosed(1006, "the handshake failed"))
                self.status_changed.notify_all()

    # ------------------------------------------------------------------ public operations

    def send(self, message: str | Buffer) -> None:
        """Send one message: a text message for ``str``, a binary one for bytes-like data.

        Returns once the frame is written to the socket.

        Raises:
            ConnectionClosed: The connection is not open (not attached yet, closing, or
                closed), or the write did not finish within ``send_timeout`` (the connection
                is then aborted, close code 1006).
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        _check_message(message, "send")
        self._send((message,))

    def send_many(self, messages: Iterable[str | Buffer]) -> None:
        """Send several messages in order, written with as few system calls as possible.

        Meant for relays, broadcasts and echoes that answer a batch taken with
        :meth:`Incoming.get_many`: the frames of small messages are joined and written with one
        system call, where :meth:`send` makes one per message. Every message is checked before
        any is sent; other threads' messages never land between them.

        Raises:
            ConnectionClosed: As for :meth:`send`; messages already written stay written.
            TypeError: A message is neither ``str`` nor bytes-like (nothing is sent).
        """
        batch = list(messages)
        for message in batch:
            _check_message(message, "send_many")
        if batch:
            self._send(batch)

    def ping(self, data: Buffer = b"") -> None:
        """Send a ping with up to 125 bytes of payload (the peer answers with a pong).

        Raises:
            ValueError: ``data`` is longer than 125 bytes.
            ConnectionClosed: The connection is not open.
        """
        deadline = self._deadline()
        with self.lock:
            protocol = self._open_protocol_locked()
            try:
                protocol.send_ping(bytes(data))
            except ConnectionClosed:
                raise self._closed_error() from None
            self._sync_locked()
        self._flush(deadline)

    def close(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        """Start the closing handshake (see :func:`initiate_close`) and wait for the end.

        Does nothing more than waiting if the connection is already closing, and nothing at all
        if it was never attached.

        Args:
            code: The close code (1000, 1001, ..., or 3000-4999).
            reason: The close reason, at most 123 bytes of UTF-8.
            wait: Wait until the TCP connection is closed (at most ``close_give_up_time`` plus
                a second); False returns once the close frame is written.

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        self._initiate_close(code, reason)
        if wait and threading.current_thread() is not self._reader:
            with self.status_changed:
                self.status_changed.wait_for(
                    lambda: self._state != _OPEN, self.close_give_up_time + 1.0
                )

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        """Block until the connection is attached; see :func:`wait_until_connected`."""
        with self.status_changed:
            self.status_changed.wait_for(lambda: self._state != _NEW, timeout)
            return self._state in (_OPEN, _ENDED)

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the connection (1000, or 1011 if the block raised) and wait for the end."""
        self.close(1000 if exc_type is None else 1011)

    # ------------------------------------------------------------------ sending internals

    def _send(self, messages: Sequence[str | Buffer]) -> None:
        """Queue ``messages`` (types already checked: ``str`` is text) and write them.

        Frames produced together are joined by :meth:`_sync_locked` (up to ``_JOIN_LIMIT``), so
        a batch of small messages costs one system call instead of one per message.
        """
        deadline = self._deadline()
        with self.lock:
            protocol = self._open_protocol_locked()
            try:
                for message in messages:
                    if isinstance(message, str):
                        protocol.send_text(message)
                    else:
                        protocol.send_binary(_byte_view(message))
            except ConnectionClosed:
                raise self._closed_error() from None
            self._sync_locked()
        self._flush(deadline)

    def _initiate_close(self, code: int, reason: str) -> None:
        deadline = self._deadline()
        with self.lock:
            protocol = self._protocol
            if (
                protocol is None
                or self._state != _OPEN
                or protocol.close_sent is not None
                or protocol.state is State.CLOSED
            ):
                return
            protocol.send_close(code, reason)
            self._sync_locked()
            if self.close_retry_time is not None:
                self._retry_timer = call_later(self.close_retry_time, self._on_close_retry)
        # Aborted meanwhile: the connection is closed, which is what the caller wanted.
        with contextlib.suppress(ConnectionClosed):
            self._flush(deadline)

    # ------------------------------------------------------------------ the reader thread

    def _run(self, initial_data: bytes) -> None:
        """The reader thread: read, feed the protocol, answer, deliver; then close.

        After ``parking.PARK_AFTER`` seconds without a byte, the thread parks the connection
        (:mod:`.parking`) and ends; a new reader thread starts when the peer speaks again.
        """
        io = self._io
        protocol = self._protocol
        assert io is not None
        assert protocol is not None
        parked = False
        try:
            close_transport = self._process(initial_data) if initial_data else False
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
                    with self.lock:
                        protocol.receive_eof()
                        self._sync_locked()
                    break
                self._last_received = time.monotonic()
                close_transport = self._process(view[:received])
                if received == len(buffer) and received < _RECV_SIZE_MAX:
                    buffer = bytearray(_RECV_SIZE_MAX)
                    view = memoryview(buffer)
            else:
                # RFC 6455 §7.1.1: the server closes the TCP connection first (and a client
                # does after a failure). Shut the write side down and read until the peer's EOF,
                # so that unread data does not turn our close frame into a reset. The give-up
                # timer bounds the wait.
                io.shutdown(socket.SHUT_WR)
                while io.recv_into(buffer):  # -1 (idle) too: wait on, until EOF or give-up
                    pass
        except Exception:
            logger.exception("internal error in the WebSocket reader thread; closing with 1011")
            self._internal_error()
        finally:
            if not parked:
                self._finish()

    def _park(self) -> bool:
        """Hand the idle socket to the parking watcher (reader thread); False to read on."""
        with self.lock:
            if self._state != _OPEN or self.closing or self.conn is None:
                return False  # a closing connection keeps its reader until the end
            self._reader = None
            parking.park(self.conn, self._unpark)
            self.status_changed.notify_all()  # lets tests observe parking
            return True

    def _unpark(self) -> None:
        """The parked socket is readable (watcher thread): start a reader thread again."""
        with self.lock:
            reader = self._new_reader(b"")
        try:
            reader.start()
        except RuntimeError:
            logger.exception("cannot start a WebSocket reader thread; aborting the connection")
            assert self._io is not None
            self._io.shutdown(socket.SHUT_RDWR)
            self._finish()

    def _process(self, data: Buffer) -> bool:
        """Feed received bytes; return True once the TCP connection should be closed."""
        protocol = self._protocol
        assert protocol is not None
        with self.lock:
            events = protocol.receive_data(data)
            if events and type(events[-1]) is ProtocolFailure:
                error = events[-1].error
                protocol.fail(error.close_code, error.reason)
            self._sync_locked()
            close_transport = protocol.should_close_transport()
        messages: list[Message] | None = None
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                assert isinstance(event, TextMessage | BinaryMessage)
                if messages is None:
                    messages = [event.data]
                else:
                    messages.append(event.data)
            elif kind is ProtocolFailure:
                assert isinstance(event, ProtocolFailure)
                logger.info(
                    "WebSocket peer %s broke the protocol, closing: %s",
                    self._peer_name(),
                    event.error,
                )
            elif kind is CloseReceived and logger.isEnabledFor(logging.DEBUG):
                assert isinstance(event, CloseReceived)
                logger.debug(
                    "close frame from %s: %d %r", self._peer_name(), event.code, event.reason
                )
            # Ping: the protocol queued the pong already. Pong: any byte is a sign of life.
        if self._out:
            # Pongs, the close echo or the close frame of a failure go out before the reader
            # may block on a full channel.
            # If this aborts the connection, the next read sees EOF and ends it.
            with contextlib.suppress(ConnectionClosed):
                self._flush(self._deadline())
        if messages is not None:
            self.incoming._put(messages)
        return close_transport

    def _internal_error(self) -> None:
        """A bug in our code: close with 1011 and no detail for the peer (reader thread)."""
        try:
            with self.lock:
                protocol = self._protocol
                if protocol is not None and protocol.state is not State.CLOSED:
                    protocol.fail(1011, "")
                    self._sync_locked()
            self._try_flush()
        except Exception:
            logger.exception("error while closing after an internal error")

    def _finish(self) -> None:
        """End of the reader thread: record the outcome, wake everyone, close the socket."""
        io = self._io
        protocol = self._protocol
        assert io is not None
        assert protocol is not None
        with self.lock:
            if protocol.state is not State.CLOSED:
                protocol.receive_eof()
            code = protocol.close_code
            reason = protocol.close_reason
            if code == 1006 and self._aborted:
                reason = self._abort_reason
            self.close_code = code
            self.close_reason = reason
            self._close_initiator = protocol.close_initiator
            self._state = _ENDED
            self.connected = False
            self.closing = True
            self._cancel_timers_locked()
            # Wake any writer waiting for the socket to become writable: it fails at once.
            io.shutdown(socket.SHUT_RDWR)
            self.status_changed.notify_all()
        initiator = self._close_initiator
        self.incoming._close(lambda: ConnectionClosed(code, reason, initiator))
        # Close under the write lock: no writer is using the file descriptor.
        with self._write_lock:
            self._out.clear()
            io.close()
        logger.debug("WebSocket connection ended: code %d %r", code, reason)
