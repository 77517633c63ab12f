"""The threaded WebSocket connection: the Go package's ``Connection``.

One class, in sections, with its parts composed in, each owning one concern and its state:
:class:`~.sending.SendPath` (bytes to write, write lock, ``send_timeout``, I/O),
:class:`~.reader.Reader` (who reads the socket, parking, the teardown) and
:class:`~.channel.Incoming` (the bounded channel of received messages). The life cycle (the
state, the order of events at the end, every deadline, the exceptions) is the core's sans-I/O
:class:`~tube.websocket.core.session.Session`: the connection feeds it what happened, with the
time, and carries out the actions it returns (:meth:`Connection._apply_locked`), with one timer
on the shared timer thread armed at the session's next deadline. A read whose events are all
messages goes from the protocol to :attr:`Connection.incoming` without the session.

Build one with :func:`~tube.websocket.create_connection` (the Go package's create-then-upgrade
life cycle) or, in transports and tests, attached at once with :func:`open_connection`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ..core.actions import Abort, Action, CloseTransport, DeferEnd, EndIncoming, Write
from ..core.deflate import DeflateParameters
from ..core.errors import ConnectionClosed, InvalidState
from ..core.events import BinaryMessage, TextMessage
from ..core.frames import Buffer
from ..core.options import DEFAULTS, ConnectionOptions
from ..core.protocol import Protocol, Role
from ..core.session import ConnectionState, Session, SessionFields, frame_messages
from ..sockets import tune_socket
from . import parking
from .channel import Incoming, Message
from .io import make_io
from .lean import Condition
from .reader import Reader
from .sending import SendPath
from .timers import Timer, call_at

__all__ = ["Connection", "open_connection"]

logger = logging.getLogger("tube.websocket")


# The names of the life cycle's states compared on busy paths (see core/protocol.py on why).
_OPENING = ConnectionState.OPENING
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED

_MESSAGE_EVENTS = (BinaryMessage, TextMessage)

_NEVER_ATTACHED = frozenset({ConnectionState.NEW, _OPENING, ConnectionState.FAILED})


class Connection(SessionFields):
    """One WebSocket connection on threads: the Go package's ``Connection`` struct.

    Create it with :func:`~tube.websocket.create_connection` (Go: ``CreateConnection``),
    then hand it to :func:`~tube.websocket.upgrade_connection` (server), or get it from
    :func:`~tube.websocket.connect` (client). Use the Go package's functions
    (:func:`~tube.websocket.send_blob_data`, :func:`~tube.websocket.initiate_close`, ...) or the
    same operations as methods; iterate :attr:`incoming` to receive.

    Args:
        options: The options (:class:`~tube.websocket.core.options.ConnectionOptions`); or give
            them as keyword arguments instead.

    Attributes:
        options: The connection's options (frozen).
        lock: The lock guarding the connection's state (a ``threading.RLock``).
        status_changed: A ``threading.Condition`` on :attr:`lock`, notified whenever
            :attr:`connected` or :attr:`closing` changes (the Go package's
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
        "__weakref__",  # integrations may keep weak references to the live connections
        "_protocol",
        "_reader",
        "_send",
        "_session",
        "_timer",
        "_timer_at",
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
        # The life cycle: state, the end, every deadline (the core's; called under `lock`).
        self._session = Session(options, peer=self._peer)
        # Its protocol once open (the same object as the session's), for the data paths.
        self._protocol: Protocol | None = None
        self._send: SendPath | None = None
        self._reader: Reader | None = None
        # The one timer on the shared timer thread, armed at the session's next deadline.
        self._timer: Timer | None = None
        self._timer_at: float | None = None

    def __repr__(self) -> str:
        return f"<Connection {self._session.state.name.lower()}>"

    # The Go package's fields (connected, closing, close_code, close_reason, close_retry_time,
    # close_give_up_time) are SessionFields', shared with the asyncio connection.

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
        """Send ``data`` as one binary message (see :meth:`send`); Go: ``SendBlobData``."""
        if type(data) is bytes:
            self.send(data)
        elif isinstance(data, bytes | bytearray | memoryview):
            self._send_messages((data,))
        else:
            raise TypeError(f"send_binary takes bytes-like data, got {type(data).__name__}")

    def send_many(self, messages: Iterable[str | Buffer], *, compress: bool | None = None) -> None:
        """Send several messages in order, written with as few system calls as possible.

        Meant for relays, broadcasts and echoes that answer a batch taken with
        :meth:`Incoming.get_many`. All or nothing: every message is checked before any is
        queued, so an invalid one raises with nothing sent; other threads' messages never land
        between them. ``compress`` as for :meth:`send`, for every message of the batch.

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
            self._send_messages(batch, compress)

    def ping(self, data: Buffer = b"") -> None:
        """Send a ping with up to 125 bytes of payload (the peer answers with a pong).

        Raises:
            ValueError: ``data`` is longer than 125 bytes.
            TypeError: ``data`` is not bytes-like.
            ConnectionClosed: The connection is not open.
        """
        with self.lock:
            self._open_protocol_locked()
            # Checks the type and the 125-byte limit; raises the session's ConnectionClosed.
            after = self._apply_locked(self._session.send_ping(data, time.monotonic()))
            send = self._send
            assert send is not None
        self._after(after)
        send.flush(self._closed_error)

    def initiate_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, start the close timers (see :func:`~tube.websocket.initiate_close`).

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        with self.lock:
            send = self._send
            if send is None:
                return  # never opened: nothing to start
            # Answers a peer's pending close, or commits a pending violation, instead (its
            # code); does nothing once the closing has started.
            after = self._apply_locked(self._session.initiate_close(code, reason, time.monotonic()))
        self._after(after)
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
            session = self._session
            return self.status_changed.wait_for(
                lambda: session.tcp_closed or session.state in _NEVER_ATTACHED, timeout
            )

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        """Block until attached (see :func:`~tube.websocket.wait_until_connected`)."""
        session = self._session
        with self.status_changed:
            self.status_changed.wait_for(lambda: session.state > _OPENING, timeout)
            return _OPEN <= session.state <= _CLOSED

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
                frame_messages(protocol, messages, compress)
            except ConnectionClosed:
                raise self._closed_error() from None
            send = self._send
            assert send is not None
            # Data frames never change the life cycle (close frames do, through the session).
            # Usually the frame is written here, in one system call.
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
        return self._session.closed_error()

    # ------------------------------------------------------------------ the session's actions

    def _apply_locked(self, actions: list[Action]) -> list[Action]:
        """Carry out what the session asks (lock held): queue the bytes, re-arm the timer.

        Returns the actions to finish once the lock is released (:meth:`_after`): ending or
        deferring :attr:`incoming` takes the channel's lock, and an abort wakes its reader.
        """
        after: list[Action] = []
        send = self._send
        for action in actions:
            if isinstance(action, Write):
                assert send is not None
                send.queue(action.chunks)
            elif not isinstance(action, CloseTransport):
                # CloseTransport: the reader's teardown (_process's result, or a reader
                # waiting in _await_end) closes TCP; nothing to do here.
                after.append(action)
        self.status_changed.notify_all()  # the state may have changed
        self._rearm_locked()
        return after

    def _after(self, actions: list[Action]) -> None:
        """The rest of :meth:`_apply_locked`'s work, with no lock held."""
        for action in actions:
            if isinstance(action, EndIncoming):
                self.incoming._close(action.error)
            elif isinstance(action, DeferEnd):
                self.incoming._end_when_drained(self._commit_deferred_end)
            elif isinstance(action, Abort):
                send = self._send
                if send is not None and not self._session.tcp_closed:
                    # Wake any writer waiting for the socket; the reader sees EOF and ends.
                    send.io.shutdown(socket.SHUT_RDWR)
                    self._watch()  # someone must read the EOF and close the socket
                self.incoming._release()

    def _rearm_locked(self) -> None:
        """Arm the one timer at the session's next deadline (lock held)."""
        when = self._session.next_deadline()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        """The timer fired (timer thread): whatever the session decides is due. Only
        non-blocking work: frames are queued and written as far as the socket takes them."""
        with self.lock:
            self._timer = self._timer_at = None
            actions = self._session.on_deadline(
                time.monotonic(), reading_paused=self.incoming._paused
            )
            after = self._apply_locked(actions)
            send = self._send
        if send is not None and send.pending:
            send.try_flush()
        self._after(after)

    # ------------------------------------------------------------------ opening (transports)

    def _begin_opening(self) -> None:
        """Reserve an unused connection for one opening handshake (integrations).

        Raises:
            InvalidState: Another handshake already uses it, or it was attached.
        """
        with self.lock:
            self._session.begin_opening()

    def _opening_failed(self) -> None:
        """Record that the opening handshake failed: waiters of the connection give up."""
        with self.lock:
            if self._session.state > _OPENING:
                return
            after = self._apply_locked(self._session.opening_failed())
        self._after(after)

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
            session = self._session
            if session.state > _OPENING:
                raise InvalidState(f"{self!r} cannot be attached twice")
            tune_socket(sock, self.options.ping_interval, self.options.ping_timeout)
            io = make_io(sock, parking.PARK_AFTER)
            self._send = SendPath(io, self.options.send_timeout, self._on_send_abort)
            self.conn = sock
            self.subprotocol = subprotocol
            session.opened(protocol, time.monotonic())
            self._protocol = protocol
            self._reader = Reader(self, sock, self._send, session, self.incoming)
            self.incoming._source = self._reader
            self._rearm_locked()
            try:
                self._reader.start(bytes(initial_data))
            except RuntimeError:
                # Out of threads: nothing will ever read this socket, so close it now.
                after = session.opening_failed("not started")
                session.transport_closed(time.monotonic())
                self._apply_locked(after)
                io.close()
                self._after(after)
                raise
            finally:
                self.status_changed.notify_all()

    # ------------------------------------------------------------------ reading (the reader)

    def _receive_buffer(self) -> memoryview | None:
        """Where the reader reads while a large message arrives (see Protocol.receive_buffer)."""
        protocol = self._protocol
        if protocol is None:
            return None
        with self.lock:
            return protocol.receive_buffer()

    def _process(self, data: Buffer, wait: bool, into: bool = False) -> bool:
        """Feed received bytes; return True once the TCP connection should be closed.

        ``wait``: a reader thread blocks while the channel is full; a consumer does not.
        ``into``: ``data`` was read into the view from :meth:`_receive_buffer`.
        """
        protocol = self._protocol
        assert protocol is not None
        after: list[Action] = []
        close_transport = False
        with self.lock:
            events = protocol.received_into(len(data)) if into else protocol.receive_data(data)
            # Usually every event is a message: one pass for those, and the session only when
            # something else came (a ping, a pong, a close frame, a violation).
            messages: list[Message] = [
                event.data for event in events if isinstance(event, _MESSAGE_EVENTS)
            ]
            if len(messages) < len(events):
                messages, actions = self._session.received(events, time.monotonic())
                after = self._apply_locked(actions)
                close_transport = any(
                    isinstance(action, CloseTransport | DeferEnd) for action in actions
                )
            send = self._send
            assert send is not None
        if send.pending:
            # Pongs and the close echo go out before the reader may block on a full channel.
            # If this aborts the connection, the next read sees EOF and ends it.
            with contextlib.suppress(ConnectionClosed):
                send.flush(self._closed_error)
        if messages:
            self.incoming._put(messages, wait)
        if after:
            # The end (or a deferred end) after the messages before it.
            self._after(after)
        return close_transport

    def _on_send_abort(self, reason: str) -> None:
        """The send path aborted the connection (``send_timeout``, a failed write): record the
        reason for the end, and release a reader blocked on a full channel.

        Called under the send path's write lock, so the connection's lock is not taken here
        (a thread holding it may be trying the write lock); recording the reason is one
        attribute store, which no other step of the session depends on atomically.
        """
        self._session.aborted(reason)
        self.incoming._release()

    def _closes_transport_first(self) -> bool:
        """True if this end now closes TCP first (a server, or after a failure)."""
        protocol = self._protocol
        return protocol is not None and protocol.should_close_transport()

    def _await_end(self) -> None:
        session = self._session
        with self.status_changed:
            self.status_changed.wait_for(lambda: session.state >= _CLOSED)

    def _receive_eof(self) -> None:
        with self.lock:
            after = self._apply_locked(self._session.eof_received(time.monotonic()))
        self._after(after)

    def _may_park(self) -> bool:
        return self._session.state is _OPEN

    def _internal_error(self) -> None:
        """A bug in our code: close with 1011 and no detail for the peer (reading thread)."""
        try:
            with self.lock:
                after = self._apply_locked(self._session.fail(1011, "", time.monotonic()))
                send = self._send
            if send is not None:
                send.try_flush()
            self._after(after)
        except Exception:
            logger.exception("error while closing after an internal error")

    # ------------------------------------------------------------------ the end

    def _commit_deferred_end(self) -> None:
        """Send the close frame of a peer's deferred violation, or the answer to the peer's
        close frame (a consumer that reached it, or ``initiate_close``)."""
        with self.lock:
            after = self._apply_locked(self._session.end_reached(time.monotonic()))
            send = self._send
        if send is not None and send.pending:
            send.try_flush()
        self._after(after)

    def _finish(self) -> None:
        """The TCP connection is over (the reading thread, at the end): close the socket."""
        send = self._send
        assert send is not None
        # First the end of the WebSocket (if it has not come: TCP ended without a close frame),
        # so that incoming has ended before wait_closed() can return.
        self._receive_eof()
        with self.lock:
            self._apply_locked(self._session.transport_closed(time.monotonic()))
            # Wake any writer waiting for the socket to become writable: it fails at once.
            send.io.shutdown(socket.SHUT_RDWR)
        send.close_socket()

    def _watch(self) -> None:
        if self._reader is not None:
            self._reader.watch()

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
