"""The WebSocket opening handshake (RFC 6455 §4), server and client roles, without I/O.

Server side: :func:`accept_request` checks a parsed request (from
:func:`~.http.parse_request_head`, ``http.server`` or a WSGI environ: anything that gives method,
target, version and header list) and returns the ``101 Switching Protocols`` response, or raises
:class:`~.errors.HandshakeError` carrying the status to answer with; :func:`rejection_response`
turns that error into the response to send.

The client side is in :mod:`.client_handshake`, the checks of the options in
:mod:`.handshake_checks`.

Choices worth knowing (see the function docstrings for the details):

* A request without ``Upgrade: websocket`` or ``Connection: upgrade`` gets **400**, not 426.
  RFC 6455 §4.2.1 asks for "an appropriate error code (such as 400 Bad Request)" when the
  handshake does not match, and §4.4 gives 426 one precise meaning in WebSocket: "unsupported
  ``Sec-WebSocket-Version``", answered with the versions the server speaks. Keeping 426 for that
  single case lets a client tell the two failures apart from the status alone.
* The ``Origin`` check (protection against cross-site WebSocket hijacking) is on by default with a
  same-host policy; see :func:`accept_request`.
* The one extension negotiated is permessage-deflate (RFC 7692), and only when the caller passes
  ``compression=`` options (see :mod:`.deflate`). The agreed parameters are handed back through a
  :class:`Negotiated` object passed as ``negotiated=`` (an out-parameter, so that the return
  values of :func:`accept_request` and :func:`validate_response` stay what existing callers
  unpack); give them to :class:`~.protocol.Protocol` as ``deflate=``. A server declines offers it
  cannot accept (no compression, not an error); a client fails on any extension it did not offer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .deflate import (
    DeflateOptions,
    DeflateParameters,
    server_negotiate,
)
from .errors import HandshakeError
from .extensions import parse_extensions
from .handshake_checks import (
    SUBPROTOCOLS_STRING,
    SubprotocolSelector,
    check_extra_headers,
    check_origins,
)
from .http import (
    BAD_TARGET_RE,
    Headers,
    Request,
    Response,
    is_token,
    quote_peer_text,
    split_list,
)
from .uri import DEFAULT_PORTS

__all__ = [
    "WEBSOCKET_GUID",
    "WEBSOCKET_VERSION",
    "Negotiated",
    "accept_key",
    "accept_request",
    "rejection_response",
]

#: RFC 6455 §1.3: the GUID appended to the client's key before hashing.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The one protocol version this implementation speaks (RFC 6455 §4.1).
WEBSOCKET_VERSION = "13"

# Request headers accept_request looks at; everything else is skipped when indexing.
_WANTED = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-version",
        "sec-websocket-key",
        "origin",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)


@dataclass(slots=True)
class Negotiated:
    """Receives what the handshake negotiated beyond the subprotocol (an out-parameter).

    Pass a fresh one as ``negotiated=`` to :func:`accept_request` or :func:`validate_response`;
    once the call returns, :attr:`deflate` holds the permessage-deflate parameters to give to
    :class:`~.protocol.Protocol` (``deflate=``), or None when the connection is uncompressed.

    Attributes:
        deflate: The negotiated permessage-deflate parameters, or None.
    """

    deflate: DeflateParameters | None = None


def check_compression(
    compression: DeflateOptions | None, negotiated: Negotiated | None, function: str
) -> None:
    """Refuse compression options that the caller could not learn the outcome of."""
    if compression is None:
        return
    if not isinstance(compression, DeflateOptions):
        raise TypeError(f"compression must be DeflateOptions or None, got {compression!r}")
    if not isinstance(negotiated, Negotiated):
        raise ValueError(
            f"{function}(compression=...) needs negotiated=Negotiated() to hand back the "
            "parameters the Protocol must use"
        )


def accept_key(key: str) -> str:
    """Compute the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2).

    Args:
        key: The client's key, as sent (base64 text).

    Returns:
        base64(SHA-1(key + GUID)).

    Raises:
        ValueError: ``key`` holds non-ASCII characters.
    """
    # SHA-1 is what the RFC mandates; it proves the server read the key, it protects nothing.
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid_key(key: str) -> bool:
    """Return True when ``key`` is the canonical base64 encoding of exactly 16 bytes."""
    if len(key) != 24:
        return False
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return False
    # validate=True still accepts non-zero padding bits ("...R==" for "...Q=="); re-encoding
    # makes the check strict.
    return len(raw) == 16 and base64.b64encode(raw).decode("ascii") == key


# --- origin ---------------------------------------------------------------------------------------


_AUTHORITY_RE = re.compile(
    # host: a bracketed IPv6 literal, or a reg-name/IPv4 without delimiters; then an optional port.
    r"(\[[0-9A-Za-z:.%]+\]|[^\[\]/?#@:\s]+)(?::([0-9]{1,5}))?",
    re.ASCII,
)


def _split_authority(authority: str, default_port: int) -> tuple[str, int] | None:
    """Split ``host[:port]`` (IPv6 in brackets) into a lower-cased host and a port.

    A missing port becomes ``default_port``. Returns None when the text is not a valid authority.
    """
    match = _AUTHORITY_RE.fullmatch(authority)
    if match is None:
        return None
    host, port_text = match.groups()
    if port_text is None:
        return host.lower(), default_port
    port = int(port_text)
    if port > 65535:
        return None
    return host.lower(), port


def _is_same_host(origin: str, host: str) -> bool:
    """Return True when the serialized ``origin``'s host and port equal those of ``host``.

    Only ``http``, ``https``, ``ws`` and ``wss`` origins can match. A port missing from either side
    is the default port of the origin's scheme (80 for http/ws, 443 for https/wss), so
    ``https://example.com`` matches ``Host: example.com`` and ``Host: example.com:443``.
    Comparison ignores case.
    """
    scheme, sep, authority = origin.partition("://")
    if not sep or not scheme:
        return False
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        # Only web origins can be "the same host": chrome-extension://<id> and the like never are.
        return False
    default_port = DEFAULT_PORTS[scheme]
    origin_parts = _split_authority(authority, default_port)
    host_parts = _split_authority(host, default_port)
    return origin_parts is not None and origin_parts == host_parts


def _check_origin(origin: str, host: str, allowed: frozenset[str] | None) -> None:
    """Raise 403 unless ``origin`` is allow-listed or on the same host as the request."""
    if allowed is not None and origin.lower() in allowed:
        return
    # "null" (opaque origins: sandboxed iframes, file: pages...) never matches a host.
    if _is_same_host(origin, host):
        return
    raise HandshakeError(403, f"origin not allowed: {origin[:200]}")


# --- subprotocols ---------------------------------------------------------------------------------


def _select_subprotocol(
    offered: list[str],
    subprotocols: Sequence[str] | SubprotocolSelector | None,
) -> str | None:
    """Pick the subprotocol to answer with, or None."""
    if not offered or subprotocols is None:
        return None
    if callable(subprotocols):
        chosen = subprotocols(list(offered))
        if chosen is not None and chosen not in offered:
            raise ValueError(
                f"subprotocol callback returned {chosen!r}, which the client did not offer "
                f"(offered: {offered!r})"
            )
        return chosen
    # Server preference order: the first server-supported protocol that the client offered.
    for candidate in subprotocols:
        if candidate in offered:
            return candidate
    return None


# --- server side ----------------------------------------------------------------------------------


def _http_version(version: str) -> tuple[int, int] | None:
    """Parse ``HTTP/x.y`` into ``(x, y)``, or None."""
    name, slash, number = version.partition("/")
    major, dot, minor = number.partition(".")
    if (
        name != "HTTP"
        or not slash
        or not dot
        or not (major.isascii() and major.isdigit())
        or not (minor.isascii() and minor.isdigit())
    ):
        return None
    return int(major), int(minor)


def describe_values(values: list[str] | None) -> str:
    """Describe what arrived in a header for an error message."""
    if not values:
        return "none"
    return quote_peer_text(", ".join(values))


def accept_request(
    request: Request,
    *,
    subprotocols: Sequence[str] | SubprotocolSelector | None = None,
    origins: Sequence[str] | None = None,
    check_origin: bool = True,
    extra_headers: Sequence[tuple[str, str]] = (),
    compression: DeflateOptions | None = None,
    negotiated: Negotiated | None = None,
) -> tuple[Response, str | None]:
    """Validate a WebSocket opening handshake request and build the 101 response (RFC 6455 §4.2).

    The checks run in this order; the first failure raises with exactly one status:

    1. method ``GET`` (case-sensitive) -- else **405** with ``Allow: GET``;
    2. version HTTP/1.1 or later -- else **505**;
       then a request target without spaces or control characters (TAB, VT, DEL, ...) and no
       request body (``Content-Length`` other than 0, any ``Transfer-Encoding``) -- else **400**;
    3. exactly one non-empty ``Host`` -- else **400**;
    4. ``Upgrade`` holds the token ``websocket`` and ``Connection`` the token ``upgrade``, both
       case-insensitive comma-separated lists (browsers send ``Connection: keep-alive, Upgrade``)
       -- else **400** (see the module docstring for why not 426);
    5. ``Sec-WebSocket-Version: 13`` (exactly) -- else **426** with ``Sec-WebSocket-Version: 13``;
    6. exactly one ``Sec-WebSocket-Key``, the canonical base64 of 16 bytes -- else **400**;
    7. the origin check -- else **403** ``origin not allowed: <origin>``.

    Origin policy (cross-site WebSocket hijacking protection): a request without ``Origin`` is
    accepted (non-browser clients send none). A request with one is accepted when its host and port
    equal those of the ``Host`` header (ASCII case-insensitive; a missing port is the default port
    of the origin's scheme), or when it is listed in ``origins``, or when ``check_origin`` is False.
    ``Origin: null`` (sandboxed frames, ``file:`` pages) is refused unless ``"null"`` is listed.
    Several ``Origin`` headers are refused unless their joined value is listed.

    Subprotocols: the client's ``Sec-WebSocket-Protocol`` elements are matched exactly (they are
    case-sensitive). With a sequence, the first entry the client offered wins (server preference).
    With a callable, it is called with the offered list (only when the client offered some) and
    returns one of them or None. No match means no ``Sec-WebSocket-Protocol`` header, not an error.

    Extensions: without ``compression``, ``Sec-WebSocket-Extensions`` is ignored and the response
    never holds one (RFC 6455 §9.1 lets the server decline every offered extension). With it, the
    first acceptable permessage-deflate offer is accepted (RFC 7692 §5) and answered in the
    response; offers with unknown or repeated parameters or invalid values, and a header that
    does not parse, are declined (the connection is then uncompressed, not refused).

    Args:
        request: The parsed request head.
        subprotocols: Supported subprotocols in preference order, or a selection callback.
        origins: Serialized origins allowed in addition to the same host, such as
            ``"https://example.com"`` (compared ASCII case-insensitively). ``"*"`` is refused: pass
            ``check_origin=False`` to allow every origin.
        check_origin: Set False to skip the origin check entirely (for example behind a proxy that
            already does it, or for a public API that uses no cookies).
        extra_headers: Headers appended to the 101 response.
        compression: permessage-deflate options, or None to decline compression.
        negotiated: Required with ``compression``: receives the negotiated parameters
            (``negotiated.deflate``, None when no offer was accepted).

    Returns:
        ``(response, subprotocol)``: the 101 response to send and the selected subprotocol or None.

    Raises:
        HandshakeError: The request is not an acceptable handshake; send
            :func:`rejection_response` of it and close the connection.
        ValueError: Local misuse: an option is invalid, the callback chose a subprotocol the
            client did not offer, or ``compression`` came without ``negotiated``.
        TypeError: ``origins`` or ``subprotocols`` is a single string instead of a sequence.
    """
    # Validate the local configuration first: misuse must fail identically for every request.
    check_compression(compression, negotiated, "accept_request")
    extra = list(check_extra_headers(extra_headers))
    checked_origins = check_origins(origins)
    allowed = None if checked_origins is None else frozenset(o.lower() for o in checked_origins)
    if isinstance(subprotocols, str):
        raise TypeError(SUBPROTOCOLS_STRING)

    # RFC 6455 §4.1: "The method of the request MUST be GET".
    if request.method != "GET":
        raise HandshakeError(
            405,
            f"expected method GET, got {quote_peer_text(request.method)}",
            headers=[("Allow", "GET")],
        )
    # RFC 6455 §4.1: "the HTTP version MUST be at least 1.1".
    version = _http_version(request.version)
    if version is None or version < (1, 1):
        raise HandshakeError(
            505, f"expected HTTP/1.1 or later, got {quote_peer_text(request.version)}"
        )
    _check_target_and_body(request)

    # One pass over the headers, keeping only the ones we look at.
    index: dict[str, list[str]] = {}
    for name, value in request.headers:
        lname = name.lower()
        if lname in _WANTED:
            values = index.get(lname)
            if values is None:
                index[lname] = [value]
            else:
                values.append(value)

    # RFC 6455 §4.2.1 item 2 (and RFC 9112 §3.2: a request with several Host fields is invalid).
    hosts = index.get("host")
    if not hosts or len(hosts) != 1 or not hosts[0]:
        got = f"{len(hosts)} headers" if hosts and len(hosts) > 1 else describe_values(hosts)
        raise HandshakeError(400, f"expected exactly one non-empty Host header, got {got}")
    # Field values exclude surrounding whitespace (RFC 9110 §5.5); our parser strips it already,
    # other front-ends may not.
    host = hosts[0].strip(" \t")

    # RFC 6455 §4.2.1 items 3 and 4: token lists, compared ASCII case-insensitively.
    upgrade = index.get("upgrade")
    if not has_token(upgrade, "websocket"):
        raise HandshakeError(
            400, f"expected an Upgrade header with 'websocket', got {describe_values(upgrade)}"
        )
    connection = index.get("connection")
    if not has_token(connection, "upgrade"):
        raise HandshakeError(
            400, f"expected a Connection header with 'Upgrade', got {describe_values(connection)}"
        )

    # RFC 6455 §4.2.2 / §4.4: an unsupported version is answered with 426 and the versions we speak.
    versions = index.get("sec-websocket-version")
    if versions is None or len(versions) != 1 or versions[0].strip(" \t") != WEBSOCKET_VERSION:
        raise HandshakeError(
            426,
            f"expected Sec-WebSocket-Version: 13, got {describe_values(versions)}",
            headers=[("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
        )

    # RFC 6455 §4.2.1 item 5: "a base64-encoded value that, when decoded, is 16 bytes in length".
    keys = index.get("sec-websocket-key")
    key = keys[0].strip(" \t") if keys is not None and len(keys) == 1 else ""
    if not is_valid_key(key):
        got = f"{len(keys)} headers" if keys and len(keys) > 1 else describe_values(keys)
        raise HandshakeError(
            400, f"expected Sec-WebSocket-Key to be the base64 encoding of 16 bytes, got {got}"
        )

    # RFC 6455 §10.2: servers that do not want cross-origin use must check Origin.
    origin_values = index.get("origin")
    if check_origin and origin_values is not None:
        _check_origin(", ".join(v.strip(" \t") for v in origin_values), host, allowed)

    offered_values = index.get("sec-websocket-protocol")
    offered = split_list(", ".join(offered_values)) if offered_values else []
    _check_offered(offered)
    subprotocol = _select_subprotocol(offered, subprotocols)

    headers: Headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if negotiated is not None:
        negotiated.deflate = None
    extension_values = index.get("sec-websocket-extensions")
    if compression is not None and negotiated is not None and extension_values:
        try:
            offers = parse_extensions(extension_values)
        except ValueError:
            offers = []  # a malformed header: decline every extension rather than refuse
        accepted = server_negotiate(offers, compression)
        if accepted is not None:
            headers.append(("Sec-WebSocket-Extensions", accepted[0]))
            negotiated.deflate = accepted[1]
    headers.extend(extra)
    return Response(101, "Switching Protocols", headers), subprotocol


def _check_target_and_body(request: Request) -> None:
    """Raise 400 for control bytes in the request target or a request carrying a body."""
    # RFC 9112 §3.2: the target holds no whitespace or control character. A front-end that
    # splits the request line differently (on TAB or VT) would see another target than ours.
    if BAD_TARGET_RE.search(request.target):
        raise HandshakeError(
            400,
            f"expected a request target without spaces or control characters, got "
            f"{quote_peer_text(request.target)}",
        )
    # The handshake is a GET without body (RFC 6455 §4.1); bytes announced as a body would be
    # read as WebSocket frames here and as a body by an intermediary: request smuggling.
    for name, value in request.headers:
        lname = name.lower()
        if lname == "transfer-encoding" or (
            lname == "content-length" and value.strip(" \t") != "0"
        ):
            raise HandshakeError(
                400,
                "expected no request body in a WebSocket handshake, "
                f"got {name}: {quote_peer_text(value)}",
            )


def _check_offered(offered: list[str]) -> None:
    """Raise 400 unless every offered subprotocol is a token (RFC 6455 §4.1 item 10)."""
    for protocol in offered:
        if not is_token(protocol):
            raise HandshakeError(
                400,
                f"expected Sec-WebSocket-Protocol to list tokens, got {quote_peer_text(protocol)}",
            )


def has_token(values: list[str] | None, token: str) -> bool:
    """Return True when the comma-separated lists in ``values`` hold ``token`` (lower-case).

    Tokens compare ASCII case-insensitively (RFC 9110 §7.8 for Upgrade, §7.6.1 for Connection).
    """
    if values is None:
        return False
    for value in values:
        lowered = value.lower()
        # Fast path: the whole value is the token (the usual "Upgrade: websocket").
        if lowered == token or token in split_list(lowered):
            return True
    return False


def rejection_response(error: HandshakeError) -> Response:
    """Build the HTTP response that refuses a handshake.

    Args:
        error: The error :func:`accept_request` (or :func:`~.http.parse_request_head`) raised.

    Returns:
        A response with ``error.status`` and its standard phrase, ``error.headers``, then
        ``Content-Type: text/plain; charset=utf-8``, ``Content-Length`` and ``Connection: close``,
        and the body ``error.reason`` plus a newline, in UTF-8.

    Raises:
        ValueError: ``error`` has no status (a client-side :class:`InvalidHandshake`).
    """
    if error.status is None:
        raise ValueError(f"a handshake error without status cannot be answered: {error}")
    body = (error.reason + "\n").encode("utf-8")
    headers: Headers = list(error.headers)
    headers += [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return Response(error.status, error.status_phrase, headers, body)
