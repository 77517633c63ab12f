"""ASGI WebSockets through uvicorn: a uvicorn WebSocket protocol class on Tube's asyncio transport.

``uvicorn app:app --ws tube.websocket.asgi:UvicornProtocol`` (or ``uvicorn.run(app,
ws=UvicornProtocol)``, ``uvicorn.Config(ws=...)``, gunicorn's ``UvicornWorker`` with
``CONFIG_KWARGS = {"ws": UvicornProtocol}``) serves the WebSockets of any ASGI application
(FastAPI, Starlette, Django Channels) with Tube's core and asyncio transport. This module is the
only one that imports uvicorn.

How uvicorn hands a connection over (the contract of its own ``websockets``/``wsproto`` classes,
which this class keeps): its HTTP protocol parses the request head, builds
``UvicornProtocol(config=, server_state=, app_state=)``, calls ``connection_made(transport)``,
then ``data_received(head)`` with the request head re-serialised, then
``transport.set_protocol(protocol)``. From there:

1. The head is checked by the core (:func:`~tube.websocket.core.handshake.accept_request`: method,
   version, ``Host``, ``Upgrade``, ``Connection``, key, version, no body; 400/426/405/505 are
   answered before the application runs). uvicorn writes the head as ``HTTP/1.1`` whatever the
   client sent; the version it parsed is read back from its HTTP protocol's scope (still the
   transport's protocol at ``connection_made``), so HTTP/1.0 gets 505 as from Tube's servers.
   No Origin check by default: as with uvicorn's own classes, the application sees the
   ``origin`` header in the scope and decides (:meth:`UvicornProtocol.with_options` turns
   Tube's check on). Reading is then held: frames wait in the kernel until the application
   accepts.
2. The application runs in one task (added to ``server_state.tasks``) with the ASGI ``scope``
   uvicorn's classes build, and receives ``websocket.connect``.
3. ``websocket.accept`` writes the 101 (the chosen subprotocol, uvicorn's default headers, the
   application's headers) and switches the transport to a Tube
   :class:`~tube.websocket.aio.Connection`: from then on the hot path is the asyncio transport's
   own (``get_buffer``/``buffer_updated`` into the shared receive buffer, one wake-up per read),
   with its limits, keepalive and close order (README, "Closing and timeouts").
   ``websocket.close`` before accept answers 403; ``websocket.http.response.start``/``body``
   (the denial response extension) answer with the application's response.
4. ``websocket.receive`` events come from ``incoming``; ``websocket.disconnect`` carries the
   close code and reason once ``incoming`` ended (the peer's code, 1005 for none, the code of a
   failure, 1006 when TCP ended without a close frame; 1006 when the client left before accept).
   A send on a closed connection raises uvicorn's ``ClientDisconnected`` (an ``OSError``, as
   the ASGI spec asks; Starlette turns it into ``WebSocketDisconnect``).

uvicorn's settings map to Tube's options: ``ws_max_size`` → ``max_message_size`` (1009 beyond),
``ws_max_queue`` → ``incoming_size``, ``ws_ping_interval``/``ws_ping_timeout`` → keepalive
(``None`` or 0 turns it off), ``ws_per_message_deflate`` → ``compression="deflate"``. The close
timeout is ``close_give_up_time`` (10 s, as uvicorn's). ``server_state.connections`` holds the
protocol until its TCP connection is closed, so that uvicorn's graceful shutdown waits for it;
its ``shutdown()`` closes an open WebSocket with 1012 (service restart, as uvicorn's classes do)
and answers a pending handshake with 500.

Where Tube is deliberately stricter than uvicorn's own classes: once the application has
accepted, its end closes the WebSocket with a close frame -- **1011 when it raised** (or was
cancelled) or returned a value other than ``None`` (the ASGI contract broken: uvicorn logs it
as an error too), 1000 when it returned ``None`` without closing -- where uvicorn's classes drop
the TCP connection without one (the client sees 1006). ``send_timeout`` (10 s without progress on a
peer that does not read) aborts the connection, where uvicorn's wait forever. A subprotocol in
``websocket.accept`` must be one the client offered (``ValueError`` otherwise).

Known limits shared with uvicorn's classes: bytes a client sends in the same packet as its
request head, behind it, stay in uvicorn's HTTP parser and never reach the WebSocket (browsers
and usual clients wait for the 101 before sending). What uvicorn's HTTP parser accepted and
rewrote cannot be seen: under ``h11`` (uvicorn's parser without ``httptools``) bare LF line ends
and obs-folded header lines, which Tube's own servers refuse with 400, arrive as a clean head
(``httptools``, in ``uvicorn[standard]``, refuses both with 400 itself).

Concurrency: asyncio only, on uvicorn's event loop (one per worker process).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from ..aio.connection import Connection
from ..core.errors import ConnectionClosed, HandshakeError
from ..core.handshake import Negotiated, accept_request, rejection_response
from ..core.http import Request, Response, get_header_values, parse_request_head, split_list
from ..core.options import ConnectionOptions
from ..core.protocol import Role

__all__ = ["UvicornProtocol"]

# uvicorn's own WebSocket classes log their lines ('"WebSocket /path" [accepted]', "connection
# open", application errors) to "uvicorn.error", which uvicorn's logging configuration shows
# (with --log-level, --log-config): so does this class, in the same words.
logger = logging.getLogger("uvicorn.error")

Message = MutableMapping[str, Any]
"""An ASGI event (a ``dict`` with a ``type``)."""

_STATUS_PHRASES = {403: "Forbidden", 500: "Internal Server Error"}


class _State(enum.Enum):
    """Where the ASGI conversation is; every transition is in :class:`UvicornProtocol`."""

    CONNECTING = "connecting"  # the request is valid; the application decides
    RESPONDING = "responding"  # a denial response started (websocket.http.response.start)
    ACCEPTED = "accepted"  # the 101 is written; the Tube connection runs the WebSocket
    DONE = "done"  # refused, answered, or the client left before accept


@functools.lru_cache(maxsize=32)
def _options(
    max_size: int,
    max_queue: int,
    ping_interval: float | None,
    ping_timeout: float | None,
    deflate: bool,
    extra: tuple[tuple[str, Any], ...],
) -> ConnectionOptions:
    """The connection options for uvicorn's settings (built once per distinct settings)."""
    options: dict[str, Any] = {
        "max_message_size": max_size,
        "incoming_size": max_queue,
        # uvicorn turns keepalive off with None or 0; Tube's options take None for off.
        "ping_interval": ping_interval or None,
        "ping_timeout": ping_timeout or None,
        "compression": "deflate" if deflate else None,
        # As uvicorn's classes: the application sees Origin in the scope and decides.
        "check_origin": False,
    }
    options.update(extra)
    return ConnectionOptions.from_kwargs(**options)


