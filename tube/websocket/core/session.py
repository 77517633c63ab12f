"""The life cycle of one WebSocket connection, without I/O and without a clock of its own.

:class:`Session` sits between a transport and the frame-level
:class:`~tube.websocket.core.protocol.Protocol`. It owns what every transport would otherwise
write for itself (README, "Closing and timeouts"):

* one state, :class:`ConnectionState`, with one meaning everywhere;
* the order of the end: a peer's violation or close frame waits behind the messages received
  before it (``DeferEnd``), ``incoming`` ends once no message can arrive (``EndIncoming``, with
  the final ``close_code``, ``close_reason`` and initiator), and who closes TCP first
  (``CloseTransport``);
* the exception raised to callers once it is closing or closed (:meth:`Session.closed_error`,
  built by the one constructor :func:`~tube.websocket.core.errors.closed_error`);
* every deadline: the opening handshake (``open_timeout``), keepalive ping and timeout, close
  retry, give-up, and the bound on a deferred violation or close reply; ``send_timeout`` as time
  without progress is :class:`~.actions.SendWatch`'s (the actions are in :mod:`.actions`).

In the style of aioquic's ``QuicConnection``: the transport passes the time in, asks
:meth:`Session.next_deadline` and arms one timer there, calls :meth:`Session.on_deadline` when
it fires, and carries out the actions that every call returns, in order:

=====================  ==================================================================
:class:`Write`          write these bytes (after anything queued before)
:class:`DeferEnd`       stop reading; the end is the next item of ``incoming``: call
                        :meth:`Session.end_reached` when the application asks for it
:class:`EndIncoming`    no message can arrive any more: end ``incoming`` with ``error()``
                        once the messages before it are taken
:class:`CloseTransport` this end closes TCP now, after what is written (a server first)
:class:`Abort`          drop TCP now, both ways, without waiting for anything
=====================  ==================================================================

Data frames do not go through the session: the transport sends them with the protocol directly
(:attr:`Session.protocol`), and a read whose events are all messages needs no session call.

Concurrency: not thread-safe; a threaded transport calls it under its connection lock.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable

from .actions import Abort, Action, CloseTransport, DeferEnd, EndIncoming, Write
from .errors import ConnectionClosed, InvalidState, ProtocolError, closed_error
from .events import BinaryMessage, CloseReceived, Event, ProtocolFailure, TextMessage
from .frames import Buffer
from .keepalive import Keepalive, KeepaliveAction
from .options import ConnectionOptions
from .protocol import Protocol, State

__all__ = [
    "ConnectionState",
    "Session",
    "SessionFields",
    "frame_messages",
    "protocol_closed_error",
]

logger = logging.getLogger("tube.websocket")


class ConnectionState(enum.IntEnum):
    """Where a connection is in its life; the same meaning on every transport.

    ``connected`` is OPEN or CLOSING; ``closing`` is CLOSING or later.
    """

    NEW = 0  # created, not attached to a socket yet
    OPENING = 1  # an opening handshake is using it
    OPEN = 2  # attached; no close frame sent or received
    CLOSING = 3  # the closing handshake started (a close frame sent or received, or a failure)
    CLOSED = 4  # no message can arrive any more: incoming ends, close_code is final
    FAILED = 5  # the opening handshake failed: it will never be attached


# The names compared on busy paths (see core/protocol.py on why).
_OPEN = ConnectionState.OPEN
_CLOSING = ConnectionState.CLOSING
_CLOSED = ConnectionState.CLOSED
_PROTOCOL_CLOSED = State.CLOSED
_PROTOCOL_CLOSING = State.CLOSING
_MESSAGE_EVENTS = (BinaryMessage, TextMessage)

Message = str | bytes

_DEFER_VIOLATION = DeferEnd(stop_reading=True)
_DEFER_CLOSE_REPLY = DeferEnd(stop_reading=False)
_CLOSE_TRANSPORT = CloseTransport()


# ---------------------------------------------------------------------------------- session


class Session:
    """The life cycle of one connection (see the module docstring).

    Args:
        options: The connection's options (timeouts, ``ping_interval``, ...).
        peer: Names the peer for log lines (called only when logging).

    Attributes:
        state: The :class:`ConnectionState`.
        protocol: The frame-level protocol once open (``None`` before).
        close_code: How the connection ended, once :attr:`state` is CLOSED or FAILED; else None.
        close_reason: The reason that came with it.
        close_initiator: ``"local"``, ``"remote"`` or ``None``, final with :attr:`close_code`.
        abort_reason: Why TCP was dropped without a closing handshake (``""`` if it was not).
        tcp_closed: The transport reported the TCP connection closed.
        keepalive: The keepalive state while open with ``ping_interval``; the transport sets
            ``keepalive.last_received`` on every read (a plain assignment on the hot path).
    """

    __slots__ = (
        "_deferred_at",
        "_failure",
        "_give_up_at",
        "_keepalive_at",
        "_open_at",
        "_peer",
        "_retry_at",
        "abort_reason",
        "close_code",
        "close_initiator",
        "close_reason",
        "keepalive",
        "options",
        "protocol",
        "state",
        "tcp_closed",
    )

    def __init__(
        self,
        options: ConnectionOptions,
        *,
        peer: Callable[[], str] = lambda: "(unknown peer)",
    ) -> None:
        self.options = options
        self._peer = peer
        self.state = ConnectionState.NEW
        self.protocol: Protocol | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_initiator: str | None = None
        self.abort_reason = ""
        self.tcp_closed = False
        self.keepalive: Keepalive | None = None
        # A peer's violation waiting behind the messages before it.
        self._failure: ProtocolError | None = None
        # Deadlines (absolute times on the transport's clock), None when not armed.
        self._open_at: float | None = None
        self._keepalive_at: float | None = None
        self._retry_at: float | None = None
        self._give_up_at: float | None = None
        self._deferred_at: float | None = None

    def __repr__(self) -> str:
        return f"<Session {self.state.name.lower()}>"

    # ------------------------------------------------------------------ derived fields

    @property
    def connected(self) -> bool:
        """Attached and not closed: OPEN or CLOSING."""
        return self.state is _OPEN or self.state is _CLOSING

    @property
    def closing(self) -> bool:
        """The closing started (a close frame sent or received, a failure) or it is over."""
        return self.state >= _CLOSING

    @property
    def end_deferred(self) -> bool:
        """A peer's violation or close frame waits for :meth:`end_reached`."""
        protocol = self.protocol
        return self._failure is not None or (
            protocol is not None
            and protocol.close_reply_pending
            and self.state is not _CLOSED
            and not self.tcp_closed
        )

    # ------------------------------------------------------------------ opening

    def begin_opening(self, now: float | None = None) -> None:
        """Reserve the connection for one opening handshake; with ``now``, bound it by
        ``open_timeout`` (the handshake's deadline).

        Raises:
            InvalidState: Another handshake already uses it, or it was attached.
        """
        if self.state is not ConnectionState.NEW:
            raise InvalidState(f"{self!r} is already used by another handshake")
        self.state = ConnectionState.OPENING
        timeout = self.options.open_timeout
        if now is not None and timeout is not None:
            self._open_at = now + timeout

    def opened(self, protocol: Protocol, now: float) -> None:
        """The opening handshake succeeded: OPEN, keepalive starts.

        Raises:
            InvalidState: It was attached already, or its handshake failed.
        """
        if self.state > ConnectionState.OPENING:
            raise InvalidState(f"{self!r} cannot be attached twice")
        self.protocol = protocol
        self.state = _OPEN
        self._open_at = None
        interval = self.options.ping_interval
        if interval is not None:
            self.keepalive = Keepalive(interval, self.options.ping_timeout, now)
            self._keepalive_at = now + interval

    def opening_failed(self, reason: str = "the opening handshake failed") -> list[Action]:
        """The opening handshake failed (or nothing could be started): FAILED, or CLOSED when
        it was attached already; ``incoming`` ends with 1006."""
        if self.state >= _CLOSED:
            return []
        self.state = ConnectionState.FAILED if self.protocol is None else _CLOSED
        self.close_code = 1006
        self.close_reason = reason
        self._clear_deadlines()
        self._give_up_at = None
        return [EndIncoming(1006, reason, None)]

    # ------------------------------------------------------------------ receiving

    def received(self, events: list[Event], now: float) -> tuple[list[Message], list[Action]]:
        """Events of one read (when they are not all messages): the messages, and the actions.

        The transport delivers the messages first, then carries out the actions in order.
        """
        protocol = self.protocol
        assert protocol is not None
        messages: list[Message] = []
        failure: ProtocolError | None = None
        for event in events:
            if isinstance(event, _MESSAGE_EVENTS):
                messages.append(event.data)
            elif isinstance(event, ProtocolFailure):
                failure = event.error
            elif isinstance(event, CloseReceived) and logger.isEnabledFor(logging.DEBUG):
                logger.debug("close frame from %s: %d %r", self._peer(), event.code, event.reason)
            # Ping: the protocol queued the pong. Pong: a sign of life, counted by the read.
        actions = self._sync(now)
        if failure is not None:
            logger.info("WebSocket peer %s broke the protocol: %s", self._peer(), failure)
            self._failure = failure
            self._defer(now, self.options.close_give_up_time)
            actions.append(_DEFER_VIOLATION)
        elif protocol.close_reply_pending:
            # RFC 6455 §5.5.1 lets an endpoint send until it answers a close frame: the replies
            # to the messages before it go out first (README: the close reply waits for the
            # application, at most close_reply_time).
            self._defer(now, self.options.close_reply_time)
            actions.append(_DEFER_CLOSE_REPLY)
        elif protocol.state is _PROTOCOL_CLOSED:
            self._end(actions)
        return messages, actions

    def _defer(self, now: float, bound: float) -> None:
        if self._deferred_at is None:
            self._deferred_at = now + bound
        self._keepalive_at = None  # nothing is read any more: no sign of life can come

    def end_reached(self, now: float) -> list[Action]:
        """The application reached a deferred end (or it must happen now): commit it.

        Queues the violation's close frame (its code) or the answer to the peer's close frame,
        and ends ``incoming``. Does nothing when no end is deferred.
        """
        protocol = self.protocol
        if protocol is None or self.state >= _CLOSED:
            return []
        error = self._failure
        if error is not None:
            self._failure = None
            protocol.fail(error.close_code, error.reason)
        elif protocol.close_reply_pending:
            protocol.reply_close()
        else:
            return []
        actions = self._sync(now)
        self._end(actions)
        return actions

    def eof_received(self, now: float) -> list[Action]:
        """The peer closed its side of TCP: no more bytes will arrive."""
        protocol = self.protocol
        if protocol is None:
            return []
        if protocol.state is not _PROTOCOL_CLOSED:
            logger.debug("WebSocket peer %s closed TCP without a close frame", self._peer())
        protocol.receive_eof()
        actions = self._sync(now)
        self._end(actions)
        return actions

    # ------------------------------------------------------------------ local operations

    def initiate_close(self, code: int, reason: str, now: float) -> list[Action]:
        """Start the closing handshake (or answer the peer's, or commit a pending violation).

        Does nothing once the closing has started (our close frame is out, or it is over).

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        protocol = self.protocol
        if protocol is None:
            return []
        if protocol.close_reply_pending or self._failure is not None:
            # The peer closed first and waits for our answer, or broke the protocol and nothing
            # more is read: that is the close frame now, with the peer's (violation's) code.
            return self.end_reached(now)
        if self.state is not _OPEN:
            return []
        protocol.send_close(code, reason)
        actions = self._sync(now)
        retry = self.options.close_retry_time
        if retry is not None and self._retry_at is None:
            self._retry_at = now + retry
        return actions

    def send_ping(self, payload: Buffer, now: float) -> list[Action]:
        """Queue a ping (the application's).

        Raises:
            ValueError, TypeError: As :meth:`Protocol.send_ping`.
            ConnectionClosed: The connection is closing or closed (:meth:`closed_error`).
        """
        protocol = self.protocol
        assert protocol is not None
        try:
            protocol.send_ping(payload)
        except ConnectionClosed:
            raise self.closed_error() from None
        return self._sync(now)

    def fail(self, code: int, reason: str, now: float) -> list[Action]:
        """Fail the connection for a local reason (1011 for an internal error): the close frame
        is queued, ``incoming`` ends, this end closes TCP."""
        protocol = self.protocol
        if protocol is None or self.state >= _CLOSED:
            return []
        if protocol.state is not _PROTOCOL_CLOSED:
            protocol.fail(code, reason)
        actions = self._sync(now)
        self._end(actions)
        return actions

    def aborted(self, reason: str) -> None:
        """The transport dropped TCP (``send_timeout``, a lost connection): the close reason
        if the connection ends without a close frame (1006)."""
        if not self.abort_reason:
            self.abort_reason = reason

    def transport_closed(self, now: float) -> list[Action]:
        """The TCP connection is over: the end if it has not come yet; no more deadlines."""
        actions: list[Action] = []
        protocol = self.protocol
        self.tcp_closed = True
        if protocol is not None and self.state < _CLOSED:
            if protocol.state is not _PROTOCOL_CLOSED:
                protocol.receive_eof()
            protocol.data_to_send()  # nothing can be written any more
            self._end(actions)
        elif protocol is None and self.state < _CLOSED:
            actions = self.opening_failed()
        self._failure = None
        self._clear_deadlines()
        self._give_up_at = None
        return actions

    # ------------------------------------------------------------------ deadlines

    def next_deadline(self) -> float | None:
        """The earliest armed deadline (the transport's clock), or None."""
        earliest: float | None = None
        for when in (
            self._open_at,
            self._keepalive_at,
            self._retry_at,
            self._give_up_at,
            self._deferred_at,
        ):
            if when is not None and (earliest is None or when < earliest):
                earliest = when
        return earliest

    def on_deadline(self, now: float, *, reading_paused: bool = False) -> list[Action]:
        """Do what every deadline due at ``now`` asks (none due: nothing).

        Args:
            now: The current time.
            reading_paused: The transport does not read because the application leaves
                ``incoming`` full: the silence is ours, the peer counts as alive.
        """
        actions: list[Action] = []
        if self._open_at is not None and now >= self._open_at:
            self._open_at = None
            if self.state <= ConnectionState.OPENING:
                logger.info(
                    "dropping %s: the opening handshake took more than %s s",
                    self._peer(),
                    self.options.open_timeout,
                )
                self.aborted("the opening handshake timed out")
                actions.append(Abort("the opening handshake timed out"))
        if self._deferred_at is not None and now >= self._deferred_at:
            self._deferred_at = None
            actions += self.end_reached(now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            actions += self._on_keepalive(now, reading_paused)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            protocol = self.protocol
            if self.state is _CLOSING and protocol is not None and protocol.close_received is None:
                protocol.resend_close()
                actions += self._sync(now)
        if self._give_up_at is not None and now >= self._give_up_at:
            self._give_up_at = None
            if not self.tcp_closed:
                logger.info(
                    "closing the TCP connection to %s: the close did not finish within %s s",
                    self._peer(),
                    self.options.close_give_up_time,
                )
                reason = "the closing handshake did not finish in time"
                self.aborted(reason)
                actions.append(Abort(reason))
        return actions

    def _on_keepalive(self, now: float, reading_paused: bool) -> list[Action]:
        keepalive = self.keepalive
        protocol = self.protocol
        if keepalive is None or protocol is None or self.state is not _OPEN or self.end_deferred:
            self._keepalive_at = None
            return []
        action, when = keepalive.check(now, reading_paused=reading_paused)
        if action is KeepaliveAction.TIMEOUT:
            self._keepalive_at = None
            logger.info(
                "WebSocket peer %s did not answer a ping within %s s; closing with 1011",
                self._peer(),
                self.options.ping_timeout,
            )
            protocol.fail(1011, "keepalive ping timeout")
            actions = self._sync(now)
            self._end(actions)
            # The peer is presumably gone: nothing to wait for. The close frame was handed to
            # the transport first; an abort after it still lets the kernel send it.
            actions.append(Abort("keepalive ping timeout"))
            return actions
        self._keepalive_at = when
        if action is KeepaliveAction.PING:
            protocol.send_ping(b"")
            return self._sync(now)
        return []

    def _clear_deadlines(self) -> None:
        """No more pings, retries, open bound or deferred end (the give-up stays)."""
        self._open_at = self._keepalive_at = self._retry_at = self._deferred_at = None
        self.keepalive = None

    # ------------------------------------------------------------------ the end

    def _sync(self, now: float) -> list[Action]:
        """After a protocol call: the bytes it queued; notice that the closing started."""
        protocol = self.protocol
        assert protocol is not None
        actions: list[Action] = []
        chunks = protocol.data_to_send()
        if chunks:
            actions.append(Write(chunks))
        if self.state is _OPEN and (
            protocol.close_sent is not None
            or protocol.close_received is not None
            or protocol.state is _PROTOCOL_CLOSED
        ):
            self.state = _CLOSING
            self._keepalive_at = None
            # The closing handshake has started: bound how long the TCP connection may live.
            self._start_give_up(now)
        return actions

    def _start_give_up(self, now: float) -> None:
        if self._give_up_at is None and not self.tcp_closed:
            self._give_up_at = now + self.options.close_give_up_time

    def _end(self, actions: list[Action]) -> None:
        """No message can arrive any more: record how it ended; append the actions."""
        if self.state >= _CLOSED:
            return
        protocol = self.protocol
        assert protocol is not None
        code = protocol.close_code
        reason = protocol.close_reason
        if code == 1006 and self.abort_reason:
            reason = self.abort_reason
        self.close_code = code
        self.close_reason = reason
        self.close_initiator = protocol.close_initiator
        self.state = _CLOSED
        self._failure = None
        self._clear_deadlines()
        actions.append(EndIncoming(code, reason, self.close_initiator))
        if protocol.should_close_transport() and not self.tcp_closed:
            actions.append(_CLOSE_TRANSPORT)
        logger.debug("WebSocket connection closed: code %d %r", code, reason)

    def closed_error(self) -> ConnectionClosed:
        """The exception for an operation refused because the connection is closing or closed.

        Once closed, how it ended; after an abort, 1006 with the abort's reason; while our close
        frame waits for its answer, "closing at our request" with our code (not 1006); before it
        was ever attached, 1006.
        """
        if self.close_code is not None and self.state >= _CLOSED:
            return closed_error(self.close_code, self.close_reason, self.close_initiator)
        if self.abort_reason:
            return closed_error(1006, self.abort_reason)
        if self.protocol is None:
            return closed_error(1006, "the connection was never opened")
        return protocol_closed_error(self.protocol)


def frame_messages(
    protocol: Protocol, messages: Iterable[str | Buffer], compress: bool | None
) -> bool:
    """Queue ``messages`` on ``protocol`` in order: ``str`` as text, anything else as binary
    (types already checked by the caller). Data frames never change the life cycle, so this
    needs no session; both transports' general send path.

    Returns:
        True if a binary message was a buffer other than ``bytes``: the protocol may still hold
        it, so a transport that writes later must copy it first (or write it now).

    Raises:
        ConnectionClosed: The protocol refuses (a close frame was sent, or it is closed); the
            frames of the messages before it stay queued.
    """
    mutable = False
    for message in messages:
        if isinstance(message, str):
            protocol.send_text(message, compress=compress)
        else:
            protocol.send_binary(message, compress=compress)
            mutable = mutable or type(message) is not bytes
    return mutable


def protocol_closed_error(protocol: Protocol) -> ConnectionClosed:
    """The error for a send the protocol refused: while our close frame waits for the peer's
    answer (``send_close()``, state CLOSING), closing at our request with the code we sent (1000
    for a plain ``initiate_close()``), not 1006 as if the connection had been lost; otherwise how
    it ended."""
    if protocol.state is _PROTOCOL_CLOSING and protocol.close_sent is not None:
        code, reason = protocol.close_sent
        return closed_error(code, reason, protocol.close_initiator, closing=True)
    return protocol.closed_error()


class SessionFields:
    """The fields every transport's ``Connection`` reads from its session and options: one
    definition for both (a mixin of read-only properties; the connection sets ``_session`` and
    ``options``)."""

    __slots__ = ()

    _session: Session
    options: ConnectionOptions

    @property
    def connected(self) -> bool:
        """True from the moment the connection is attached until it is closed (a Go package field).

        It turns False when no message can arrive any more (the closing handshake is complete,
        the connection failed, or TCP ended), at the same moment ``incoming`` ends.
        ``is_connected()`` is stricter: connected *and* not closing.
        """
        return self._session.connected

    @property
    def closing(self) -> bool:
        """True from the moment a close frame is sent or received, or the connection fails."""
        return self._session.closing

    @property
    def close_code(self) -> int | None:
        """Once the connection is closed (:attr:`connected` False after being True), the code
        that ended it: the peer's (1005 if its close frame carried none), the one we failed
        with, or 1006 when TCP ended without a close frame; ``None`` before."""
        return self._session.close_code

    @property
    def close_reason(self) -> str:
        """The reason that came with :attr:`close_code` (``""`` if none)."""
        return self._session.close_reason

    @property
    def close_retry_time(self) -> float | None:
        """Seconds before the close frame is sent again (Go: ``closeRetryTime``)."""
        return self.options.close_retry_time

    @property
    def close_give_up_time(self) -> float:
        """Seconds from the start of the closing to TCP closed (Go: ``closeGiveUpTime``)."""
        return self.options.close_give_up_time
