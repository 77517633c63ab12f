"""WebSocket URLs (RFC 6455 §3) and the client's redirect policy, without I/O.

:func:`parse_uri` turns a ``ws://`` or ``wss://`` URL into a :class:`WebSocketURI` (host, port,
request target) or raises :class:`~.errors.InvalidURI`, whatever the text: it is the one place
that decides what a client may connect to. :func:`redirect_target` decides whether a redirect
answered to the opening handshake may be followed, and where to;
:func:`headers_for_redirect` drops the credentials that must not follow a redirect to another
origin. A transport's ``connect()`` only does the I/O around them.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import HandshakeRejected, InvalidURI, printable
from .http import Response, get_header_values

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_PORTS",
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "WebSocketURI",
    "headers_for_redirect",
    "parse_uri",
    "redirect_target",
]

#: The default port of each scheme a WebSocket URL or a web origin may use (RFC 6455 §3,
#: RFC 9110 §4.2).
DEFAULT_PORTS: dict[str, int] = {"ws": 80, "wss": 443, "http": 80, "https": 443}

#: How many redirects a client follows at most (when it follows redirects at all).
MAX_REDIRECTS = 10

#: The statuses that carry a ``Location`` to retry the GET at (RFC 9110 §15.4); 300 and 304 do not.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Request headers that carry credentials (lower case): never sent to another origin after a
#: redirect, as browsers do.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

# Characters that may appear in a request target without escaping (RFC 3986 pchar + "/" + "?"),
# plus "%" so that escapes already present in the URL are kept as they are.
_SAFE_PATH = "/%!$&'()*+,;=:@-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


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
    def scheme(self) -> str:
        """``"wss"`` or ``"ws"``."""
        return "wss" if self.secure else "ws"

    @property
    def is_ipv6(self) -> bool:
        """True when :attr:`host` is an IPv6 address literal."""
        return ":" in self.host

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: IPv6 in brackets, the port only when it is not the default."""
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        if self.port != DEFAULT_PORTS[self.scheme]:
            return f"{host}:{self.port}"
        return host

    @property
    def origin(self) -> tuple[bool, str, int]:
        """(secure, host, port): two URLs with the same origin may share credentials."""
        return (self.secure, self.host, self.port)

    @property
    def url(self) -> str:
        """The URL in normal form (scheme and host in lower case, escapes applied)."""
        return f"{self.scheme}://{self.host_header}{self.resource}"


def parse_uri(url: str) -> WebSocketURI:
    """Parse a WebSocket URL.

    Accepted: the ``ws`` and ``wss`` schemes (any case), a host name, an IPv4 literal or an IPv6
    literal in brackets, an optional port (1-65535), a path and a query. Characters that are not
    allowed in a request target (non-ASCII, ...) are percent-encoded; existing escapes are kept.

    Refused with :class:`InvalidURI`: other schemes, a missing host, a fragment (RFC 6455 §3: a
    fragment MUST NOT be used), user information (``user:password@``: credentials in a URL end
    up in logs and shell history; send an ``Authorization`` header instead), IPv6 zone
    identifiers, anything between ``]`` and the port, and control characters or spaces anywhere
    in the URL (they could smuggle extra lines into the request).

    Args:
        url: The URL, for example ``"wss://example.com/chat?room=1"``.

    Returns:
        The parsed URL.

    Raises:
        InvalidURI: ``url`` is not a valid WebSocket URL (whatever the text, never another
            exception); the message says what is wrong.
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
            "pass an Authorization header instead"
        )
    host = _parse_host(url, parts.netloc)
    try:
        port = parts.port
    except ValueError:
        raise InvalidURI(f"{url!r}: the port must be a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORTS[parts.scheme]
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
        # Only ":port" may follow the literal: urlsplit ignores what else does ("[::1]junk"),
        # which would silently connect to port 80 of ::1.
        after = netloc[end + 1 :]
        if after and not after.startswith(":"):
            raise InvalidURI(f"{url!r}: expected ':port' or nothing after ], got {after!r}")
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
    if not ascii_host or not all(char.isalnum() or char in "-._" for char in ascii_host):
        raise InvalidURI(f"{url!r}: {host!r} is not a valid host name")
    return ascii_host


def redirect_target(uri: WebSocketURI, response: Response, *, redirects: int) -> WebSocketURI:
    """Where a redirect answered to a handshake sent to ``uri`` points, if it may be followed.

    The ``Location`` may be relative (RFC 9110 §10.2.2) and may use ``http://``/``https://``
    for the same endpoint (taken as ``ws://``/``wss://``). Refused: more than
    :data:`MAX_REDIRECTS` redirects, a missing, repeated or invalid ``Location``, and a
    redirect from ``wss://`` to ``ws://`` (it would send the request in clear text).

    Args:
        uri: The URL the request was sent to.
        response: The response, with a status in :data:`REDIRECT_STATUSES`.
        redirects: How many redirects were already followed.

    Returns:
        The URL to send the handshake to next.

    Raises:
        HandshakeRejected: The redirect must not be followed; the error carries the response's
            status, headers and body, and the reason says why.
    """
    locations = get_header_values(response.headers, "Location")

    def refuse(reason: str) -> HandshakeRejected:
        return HandshakeRejected(
            response.status, reason, headers=response.headers, body=response.body
        )

    if len(locations) != 1 or not locations[0].strip():
        raise refuse(f"cannot follow the redirect: expected one Location, got {len(locations)}")
    location = locations[0].strip()
    shown = printable(location, 200)  # the peer's text: never raw in a message
    if redirects >= MAX_REDIRECTS:
        raise refuse(f"too many redirects (more than {MAX_REDIRECTS}), the last to {shown}")
    try:
        target = urllib.parse.urljoin(uri.url, location)
        target = urllib.parse.urldefrag(target).url
    except ValueError as exc:  # "ws://[::1": urllib refuses it before parse_uri sees it
        raise refuse(f"cannot follow the redirect to {shown}: {printable(str(exc))}") from None
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        target = ("wss" if scheme.lower() == "https" else "ws") + "://" + rest
    try:
        new = parse_uri(target)
    except InvalidURI as exc:
        raise refuse(f"cannot follow the redirect to {shown}: {exc}") from None
    if uri.secure and not new.secure:
        raise refuse(f"refusing to follow a redirect from wss:// to ws:// ({shown})")
    return new


def headers_for_redirect(
    headers: Sequence[tuple[str, str]], source: WebSocketURI, target: WebSocketURI
) -> list[tuple[str, str]]:
    """The request headers to send after a redirect from ``source`` to ``target``.

    All of them when the origin (scheme, host, port) stays the same; else all but the
    :data:`CREDENTIAL_HEADERS`, which were meant for the first origin only.
    """
    if target.origin == source.origin:
        return list(headers)
    return [(name, value) for name, value in headers if name.lower() not in CREDENTIAL_HEADERS]