class UvicornProtocol(asyncio.Protocol):
    """A uvicorn WebSocket protocol class (``--ws tube.websocket.asgi:UvicornProtocol``).

    uvicorn creates one per upgrade request, exactly as its own ``websockets``/``wsproto``
    classes; see the module docstring for the life cycle, the mapping of uvicorn's settings
    and where Tube is stricter.

    Args:
        config: uvicorn's ``Config`` (loaded here if it is not yet).
        server_state: uvicorn's ``ServerState``: ``connections`` and ``tasks`` for the graceful
            shutdown, ``default_headers`` for the 101.
        app_state: The lifespan state, copied into each scope's ``state``.
        _loop: The event loop (uvicorn's tests pass it); the running loop by default.

    Attributes:
        scope: The ASGI scope of the request, once its head arrived.
        connection: The Tube :class:`~tube.websocket.aio.Connection` once accepted, else None.

    Concurrency: asyncio only, on uvicorn's loop; the ASGI ``receive``/``send`` callables are
    for the application's task.
    """

    __slots__ = (
        "_close_sent",
        "_connect_sent",
        "_early",
        "_http_version",
        "_lost",
        "_negotiated",
        "_request",
        "_response",
        "_response_body",
        "_response_head",
        "_settled",
        "_shutting_down",
        "_state",
        "app",
        "app_state",
        "config",
        "connection",
        "connections",
        "default_headers",
        "loop",
        "options",
        "root_path",
        "scope",
        "tasks",
        "transport",
    )

    #: Options set by :meth:`with_options`, over those derived from uvicorn's settings.
    tube_options: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app: Callable[..., Awaitable[Any]] = config.loaded_app
        self.loop = _loop or asyncio.get_running_loop()
        self.root_path: str = config.root_path
        self.app_state = app_state
        # Shared with every protocol of the server: what the graceful shutdown waits for.
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        self.options = _options(
            config.ws_max_size,
            config.ws_max_queue,
            config.ws_ping_interval,
            config.ws_ping_timeout,
            bool(config.ws_per_message_deflate),
            self.tube_options,
        )
        self.transport: asyncio.Transport | None = None
        self.scope: dict[str, Any] | None = None
        self.connection: Connection | None = None
        self._state = _State.CONNECTING
        self._connect_sent = False
        self._close_sent = False  # the application sent websocket.close after accept
        self._lost = False  # the transport is lost (before accept: after, the connection knows)
        self._shutting_down = False
        # Until accept: the request, the prepared 101, what it negotiated, and bytes read past
        # the head before reading was held.
        self._request: Request | None = None
        self._response: Response | None = None
        self._negotiated: Negotiated | None = None
        self._early = b""
        # The request's HTTP version as uvicorn's HTTP protocol parsed it (None if unknown).
        self._http_version: str | None = None
        # A denial response in progress: (status, headers) and the body parts so far.
        self._response_head: tuple[int, list[tuple[str, str]]] | None = None
        self._response_body: list[bytes] = []
        # Resolved when the conversation leaves CONNECTING (accepted, answered or lost): a
        # receive() waiting before accept then knows what to return.
        self._settled: asyncio.Future[None] = self.loop.create_future()

    @classmethod
    def with_options(cls, **connection_options: Any) -> type[UvicornProtocol]:
        """A subclass that applies Tube connection options over uvicorn's settings.

        ``uvicorn.run(app, ws=UvicornProtocol.with_options(check_origin=True,
        origins=["https://example.com"], send_timeout=30))``. Checked at once.

        Raises:
            TypeError, ValueError: An unknown or invalid option.
        """
        given = sorted({**dict(cls.tube_options), **connection_options}.items())
        # Checked now, not on the first connection; kept as the options normalised them
        # (origins=[...] as a tuple), since _options() caches on them and a list cannot be hashed.
        checked = ConnectionOptions.from_kwargs(**dict(given))
        extra = tuple((name, getattr(checked, name)) for name, _ in given)
        subclass: type[UvicornProtocol] = type(
            cls.__name__, (cls,), {"__slots__": (), "tube_options": extra}
        )
        return subclass

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """uvicorn hands the transport over (before the request head)."""
        # A cast by annotation, not an isinstance check: uvloop's transports are no
        # asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self._http_version = _http_version_seen(transport)

    def data_received(self, data: bytes) -> None:
        """The request head (from uvicorn's HTTP protocol), then bytes read before the hold."""
        if self.scope is not None or self._state is not _State.CONNECTING:
            # Frames that were already being read when we held reading: keep them for accept.
            if self._state is _State.CONNECTING:
                self._early += data
            return
        transport = self.transport
        assert transport is not None
        try:
            # Tube's head limits (8 KiB per line, 128 headers) on top of uvicorn's parser's: the
            # same as uvicorn's default class (websockets refuses lines over 8 KiB too).
            parsed = parse_request_head(data)
            if parsed is None:
                raise HandshakeError(400, "expected a complete request head")
            request, consumed = parsed
            if self._http_version is not None:
                # uvicorn writes every head it hands over as HTTP/1.1: put back the version
                # the client sent, so that HTTP/1.0 gets the 505 of Tube's own servers.
                request.version = "HTTP/" + self._http_version
            request.remote_address = transport.get_extra_info("peername")
            negotiated = Negotiated()
            options = self.options
            response, _ = accept_request(
                request,
                origins=options.origins,
                check_origin=options.check_origin,
                compression=options.deflate_options,
                negotiated=negotiated,
            )
        except HandshakeError as error:
            logger.info("refused a WebSocket upgrade from %s: %s", self._client_name(), error)
            self._finish_refusal(rejection_response(error))
            return
        # Hold further frames in the kernel until the application accepts.
        transport.pause_reading()
        self._request, self._response, self._negotiated = request, response, negotiated
        self._early = data[consumed:]
        self.scope = self._build_scope(request, transport)
        task = self.loop.create_task(self._run_asgi())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        """The client left before the application accepted (after accept, the Tube connection
        is the transport's protocol and gets this call)."""
        self._lost = True
        self._state = _State.DONE
        self.connections.discard(self)
        self._settle()

    # ------------------------------------------------------------------ uvicorn's interface

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close with 1012, or answer a pending handshake with 500."""
        self._shutting_down = True
        connection = self.connection
        if connection is not None:
            # The closing handshake runs on; the end of TCP takes us out of `connections`.
            connection.handshake.start_close(1012, "")
            return
        if self._state is _State.CONNECTING and self.scope is not None:
            self._finish_refusal(_plain_response(500, b"Internal Server Error"))
        elif self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ the ASGI callables

    async def receive(self) -> Message:
        """The ASGI ``receive``: ``websocket.connect``, ``websocket.receive``s, then
        ``websocket.disconnect`` (repeated if called again)."""
        connection = self.connection
        if connection is not None and self._connect_sent:  # the hot path
            try:
                message = await connection.incoming.get()
            except ConnectionClosed:
                return self._disconnect_event(connection)
            if type(message) is str:
                return {"type": "websocket.receive", "text": message}
            return {"type": "websocket.receive", "bytes": message}
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        await asyncio.shield(self._settled)
        if self.connection is not None:
            return await self.receive()
        return {"type": "websocket.disconnect", "code": 1006, "reason": ""}

    async def send(self, message: Message) -> None:
        """The ASGI ``send``: ``websocket.accept``/``send``/``close`` and the denial response.

        Raises:
            ClientDisconnected: The connection is closed (an ``OSError``, as the spec asks).
            RuntimeError: A message out of order (as uvicorn's classes).
            ValueError: An invalid close code or reason, an unoffered subprotocol, a header
                that would break the response head.
        """
        connection = self.connection
        kind = message["type"]
        if kind == "websocket.send" and connection is not None and not self._close_sent:
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if data is None:
                    raise TypeError("websocket.send needs 'bytes' or 'text'")
            try:
                await connection.send(data)
            except ConnectionClosed as exc:
                raise ClientDisconnected(str(exc)) from exc
            return
        if self._lost or (connection is not None and connection.handshake.lost):
            raise ClientDisconnected("the client is gone")
        state = self._state
        if state is _State.CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                logger.info('%s - "WebSocket %s" 403', self._client_name(), self._path())
                self._finish_refusal(_plain_response(403, b""))
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                logger.info('%s - "WebSocket %s" %d', self._client_name(), self._path(), status)
                headers = [
                    (n.decode("latin-1"), v.decode("latin-1"))
                    for n, v in message.get("headers", ())
                ]
                self._response_head = (status, headers)
                self._state = _State.RESPONDING
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but got '{kind}'."
                )
        elif state is _State.RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            self._response_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._finish_denial()
        elif state is _State.ACCEPTED and kind == "websocket.close" and not self._close_sent:
            assert connection is not None
            reason = message.get("reason") or ""
            await connection.initiate_close(message.get("code", 1000), reason)
            self._close_sent = True
        elif state is _State.ACCEPTED and kind not in ("websocket.send", "websocket.close"):
            raise RuntimeError(
                f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
            )
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    # ------------------------------------------------------------------ the application's task

    async def _run_asgi(self) -> None:
        """Run the application; close or answer as it ends."""
        assert self.scope is not None
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            self._app_ended(error=False)
        except asyncio.CancelledError:
            self._app_ended(error=True)
            raise
        except BaseException:
            logger.exception("Exception in ASGI application")
            self._app_ended(error=True)
        else:
            if result is not None:
                # The ASGI spec's contract broken: an application error, so 1011 as for one
                # that raised (uvicorn's classes log the same line and drop TCP: 1006).
                logger.error("ASGI callable should return None, but returned %r.", result)
            self._app_ended(error=result is not None)

    def _app_ended(self, *, error: bool) -> None:
        """The application's task is over: whatever it left open ends now."""
        state = self._state
        if state is _State.ACCEPTED:
            connection = self.connection
            assert connection is not None
            # Tube is stricter than uvicorn's classes here (they drop TCP: 1006): a close
            # frame, 1011 if the application failed (no detail leaks), 1000 if it returned.
            code = 1012 if self._shutting_down else (1011 if error else 1000)
            connection.handshake.start_close(code, "")
        elif state is _State.CONNECTING:
            if not error:
                logger.error("ASGI callable returned without completing handshake.")
            self._finish_refusal(_plain_response(500, b"Internal Server Error"))
        elif state is _State.RESPONDING:
            # The response was cut short: the client sees the connection end.
            self._state = _State.DONE
            self._settle()
            if self.transport is not None:
                self.transport.close()

    # ------------------------------------------------------------------ transitions

    def _accept(self, message: Message) -> None:
        """websocket.accept: write the 101 and hand the transport to a Tube connection."""
        transport, request, response = self.transport, self._request, self._response
        assert transport is not None and request is not None and response is not None
        assert self._negotiated is not None and self.scope is not None
        subprotocol = message.get("subprotocol")
        headers = list(response.headers)
        if subprotocol is not None:
            # RFC 6455 §4.2.2: the server selects one of the values the client offered.
            if subprotocol not in self.scope["subprotocols"]:
                raise ValueError(
                    f"expected a subprotocol the client offered {self.scope['subprotocols']}, "
                    f"got {subprotocol!r}"
                )
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        for name, value in (*self.default_headers, *message.get("headers", ())):
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        head = Response(101, "Switching Protocols", headers).to_bytes()  # ValueError: bad header
        logger.info('%s - "WebSocket %s" [accepted]', self._client_name(), self._path())
        if transport.is_closing():
            return  # the client left meanwhile: connection_lost settles
        transport.write(head)
        connection = Connection(Role.SERVER, self.options)
        transport.set_protocol(connection)
        connection.handshake.adopt(
            transport, request, subprotocol, self._negotiated.deflate, self._early
        )
        # uvicorn's shutdown waits for `connections` to empty: leave once TCP is closed.
        connection.handshake.closed.add_done_callback(self._connection_closed)
        logger.info("connection open")
        self.connection = connection
        self._state = _State.ACCEPTED
        self._request = self._response = self._negotiated = None
        self._early = b""
        self._settle()

    def _connection_closed(self, _: object) -> None:
        self.connections.discard(self)
        logger.info("connection closed")

    def _finish_denial(self) -> None:
        """The denial response's body is complete: write it and close."""
        assert self._response_head is not None
        status, headers = self._response_head
        body = b"".join(self._response_body)
        names = {name.lower() for name, _ in headers}
        if "content-length" not in names:
            headers.append(("Content-Length", str(len(body))))
        if "connection" not in names:
            headers.append(("Connection", "close"))
        phrase = HandshakeError(status, "").status_phrase
        self._finish_refusal(Response(status, phrase, headers, body))

    def _finish_refusal(self, response: Response) -> None:
        """Write an HTTP response instead of the 101, then close the TCP connection."""
        self._state = _State.DONE
        self._settle()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response.to_bytes())
            transport.close()  # after the response is written

    def _settle(self) -> None:
        if not self._settled.done():
            self._settled.set_result(None)

    def _disconnect_event(self, connection: Connection) -> Message:
        code = connection.close_code
        return {
            "type": "websocket.disconnect",
            "code": 1006 if code is None else code,
            "reason": connection.close_reason,
        }

    # ------------------------------------------------------------------ the scope

    def _build_scope(self, request: Request, transport: asyncio.Transport) -> dict[str, Any]:
        """The ASGI scope, as uvicorn's own classes build it (ASGI spec 2.4)."""
        raw_path, _, query_string = request.target.partition("?")
        root_path = self.root_path
        offered: list[str] = []
        for value in get_header_values(request.headers, "Sec-WebSocket-Protocol"):
            offered += split_list(value)
        return {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": root_path,
            "path": root_path + unquote(raw_path),
            "raw_path": (root_path + raw_path).encode("latin-1"),
            "query_string": query_string.encode("latin-1"),
            # ASGI: lower-case names, bytes; values as received (ISO-8859-1).
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in request.headers
            ],
            "subprotocols": offered,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }

    def _client_name(self) -> str:
        client = self.scope.get("client") if self.scope is not None else None
        return f"{client[0]}:{client[1]}" if client else "-"

    def _path(self) -> str:
        if self.scope is None:
            return "-"
        query = self.scope["query_string"]
        return str(self.scope["path"]) + ("?" + query.decode("latin-1") if query else "")


def _http_version_seen(transport: asyncio.BaseTransport) -> str | None:
    """The HTTP version of the request being upgraded, as uvicorn's HTTP protocol parsed it.

    uvicorn re-serialises the head as ``HTTP/1.1`` whatever the client sent. When it calls
    ``connection_made``, its HTTP protocol (``h11`` or ``httptools``) is still the transport's
    protocol, and its ``scope`` (the ASGI HTTP scope of the request) holds the version.

    Returns:
        ``"1.0"``, ``"1.1"``, ...; None when the transport or the protocol does not tell (then
        the re-serialised head's version is all there is).
    """
    get_protocol = getattr(transport, "get_protocol", None)
    http_protocol = get_protocol() if get_protocol is not None else None
    scope = getattr(http_protocol, "scope", None)
    version = scope.get("http_version") if isinstance(scope, dict) else None
    return version if isinstance(version, str) else None


def _plain_response(status: int, body: bytes) -> Response:
    """A small plain-text response that closes the connection (403, 500)."""
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return Response(status, _STATUS_PHRASES[status], headers, body)
