"""The threaded WebSocket connection: the seed's ``Connection`` object.

One class, in sections, with its parts composed in, each owning one concern and its state:
:class:`~.sending.SendPath` (bytes to write, write lock, ``send_timeout``, I/O),
:class:`~.close_timers.CloseTimers` (keepalive, close retry, give-up, failure bound),
:class:`~.reader.Reader` (who reads the socket, parking, the teardown) and
:class:`~.channel.Incoming` (the bounded channel of received messages). The connection holds
the life cycle (one :class:`_State`) and the sans-I/O
:class:`~tube.websocket.core.protocol.Protocol`, and decides the order of events at the end
(README, "Closing and timeouts"): ``incoming`` ends as soon as no message can arrive any more,
and a peer's violation never overtakes the messages before it.

Build one with :func:`~tube.websocket.create_connection` (the seed's create-then-upgrade life
cycle) or, in transports and tests, attached at once with :func:`open_connection`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ..core.deflate import DeflateParameters
from ..core.errors import ConnectionClosed, InvalidState, ProtocolError
from ..core.errors import closed_error as make_closed_error
from ..core.events import BinaryMessage, CloseReceived, ProtocolFailure, TextMessage
from ..core.frames import Buffer
from ..core.keepalive import KeepaliveAction
from ..core.options import DEFAULTS, ConnectionOptions
from ..core.protocol import Protocol, Role, State
from ..core.session import protocol_closed_error
from ..sockets import tune_socket
from . import parking
from .channel import Incoming, Message
from .close_timers import CloseTimers
from .io import make_io
from .lean import Condition
from .reader import Reader
from .sending import SendPath

__all__ = ["Connection", "open_connection"]

logger = logging.getLogger("tube.websocket")


class _State(enum.IntEnum):
    """The life cycle of a connection; the seed's fields are derived from it."""

    NEW = 0  # created, not attached to a socket yet
    OPENING = 1  # an opening handshake is using it
    OPEN = 2  # attached; no close frame sent or received
    CLOSING = 3  # the closing handshake started (a close frame sent or received)
    CLOSED = 4  # no message can arrive any more: incoming ends, close_code is final
    FAILED = 5  # the opening handshake failed: it will never be attached


# On CPython 3.11 an enum member looked up through its class costs about 75 ns (a plain class
# attribute about 18): the per-read paths compare with these names instead.
_OPEN = _State.OPEN
_PROTOCOL_CLOSED = State.CLOSED

_MESSAGE_EVENTS = (BinaryMessage, TextMessage)

_NEVER_ATTACHED = frozenset({_State.NEW, _State.OPENING, _State.FAILED})


