"""The client side: :func:`connect` opens a WebSocket connection to a ``ws://`` or ``wss://`` URL.

The opening handshake (RFC 6455 §4.1) runs here, on a blocking socket, in the calling thread:
resolve and connect TCP, wrap it in TLS for ``wss://``, send the request built by the core, read
the response head with the core's bounded parser and let the core validate it. Once the server
answered ``101 Switching Protocols``, the socket is handed to the same threaded
:class:`~tube.websocket.threads.connection.Connection` the server side uses, with a
:class:`~tube.websocket.core.protocol.Protocol` in the client role (which masks every frame with
a fresh key, RFC 6455 §5.3).

Everything that happens before the hand-off is bounded by one overall ``open_timeout``: name
resolution excepted (``getaddrinfo`` cannot be interrupted), every connect, TLS handshake, send
and receive gets only the time that is left.

Concurrency: :func:`connect` may be called from any thread; it shares nothing between calls.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import HandshakeError, InvalidURI, OpenTimeout
from ..core.handshake import build_request, validate_response
from ..core.http import Response, get_header, parse_response_head
from ..core.options import DEFAULTS
from ..core.protocol import Role
from .connection import Connection
from .functions import create_connection

__all__ = ["MAX_REDIRECTS", "WebSocketURI", "connect", "parse_uri"]

logger = logging.getLogger("tube.websocket.client")

#: How many redirects :func:`connect` follows at most when ``follow_redirects=True``.
MAX_REDIRECTS = 10

# The statuses that carry a Location to retry the GET at (RFC 9110 §15.4). 300 and 304 do not.
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# How much of a refusal's body is kept for the HandshakeError, in bytes: enough for a sentence
# or a short HTML error page, never an unbounded download.
_MAX_ERROR_BODY = 4096

# How long to wait for the rest of a refusal's body once its head arrived, in seconds. The
# refusal is already certain; this only decides how much of the explanation the user sees.
_ERROR_BODY_GRACE = 1.0

# Header names the handshake itself generates; setting them through ``headers`` would produce a
# request the core cannot vouch for (or hide a mistake), so connect() refuses them.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "origin",
    }
)

# Options of create_connection() that only a server uses: refused rather than silently ignored.
_SERVER_ONLY_OPTIONS = frozenset({"origins", "check_origin", "extra_headers"})

# Headers that carry credentials: never sent to another origin after a redirect.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

# Characters that may appear in a request target without escaping (RFC 3986 pchar + "/" + "?"),
# plus "%" so that escapes already present in the URL are kept as they are.
_SAFE_PATH = "/%!$&'()*+,;=:@-._~"
_SAFE_QUERY = _SAFE_PATH + "?"

_DEFAULT_PORTS = {False: 80, True: 443}


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URL (RFC 6455 §3).

    Attributes:
        secure: True for ``wss://`` (TLS).
        host: The host name (lower case, IDNA-encoded) or IP address literal, without brackets.
        port: The TCP port (80 or 443 when the URL gives none).
        resource: The request target: path (at least ``/``) and ``?query`` when present.
    """

    secure: bool
    host: str
    port: int
    resource: str

    @property
    def is_ipv6(self) -> bool:
        """True when :attr:`host` is an IPv6 address literal."""
        return ":" in self.host

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: IPv6 in brackets, the port only when it is not the default."""
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        if self.port != _DEFAULT_PORTS[self.secure]:
            return f"{host}:{self.port}"
        return host

    @property
    def origin(self) -> tuple[bool, str, int]:
        """(secure, host, port): two URLs with the same origin may share credentials."""
        return (self.secure, self.host, self.port)

    @property
    def url(self) -> str:
        """The URL in normal form (scheme and host in lower case, escapes applied)."""
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{self.host_header}{self.resource}"


def parse_uri(url: str) -> WebSocketURI:
    """Parse a WebSocket URL.

    Accepted: the ``ws`` and ``wss`` schemes (any case), a host name, an IPv4 literal or an IPv6
    literal in brackets, an optional port (1-65535), a path and a query. Characters that are not
    allowed in a request target (spaces, non-ASCII) are percent-encoded; existing escapes are kept.

    Refused with :class:`InvalidURI`: other schemes, a missing host, a fragment (RFC 6455 §3: a
    fragment MUST NOT be used), user information (``user:password@``: credentials in a URL end
    up in logs and shell history; send an ``Authorization`` header through ``headers`` instead),
    IPv6 zone identifiers, and control characters or spaces anywhere in the URL (they could
    smuggle extra lines into the request).

    Args:
        url: The URL, for example ``"wss://example.com/chat?room=1"``.

    Returns:
        The parsed URL.

    Raises:
        InvalidURI: The URL is not a valid WebSocket URL; the message says what is wrong.
    """
    if not isinstance(url, str):
        raise InvalidURI(f"expected the URL as a str, got {type(url).__name__}")
    for char in url:
        if char <= " " or char == "\x7f":
            raise InvalidURI(f"{url!r}: control characters and spaces are not allowed in a URL")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise InvalidURI(f"{url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        shown = f"{parts.scheme}://" if parts.scheme else "none"
        raise InvalidURI(f"{url!r}: expected the scheme ws:// or wss://, got {shown}")
    secure = parts.scheme == "wss"
    # RFC 6455 §3: "Fragment identifiers are meaningless in the context of WebSocket URIs and
    # MUST NOT be used on these URIs." urlsplit drops an empty "#", so look at the text too.
    if parts.fragment or "#" in url:
        raise InvalidURI(f"{url!r}: a WebSocket URL cannot have a #fragment")
    if "@" in parts.netloc:
        raise InvalidURI(
            f"{url!r}: user information (user:password@) is not supported in the URL; "
            "pass an Authorization header with headers= instead"
        )
    host = _parse_host(url, parts.netloc)
    try:
        port = parts.port
    except ValueError:
        raise InvalidURI(f"{url!r}: the port must be a number from 1 to 65535") from None
    if port is None:
        port = _DEFAULT_PORTS[secure]
    elif port == 0:
        raise InvalidURI(f"{url!r}: the port must be a number from 1 to 65535")
    path = urllib.parse.quote(parts.path or "/", safe=_SAFE_PATH)
    if not path.startswith("/"):
        raise InvalidURI(f"{url!r}: the path must start with /")
    resource = path
    if parts.query:
        resource += "?" + urllib.parse.quote(parts.query, safe=_SAFE_QUERY)
    return WebSocketURI(secure=secure, host=host, port=port, resource=resource)


def _parse_host(url: str, netloc: str) -> str:
    """The host part of ``netloc``: validated, lower case, IDNA-encoded, brackets removed."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise InvalidURI(f"{url!r}: unclosed [ in the IPv6 address")
        literal = netloc[1:end]
        if "%" in literal:
            raise InvalidURI(f"{url!r}: IPv6 zone identifiers are not supported")
        try:
            return ipaddress.IPv6Address(literal).compressed
        except ValueError:
            raise InvalidURI(f"{url!r}: {literal!r} is not a valid IPv6 address") from None
    host = netloc.rpartition(":")[0] if ":" in netloc else netloc
    if not host:
        raise InvalidURI(f"{url!r}: the URL has no host")
    if "[" in host or "]" in host:
        raise InvalidURI(f"{url!r}: brackets are only allowed around an IPv6 address")
    try:
        # Internationalised names go on the wire (DNS, Host, TLS SNI) in their ASCII form.
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidURI(f"{url!r}: {host!r} is not a valid host name") from None
    if not all(char.isalnum() or char in "-._" for char in ascii_host):
        raise InvalidURI(f"{url!r}: {host!r} is not a valid host name")
    return ascii_host


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
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float | None = DEFAULTS.open_timeout,
    follow_redirects: bool = False,
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
        ssl_context: TLS settings for ``wss://``. By default, ``ssl.create_default_context()``:
            the server's certificate is verified against the system's CAs and its host name.
            Passing one with a ``ws://`` URL raises ``ValueError``.
        open_timeout: Seconds allowed for the whole opening: TCP connect, TLS handshake,
            request, response, and every redirect followed. ``None`` waits forever. Name
            resolution is not bounded by it (the system resolver cannot be interrupted).
        follow_redirects: Follow 301/302/303/307/308 responses with a ``Location``, at most
            :data:`MAX_REDIRECTS` times; never from ``wss://`` to ``ws://``; ``Authorization``,
            ``Cookie`` and ``Proxy-Authorization`` headers are dropped when the redirect leaves
            the origin (scheme, host, port). Off by default: a redirect is then a
            :class:`HandshakeError` that names the ``Location``.
        **connection_options: Passed to :func:`create_connection`: ``max_message_size``,
            ``incoming_size``, ``ping_interval``, ``ping_timeout``, ``send_timeout``,
            ``close_retry_time``, ``close_give_up_time``, ... Checked before any network I/O.

    Returns:
        The open connection (``is_connected(connection)`` is True).

    Raises:
        InvalidURI: ``url`` (or a redirect's ``Location``) is not a valid WebSocket URL.
        ValueError: An invalid option or a reserved header in ``headers``.
        socket.gaierror: The host name cannot be resolved ("cannot resolve host ...").
        ConnectionRefusedError: Nothing listens on that port ("connection refused by ...").
        OSError: Any other network failure (unreachable host, reset connection, ...).
        ssl.SSLError: The TLS handshake failed, e.g. ``ssl.SSLCertVerificationError`` for a
            certificate that cannot be verified.
        OpenTimeout: ``open_timeout`` expired (a ``TimeoutError``); the message says during
            which step.
        HandshakeError: The server did not accept the upgrade: :attr:`~HandshakeError.status`
            is its HTTP status (0 when it sent no valid HTTP response), and
            :attr:`~HandshakeError.headers` and :attr:`~HandshakeError.body` (at most 4 KiB)
            come from its response. ``str(error)`` reads like ``403 Forbidden: origin not
            allowed``.
    """
    uri = parse_uri(url)
    if ssl_context is not None and not uri.secure:
        raise ValueError("ssl_context is only used with wss:// URLs, got a ws:// URL")
    if open_timeout is not None and not open_timeout > 0:
        raise ValueError(
            f"open_timeout must be a positive number of seconds or None, got {open_timeout!r}"
        )
    extra_headers = _check_headers(headers)
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols must be a sequence of strings, not one string")
    offered = list(subprotocols) if subprotocols is not None else None
    server_only = sorted(_SERVER_ONLY_OPTIONS.intersection(connection_options))
    if server_only:
        raise TypeError(f"connect() does not take the server-side options {server_only}")
    # Options are checked (ValueError) before anything touches the network. The connection
    # keeps the client's open_timeout and offered subprotocols, for the record.
    connection = create_connection(
        open_timeout=open_timeout, subprotocols=offered, **connection_options
    )
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
        sock = _open_socket(uri, ssl_context if uri.secure else None, deadline)
        try:
            request, key = build_request(
                uri.host_header,
                uri.resource,
                subprotocols=offered,
                origin=origin,
                extra_headers=extra_headers,
            )
            _send_all(sock, request.to_bytes(), deadline)
            response, rest = _read_response_head(sock, deadline)
            if response.status != 101:
                location = get_header(response.headers, "Location")
                if response.status in _REDIRECT_STATUSES and location and follow_redirects:
                    target = _redirect_target(uri, response, location, redirects)
                    if target.origin != uri.origin:
                        # Credentials were meant for the first origin only (like browsers do).
                        extra_headers = [
                            (name, value)
                            for name, value in extra_headers
                            if name.lower() not in _CREDENTIAL_HEADERS
                        ]
                    logger.debug("redirected from %s to %s", uri.url, target.url)
                    uri = target
                    redirects += 1
                    sock.close()
                    continue
                response.body = _read_error_body(sock, response, rest, deadline)
                raise _refusal(response, location)
            subprotocol = validate_response(response, key, subprotocols=offered)
        except BaseException:
            sock.close()
            raise
        break

    # From here on the connection is open: frames may already follow the 101 response in
    # ``rest`` (a server may send its first message at once); they are handed over, not lost.
    sock.settimeout(None)
    # The same limits as on the server side; the client role masks every frame it sends with a
    # fresh key (RFC 6455 §5.3) and refuses masked frames from the server (§5.1).
    protocol = connection.options.make_protocol(Role.CLIENT)
    try:
        connection._open(sock, protocol, initial_data=rest, subprotocol=subprotocol)
    except BaseException:
        sock.close()
        raise
    logger.debug("connected to %s (subprotocol %r)", uri.url, subprotocol)
    return connection


def _check_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """Normalise ``headers`` to pairs; refuse reserved names and line breaks (header injection)."""
    if headers is None:
        return []
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str, got {name!r}: {value!r}")
        if not name or any(char in name for char in " \t\r\n:"):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"invalid header value for {name}: line breaks are not allowed")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(
                f"the {name} header is set by the handshake itself; "
                "use the subprotocols= or origin= arguments where they apply"
            )
    return pairs


def _open_socket(
    uri: WebSocketURI, ssl_context: ssl.SSLContext | None, deadline: _Deadline
) -> socket.socket:
    """Connect TCP (and TLS for wss://) to ``uri`` within the deadline."""
    sock = _connect_tcp(uri.host, uri.port, deadline)
    try:
        # Frames are written whole; Nagle would only delay small messages and pings.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not uri.secure:
            return sock
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
        sock.settimeout(deadline.remaining("before the TLS handshake"))
        try:
            # server_hostname drives SNI and the certificate's host name check (IP literals are
            # checked against the certificate's IP addresses).
            return context.wrap_socket(sock, server_hostname=uri.host)
        except TimeoutError:
            raise deadline.expired(f"during the TLS handshake with {uri.host_header}") from None
    except BaseException:
        sock.close()
        raise


def _connect_tcp(host: str, port: int, deadline: _Deadline) -> socket.socket:
    """Resolve ``host`` and connect to its addresses in turn, sharing the deadline."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
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
            raise HandshakeError(0, reason, body=bytes(buffer[:_MAX_ERROR_BODY]))
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
    return _dechunk(bytes(body)) if chunked else bytes(body)


def _dechunk(data: bytes) -> bytes:
    """Decode the complete chunks of a chunked body (RFC 9112 §7.1), ignoring the rest."""
    out = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            break
        try:
            size = int(data[position:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            break
        if size == 0:
            break
        start = line_end + 2
        out += data[start : start + size]
        if start + size + 2 > len(data):
            break
        position = start + size + 2
    return bytes(out)


def _refusal(response: Response, location: str | None) -> HandshakeError:
    """The HandshakeError for a response other than 101, explained by its body when it can be."""
    if response.status in _REDIRECT_STATUSES and location:
        reason = f"redirected to {location} (pass follow_redirects=True to follow redirects)"
    else:
        reason = _explanation(response.body) or "the server refused the WebSocket upgrade"
    return HandshakeError(response.status, reason, headers=response.headers, body=response.body)


def _explanation(body: bytes) -> str:
    """The first line of a short plain-text body, the usual way a server says why it refused."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""
    if not text or text.startswith("<"):  # HTML: keep it in .body, not in the message
        return ""
    line = text.splitlines()[0].strip()
    return line[:200] if line.isprintable() else ""


def _redirect_target(
    uri: WebSocketURI, response: Response, location: str, redirects: int
) -> WebSocketURI:
    """Where a redirect points to, or HandshakeError if it must not be followed."""
    if redirects >= MAX_REDIRECTS:
        raise HandshakeError(
            response.status,
            f"too many redirects (more than {MAX_REDIRECTS}), the last to {location}",
            headers=response.headers,
        )
    # Location may be relative (RFC 9110 §10.2.2) and may use http(s):// for the same endpoint.
    target = urllib.parse.urljoin(uri.url, location.strip())
    target = urllib.parse.urldefrag(target).url
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        target = ("wss" if scheme.lower() == "https" else "ws") + "://" + rest
    try:
        new = parse_uri(target)
    except InvalidURI as exc:
        raise HandshakeError(
            response.status,
            f"cannot follow the redirect to {location!r}: {exc}",
            headers=response.headers,
        ) from None
    if uri.secure and not new.secure:
        raise HandshakeError(
            response.status,
            f"refusing to follow a redirect from wss:// to ws:// ({location})",
            headers=response.headers,
        )
    return new
