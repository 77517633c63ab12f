"""The client side of the WebSocket opening handshake (RFC 6455 §4.1), without I/O.

:func:`build_request` makes the request (with a fresh random key) and :func:`validate_response`
checks the server's answer against it; :func:`refusal_error` explains a refusal (a status other
than 101) with what the server said, filtered of control characters.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from .deflate import (
    DeflateOptions,
    client_accept,
    client_offer,
)
from .errors import HandshakeError, HandshakeRejected, InvalidHandshake, printable
from .extensions import parse_extensions
from .handshake import (
    WEBSOCKET_VERSION,
    Negotiated,
    accept_key,
    check_compression,
    describe_values,
    has_token,
    is_valid_key,
)
from .handshake_checks import SUBPROTOCOLS_STRING, check_extra_headers
from .http import (
    BAD_TARGET_RE,
    Headers,
    Request,
    Response,
    check_field,
    get_header,
    is_token,
    split_list,
)
from .uri import REDIRECT_STATUSES

__all__ = ["build_request", "generate_key", "refusal_error", "validate_response"]


def generate_key() -> str:
    """Return a fresh ``Sec-WebSocket-Key``: 16 random bytes from :mod:`secrets`, base64-encoded."""
    # RFC 6455 §4.1: "randomly selected 16-byte value ... base64-encoded".
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


def build_request(
    host: str,
    resource: str,
    *,
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
    key: str | None = None,
    compression: DeflateOptions | None = None,
) -> tuple[Request, str]:
    """Build a client opening handshake request (RFC 6455 §4.1).

    Args:
        host: The ``Host`` header value: the host, with ``:port`` when it is not the default port
            of the scheme (IPv6 addresses in brackets).
        resource: The request target: path and query, starting with ``/``.
        subprotocols: Subprotocols to offer, in preference order (sent comma-joined).
        origin: The ``Origin`` header to send, if any.
        extra_headers: More headers to send; they may not set a header the handshake sets.
        key: The ``Sec-WebSocket-Key`` to use, for tests; by default a fresh random one.
        compression: permessage-deflate options to offer (RFC 7692), or None to offer none; pass
            the same to :func:`validate_response`.

    Returns:
        ``(request, key)``; keep the key for :func:`validate_response`.

    Raises:
        ValueError: An argument is invalid (empty host, a resource not starting with ``/``, a
            subprotocol that is not a token or is repeated, a malformed key, an origin that is
            not printable ASCII, an extra header refused by :func:`check_extra_headers`).
        TypeError: ``subprotocols`` is a single string.
    """
    if not host:
        raise ValueError("host must not be empty")
    if isinstance(subprotocols, str):
        raise TypeError(SUBPROTOCOLS_STRING)
    if key is None:
        key = generate_key()
    elif not is_valid_key(key):
        raise ValueError(f"invalid key {key!r}: expected the base64 encoding of 16 bytes")
    if not resource.startswith("/") or BAD_TARGET_RE.search(resource):
        raise ValueError(f"invalid resource {resource!r}: expected a path starting with '/'")
    headers: Headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
    ]
    if subprotocols:
        # RFC 6455 §4.1 item 10: tokens, all unique.
        for protocol in subprotocols:
            if not is_token(protocol):
                raise ValueError(f"invalid subprotocol {protocol!r}: expected an HTTP token")
        if len(set(subprotocols)) != len(subprotocols):
            raise ValueError(f"subprotocols must be unique, got {list(subprotocols)!r}")
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if origin is not None:
        # RFC 6454 §6.2: a serialized origin is ASCII (an IDN in its punycode form).
        if not origin.isascii() or not origin.isprintable():
            raise ValueError(f"invalid Origin {origin!r}: expected printable ASCII")
        headers.append(("Origin", origin))
    if compression is not None:
        if not isinstance(compression, DeflateOptions):
            raise TypeError(f"compression must be DeflateOptions or None, got {compression!r}")
        headers.append(("Sec-WebSocket-Extensions", client_offer(compression)))
    # Refuse CR, LF and NUL in what the caller gave us (host, origin): header injection.
    for name, value in headers:
        check_field(name, value)
    headers.extend(check_extra_headers(extra_headers, request=True))
    return Request("GET", resource, "HTTP/1.1", headers), key


def validate_response(
    response: Response,
    key: str,
    *,
    subprotocols: Sequence[str] | None = None,
    compression: DeflateOptions | None = None,
    negotiated: Negotiated | None = None,
) -> str | None:
    """Check the server's answer to a request made by :func:`build_request` (RFC 6455 §4.1).

    Args:
        response: The parsed response head (with whatever body bytes the caller has, for errors).
        key: The key returned by :func:`build_request`.
        subprotocols: The subprotocols that were offered.
        compression: The permessage-deflate options that were offered, if any.
        negotiated: Required with ``compression``: receives the negotiated parameters
            (``negotiated.deflate``, None when the server declined).

    Returns:
        The subprotocol the server selected, or None.

    Raises:
        HandshakeRejected: The status is not 101 (see :func:`refusal_error`).
        InvalidHandshake: The 101 is invalid: ``Upgrade`` lacks ``websocket``, ``Connection``
            lacks ``upgrade``, ``Sec-WebSocket-Accept`` is wrong, the server selected a
            subprotocol that was not offered (or several), or it answered with an extension
            that was not offered or with invalid or unoffered permessage-deflate parameters
            (RFC 7692 §7.1). The error carries the response's status, headers and body.
        ValueError: ``compression`` came without ``negotiated``.
    """
    check_compression(compression, negotiated, "validate_response")

    def fail(reason: str) -> HandshakeError:
        return InvalidHandshake(
            response.status, reason, headers=response.headers, body=response.body
        )

    if response.status != 101:
        raise refusal_error(response)

    index: dict[str, list[str]] = {}
    for name, value in response.headers:
        index.setdefault(name.lower(), []).append(value)

    # RFC 6455 §4.1, client requirements on the response, items 2 to 6.
    upgrade = index.get("upgrade")
    if not has_token(upgrade, "websocket"):
        raise fail(f"expected an Upgrade header with 'websocket', got {describe_values(upgrade)}")
    connection = index.get("connection")
    if not has_token(connection, "upgrade"):
        raise fail(
            f"expected a Connection header with 'Upgrade', got {describe_values(connection)}"
        )
    accepts = index.get("sec-websocket-accept")
    expected = accept_key(key)
    if accepts is None or len(accepts) != 1 or accepts[0] != expected:
        raise fail(f"expected Sec-WebSocket-Accept: {expected}, got {describe_values(accepts)}")
    extension_values = index.get("sec-websocket-extensions")
    if negotiated is not None:
        negotiated.deflate = None
    if extension_values is not None:
        if compression is None or negotiated is None:
            raise fail(
                "expected no Sec-WebSocket-Extensions (none was offered), got "
                + describe_values(extension_values)
            )
        try:
            # RFC 7692 §7.1: the client MUST fail the connection on an answer it cannot accept.
            answer = parse_extensions(extension_values)
            negotiated.deflate = client_accept(answer, compression) if answer else None
        except ValueError as error:
            raise fail(
                f"invalid Sec-WebSocket-Extensions {describe_values(extension_values)}: {error}"
            ) from None
    protocols = index.get("sec-websocket-protocol")
    if protocols is None:
        return None
    selected = split_list(", ".join(protocols))
    offered = list(subprotocols or ())
    if len(selected) != 1 or selected[0] not in offered:
        what = f"one of {offered!r}" if offered else "none (none was offered)"
        raise fail(f"expected Sec-WebSocket-Protocol {what}, got {describe_values(protocols)}")
    return selected[0]


def refusal_error(response: Response) -> HandshakeRejected:
    """The error for a handshake answered with a status other than 101.

    The reason is the first line of a short plain-text body when there is one (the usual way a
    server says why it refused), control characters excluded; a redirect names its
    ``Location`` (escaped).

    Args:
        response: The response, with as much of its body as the caller read.

    Returns:
        A :class:`HandshakeRejected` with the response's status, headers and body.
    """
    location = get_header(response.headers, "Location")
    if response.status in REDIRECT_STATUSES and location:
        reason = (
            f"redirected to {printable(location.strip(), 200)} "
            "(pass follow_redirects=True to follow redirects)"
        )
    else:
        reason = _explanation(response.body) or "the server refused the WebSocket upgrade"
    return HandshakeRejected(response.status, reason, headers=response.headers, body=response.body)


def _explanation(body: bytes) -> str:
    """The first line of a short plain-text body, or "" (HTML, binary, control characters)."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""
    if not text or text.startswith("<"):  # HTML: keep it in .body, not in the message
        return ""
    line = text.splitlines()[0].strip()
    return line[:200] if line.isprintable() else ""
