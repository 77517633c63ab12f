"""The client side: :func:`connect` opens a WebSocket connection to a ``ws://`` or ``wss://`` URL.

The opening handshake (RFC 6455 §4.1) runs here, on a blocking socket, in the calling thread:
resolve and connect TCP, wrap it in TLS for ``wss://``, send the request built by the core, read
the response head with the core's bounded parser and let the core validate it. Once the server
answered ``101 Switching Protocols``, the socket is handed to the same threaded
:class:`~tube.websocket.threads.connection.Connection` the server side uses, with a
:class:`~tube.websocket.core.protocol.Protocol` in the client role (which masks every frame with
a fresh key, RFC 6455 §5.3).

Everything that happens before the hand-off is bounded by one overall ``open_timeout``: name
resolution (in a worker thread, since ``getaddrinfo`` cannot be interrupted: it is abandoned
at the deadline), every connect, TLS handshake, send and receive gets only the time that is
left. Every rule without I/O (URL parsing, redirect policy, building and checking the
handshake, explaining a refusal) lives in the core (:mod:`~tube.websocket.core.uri`,
:mod:`~tube.websocket.core.handshake`); this module only does the I/O around it.

Concurrency: :func:`connect` may be called from any thread; it shares nothing between calls.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ..core.client_handshake import build_request, refusal_error, validate_response
from ..core.deflate import DeflateOptions
from ..core.errors import InvalidHandshake, OpenTimeout
from ..core.handshake import Negotiated
from ..core.handshake_checks import check_extra_headers, check_subprotocols
from ..core.http import Response, decode_chunked, get_header, parse_response_head
from ..core.options import DEFAULTS
from ..core.protocol import Role
from ..core.uri import (
    REDIRECT_STATUSES,
    WebSocketURI,
    headers_for_redirect,
    parse_uri,
    redirect_target,
)
from ..sockets import client_tls_context, explain_tls_error, warn_ssl_context_alias
from .connection import Connection
from .functions import create_connection

__all__ = ["connect"]

logger = logging.getLogger("tube.websocket.client")

# How much of a refusal's body is kept for the HandshakeRejected, in bytes: enough for a
# sentence or a short HTML error page, never an unbounded download.
_MAX_ERROR_BODY = 4096

# How long to wait for the rest of a refusal's body once its head arrived, in seconds. The
# refusal is already certain; this only decides how much of the explanation the user sees.
_ERROR_BODY_GRACE = 1.0

# Options of create_connection() that only a server uses: refused rather than silently ignored.
_SERVER_ONLY_OPTIONS = frozenset({"origins", "check_origin", "extra_headers"})


# getaddrinfo()'s answer: (family, type, proto, canonname, sockaddr) for each address.
_AddressInfo = Sequence[tuple[Any, ...]]


class _Deadline:
    """The time left of ``open_timeout``, shared by every step of the opening handshake."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.end = None if timeout is None else time.monotonic() + timeout

    def remaining(self, doing: str) -> float | None:
        """Seconds left (None: no limit); raises OpenTimeout once nothing is left."""
        if self.end is None:
            return None
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired(doing)
        return left

    def expired(self, doing: str) -> OpenTimeout:
        """The exception that reports the timeout while ``doing`` something."""
        return OpenTimeout(f"timed out after {self.timeout} s {doing}")


