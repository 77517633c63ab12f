"""The asyncio WebSocket connection: one ``asyncio.BufferedProtocol`` per connection.

The transport reads straight into a receive buffer shared by every connection of the thread
(the core copies what it keeps, so an idle connection owns no receive buffer); each read is
parsed whole by the sans-I/O :class:`~tube.websocket.core.protocol.Protocol`, and its messages
enter :attr:`Connection.incoming` as one batch with one wake-up. Parts composed in, each owning
its state: :class:`~.sending.Sender` (send path), :class:`~.channel.Incoming` (the channel),
:class:`~.opening.HeadBuffer` (the opening bytes), :class:`~.pings.PongWaiters`, and one
:class:`~.timers.Alarm`.

The life cycle is the core's sans-I/O :class:`~tube.websocket.core.session.Session`, as on
threads: the state, the order of the end (README, "Closing and timeouts": ``incoming`` ends
once no message can arrive, after every message received before, a peer's violation or close
frame waits behind them), every deadline and the exceptions. This class feeds it what happens,
with ``loop.time()``, carries out the actions it returns (:meth:`Connection._apply`), and keeps
the alarm at the session's next deadline. A read whose events are all messages goes from the
protocol to :attr:`Connection.incoming` without the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, cast

from ..core.actions import Abort, Action, CloseTransport, DeferEnd, EndIncoming, Write
from ..core.deflate import DeflateParameters
from ..core.errors import ConnectionClosed
from ..core.events import BinaryMessage, Event, Pong, TextMessage
from ..core.frames import Buffer, byte_payload
from ..core.http import Request
from ..core.options import ConnectionOptions
from ..core.protocol import Protocol, Role, State
from ..core.session import ConnectionState, Session, SessionFields, frame_messages
from ..sockets import tune_socket
from .channel import Incoming, Message
from .opening import HandshakeSide, HeadBuffer
from .pings import PongWaiters
from .reading import (
    PAUSED_BY_APPLICATION,
    PAUSED_BY_WRITING,
    PAUSED_TO_HOLD,
    ReadGate,
    peer_name,
    receive_buffer,
)
from .sending import Sender
from .timers import Alarm

__all__ = ["Connection"]

logger = logging.getLogger("tube.websocket.aio")

# The names compared on busy paths (see core/protocol.py on why).
_CLOSED = State.CLOSED
_ENDED = ConnectionState.CLOSED

#: After a refusal (an HTTP answer instead of the 101): how long the client may go on sending,
#: and how many bytes, before its connection is closed anyway (seconds, bytes).
REFUSAL_LINGER = 1.0
REFUSAL_DISCARD_LIMIT = 1 << 20


class Connection(asyncio.BufferedProtocol, SessionFields):
    """One WebSocket connection on asyncio (server or client side).

    Created by :func:`~tube.websocket.aio.serve` (handed to the handler once open) or by
    :func:`~tube.websocket.aio.connect`; never directly.

    Attributes:
        options: The :class:`~tube.websocket.core.options.ConnectionOptions` (frozen).
        incoming: The bounded channel of received messages (:class:`~.channel.Incoming`).
        connected: True from the opening handshake until :attr:`incoming` ended.
        closing: True from the moment a close frame is sent or received, or the connection
            fails; stays True.
        close_code: Once :attr:`incoming` ended, how the connection ended (as on threads: the
            peer's code, 1005 for none, the code we failed with, or 1006); ``None`` before.
        close_reason: The reason that came with :attr:`close_code`.
        subprotocol: The subprotocol selected in the opening handshake, or ``None``.
        request: The opening request (method, target with path and query, headers): received
            on a server, sent by a client. ``None`` before the handshake.
        remote_address: The peer's address as the socket gives it.
        transport: The asyncio transport (the Go package's ``conn``).
        handshake: Internal API, for the code that runs the opening handshake (the server,
            the client, the uvicorn integration): :class:`~.opening.HandshakeSide`.

    Concurrency contract: asyncio only. Every method runs on the connection's event loop (the
    one that created it); from another thread use ``asyncio.run_coroutine_threadsafe``. Any
    number of tasks may send at once (frames never interleave; one task's messages keep their
    order) and may wait on :attr:`incoming` (each message goes to one of them). Protocol
    callbacks never wait, and run application code only when it asked for it
    (:meth:`on_message`).
    """

    def __init__(
        self, role: Role, options: ConnectionOptions, *, socket_tuned: bool = False
    ) -> None:
        """Made by the server, the client and the uvicorn integration (internal).

        Args:
            role: Server or client side.
            options: The connection's options.
            socket_tuned: The socket has TCP_NODELAY and the TCP keepalive of the ping
                options already (inherited from a listening socket tuned once, as Linux
                gives an accepted socket its listener's options): not set again here.
        """
        self.options = options
        self._socket_tuned = socket_tuned
        self.role = role
        loop = self._loop = asyncio.get_running_loop()
        # The life cycle: state, the end, every deadline (the core's).
        self._session = Session(options, peer=self._peer_name)
        self._alarm = Alarm(loop, self._on_deadline)
        self._reading = ReadGate()
        self.incoming = Incoming(loop, self._reading, options.incoming_size, options.incoming_bytes)
        self._sender = Sender(loop, options.send_timeout, self._abort, self._closed_error)
        self.subprotocol: str | None = None
        self.request: Request | None = None
        self.remote_address: Any = None
        self.transport: asyncio.Transport | None = None
        self._transport: asyncio.Transport | None = None
        # The session's protocol once open (None until the opening handshake is done).
        self._protocol: Protocol | None = None
        # After a refusal: closes TCP if the client's EOF does not come first. Made then:
        # fewer objects per open connection for the garbage collector to walk.
        self._linger: Alarm | None = None
        # The opening handshake's bytes, until it is done.
        self._head: HeadBuffer | None = HeadBuffer(self._loop)
        self._eof = False
        self._pongs = PongWaiters()
        self._opened: asyncio.Future[bool] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._recv = receive_buffer()
        # The transport is reading into the protocol's receive_buffer() (see get_buffer).
        self._reading_into = False
        # After a refusal: how many more bytes the client may send before we stop dropping them.
        self._discard_left = 0
        # What the handshake's code may do with this connection (instead of private members).
        self.handshake: HandshakeSide = _Handshake(self)
        # on_message(): the application's callbacks, and whether one runs (sends made inside it
        # are written together when it returns, with the rest of that read's output).
        self._on_message: Callable[[Message], object] | None = None
        self._on_pause: Callable[[], object] | None = None
        self._on_resume: Callable[[], object] | None = None
        self._calling_back = False

    # ------------------------------------------------------- the Go package's fields, options
    # connected, closing, close_code, close_reason, close_retry_time, close_give_up_time:
    # SessionFields', shared with the threaded connection.

    @property
    def _lost(self) -> bool:
        """The TCP connection is closed (internal API: the server, the uvicorn integration)."""
        return self._session.tcp_closed

    def __repr__(self) -> str:
        state = self._session.state.name.lower()
        return f"<aio.Connection {self.role.value} {state} {self._peer_name()}>"

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TCP (and TLS) connection is up: start the opening handshake's clock."""
        # A cast, not an isinstance check: uvloop's transports are no asyncio.Transport.
        self._transport = self.transport = self._reading.transport = cast(
            asyncio.Transport, transport
        )
        self.remote_address = transport.get_extra_info("peername")
        self._sender.attach(self._transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and not self._socket_tuned:
            # uvloop and asyncio both expose it; TCP_NODELAY, TCP keepalive
            tune_socket(sock, self.options.ping_interval, self.options.ping_timeout)
        # A server bounds the opening handshake by open_timeout (a client by its own timeout).
        self._session.begin_opening(self._loop.time() if self.role is Role.SERVER else None)
        self._alarm.arm(self._session.next_deadline())

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads into: the thread's shared receive buffer, or, while a
        large message arrives, the rest of its payload (read in place: no copy)."""
        protocol = self._protocol
        if protocol is not None:
            view = protocol.receive_buffer()
            if view is not None:
                self._reading_into = True
                return view
        self._reading_into = False
        return self._recv

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` arrived in the receive buffer: parse them (the hot path)."""
        if self._reading_into:
            # Into a large message's payload (Protocol.receive_buffer), not into _recv.
            self._reading_into = False
            protocol = self._protocol
            assert protocol is not None
            keepalive = self._session.keepalive
            if keepalive is not None:
                keepalive.last_received = self._loop.time()
            self._deliver(protocol.received_into(nbytes))
            return
        if self._protocol is None:
            if self._head is not None:
                self._head.feed(self._recv[:nbytes])
            else:  # refused: dropped, up to a bound
                self._discard_left -= nbytes
                if self._discard_left < 0:
                    self._abort("the refused client kept sending")
            return
        keepalive = self._session.keepalive
        if keepalive is not None:
            keepalive.last_received = self._loop.time()
        self._process(self._recv[:nbytes])

    def eof_received(self) -> bool:
        """The peer closed its side: record it; returning False lets the transport close."""
        self._eof = True
        if self._protocol is None:
            if self._head is not None:
                self._head.end()
            return False
        self._apply(self._session.eof_received(self._loop.time()))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The TCP connection is closed: everything ends."""
        # The end if it has not come (TCP ended without a close frame, or the opening failed).
        self._apply(self._session.transport_closed(self._loop.time()))
        if self._linger is not None:
            self._linger.cancel()
        self._sender.release()
        if self._head is not None:
            self._head.end()
        if not self._opened.done():
            self._opened.set_result(False)
        if not self._closed.done():
            self._closed.set_result(None)
        logger.debug("WebSocket connection to %s ended: %s", self._peer_name(), self.close_code)

    def pause_writing(self) -> None:
        """The transport is full: senders wait, reading stops (what we read may make us write:
        a peer flooding pings without reading is slowed down by TCP), and from now on
        ``send_timeout`` without progress aborts the connection (:class:`~.sending.Sender`)."""
        self._sender.pause()
        if self._protocol is not None:
            self._reading.pause(PAUSED_BY_WRITING)
        if self._on_pause is not None:
            self._call_application(self._on_pause, "pause")

    def resume_writing(self) -> None:
        """The transport's buffer drained: waiting senders go on, reading resumes."""
        self._sender.resume()
        self._reading.resume(PAUSED_BY_WRITING)
        if self._on_resume is not None:
            self._call_application(self._on_resume, "resume")

    # ------------------------------------------------------------------ opening handshake

    def _write_head(self, data: bytes) -> None:
        """Write an HTTP head (and body) of the opening handshake."""
        self._sender.write_head(data)

    def _refuse(self, data: bytes) -> None:
        """Answer with ``data`` (an HTTP response instead of the 101), then end TCP cleanly
        (internal API: the server).

        The write side is shut (a FIN right after the answer); what the client still sends is
        read and dropped until its EOF, at most :data:`REFUSAL_DISCARD_LIMIT` bytes and
        :data:`REFUSAL_LINGER` seconds. Closing at once would leave its unread bytes (the rest
        of a head refused for its size, a body) in our kernel, which then answers with a reset
        that may destroy the answer before the client reads it (the threaded server reads and
        drops them too). Under TLS the transport's close (close_notify) does it all.
        """
        self._sender.write_head(data)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._head = None  # from now on, what arrives is dropped
        self._apply(self._session.opening_failed())
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client reset the connection meanwhile
            transport.abort()
            return
        self._discard_left = REFUSAL_DISCARD_LIMIT
        self._linger = Alarm(self._loop, self._on_refusal_linger)
        self._linger.arm(self._loop.time() + REFUSAL_LINGER)
        self._reading.resume(self._reading.reasons)

    def _open(
        self, consumed: int, subprotocol: str | None, deflate: DeflateParameters | None
    ) -> None:
        """The opening handshake succeeded: become a WebSocket (internal API).

        Args:
            consumed: The size of the HTTP head; bytes after it are the first frames.
            subprotocol: The negotiated subprotocol.
            deflate: The negotiated permessage-deflate parameters, or None.
        """
        assert self._head is not None
        rest = bytes(self._head.data[consumed:])
        self._head = None
        protocol = self.options.make_protocol(self.role, deflate)
        self._session.opened(protocol, self._loop.time())  # open deadline off, keepalive on
        self._protocol = protocol
        self.subprotocol = subprotocol
        self._alarm.arm(self._session.next_deadline())
        self._opened.set_result(True)
        self._reading.resume(PAUSED_TO_HOLD)  # by the server, once the head was complete
        if rest:
            self._process(rest)

    def _adopt(
        self,
        transport: asyncio.BaseTransport,
        request: Request,
        subprotocol: str | None,
        deflate: DeflateParameters | None,
        data: bytes = b"",
    ) -> None:
        """Become an open WebSocket on a transport whose opening handshake another server
        parsed and answered (internal API: the uvicorn integration).

        The caller has written the 101 response and switched the transport to this protocol
        (``transport.set_protocol``). Reading is held until the connection is open, as after
        our own handshake.

        Args:
            transport: The transport, reading or paused.
            request: The opening request, as parsed.
            subprotocol: The subprotocol selected in the 101 response, or None.
            deflate: The permessage-deflate parameters of the 101 response, or None.
            data: Bytes already read past the request head: the first frames.
        """
        self.connection_made(transport)
        self.request = request
        assert self._head is not None
        self._head.data += data
        self._reading.pause(PAUSED_TO_HOLD)  # _open() lifts it
        self._open(0, subprotocol, deflate)

    # ------------------------------------------------------------------ public operations

    async def send(self, message: str | Buffer, *, compress: bool | None = None) -> None:
        """Send one message: a text message for ``str``, a binary one for bytes-like data.

        Returns at once unless the transport's buffer is over its high-water mark (a peer
        reading slower than we send); then waits until it drains. ``compress`` matters only
        when permessage-deflate was negotiated (as on threads: ``None`` compresses messages of
        at least ``min_size`` bytes, ``False`` never, ``True`` always).

        Raises:
            ConnectionClosed: The connection is closing or closed, or no byte could be written
                for ``send_timeout`` seconds (the connection is then aborted, code 1006).
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        self.send_nowait(message, compress=compress)
        if self._sender.paused:
            await self._sender.wait_writable()

    def send_nowait(self, message: str | Buffer, *, compress: bool | None = None) -> None:
        """Send one message without waiting: for :meth:`on_message` callbacks and other code
        that cannot ``await``.

        The frame is queued at once, whatever the transport holds: the caller watches the
        backpressure itself (:attr:`writing_paused`, the ``pause``/``resume`` callbacks of
        :meth:`on_message`). Inside a message callback it is written when the callback returns,
        with everything else sent during that read (one system call); elsewhere at the end of
        this loop iteration, as :meth:`send` does. ``compress`` as for :meth:`send`.

        Raises:
            ConnectionClosed: The connection is closing or closed.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        cls = type(message)
        protocol = self._protocol
        # The commonest send, a server's small message, framed in one step (as on threads);
        # the protocol declines whatever needs the general path, which raises the errors.
        frame = None
        if (cls is bytes or cls is str) and protocol is not None and not self._session.tcp_closed:
            frame = protocol.frame_message(message)  # type: ignore[arg-type]  # bytes or str
        if frame is None:
            self._queue((message,), compress, schedule=not self._calling_back)
        else:
            self._sender.queue([frame], schedule=not self._calling_back)

    @property
    def writing_paused(self) -> bool:
        """True while the transport's buffer is over its high-water mark (the peer reads
        slower than we send): :meth:`send` waits then, :meth:`send_nowait` does not."""
        return self._sender.paused

    def on_message(
        self,
        callback: Callable[[Message], object] | None,
        *,
        pause: Callable[[], object] | None = None,
        resume: Callable[[], object] | None = None,
    ) -> None:
        """Hand each message to ``callback(message)`` as it arrives, instead of to :attr:`incoming`.

        Opt-in, for the lowest latency: the callback runs inside the event loop's read
        callback, so a reply sent with :meth:`send_nowait` leaves with no task switch and no
        further loop iteration (``bench/run.py``'s ``latency``). The messages already waiting in
        :attr:`incoming` are handed over first, at once. The callback must not block (it runs
        on the loop) and cannot ``await``; messages keep their order. ``None`` goes back to
        :attr:`incoming` for the messages that follow.

        Backpressure: while this connection's transport is full, reading stops by itself (an
        echo cannot outrun its peer). A callback that sends elsewhere (a relay) passes
        ``pause``, called when the transport goes over its high-water mark (at once if it is
        already), and ``resume``, called once it drained; they typically call the source's
        :meth:`pause_reading` and :meth:`resume_reading`.

        The end is unchanged: :attr:`incoming` ends (empty) and :meth:`wait_closed` returns
        when the connection is over; a peer's close frame or violation is answered once every
        message before it was handed over. A callback that raises closes the connection with
        1011 (logged with the traceback); the messages of that read after the failing one
        stay in :attr:`incoming`, nothing is dropped.
        """
        self._on_message = callback
        self._on_pause, self._on_resume = (pause, resume) if callback is not None else (None, None)
        if callback is None:
            return
        waiting = self.incoming._take_all()
        if waiting:
            self._call_back(waiting)
        self._commit_end_if_handed_over()
        if pause is not None and self._sender.paused:
            self._call_application(pause, "pause")

    def pause_reading(self) -> None:
        """Stop reading from the peer until :meth:`resume_reading` (TCP then slows it down)."""
        self._reading.pause(PAUSED_BY_APPLICATION)

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading` (unless another reason still holds it)."""
        self._reading.resume(PAUSED_BY_APPLICATION)

    async def send_many(
        self, messages: Iterable[str | Buffer], *, compress: bool | None = None
    ) -> None:
        """Send several messages in order, as one write when they are small.

        Atomic: if one message is invalid (``TypeError``, ``UnicodeEncodeError`` for a lone
        surrogate), nothing is sent and the connection stays usable. ``compress`` as for
        :meth:`send`, for every message.

        Raises:
            ConnectionClosed: As for :meth:`send`.
        """
        self._queue(messages, compress, schedule=False)
        self._sender.flush()  # the caller made the batch: no reason to wait for more
        if self._sender.paused:
            await self._sender.wait_writable()

    async def ping(self, data: Buffer = b"", *, timeout: float | None = None) -> None:
        """Send a ping and wait for the pong that answers it.

        ``data``: up to 125 bytes; ``timeout``: seconds, ``None`` for ``ping_timeout``.

        Raises:
            TypeError, ValueError: ``data`` is not bytes-like, or longer than 125 bytes.
            ConnectionClosed: The connection is not open, or ended before the pong.
            TimeoutError: No pong within the timeout.
        """
        payload = bytes(byte_payload(data, "ping"))
        self._open_protocol()
        actions = self._session.send_ping(payload, self._loop.time())
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._pongs.add(payload, waiter)
        self._apply(actions)
        if timeout is None:
            timeout = self.options.ping_timeout
        async with asyncio.timeout(timeout):
            await waiter

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (see :func:`initiate_close`) and wait for the end.

        Waits until the TCP connection is closed, at most ``close_give_up_time`` plus one
        second. Does only the waiting if the connection is already closing.

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        await self.initiate_close(code, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.close_give_up_time + 1.0):
                await self.wait_closed()

    async def initiate_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame; return once it is written (see :func:`initiate_close`).

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long.
        """
        if self._start_close(code, reason):
            self._sender.flush()
            if self._sender.paused:
                with contextlib.suppress(ConnectionClosed):
                    await self._sender.wait_writable()

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the TCP connection is closed (the background teardown is over).

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.

        Returns:
            True once it is closed; False on timeout (as on threads).
        """
        if timeout is None:  # the server's wait after each handler: no timeout object
            await asyncio.shield(self._closed)
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            return False
        return True

    async def wait_until_connected(self, timeout: float | None = None) -> bool:
        """Wait until the opening handshake is done; False if it failed or on timeout."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._opened)
        except TimeoutError:
            return False

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the connection (1000, or 1011 if the block raised) and wait for the end."""
        await self.close(1000 if exc_type is None else 1011)

    # ------------------------------------------------------------------ sending internals

    def _open_protocol(self) -> Protocol:
        protocol = self._protocol
        if (
            protocol is None
            or self._session.tcp_closed
            or protocol.close_sent is not None
            or protocol.state is _CLOSED
        ):
            raise self._closed_error()
        return protocol

    def _queue(
        self, messages: Iterable[str | Buffer], compress: bool | None, *, schedule: bool
    ) -> None:
        """Encode messages into frames, all or none, and queue them for this loop iteration
        (``schedule=False``: the caller flushes them itself, so no flush is scheduled)."""
        protocol = self._open_protocol()
        try:
            mutable = frame_messages(protocol, messages, compress)
        except BaseException:
            protocol.data_to_send()  # drop this batch's frames: every earlier output was queued
            raise
        # Data frames never change the life cycle (close frames do, through the session).
        self._sender.queue(protocol.data_to_send(), schedule=schedule)
        if mutable:
            # The protocol may hold the caller's mutable buffer: the transport copies it now.
            self._sender.flush()

    def _closed_error(self) -> ConnectionClosed:
        """The exception for an operation on a connection that is closing or closed."""
        return self._session.closed_error()

    def _start_close(self, code: int, reason: str) -> bool:
        """Start the closing handshake unless it started already; True if a close frame was
        queued (internal API: the server, the uvicorn integration).

        Answers a peer's pending close frame instead (its code), or commits a peer's pending
        violation (its code): the session decides.
        """
        protocol = self._protocol
        session = self._session
        if (
            protocol is None
            or session.tcp_closed
            or protocol.close_sent is not None
            or session.state >= _ENDED
        ):
            return False
        self._apply(session.initiate_close(code, reason, self._loop.time()))
        return True

    def _abort(self, reason: str) -> None:
        """Close TCP at once, without a closing handshake (close code 1006 locally)."""
        self._session.aborted(reason)
        if self._transport is not None:
            self._transport.abort()

    def _peer_name(self) -> str:
        return peer_name(self.remote_address)

    # ------------------------------------------------------------------ the session's actions

    def _apply(self, actions: list[Action]) -> None:
        """Carry out what the session asks, in order; then move the alarm to its next deadline."""
        for action in actions:
            if isinstance(action, Write):
                self._sender.queue(action.chunks)
            elif isinstance(action, EndIncoming):
                self._end(action)
            elif isinstance(action, DeferEnd):
                if action.stop_reading:
                    # Nothing after the violation is parsed: stop reading until it is committed.
                    self._reading.pause(PAUSED_TO_HOLD)
                self.incoming._end_after(self._end_reached)
            elif isinstance(action, CloseTransport):
                if not self._session.tcp_closed:
                    # RFC 6455 §7.1.1: the server closes TCP first and waits for the peer's EOF
                    # (the give-up deadline bounds it); a client does only after a failure.
                    self._sender.shut(half=self.role is Role.SERVER and not self._eof)
            elif isinstance(action, Abort):
                self._abort(action.reason)
        self._alarm.arm(self._session.next_deadline())

    def _end(self, end: EndIncoming) -> None:
        """The WebSocket is over: end :attr:`incoming` now; TCP is torn down in the background."""
        self.incoming._end(end.error)
        self._pongs.fail_all(self._closed_error())
        # Read on until the peer's EOF: nothing holds reading back any more.
        self._reading.resume(self._reading.reasons)

    def _end_reached(self) -> None:
        """The application asked for the item after the last message: commit the peer's
        violation, or answer its close frame."""
        self._apply(self._session.end_reached(self._loop.time()))

    def _on_deadline(self) -> None:
        self._apply(
            self._session.on_deadline(self._loop.time(), reading_paused=bool(self._reading.reasons))
        )

    def _on_refusal_linger(self) -> None:
        logger.debug("closing the refused connection to %s: no EOF", self._peer_name())
        self._abort("the refused client did not close")

    # ------------------------------------------------------------------ receiving internals

    def _process(self, data: Buffer) -> None:
        """Feed received bytes to the protocol; deliver the messages as one batch."""
        protocol = self._protocol
        assert protocol is not None
        self._deliver(protocol.receive_data(data))

    def _deliver(self, events: list[Event]) -> None:
        """Hand the messages of ``events`` over as one batch; the rest to the session."""
        if not events:
            return
        messages: list[Message] = []
        other = False
        for event in events:
            kind = type(event)
            if kind is BinaryMessage or kind is TextMessage:
                messages.append(event.data)  # type: ignore[union-attr]
                continue
            other = True
            if kind is Pong:
                assert isinstance(event, Pong)
                self._pongs.received(event.payload)
        if other:
            # Not only messages (a ping, a pong, a close frame, a violation): the session.
            messages, actions = self._session.received(events, self._loop.time())
            if messages:
                if self._on_message is None:
                    self.incoming._put(messages)
                else:
                    self._call_back(messages)
            self._apply(actions)
            if self._on_message is not None:
                self._commit_end_if_handed_over()
        elif messages:
            if self._on_message is None:
                self.incoming._put(messages)
            else:
                self._call_back(messages)

    # ------------------------------------------------------------------ message callbacks

    def _call_back(self, messages: list[Message]) -> None:
        """Hand ``messages`` to the application's callback, in order; then write what it sent."""
        self._calling_back = True
        try:
            for index, message in enumerate(messages):
                callback = self._on_message
                if callback is None:  # it went back to incoming meanwhile
                    self.incoming._put(messages[index:])
                    break
                try:
                    callback(message)
                except Exception:
                    logger.exception("error in the on_message callback; closing with 1011")
                    self._on_message = self._on_pause = self._on_resume = None
                    if index + 1 < len(messages):
                        self.incoming._put(messages[index + 1 :])
                    self._start_close(1011, "")
                    break
        finally:
            self._calling_back = False
            self._sender.flush()

    def _call_application(self, callback: Callable[[], object], name: str) -> None:
        """Run the application's ``pause``/``resume`` callback; if it raises, close with 1011."""
        try:
            callback()
        except Exception:
            logger.exception("error in the on_message %s callback; closing with 1011", name)
            self._on_message = self._on_pause = self._on_resume = None
            self._start_close(1011, "")

    def _commit_end_if_handed_over(self) -> None:
        """With a callback nothing waits in incoming: answer a peer's close or violation now."""
        if not len(self.incoming):
            self.incoming._commit_end()


class _Handshake:
    """:class:`~.opening.HandshakeSide` for one connection: the few private members the opening
    handshake's code needs, behind declared names (nothing on the hot path goes through it)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def head(self) -> HeadBuffer | None:
        return self._connection._head

    @property
    def opened(self) -> bool:
        return self._connection._protocol is not None

    @property
    def lost(self) -> bool:
        return self._connection._lost

    @property
    def closed(self) -> asyncio.Future[None]:
        return self._connection._closed

    def peer_name(self) -> str:
        return self._connection._peer_name()

    def hold_reading(self) -> None:
        self._connection._reading.pause(PAUSED_TO_HOLD)

    def write_head(self, data: bytes) -> None:
        self._connection._write_head(data)

    def open(
        self, consumed: int, subprotocol: str | None, deflate: DeflateParameters | None
    ) -> None:
        self._connection._open(consumed, subprotocol, deflate)

    def adopt(
        self,
        transport: asyncio.BaseTransport,
        request: Request,
        subprotocol: str | None,
        deflate: DeflateParameters | None,
        data: bytes = b"",
    ) -> None:
        self._connection._adopt(transport, request, subprotocol, deflate, data)

    def refuse(self, data: bytes) -> None:
        self._connection._refuse(data)

    def abort(self, reason: str) -> None:
        self._connection._abort(reason)

    def start_close(self, code: int, reason: str) -> bool:
        return self._connection._start_close(code, reason)
