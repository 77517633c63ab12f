"""Checks of the handshake options, made once when the options are given (never per peer).

:func:`check_extra_headers`, :func:`check_origins` and :func:`check_subprotocols` validate and
normalise what an application passes (``ConnectionOptions`` calls them at creation), so that a
bad value fails at once with ``ValueError``/``TypeError`` instead of dropping every peer later.
The reserved header sets say which headers the handshake sets itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from .http import (
    check_field,
    is_token,
)

__all__ = [
    "RESERVED_REQUEST_HEADERS",
    "RESERVED_RESPONSE_HEADERS",
    "SubprotocolSelector",
    "check_extra_headers",
    "check_origins",
    "check_subprotocols",
]

SubprotocolSelector = Callable[[list[str]], str | None]
"""A callback given the client's offered subprotocols; returns the chosen one or None."""

#: Request headers (lower case) that :func:`build_request` sets itself or that only a response
#: carries: extra request headers may not set them (a client's ``headers=``).
RESERVED_REQUEST_HEADERS = frozenset(
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
#: Response headers (lower case) that :func:`accept_request` sets itself: the server's
#: ``extra_headers`` may not set them.
RESERVED_RESPONSE_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)

# The one message for a single string where a sequence of subprotocols is expected: iterating
# "chat" would offer "c", "h", "a", "t".
SUBPROTOCOLS_STRING = "subprotocols must be a sequence of strings, not a single string"

# A serialized origin (RFC 6454 §6.2): scheme "://" host [":" port], nothing else; the host is
# ASCII (an IDN in its punycode form, as browsers send it) or a bracketed IPv6 literal.
_ORIGIN_RE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)"
    r"(?::[0-9]{1,5})?",
    re.ASCII,
)

# C0 controls (but HTAB, allowed inside a field value) and DEL (RFC 9110 §5.5).
_CONTROL_IN_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_extra_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    *,
    request: bool = False,
) -> tuple[tuple[str, str], ...]:
    """Check headers to add to a handshake; return them as ``(name, value)`` pairs.

    Meant to run once, when the option is given, so that a bad header fails at once rather than
    dropping every peer later.

    Args:
        headers: A mapping or ``(name, value)`` pairs; None means none.
        request: False for the headers a server adds to its 101 response (they may not set
            :data:`RESERVED_RESPONSE_HEADERS`), True for those a client adds to its request
            (they may not set :data:`RESERVED_REQUEST_HEADERS`).

    Returns:
        The headers, in order.

    Raises:
        TypeError: ``headers`` is a string, or a name or value is not a ``str``.
        ValueError: A name is not an HTTP token (RFC 9110 §5.1), a value holds CR, LF, NUL or
            another control character (HTAB excepted, RFC 9110 §5.5) or a character outside
            ISO-8859-1 (a head is ISO-8859-1), or the header is one the handshake sets itself.
    """
    if headers is None:
        return ()
    if isinstance(headers, str | bytes):
        raise TypeError("headers must be a mapping or (name, value) pairs, not a string")
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    reserved = RESERVED_REQUEST_HEADERS if request else RESERVED_RESPONSE_HEADERS
    result: list[tuple[str, str]] = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"expected a (name, value) pair, got {pair!r}")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str, got {name!r}: {value!r}")
        check_field(name, value)  # token name; no CR, LF, NUL (header injection)
        if _CONTROL_IN_VALUE_RE.search(value):
            raise ValueError(
                f"invalid value for header {name}: {value!r} holds a control character"
            )
        if not _is_latin1(value):
            raise ValueError(
                f"invalid value for header {name}: {value!r} holds a character outside "
                "ISO-8859-1 (percent-encode or base64 it)"
            )
        if name.lower() in reserved:
            raise ValueError(
                f"the {name} header is set by the handshake itself; "
                "use the subprotocols= or origin= options where they apply"
            )
        result.append((name, value))
    return tuple(result)


def check_origins(origins: Iterable[str] | None) -> tuple[str, ...] | None:
    """Check the origins a server accepts besides its own host; return them as a tuple.

    Args:
        origins: Serialized origins such as ``"https://example.com"`` or
            ``"http://127.0.0.1:8080"`` (RFC 6454 §6.2: ``scheme://host[:port]``, no path, no
            trailing slash, an IDN in its ASCII form), or ``"null"`` for opaque origins
            (sandboxed frames, ``file:`` pages). None: only the same host.

    Returns:
        The origins, in order, or None.

    Raises:
        TypeError: ``origins`` is a single string (``"https://x"`` would be taken as eight
            one-character origins), or holds something else than strings.
        ValueError: ``"*"`` (pass ``check_origin=False`` to accept every origin) or a value that
            is not a serialized origin.
    """
    if origins is None:
        return None
    if isinstance(origins, str | bytes):
        raise TypeError("origins must be a sequence of origins, not a single string")
    result = tuple(origins)
    for origin in result:
        if not isinstance(origin, str):
            raise TypeError(f"origins must be strings, got {origin!r}")
        if origin == "*":
            raise ValueError('origins may not contain "*"; pass check_origin=False instead')
        if origin != "null" and not _is_serialized_origin(origin):
            raise ValueError(
                f"invalid origin {origin!r}: expected scheme://host[:port] "
                "(for example 'https://example.com'), without path or trailing slash"
            )
    return result


def _is_serialized_origin(origin: str) -> bool:
    """Return True when ``origin`` is ``scheme://host[:port]`` with a port of at most 65535."""
    if _ORIGIN_RE.fullmatch(origin) is None:
        return False
    authority = origin.partition("://")[2]
    port = authority.rpartition(":")[2] if not authority.endswith("]") else ""
    return not (port.isdigit() and int(port) > 65535)


def check_subprotocols(
    subprotocols: Sequence[str] | SubprotocolSelector | None,
) -> tuple[str, ...] | SubprotocolSelector | None:
    """Check the subprotocols option: a sequence of tokens, a selector callable, or None.

    Returns:
        The subprotocols as a tuple (or the callable, or None).

    Raises:
        TypeError: A single string (the same message everywhere), or an entry that is not a
            string.
        ValueError: An entry that is not an HTTP token (RFC 6455 §4.1: subprotocols are tokens),
            or one listed twice.
    """
    if subprotocols is None or callable(subprotocols):
        return subprotocols
    if isinstance(subprotocols, str | bytes):
        raise TypeError(SUBPROTOCOLS_STRING)
    result = tuple(subprotocols)
    for protocol in result:
        if not isinstance(protocol, str):
            raise TypeError(f"subprotocols must be strings, got {protocol!r}")
        if not is_token(protocol):
            raise ValueError(f"invalid subprotocol {protocol!r}: expected an HTTP token")
    if len(set(result)) != len(result):
        raise ValueError(f"subprotocols must be unique, got {list(result)!r}")
    return result


def _is_latin1(text: str) -> bool:
    """Return True when every character of ``text`` is in ISO-8859-1."""
    return text.isascii() or max(text) <= "\xff"
