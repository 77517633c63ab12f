"""The asyncio server: :func:`serve` accepts connections and runs one handler task for each.

Each accepted socket gets one task, which runs the opening handshake (the core's bounded head
parser and :func:`~tube.websocket.core.handshake.accept_request`, the same Origin policy and
subprotocol selection as on threads), then the application's handler, then waits for the TCP
teardown. The whole opening handshake, TLS included, is bounded by ``open_timeout``. Without
``process_request`` nothing in the handshake can await, so the request is answered inside the
read callback that completes its head (the 101 leaves in that loop iteration); the task only
waits for that answer before it runs the handler.

Accepting is our own ``add_reader`` loop rather than ``loop.create_server``: at the
file-descriptor limit it backs off (stops watching the listening socket for a second, logs one
warning) and goes on serving the connections already open.

Concurrency: a :class:`Server` belongs to the event loop that started it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import logging
import socket
import ssl as ssl_module
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from ..core.errors import ConnectionClosed, HandshakeError
from ..core.handshake import rejection_response
from ..core.http import HeadScanner, Request, Response, parse_request_head
from ..core.options import ConnectionOptions
from ..core.protocol import Role
from ..sockets import listen_error, tune_socket
from .connection import Connection
from .running import stop_on_signals

__all__ = ["Handler", "ProcessRequest", "Server", "http_response", "serve"]

logger = logging.getLogger("tube.websocket.aio")

Handler = Callable[[Connection], Awaitable[None]]
"""The application: a coroutine function run once per connection, in its own task."""

ProcessRequest = Callable[[Request], "Response | Awaitable[Response | None] | None"]
"""Called with the opening request: a response to send instead of upgrading, or ``None``."""

#: How long accepting pauses when the process is out of file descriptors, in seconds.
ACCEPT_RETRY_DELAY = 1.0

#: Linux gives an accepted TCP socket its listening socket's options (TCP_NODELAY, the TCP
#: keepalive settings): the server sets them once, on the listener. Elsewhere, on each socket.
_INHERITED_OPTIONS = sys.platform == "linux"

# accept() errors that mean "out of resources": back off rather than spin.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def http_response(
    status: int,
    body: str | bytes = b"",
    *,
    headers: Sequence[tuple[str, str]] = (),
    content_type: str = "text/plain; charset=utf-8",
) -> Response:
    """An HTTP response for ``process_request`` (a 404, a 401, a health check, a small page).

    Args:
        status: The HTTP status code.
        body: The body; ``str`` is encoded as UTF-8.
        headers: More headers, as ``(name, value)`` pairs.
        content_type: The ``Content-Type`` header.

    Returns:
        The response, with ``Content-Length`` and ``Connection: close`` set.
    """
    data = body.encode() if isinstance(body, str) else bytes(body)
    error = HandshakeError(status, "")  # for its standard reason phrase
    fields = [*headers, ("Content-Type", content_type), ("Content-Length", str(len(data)))]
    fields.append(("Connection", "close"))
    return Response(status, error.status_phrase, fields, data)


class Server:
    """A listening WebSocket server; create it with :func:`serve`.

    Use it as ``async with serve(...) as server:`` (it listens on entry and closes on exit) or
    ``server = await serve(...)`` then ``await server.close()``.

    Attributes:
        sockets: The listening sockets.
        options: The connection options shared by every connection.
    """

    def __init__(
        self,
        handler: Handler,
        host: str | None,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None,
        process_request: ProcessRequest | None,
        reuse_port: bool,
        backlog: int,
        options: ConnectionOptions,
    ) -> None:
        self.options = options
        self.sockets: list[socket.socket] = []
        self._handler, self._process_request, self._ssl = handler, process_request, ssl
        # Where and how to listen: (host, port, reuse_port, backlog).
        self._listen = (host, port, reuse_port, backlog)
        # One task per accepted socket, and the connections whose TCP is not closed yet, by
        # their closed future: each leaves by that future's callback, this dict's pop (a
        # closure per connection would be three more objects for the garbage collector to
        # walk on every full collection, for as long as the connection lives).
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: dict[asyncio.Future[None], Connection] = {}
        self._forget = self._connections.pop
        # Every accepted socket's protocol, made by one shared factory (no closure each).
        self._factory = functools.partial(
            Connection, Role.SERVER, options, socket_tuned=_INHERITED_OPTIONS
        )
        self._closing = self._warned = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Future[None] | None = None

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with port 0)."""
        return int(self.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> Server:
        """Bind and listen (``await serve(...)`` does it); once only."""
        if self._loop is not None:
            return self
        loop = self._loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        host, port, reuse_port, backlog = self._listen
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    # Several processes accept on one port; the kernel spreads connections.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                    sock.listen(backlog)
                except OSError as exc:
                    raise listen_error(exc, str(address[0]), int(address[1])) from exc
                sock.setblocking(False)
                if _INHERITED_OPTIONS and family in (socket.AF_INET, socket.AF_INET6):
                    # Once here instead of a few system calls on every accepted socket.
                    tune_socket(sock, self.options.ping_interval, self.options.ping_timeout)
        except BaseException:
            for sock in self.sockets:
                sock.close()
            raise
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        return self

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Wait until the server is closed: by :meth:`close` from another task or, in the main
        thread, by SIGTERM or Ctrl-C (SIGINT), which run :meth:`close` (every WebSocket gets
        1001) and then let this return normally, so ``asyncio.run`` ends without a traceback
        (see :mod:`tube.websocket.aio.running`)."""
        assert self._closed is not None, "the server is not started"
        with stop_on_signals(self.close):
            await asyncio.shield(self._closed)

    async def close(self) -> None:
        """Stop listening, close every connection with 1001 and wait for the handlers.

        Handlers get ``close_give_up_time`` seconds to finish once their connection closed;
        those still running are then cancelled, and what is left is aborted.
        """
        if self._closing:
            if self._closed is not None:
                await asyncio.shield(self._closed)
            return
        self._closing = True
        loop = self._loop
        for sock in self.sockets:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        for connection in list(self._connections.values()):
            if not connection.handshake.opened:
                connection.handshake.abort("the server is shutting down")
            else:
                connection.handshake.start_close(1001, "server shutting down")
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.options.close_give_up_time)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for connection in list(self._connections.values()):
            connection.handshake.abort("the server is shut down")
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------------ accepting

    def _accept(self, listener: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        # A bounded batch per wake-up, so that a flood of connections cannot starve the loop.
        for _ in range(self._listen[3]):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._back_off(listener, exc)
                else:  # the client gave up (ECONNABORTED, ...): nothing to serve
                    logger.debug("accept() failed: %s", exc)
                return
            # Left blocking: connect_accepted_socket() makes it non-blocking (asyncio's and
            # uvloop's), and nothing touches it before (one ioctl per connection fewer).
            task = loop.create_task(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _back_off(self, listener: socket.socket, exc: OSError) -> None:
        loop = self._loop
        assert loop is not None
        if not self._warned:
            self._warned = True
            logger.warning(
                "cannot accept connections (%s); retrying every %s s, serving those open",
                exc.strerror,
                ACCEPT_RETRY_DELAY,
            )
        loop.remove_reader(listener.fileno())
        loop.call_later(ACCEPT_RETRY_DELAY, self._watch, listener)

    def _watch(self, listener: socket.socket) -> None:
        if not self._closing and self._loop is not None:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    async def _serve(self, sock: socket.socket) -> None:
        """One connection, from the accepted socket to the end of its TCP teardown."""
        loop = self._loop
        assert loop is not None
        options = self.options
        try:
            _, connection = await loop.connect_accepted_socket(
                self._factory,
                sock,
                ssl=self._ssl,
                ssl_handshake_timeout=options.open_timeout if self._ssl is not None else None,
            )
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            # A failed TLS handshake, or a client gone already: nothing to serve.
            sock.close()
            logger.debug("connection failed before the opening handshake: %r", exc)
            return
        closed = connection.handshake.closed
        self._connections[closed] = connection
        closed.add_done_callback(self._forget)
        if self._closing:
            connection.handshake.abort("the server is shutting down")
            return
        if await self._handshake(connection):
            await self._run(connection)

    async def _handshake(self, connection: Connection) -> bool:
        """Read and answer the opening request; True once the connection is a WebSocket."""
        side = connection.handshake
        head = side.head
        assert head is not None
        scanner = HeadScanner()  # parse only when it may answer: linear in the head's size
        if self._process_request is None:
            # Nothing can await between the complete head and the 101: the request is answered
            # in the read callback that completes it, so the 101 leaves in that loop iteration
            # (not in this task's next turn), and nothing is read before it is open: no
            # pause_reading()/resume_reading() pair (two epoll_ctl) either.
            head.on_feed = on_feed = functools.partial(self._answer_now, connection, scanner)
            on_feed()  # what arrived already
            while side.head is not None:
                if not await head.more():
                    side.abort("the client left during the opening handshake")
                    return False
            return side.opened
        try:
            while True:
                parsed = self._parse(connection, scanner)
                if parsed is not None:
                    break
                if not await head.more():
                    side.abort("the client left during the opening handshake")
                    return False
            # process_request may await: hold further frames in the kernel until it is open.
            side.hold_reading()
            answer = self._process_request(parsed[0])
            if inspect.isawaitable(answer):
                answer = await answer
        except HandshakeError as error:
            self._refuse_error(connection, error)
            return False
        except Exception:
            self._fail(connection, "process_request")
            return False
        if answer is not None:
            assert isinstance(answer, Response)
            self._refuse(connection, answer)
            return False
        if side.lost:
            return False
        return self._upgrade(connection, *parsed)

    def _answer_now(self, connection: Connection, scanner: HeadScanner) -> None:
        """Without process_request: answer the request as soon as its head is complete (called
        with each read of the head, inside the connection's read callback)."""
        try:
            parsed = self._parse(connection, scanner)
        except HandshakeError as error:
            self._refuse_error(connection, error)
            return
        except Exception:  # never into the transport's read callback
            self._fail(connection, "the opening handshake")
            return
        if parsed is not None:
            self._upgrade(connection, *parsed)

    @staticmethod
    def _parse(connection: Connection, scanner: HeadScanner) -> tuple[Request, int] | None:
        """The request and its head's size once the head is complete, else None.

        Raises:
            HandshakeError: The head is malformed or too large.
        """
        head = connection.handshake.head
        assert head is not None
        if not scanner.ready(head.data):
            return None
        parsed = parse_request_head(head.data)
        if parsed is not None:
            request = parsed[0]
            request.remote_address = connection.remote_address
            connection.request = request
        return parsed

    def _upgrade(self, connection: Connection, request: Request, consumed: int) -> bool:
        """Validate the request under the options; write the 101 and open, or refuse."""
        try:
            response, subprotocol, deflate = self.options.accept(request)
        except HandshakeError as error:
            self._refuse_error(connection, error)
            return False
        except Exception:  # the application's subprotocol selector, say
            self._fail(connection, "the opening handshake")
            return False
        side = connection.handshake
        side.write_head(response.to_bytes())
        side.open(consumed, subprotocol, deflate)
        return True

    def _refuse_error(self, connection: Connection, error: HandshakeError) -> None:
        side = connection.handshake
        logger.info("refused a WebSocket upgrade from %s: %s", side.peer_name(), error)
        self._refuse(connection, rejection_response(error))

    def _fail(self, connection: Connection, what: str) -> None:
        logger.exception("error in %s; answering 500", what)
        self._refuse(connection, http_response(500, "internal server error\n"))

    @staticmethod
    def _refuse(connection: Connection, response: Response) -> None:
        connection.handshake.refuse(response.to_bytes())  # then a FIN, not a reset

    async def _run(self, connection: Connection) -> None:
        """Run the handler; close the connection as it ends; wait for the TCP teardown."""
        try:
            await self._handler(connection)
        except asyncio.CancelledError:
            # Cancelled by close() (1001, going away) or by the application (1011).
            if self._closing:
                connection.handshake.start_close(1001, "server shutting down")
            else:
                connection.handshake.start_close(1011, "")
            raise
        except ConnectionClosed as closed:
            if not connection.closing:
                # Not this connection's end (another connection's, say): a handler error.
                logger.exception("error in the WebSocket handler; closing with 1011")
                connection.handshake.start_close(1011, "")
            else:
                # The connection closed under the handler (the peer closed or left while it
                # replied, a send timed out): no server error, and the close code stays the
                # one that ended it (as the threaded server does).
                logger.debug(
                    "the WebSocket handler for %s ended with its connection: %s",
                    connection.handshake.peer_name(),
                    closed,
                )
        except Exception:
            logger.exception("error in the WebSocket handler; closing with 1011")
            connection.handshake.start_close(1011, "")
        else:
            connection.handshake.start_close(1000, "")
        await connection.wait_closed()


def serve(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    reuse_port: bool = False,
    backlog: int = 1024,
    **connection_options: Any,
) -> Server:
    """Serve WebSocket connections on ``host``:``port``, one ``handler`` task each.

    Args:
        handler: ``async def handler(connection)``; the connection is closed with 1000 when it
            returns, 1011 when it raises or is cancelled, 1001 when the server closes. A
            ``ConnectionClosed`` from its own connection, which closed under it (the peer
            closed or left while it replied), ends it quietly (logged at debug level).
        host: The address to listen on (``None``: every interface).
        port: The port; 0 picks a free one (see :attr:`Server.port`).
        ssl: A server ``SSLContext`` for ``wss://``.
        process_request: Called with the opening :class:`~tube.websocket.core.http.Request`
            (may be a coroutine function); returns a response to send instead of upgrading
            (see :func:`http_response`), or ``None`` to go on with the upgrade.
        reuse_port: Set ``SO_REUSEPORT`` so that several processes share the port.
        backlog: The listen backlog.
        **connection_options: The connection options (``max_message_size``, ``ping_interval``,
            ``open_timeout``, ``subprotocols``, ``origins``, ...), checked at once.

    Returns:
        The :class:`Server`, not listening yet: ``async with`` it, or ``await`` it.

    Raises:
        TypeError, ValueError: An unknown or invalid option.
    """
    options = ConnectionOptions.from_kwargs(**connection_options)
    return Server(
        handler,
        host,
        port,
        ssl=ssl,
        process_request=process_request,
        reuse_port=reuse_port,
        backlog=backlog,
        options=options,
    )