def connect(
    url: str,
    *,
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    ssl_context: ssl_module.SSLContext | None = None,
    open_timeout: float | None = DEFAULTS.open_timeout,
    follow_redirects: bool = False,
    compression: DeflateOptions | Literal["deflate"] | None = "deflate",
    **connection_options: Any,
) -> Connection:
    """Open a WebSocket connection to ``url`` and return it, connected.

    The returned :class:`Connection` is the same type as on the server side, with the same
    functions, attributes and options; use it as a context manager to close it cleanly::

        with connect("ws://127.0.0.1:8080/chat") as connection:
            connection.send("hello")
            print(connection.incoming.get(timeout=5))

    Args:
        url: A ``ws://`` or ``wss://`` URL (see :func:`parse_uri` for what is accepted).
        subprotocols: Subprotocols to offer, in order of preference; the server's choice is
            the connection's ``subprotocol``. A server choosing one not offered fails the
            handshake.
        origin: Value of the ``Origin`` header, for servers that check it (browsers send one).
        headers: Extra request headers (a mapping or ``(name, value)`` pairs), for example
            ``{"Authorization": "Bearer ..."}``. The handshake's own headers (``Host``,
            ``Upgrade``, ``Connection``, ``Origin``, ``Sec-WebSocket-*``) cannot be set here.
        ssl: TLS settings for ``wss://``. By default, ``ssl.create_default_context()``:
            the server's certificate is verified against the system's CAs and its host name.
            Passing one with a ``ws://`` URL raises ``ValueError``.
        ssl_context: A deprecated alias of ``ssl`` (its first name here; asyncio's
            ``connect()`` and both ``serve()`` say ``ssl``): emits a ``DeprecationWarning``.
            Passing both raises ``TypeError``.
        open_timeout: Seconds allowed for the whole opening: name resolution, TCP connect,
            TLS handshake, request, response, and every redirect followed. ``None`` waits
            forever.
        follow_redirects: Follow 301/302/303/307/308 responses with a ``Location``, at most
            :data:`~tube.websocket.core.uri.MAX_REDIRECTS` times; never from ``wss://`` to
            ``ws://``; ``Authorization``, ``Cookie`` and ``Proxy-Authorization`` headers are
            dropped when the redirect leaves the origin (scheme, host, port). Off by default:
            a redirect is then a :class:`HandshakeRejected` that names the ``Location``.
        compression: Offer permessage-deflate (RFC 7692), as browsers do: ``"deflate"``
            (default options, the default), a :class:`DeflateOptions`, or ``None``. The server
            may decline; an answer that was not offered fails the handshake.
        **connection_options: Passed to :func:`create_connection`: ``max_message_size``,
            ``incoming_size``, ``ping_interval``, ``ping_timeout``, ``send_timeout``,
            ``close_retry_time``, ``close_give_up_time``, ... Checked before any network I/O.

    Returns:
        The open connection (``is_connected(connection)`` is True).

    Raises:
        InvalidURI: ``url`` (or a redirect's ``Location``) is not a valid WebSocket URL.
        ValueError: An invalid option, a reserved or invalid header in ``headers`` (a
            character outside ISO-8859-1, a control character), an ``origin`` that is not
            printable ASCII; raised before any network I/O.
        TypeError: ``subprotocols`` is a single string; both ``ssl`` and ``ssl_context``.
        socket.gaierror: The host name cannot be resolved ("cannot resolve host ...").
        ConnectionRefusedError: Nothing listens on that port ("connection refused by ...").
        OSError: Any other network failure (unreachable host, reset connection, ...).
        ssl.SSLError: The TLS handshake failed, e.g. ``ssl.SSLCertVerificationError`` for a
            certificate that cannot be verified.
        OpenTimeout: ``open_timeout`` expired (a ``TimeoutError``); the message says during
            which step ("during DNS resolution of ...", "connecting to ...", ...).
        HandshakeRejected: The server answered with a status other than 101 (or a redirect
            that is not followed): :attr:`~HandshakeError.status`,
            :attr:`~HandshakeError.headers` and :attr:`~HandshakeError.body` (at most 4 KiB)
            come from its response. ``str(error)`` reads like ``403 Forbidden: origin not
            allowed`` (control characters escaped).
        InvalidHandshake: No valid HTTP response arrived (``status`` is None) or the 101 is
            invalid (``status`` 101): a wrong ``Sec-WebSocket-Accept``, a subprotocol or an
            extension that was not offered, ...
    """
    warn_ssl_context_alias(ssl_context)
    uri = parse_uri(url)
    context = client_tls_context(uri.secure, ssl, ssl_context)
    if open_timeout is not None and not open_timeout > 0:
        raise ValueError(
            f"open_timeout must be a positive number of seconds or None, got {open_timeout!r}"
        )
    extra_headers = list(check_extra_headers(headers, request=True))
    checked = check_subprotocols(subprotocols)
    if callable(checked):
        raise TypeError("connect() takes a sequence of subprotocols to offer, not a selector")
    offered = list(checked) if checked is not None else None
    server_only = sorted(_SERVER_ONLY_OPTIONS.intersection(connection_options))
    if server_only:
        raise TypeError(f"connect() does not take the server-side options {server_only}")
    # Options are checked (ValueError) before anything touches the network. The connection
    # keeps the client's open_timeout and offered subprotocols, for the record.
    connection = create_connection(
        open_timeout=open_timeout,
        subprotocols=offered,
        compression=compression,
        **connection_options,
    )
    offer = connection.options.deflate_options
    # Likewise the handshake arguments (subprotocol tokens, Origin, header values): a dry run.
    build_request(
        uri.host_header,
        uri.resource,
        subprotocols=offered,
        origin=origin,
        extra_headers=extra_headers,
    )
    deadline = _Deadline(open_timeout)

    redirects = 0
    while True:
        sock = _open_socket(uri, context, deadline)
        try:
            request, key = build_request(
                uri.host_header,
                uri.resource,
                subprotocols=offered,
                origin=origin,
                extra_headers=extra_headers,
                compression=offer,
            )
            _send_all(sock, request.to_bytes(), deadline)
            response, rest = _read_response_head(sock, deadline)
            if response.status != 101:
                location = get_header(response.headers, "Location")
                if response.status in REDIRECT_STATUSES and location and follow_redirects:
                    target = redirect_target(uri, response, redirects=redirects)
                    # Credentials were meant for the first origin only (like browsers do).
                    extra_headers = headers_for_redirect(extra_headers, uri, target)
                    logger.debug("redirected from %s to %s", uri.url, target.url)
                    uri = target
                    redirects += 1
                    sock.close()
                    continue
                response.body = _read_error_body(sock, response, rest, deadline)
                raise refusal_error(response)
            negotiated = Negotiated()
            subprotocol = validate_response(
                response, key, subprotocols=offered, compression=offer, negotiated=negotiated
            )
        except BaseException:
            sock.close()
            raise
        break

    # From here on the connection is open: frames may already follow the 101 response in
    # ``rest`` (a server may send its first message at once); they are handed over, not lost.
    sock.settimeout(None)
    # The same limits as on the server side; the client role masks every frame it sends with a
    # fresh key (RFC 6455 §5.3) and refuses masked frames from the server (§5.1).
    protocol = connection.options.make_protocol(Role.CLIENT, negotiated.deflate)
    try:
        connection._open(sock, protocol, initial_data=rest, subprotocol=subprotocol)
    except BaseException:
        sock.close()
        raise
    logger.debug("connected to %s (subprotocol %r)", uri.url, subprotocol)
    return connection


