"""The asyncio client: :func:`connect` opens a WebSocket connection to a ``ws://``/``wss://`` URL.

What the threaded ``connect()`` does, on asyncio: resolve (bounded), connect TCP to each address
in turn, TLS for ``wss://``, the request built by the core, the response read with the core's
bounded parser and validated by the core, redirects by the same rules. One ``open_timeout``
bounds all of it, DNS resolution included.

Concurrency: :func:`connect` shares nothing between calls; the connection it returns belongs to
the calling task's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from ..core import client_handshake, handshake_checks
from ..core import uri as urls
from ..core.deflate import DeflateOptions
from ..core.errors import InvalidHandshake, OpenTimeout
from ..core.handshake import Negotiated
from ..core.http import (
    HeadScanner,
    Request,
    Response,
    decode_chunked,
    get_header,
    parse_response_head,
)
from ..core.options import ConnectionOptions
from ..core.protocol import Role
from ..sockets import client_tls_context, explain_tls_error, warn_ssl_context_alias
from .connection import Connection

__all__ = ["connect"]

logger = logging.getLogger("tube.websocket.aio")

# Options only a server uses: refused rather than silently ignored.
_SERVER_ONLY = frozenset({"origins", "check_origin", "extra_headers"})

# How much of a refusal's body is kept, and how long it may take once the head arrived.
_MAX_ERROR_BODY = 4096
_ERROR_BODY_GRACE = 1.0


class _Step:
    """What the opening is doing, for the message of an :class:`OpenTimeout`."""

    __slots__ = ("doing",)

    def __init__(self) -> None:
        self.doing = "before starting"


async def _open(
    url: str,
    subprotocols: Sequence[str] | None,
    origin: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    ssl: ssl_module.SSLContext | None,
    ssl_context: ssl_module.SSLContext | None,
    open_timeout: float | None,
    follow_redirects: bool,
    compression: DeflateOptions | Literal["deflate"] | None,
    connection_options: dict[str, Any],
) -> Connection:
    uri = urls.parse_uri(url)
    ssl = client_tls_context(uri.secure, ssl, ssl_context)
    if refused := sorted(_SERVER_ONLY & connection_options.keys()):
        raise TypeError(f"connect() does not take the server-side options {refused}")
    extra_headers = list(handshake_checks.check_extra_headers(headers, request=True))
    checked = handshake_checks.check_subprotocols(subprotocols)  # refuses a single string
    if callable(checked):
        raise TypeError("connect() takes a sequence of subprotocols to offer, not a selector")
    offered = None if checked is None else list(checked)
    # Every option is checked before any I/O.
    options = ConnectionOptions.from_kwargs(
        open_timeout=open_timeout,
        subprotocols=offered,
        compression=compression,
        **connection_options,
    )
    offer = options.deflate_options

    def new_request() -> tuple[Request, str]:
        return client_handshake.build_request(
            uri.host_header,
            uri.resource,
            subprotocols=offered,
            origin=origin,
            extra_headers=extra_headers,
            compression=offer,
        )

    new_request()  # a dry run: bad tokens, Origin or header values fail before any I/O
    step = _Step()
    timeout = asyncio.timeout(open_timeout)
    try:
        async with timeout:
            redirects = 0
            while True:  # _redirect_target stops after MAX_REDIRECTS
                connection = await _open_transport(uri, ssl, options, step)
                try:
                    request, key = new_request()
                    connection.request = request
                    connection.handshake.write_head(request.to_bytes())
                    step.doing = "waiting for the handshake response"
                    response, consumed = await _read_response(connection)
                    if response.status == 101:
                        negotiated = Negotiated()
                        subprotocol = client_handshake.validate_response(
                            response,
                            key,
                            subprotocols=offered,
                            compression=offer,
                            negotiated=negotiated,
                        )
                        connection.handshake.open(consumed, subprotocol, negotiated.deflate)
                        logger.debug("connected to %s (subprotocol %r)", uri.url, subprotocol)
                        return connection
                    location = get_header(response.headers, "Location")
                    if not (
                        follow_redirects and location and response.status in urls.REDIRECT_STATUSES
                    ):
                        response.body = await _read_error_body(connection, response, consumed)
                        raise client_handshake.refusal_error(response)
                    target = urls.redirect_target(uri, response, redirects=redirects)
                except BaseException:
                    connection.handshake.abort("the opening handshake failed")
                    raise
                connection.handshake.abort("redirected")
                # Credentials were meant for the first origin only.
                extra_headers = urls.headers_for_redirect(extra_headers, uri, target)
                logger.debug("redirected from %s to %s", uri.url, target.url)
                uri = target
                redirects += 1
    except TimeoutError:
        if timeout.expired():
            raise OpenTimeout(f"timed out after {open_timeout} s {step.doing}") from None
        raise


async def _open_transport(
    uri: urls.WebSocketURI,
    ssl: ssl_module.SSLContext | None,
    options: ConnectionOptions,
    step: _Step,
) -> Connection:
    """Resolve, connect TCP to each address in turn, then TLS for ``wss://``."""
    loop = asyncio.get_running_loop()
    where = f"[{uri.host}]:{uri.port}" if uri.is_ipv6 else f"{uri.host}:{uri.port}"
    step.doing = f"during DNS resolution of {uri.host}"
    try:
        addresses = await loop.getaddrinfo(uri.host, uri.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise socket.gaierror(
            exc.errno, f"cannot resolve host {uri.host!r}: {exc.strerror}"
        ) from exc
    failures: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        step.doing = f"connecting to {where}"
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            if uri.secure:
                step.doing = f"during the TLS handshake with {uri.host_header}"
            context = (ssl or ssl_module.create_default_context()) if uri.secure else None
            _, connection = await loop.create_connection(
                lambda: Connection(Role.CLIENT, options),
                sock=sock,
                ssl=context,
                server_hostname=uri.host if context is not None else None,
            )
        except OSError as exc:
            sock.close()
            if isinstance(exc, ssl_module.SSLError):
                explained = explain_tls_error(exc, uri.host_header)
                if explained is exc:
                    raise
                raise explained from exc
            failures.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return connection
    if failures and all(isinstance(exc, ConnectionRefusedError) for exc in failures):
        raise ConnectionRefusedError(failures[0].errno, f"connection refused by {where}")
    if failures:
        first = failures[0]
        raise type(first)(first.errno, f"cannot connect to {where}: {first.strerror}") from first
    raise OSError(f"cannot connect to {where}: no address found")


async def _read_response(connection: Connection) -> tuple[Response, int]:
    """Read until the response head is complete; the core's parser bounds it."""
    head = connection.handshake.head
    assert head is not None
    scanner = HeadScanner()  # parse only when it may answer: linear in the head's size
    while True:
        if scanner.ready(head.data):
            parsed = parse_response_head(head.data)
            if parsed is not None:
                return parsed
        if not await head.more():
            received = bytes(head.data)
            how = "in the middle of its handshake response" if received else "without answering"
            raise InvalidHandshake(
                None, f"the server closed the connection {how}", body=received[:_MAX_ERROR_BODY]
            )


async def _read_error_body(connection: Connection, response: Response, consumed: int) -> bytes:
    """The start of a refusal's body (at most 4 KiB), best effort within a short grace."""
    if response.status in (204, 304) or response.status < 200:
        return b""
    chunked = "chunked" in (get_header(response.headers, "Transfer-Encoding") or "").lower()
    declared = get_header(response.headers, "Content-Length")
    want = _MAX_ERROR_BODY
    if declared is not None and declared.isdigit() and not chunked:
        want = min(int(declared), want)
    head = connection.handshake.head
    assert head is not None

    def complete() -> bool:
        body = head.data[consumed:]
        return len(body) >= want or (chunked and b"0\r\n\r\n" in body)

    try:
        async with asyncio.timeout(_ERROR_BODY_GRACE):
            while not complete() and await head.more():
                pass
    except TimeoutError:
        pass  # the refusal is certain; only its explanation is shorter
    body = bytes(head.data[consumed : consumed + want])
    return decode_chunked(body) if chunked else body


class _Connecting:
    """What :func:`connect` returns: awaitable, and an async context manager."""

    __slots__ = ("_arguments", "_connection")

    def __init__(self, arguments: tuple[Any, ...]) -> None:
        self._arguments = arguments
        self._connection: Connection | None = None

    def __await__(self) -> Generator[Any, None, Connection]:
        return _open(*self._arguments).__await__()

    async def __aenter__(self) -> Connection:
        self._connection = await _open(*self._arguments)
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the connection: 1000, or 1011 if the block raised."""
        assert self._connection is not None
        await self._connection.__aexit__(exc_type, exc, traceback)


def connect(
    url: str,
    *,
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    ssl_context: ssl_module.SSLContext | None = None,
    open_timeout: float | None = 10.0,
    follow_redirects: bool = False,
    compression: DeflateOptions | Literal["deflate"] | None = "deflate",
    **connection_options: Any,
) -> _Connecting:
    """Open a WebSocket connection to ``url``: ``await connect(...)`` or ``async with``.

    The arguments mean what they mean for the threaded :func:`tube.websocket.connect`
    (``ssl_context`` is a deprecated alias of ``ssl`` on both, with a ``DeprecationWarning``;
    passing both raises ``TypeError``); like it, it offers permessage-deflate unless
    ``compression=None``.

    Returns:
        An awaitable giving the open :class:`Connection`; as an async context manager it
        closes the connection on exit (1000, or 1011 if the block raised).

    Raises:
        InvalidURI: ``url`` (or a redirect's ``Location``) is not a valid WebSocket URL.
        ValueError, TypeError: An invalid option or header (before any network I/O).
        socket.gaierror: The host name cannot be resolved.
        ConnectionRefusedError, OSError: The TCP connection failed.
        ssl.SSLError: The TLS handshake failed (e.g. an unverifiable certificate).
        OpenTimeout: ``open_timeout`` expired; the message says during which step.
        HandshakeRejected: The server answered another status than 101 (its status, headers
            and the start of its body), or a redirect that is not followed.
        InvalidHandshake: No valid HTTP response arrived, or an invalid 101.
    """
    warn_ssl_context_alias(ssl_context)
    return _Connecting(
        (
            url,
            subprotocols,
            origin,
            headers,
            ssl,
            ssl_context,
            open_timeout,
            follow_redirects,
            compression,
            connection_options,
        )
    )