class Connection:
    """One WebSocket connection on threads: the seed's ``Connection`` struct.

    Create it with :func:`~tube.websocket.create_connection` (the seed's ``CreateConnection``),
    then hand it to :func:`~tube.websocket.upgrade_connection` (server), or get it from
    :func:`~tube.websocket.connect` (client). Use the seed's module functions
    (:func:`~tube.websocket.send_blob_data`, :func:`~tube.websocket.initiate_close`, ...) or the
    same operations as methods; iterate :attr:`incoming` to receive.

    Args:
        options: The options (:class:`~tube.websocket.core.options.ConnectionOptions`); or give
            them as keyword arguments instead.

    Attributes:
        options: The connection's options (frozen).
        lock: The lock guarding the connection's state (a ``threading.RLock``).
        status_changed: A ``threading.Condition`` on :attr:`lock`, notified whenever
            :attr:`connected` or :attr:`closing` changes (the seed's
            ``connectionStatusChangedSignal``).
        incoming: The bounded channel of received messages (:class:`Incoming`).
        conn: The socket (``socket.socket`` or ``ssl.SSLSocket``); ``None`` until attached.
        subprotocol: The subprotocol selected in the opening handshake, or ``None``.
        close_code: Once the connection is closed (:attr:`connected` False after being True),
            the code that ended it: the peer's close code (1005 if its close frame carried
            none), the code we sent when failing the connection (1002, 1007 or 1009 for a
            peer's violation, 1011 for a keepalive timeout), or 1006 when TCP ended without a
            close frame (including a send timeout). ``None`` before.
        close_reason: The reason that came with :attr:`close_code` (``""`` if none).

    Concurrency contract:
        * Every public method and module function may be called from any thread, at any time.
          Sends from several threads never interleave their frames; each thread's messages are
          sent in the order of its calls.
        * A send blocks the calling thread until its frames are written (or until no byte could
          be written for ``send_timeout``: the connection is then aborted and
          :class:`ConnectionClosed` raised). Sending never waits for the application to read.
        * Reading the fields without :attr:`lock` is safe; waiting for a change takes
          :attr:`status_changed`. Hold :attr:`lock` only briefly and never while waiting for a
          message: whoever reads the socket needs it for every read.
        * One thread at a time reads the socket (:mod:`.reader`): an application thread
          waiting on an empty :attr:`incoming` reads it itself; a reader thread takes over
          when the application stays away, and never runs application code. A reader thread is
          blocked by the application only through the bound of :attr:`incoming` (the
          backpressure).
    """

    __slots__ = (
        "_close_initiator",
        "_failure",
        "_protocol",
        "_reader",
        "_send",
        "_state",
        "_tcp_closed",
        "_timers",
        "close_code",
        "close_reason",
        "conn",
        "incoming",
        "lock",
        "options",
        "status_changed",
        "subprotocol",
    )

    def __init__(self, options: ConnectionOptions | None = None, /, **kwargs: Any) -> None:
        if options is None:
            options = ConnectionOptions.from_kwargs(**kwargs) if kwargs else DEFAULTS
        elif kwargs:
            options = options.replace(**kwargs)
        self.options = options
        self.lock = threading.RLock()
        self.status_changed: threading.Condition = Condition(self.lock)
        self.incoming = Incoming(options.incoming_size, options.incoming_bytes)
        self.conn: socket.socket | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._state = _State.NEW
        self._tcp_closed = False
        self._protocol: Protocol | None = None
        self._send: SendPath | None = None
        self._timers = CloseTimers(self, options)
        self._reader: Reader | None = None
        self._close_initiator: str | None = None
        # A peer's violation waiting for the application to take the messages before it.
        self._failure: ProtocolError | None = None

    def __repr__(self) -> str:
        return f"<Connection {self._state.name.lower()}>"

    # ------------------------------------------------------------------ the seed's fields

    @property
    def connected(self) -> bool:
        """True from the moment the connection is attached until it is closed (the seed's field).

        It turns False when no message can arrive any more (the closing handshake is complete,
        the connection failed, or TCP ended), at the same moment :attr:`incoming` ends.
        :func:`~tube.websocket.is_connected` is stricter: connected *and* not closing.
        """
        return self._state is _State.OPEN or self._state is _State.CLOSING

    @property
    def closing(self) -> bool:
        """True from the moment a close frame is sent or received, or the connection fails."""
        return self._state >= _State.CLOSING

    @property
    def close_retry_time(self) -> float | None:
        """Seconds before the close frame is sent again (the seed's ``closeRetryTime``)."""
        return self.options.close_retry_time

    @property
    def close_give_up_time(self) -> float:
        """Seconds from the start of the closing to TCP closed (the seed's ``closeGiveUpTime``)."""
        return self.options.close_give_up_time

    # ------------------------------------------------------------------ public operations

    def send(self, message: str | Buffer, *, compress: bool | None = None) -> None:
        """Send one message: a text message for ``str``, a binary one for bytes-like data.

        Returns once the frame is written to the socket. ``compress`` matters only when
        permessage-deflate was negotiated: ``None`` compresses messages of at least
        ``min_size`` bytes, ``False`` sends this one uncompressed (say, one holding a secret
        next to attacker-chosen data), ``True`` compresses it whatever its size.

        Raises:
            ConnectionClosed: The connection is not open (closing or closed), or no byte could
                be written for ``send_timeout`` (the connection is then aborted, code 1006).
            InvalidState: The connection is not attached yet.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            UnicodeEncodeError: ``message`` is a ``str`` with lone surrogates.
        """
        cls = type(message)
        if cls is not bytes and cls is not str:  # the common types need no further check
            _check_message(message, "send")
        else:
            # The commonest send of all, a small message, framed and written in one step.
            # The protocol declines (None) whatever needs the general path, which also raises
            # the errors; compression is never negotiated on this path, so `compress` is moot.
            frame = None
            with self.lock:
                protocol = self._protocol
                send = self._send
                if protocol is not None and send is not None and not send.aborted:
                    frame = protocol.frame_message(message)  # type: ignore[arg-type]  # bytes or str
                    if frame is not None and send.write_or_queue(frame):
                        return
            if frame is not None and send is not None:
                send.flush(self._closed_error)
                return
        self._send_messages((message,), compress)

    def send_text(self, text: str) -> None:
        """Send ``text`` as one text message (see :meth:`send`)."""
        if type(text) is str:
            self.send(text)
        elif isinstance(text, str):
            self._send_messages((text,))
        else:
            raise TypeError(f"send_text takes a str, got {type(text).__name__}")

    def send_binary(self, data: Buffer) -> None:
        """Send ``data`` as one binary message (see :meth:`send`); the seed's ``SendBlobData``."""
        if type(data) is bytes:
            self.send(data)
        elif isinstance(data, bytes | bytearray | memoryview):
            self._send_messages((data,))
        else:
            raise TypeError(f"send_binary takes bytes-like data, got {type(data).__name__}")

    def send_many(self, messages: Iterable[str | Buffer]) -> None:
        """Send several messages in order, written with as few system calls as possible.

        Meant for relays, broadcasts and echoes that answer a batch taken with
        :meth:`Incoming.get_many`. All or nothing: every message is checked before any is
        queued, so an invalid one raises with nothing sent; other threads' messages never land
        between them.

        Raises:
            ConnectionClosed: As for :meth:`send`; messages already written stay written.
            TypeError: A message is neither ``str`` nor bytes-like (nothing is sent).
            UnicodeEncodeError: A ``str`` holds lone surrogates (nothing is sent).
        """
        batch = list(messages)
        for message in batch:
            _check_message(message, "send_many")
            if isinstance(message, str) and not message.isascii():
                message.encode()  # raises before anything is queued, never half-way
        if batch:
            self._send_messages(batch)

    def ping(self, data: Buffer = b"") -> None:
        """Send a ping with up to 125 bytes of payload (the peer answers with a pong).

        Raises:
            ValueError: ``data`` is longer than 125 bytes.
            TypeError: ``data`` is not bytes-like.
            ConnectionClosed: The connection is not open.
        """
        with self.lock:
            protocol = self._open_protocol_locked()
            try:
                protocol.send_ping(data)  # checks the type and the 125-byte limit
            except ConnectionClosed:
                raise self._closed_error() from None
            send = self._sync_locked()
        send.flush(self._closed_error)

    def initiate_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, start the close timers (see :func:`~tube.websocket.initiate_close`).

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        with self.lock:
            protocol = self._protocol
            if protocol is not None and protocol.close_reply_pending:
                # The peer closed first and waits for our answer: it is the close frame now.
                self._commit_deferred_end()
                return
            if protocol is None or self._state is not _State.OPEN:
                return  # already closing, closed, or never opened: nothing to start
            if self._failure is not None:
                # The peer broke the protocol and the reader has stopped: its close frame could
                # never be read. Close with the violation's code now instead.
                self._commit_deferred_end()
                return
            protocol.send_close(code, reason)
            send = self._sync_locked()
            self._timers.start_close_retry()
        # Aborted meanwhile: the connection is closed, which is what the caller wanted.
        with contextlib.suppress(ConnectionClosed):
            send.flush(self._closed_error)
        self._watch()  # the peer's close frame must be read, consumer or not

    def close(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        """Start the closing handshake (see :meth:`initiate_close`) and wait for the end.

        Args:
            code: The close code (1000, 1001, ..., or 3000-4999).
            reason: The close reason, at most 123 bytes of UTF-8.
            wait: Wait until the TCP connection is closed too (at most ``close_give_up_time``
                plus a second); False returns once the close frame is written.

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        self.initiate_close(code, reason)
        if wait and not (self._reader is not None and self._reader.is_current):
            self.wait_closed(self.options.close_give_up_time + 1.0)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the TCP connection is closed (after :attr:`incoming` has ended).

        Returns:
            True once the socket is closed, or at once if the connection was never attached;
            False on timeout.
        """
        with self.status_changed:
            return self.status_changed.wait_for(
                lambda: self._tcp_closed or self._state in _NEVER_ATTACHED, timeout
            )

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        """Block until attached (see :func:`~tube.websocket.wait_until_connected`)."""
        with self.status_changed:
            self.status_changed.wait_for(lambda: self._state > _State.OPENING, timeout)
            return _State.OPEN <= self._state <= _State.CLOSED

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

    def _send_messages(
        self, messages: Sequence[str | Buffer], compress: bool | None = None
    ) -> None:
        """Queue ``messages`` (types already checked: ``str`` is text) and write them."""
        with self.lock:
            protocol = self._open_protocol_locked()
            try:
                for message in messages:
                    if isinstance(message, str):
                        protocol.send_text(message, compress=compress)
                    else:
                        protocol.send_binary(message, compress=compress)
            except ConnectionClosed:
                raise self._closed_error() from None
            send = self._send
            assert send is not None
            # Data frames never change the connection's state (close frames do, elsewhere):
            # no _sync_locked. Usually the frame is written here, in one system call.
            if send.write_or_queue_all(protocol.data_to_send()):
                return
        send.flush(self._closed_error)

    def _open_protocol_locked(self) -> Protocol:
        protocol = self._protocol
        if protocol is None:
            raise InvalidState(
                f"{self!r} is not connected yet: wait_until_connected() before sending"
            )
        assert self._send is not None
        if self._send.aborted:
            raise self._closed_error()
        return protocol

    def _closed_error(self) -> ConnectionClosed:
        """The exception for an operation on a connection that is closing or closed."""
        if self._state is _State.CLOSED and self.close_code is not None:
            return make_closed_error(self.close_code, self.close_reason, self._close_initiator)
        if self._send is not None and self._send.aborted:
            return make_closed_error(1006, self._send.abort_reason)
        if self._protocol is None:
            return make_closed_error(1006, "the connection was never opened")
        return protocol_closed_error(self._protocol)

    def _sync_locked(self) -> SendPath:
        """After a protocol call (lock held): queue its output, follow its state; the send path."""
        protocol = self._protocol
        send = self._send
        assert protocol is not None and send is not None
        chunks = protocol.data_to_send()
        if chunks:
            send.queue(chunks)
        if self._state is _OPEN and (
            protocol.close_sent is not None
            or protocol.close_received is not None
            or protocol.state is _PROTOCOL_CLOSED
        ):
            self._state = _State.CLOSING
            # The closing handshake has started: bound how long the TCP connection may live.
            self._timers.start_give_up()
            self.status_changed.notify_all()
        return send

    # ------------------------------------------------------------------ opening (transports)

    def _begin_opening(self) -> None:
        """Reserve an unused connection for one opening handshake (integrations).

        Raises:
            InvalidState: Another handshake already uses it, or it was attached.
        """
        with self.lock:
            if self._state is not _State.NEW:
                raise InvalidState(f"{self!r} is already used by another handshake")
            self._state = _State.OPENING

    def _opening_failed(self) -> None:
        """Record that the opening handshake failed: waiters of the connection give up."""
        with self.lock:
            if self._state > _State.OPENING:
                return
            self._state = _State.FAILED
            self.close_code = 1006
            self.status_changed.notify_all()
        self.incoming._close(lambda: make_closed_error(1006, "the opening handshake failed"))

    def _open(
        self,
        sock: socket.socket,
        protocol: Protocol,
        *,
        initial_data: bytes = b"",
        subprotocol: str | None = None,
    ) -> None:
        """Take over a socket whose opening handshake is complete, and start reading.

        Args:
            sock: A connected ``socket.socket`` or ``ssl.SSLSocket``; from now on only this
                connection reads, writes or closes it.
            protocol: The protocol in this end's role (``options.make_protocol(role)``).
            initial_data: Bytes received behind the handshake; fed to the protocol first.
            subprotocol: The negotiated subprotocol.

        Raises:
            InvalidState: The connection was already attached, or its handshake failed.
            RuntimeError: Neither a reader thread nor the parking watcher could be started (the
                socket is then closed).
        """
        with self.lock:
            if self._state > _State.OPENING:
                raise InvalidState(f"{self!r} cannot be attached twice")
            tune_socket(sock, self.options.ping_interval, self.options.ping_timeout)
            io = make_io(sock, parking.PARK_AFTER)
            self._send = SendPath(io, self.options.send_timeout, self.incoming._release)
            self._protocol = protocol
            self.conn = sock
            self.subprotocol = subprotocol
            self._reader = Reader(self, sock, self._send, self._timers, self.incoming)
            self.incoming._source = self._reader
            self._state = _State.OPEN
            self._timers.start_keepalive()
            try:
                self._reader.start(bytes(initial_data))
            except RuntimeError:
                # Out of threads: nothing will ever read this socket, so close it now.
                self._state = _State.CLOSED
                self._tcp_closed = True
                self.close_code = 1006
                self._timers.cancel_all()
                io.close()
                self.incoming._close(lambda: make_closed_error(1006, "not started"))
                raise
            finally:
                self.status_changed.notify_all()

    # ------------------------------------------------------------------ reading (the reader)

    def _process(self, data: Buffer, wait: bool) -> bool:
        """Feed received bytes; return True once the TCP connection should be closed.

        ``wait``: a reader thread blocks while the channel is full; a consumer does not.
        """
        protocol = self._protocol
        assert protocol is not None
        with self.lock:
            events = protocol.receive_data(data)
            send = self._sync_locked()
        # Usually every event is a message: one pass for those, the others only if there are any.
        messages: list[Message] = [
            event.data for event in events if isinstance(event, _MESSAGE_EVENTS)
        ]
        failure: ProtocolError | None = None
        if len(messages) < len(events):
            for event in events:
                if isinstance(event, ProtocolFailure):
                    failure = event.error
                elif isinstance(event, CloseReceived) and logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "close frame from %s: %d %r", self._peer(), event.code, event.reason
                    )
                # Ping: the protocol queued the pong already. Pong: any byte is a sign of life.
        if send.pending:
            # Pongs and the close echo go out before the reader may block on a full channel.
            # If this aborts the connection, the next read sees EOF and ends it.
            with contextlib.suppress(ConnectionClosed):
                send.flush(self._closed_error)
        if messages:
            self.incoming._put(messages, wait)
        if failure is not None:
            self._defer_failure(failure)
            return True
        if protocol.close_reply_pending:
            self._defer_close_reply()
            return True
        if protocol.state is _PROTOCOL_CLOSED:
            self._end()
        return protocol.should_close_transport()

    def _defer_failure(self, error: ProtocolError) -> None:
        """A peer's violation: fail once the application took the messages before it.

        The violation is in effect the next item of :attr:`incoming`: the application's
        replies to the earlier messages go out before the close frame. Nobody reads any more;
        a reader thread waits (:meth:`_await_end`) until the failure is committed, at the
        latest after ``close_give_up_time``, then runs the TCP teardown.
        """
        logger.info("WebSocket peer %s broke the protocol: %s", self._peer(), error)
        with self.lock:
            self._failure = error
            self._timers.start_failure_bound()
            self.status_changed.notify_all()  # lets tests observe the deferral
        self.incoming._end_when_drained(self._commit_deferred_end)

    def _defer_close_reply(self) -> None:
        """The peer's close frame: answer it once the application took the messages before it.

        As for a violation (:meth:`_defer_failure`), the close is in effect the next item of
        :attr:`incoming`, so that the application's replies to the earlier messages go out
        before our close frame (RFC 6455 §5.5.1 lets an endpoint send until it answers); at
        the latest after ``close_reply_time``. Nothing after a close frame is read.
        """
        with self.lock:
            self._timers.start_failure_bound(self.options.close_reply_time)
        self.incoming._end_when_drained(self._commit_deferred_end)

    def _closes_transport_first(self) -> bool:
        """True if this end now closes TCP first (a server, or after a failure)."""
        protocol = self._protocol
        return protocol is not None and protocol.should_close_transport()

    def _await_end(self) -> None:
        with self.status_changed:
            self.status_changed.wait_for(lambda: self._state >= _State.CLOSED)

    def _receive_eof(self) -> None:
        with self.lock:
            assert self._protocol is not None
            self._protocol.receive_eof()
            self._sync_locked()

    def _may_park(self) -> bool:
        return self._state is _State.OPEN

    def _internal_error(self) -> None:
        """A bug in our code: close with 1011 and no detail for the peer (reading thread)."""
        try:
            with self.lock:
                protocol = self._protocol
                if protocol is not None and protocol.state is not State.CLOSED:
                    protocol.fail(1011, "")
                    self._sync_locked().try_flush()
        except Exception:
            logger.exception("error while closing after an internal error")

    # ------------------------------------------------------------------ the end

    def _commit_deferred_end(self) -> None:
        """Send the close frame of a peer's deferred violation, or the answer to the peer's
        close frame (a consumer that reached it, ``initiate_close``, or the timer thread)."""
        with self.lock:
            error = self._failure
            protocol = self._protocol
            assert protocol is not None
            if error is not None:
                self._failure = None
                protocol.fail(error.close_code, error.reason)
            elif protocol.close_reply_pending:
                protocol.reply_close()
            else:
                return
            self._sync_locked().try_flush()
        self._end()

    def _end(self) -> None:
        """No message can arrive any more: record how it ended and end :attr:`incoming`."""
        with self.lock:
            if self._state >= _State.CLOSED:
                return
            protocol = self._protocol
            send = self._send
            assert protocol is not None and send is not None
            code = protocol.close_code
            reason = protocol.close_reason
            if code == 1006 and send.aborted:
                reason = send.abort_reason
            initiator = protocol.close_initiator
            self.close_code = code
            self.close_reason = reason
            self._close_initiator = initiator
            self._state = _State.CLOSED
            self._failure = None
            self._timers.stop_open_timers()
            if not self._tcp_closed:
                self._timers.start_give_up()  # bounds the TCP teardown that follows
            self.status_changed.notify_all()
        self.incoming._close(lambda: make_closed_error(code, reason, initiator))
        logger.debug("WebSocket connection closed: code %d %r", code, reason)

    def _finish(self) -> None:
        """The TCP connection is over (the reading thread, at the end): close the socket."""
        send = self._send
        protocol = self._protocol
        assert send is not None and protocol is not None
        with self.lock:
            if protocol.state is not State.CLOSED:
                protocol.receive_eof()
        self._end()
        with self.lock:
            self._tcp_closed = True
            self._timers.cancel_all()
            # Wake any writer waiting for the socket to become writable: it fails at once.
            send.io.shutdown(socket.SHUT_RDWR)
            self.status_changed.notify_all()
        send.close_socket()

    # ------------------------------------------------------------------ timer callbacks

    def _on_keepalive(self, action: KeepaliveAction) -> bool:
        protocol = self._protocol
        send = self._send
        if self._state is not _State.OPEN or self._failure is not None or protocol is None:
            return False
        assert send is not None
        if action is KeepaliveAction.PING:
            protocol.send_ping(b"")
            self._sync_locked().try_flush()
            return True
        logger.info(
            "WebSocket peer %s did not answer a ping within %s s; closing with 1011",
            self._peer(),
            self.options.ping_timeout,
        )
        protocol.fail(1011, "keepalive ping timeout")
        self._sync_locked().try_flush()
        self._end()
        send.io.shutdown(socket.SHUT_RDWR)
        self._watch()  # someone must read the EOF and close the socket
        return False

    def _on_close_retry(self) -> None:
        with self.lock:
            protocol = self._protocol
            if self._state is not _State.CLOSING or protocol is None:
                return
            if protocol.close_received is None:
                protocol.resend_close()
                self._sync_locked().try_flush()

    def _on_give_up(self) -> None:
        with self.lock:
            if self._tcp_closed or self._send is None:
                return
            logger.info(
                "closing the TCP connection to %s: the close did not finish within %s s",
                self._peer(),
                self.options.close_give_up_time,
            )
            self._send.io.shutdown(socket.SHUT_RDWR)
            self._watch()
        self.incoming._release()

    def _watch(self) -> None:
        if self._reader is not None:
            self._reader.watch()

    def _reading_paused(self) -> bool:
        return self.incoming._paused

    # ------------------------------------------------------------------ introspection

    def _peer(self) -> str:
        try:
            peer = self.conn.getpeername() if self.conn is not None else None
        except OSError:
            peer = None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return "(unknown peer)"

    @property
    def _buffered_bytes(self) -> int:
        """Bytes held for the application plus bytes waiting to be written (for tests)."""
        queued = self._send.queued_bytes if self._send is not None else 0
        return self.incoming.buffered_bytes + queued


def open_connection(
    sock: socket.socket,
    role: Role,
    options: ConnectionOptions = DEFAULTS,
    *,
    initial_data: bytes = b"",
    subprotocol: str | None = None,
    deflate: DeflateParameters | None = None,
) -> Connection:
    """Build a connection already attached to ``sock``, whose opening handshake is done.

    The internal factory of the transports (and of tests, on a ``socket.socketpair()``);
    ``deflate`` is what the handshake negotiated for permessage-deflate, if anything.

    Raises:
        RuntimeError: Nothing could be started to read the socket (it is then closed).
    """
    connection = Connection(options)
    connection._open(
        sock,
        options.make_protocol(role, deflate),
        initial_data=initial_data,
        subprotocol=subprotocol,
    )
    return connection


def _check_message(message: object, function: str) -> None:
    if not isinstance(message, str | bytes | bytearray | memoryview):
        raise TypeError(f"{function} takes str or bytes-like data, got {type(message).__name__}")