def _open_socket(
    uri: WebSocketURI, ssl_context: ssl_module.SSLContext | None, deadline: _Deadline
) -> socket.socket:
    """Connect TCP (and TLS for wss://) to ``uri`` within the deadline."""
    sock = _connect_tcp(uri.host, uri.port, deadline)
    try:
        # Frames are written whole; Nagle would only delay small messages and pings.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not uri.secure:
            return sock
        context = ssl_context if ssl_context is not None else ssl_module.create_default_context()
        sock.settimeout(deadline.remaining("before the TLS handshake"))
        try:
            # server_hostname drives SNI and the certificate's host name check (IP literals are
            # checked against the certificate's IP addresses).
            return context.wrap_socket(sock, server_hostname=uri.host)
        except TimeoutError:
            raise deadline.expired(f"during the TLS handshake with {uri.host_header}") from None
        except ssl_module.SSLError as exc:
            explained = explain_tls_error(exc, uri.host_header)
            if explained is exc:
                raise
            raise explained from exc
    except BaseException:
        sock.close()
        raise


def _resolve(host: str, port: int, deadline: _Deadline) -> _AddressInfo:
    """``getaddrinfo`` for ``host``, given up (OpenTimeout) when the deadline passes.

    The system resolver cannot be interrupted, so a host name is resolved in a daemon worker
    thread waited on for the time left; at the deadline the worker is abandoned (it ends when
    the resolver returns, and nobody reads its answer). An IP literal needs no resolver.
    """
    if deadline.end is None or _is_ip_literal(host):
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    doing = f"during DNS resolution of {host!r}"
    timeout = deadline.remaining(doing)
    outcome: list[_AddressInfo | BaseException] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller, who re-raises it
            outcome.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=resolve, name="tube-resolve", daemon=True)
    worker.start()
    if not done.wait(timeout):
        raise deadline.expired(doing)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address (``getaddrinfo`` answers at once)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _connect_tcp(host: str, port: int, deadline: _Deadline) -> socket.socket:
    """Resolve ``host`` and connect to its addresses in turn, sharing the deadline."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        addresses = _resolve(host, port, deadline)
    except socket.gaierror as exc:
        raise socket.gaierror(exc.errno, f"cannot resolve host {host!r}: {exc.strerror}") from exc
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining(f"connecting to {where}"))
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise deadline.expired(f"connecting to {where}") from None
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    # Every address failed: report refusal when that is what happened everywhere, else the
    # first error (the most preferred address).
    if errors and all(isinstance(exc, ConnectionRefusedError) for exc in errors):
        first = errors[0]
        raise ConnectionRefusedError(first.errno, f"connection refused by {where}") from first
    if errors:
        first = errors[0]
        raise type(first)(first.errno, f"cannot connect to {where}: {first.strerror}") from first
    raise OSError(f"cannot connect to {where}: no address found")


def _send_all(sock: socket.socket, data: bytes, deadline: _Deadline) -> None:
    """Send the request within the deadline."""
    sock.settimeout(deadline.remaining("before sending the handshake request"))
    try:
        sock.sendall(data)
    except TimeoutError:
        raise deadline.expired("sending the handshake request") from None


def _read_response_head(sock: socket.socket, deadline: _Deadline) -> tuple[Response, bytes]:
    """Read until the response head is complete; return it and the bytes received after it."""
    buffer = bytearray()
    while True:
        # The parser is bounded: an endless or oversized head raises HandshakeError.
        parsed = parse_response_head(buffer)
        if parsed is not None:
            response, consumed = parsed
            return response, bytes(buffer[consumed:])
        sock.settimeout(deadline.remaining("waiting for the handshake response"))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise deadline.expired("waiting for the handshake response") from None
        if not chunk:
            if buffer:
                reason = "the server closed the connection in the middle of its handshake response"
            else:
                reason = "the server closed the connection without answering the handshake"
            raise InvalidHandshake(None, reason, body=bytes(buffer[:_MAX_ERROR_BODY]))
        buffer += chunk


def _read_error_body(
    sock: socket.socket, response: Response, received: bytes, deadline: _Deadline
) -> bytes:
    """Read the start of a refusal's body (at most 4 KiB), best effort and briefly.

    The refusal is certain already: a timeout or a reset here only shortens the explanation.
    """
    if response.status in (204, 304) or 100 <= response.status < 200:
        return b""
    chunked = "chunked" in (get_header(response.headers, "Transfer-Encoding") or "").lower()
    length = get_header(response.headers, "Content-Length")
    want = _MAX_ERROR_BODY
    if length is not None and not chunked:
        with contextlib.suppress(ValueError):
            want = min(int(length), _MAX_ERROR_BODY)
    body = bytearray(received[:want])
    end = time.monotonic() + _ERROR_BODY_GRACE
    if deadline.end is not None:
        end = min(end, deadline.end)
    while len(body) < want and not (chunked and b"0\r\n\r\n" in body):
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            sock.settimeout(left)
            chunk = sock.recv(want - len(body))
        except OSError:
            break
        if not chunk:
            break
        body += chunk
    return decode_chunked(bytes(body)) if chunked else bytes(body)
