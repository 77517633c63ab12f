"""The exceptions Tube raises, in one hierarchy under :class:`WebSocketError`.

Each failure maps to exactly one thing on the wire: a :class:`HandshakeError` carries the HTTP
status to answer with, a :class:`ProtocolError` carries the close code to send. Errors caused by
the *remote* peer (it broke the protocol) are told apart from errors caused by *local* misuse of
the API, which raise the built-in ``ValueError`` / ``TypeError`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeError",
    "HandshakeRejected",
    "InvalidHandshake",
    "InvalidState",
    "InvalidURI",
    "MessageTooBig",
    "OpenTimeout",
    "ProtocolError",
    "WebSocketError",
    "closed_error",
    "printable",
]


# Close codes of a normal end: a requested close, a peer going away, a close frame without code.
_NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})


class WebSocketError(Exception):
    """Base class of every exception raised by Tube."""


def printable(text: str, limit: int | None = None) -> str:
    """``text`` safe to print on a terminal or write to a log: no control characters.

    Every character that is not printable (C0/C1 controls such as ESC, DEL, line breaks, format
    characters such as U+202E) is replaced by its backslash escape (``\\x1b``), so a peer can
    neither inject terminal escape sequences nor forge extra log lines through an error message.

    Args:
        text: Text that may come from the peer.
        limit: Cut ``text`` to this many characters first (``...`` marks the cut), if given.
    """
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    if not text.isprintable():
        text = "".join(
            char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
            for char in text
        )
    return text + "..." if cut else text


class HandshakeError(WebSocketError):
    """The opening handshake failed (base class of the client's handshake errors).

    Raised as such on the server side: :attr:`status` is the HTTP status we answered with and
    :attr:`reason` the plain-text explanation sent as the body. The client raises one of its two
    subclasses, which say what :attr:`status` means there: :class:`HandshakeRejected` (the
    server answered with another status than 101) and :class:`InvalidHandshake` (no valid HTTP
    response, or an invalid 101).

    ``str(error)`` never holds a control character: text that came from the peer (a body, a
    ``Location``, an ``Origin``) is escaped with :func:`printable`.

    Attributes:
        status: HTTP status code: the one sent (server side) or received (client side); None only
            for an :class:`InvalidHandshake` raised before any HTTP response arrived.
        reason: What was wrong, in words a user understands.
        headers: On the server side, extra response headers to send (for example
            ``Sec-WebSocket-Version: 13`` with 426); on the client side, the headers received.
        body: On the client side, the first bytes of the response body, if any.
    """

    def __init__(
        self,
        status: int | None,
        reason: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers: list[tuple[str, str]] = list(headers)
        self.body = body
        super().__init__(status, reason)

    @property
    def status_phrase(self) -> str:
        """The standard reason phrase of :attr:`status` (``"Forbidden"`` for 403)."""
        if self.status is None:
            return ""
        try:
            phrase: str = HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"
        return phrase

    def __str__(self) -> str:
        reason = printable(self.reason)
        text = reason if self.status is None else f"{self.status} {self.status_phrase}: {reason}"
        if self.body:
            # The body is the peer's: escaped, so that it cannot write to a terminal (ESC ...).
            snippet = printable(body_excerpt(self.body))
            if snippet and snippet not in text:
                text = f"{text} ({snippet})"
        return text


#: Longest excerpt of a response body in an error message, in characters.
EXCERPT_LENGTH = 100
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")


def body_excerpt(body: bytes) -> str:
    """A short one-line excerpt of a response body for an error message: an HTML
    page's ``<title>``, or its text without tags; white space collapsed; at most
    :data:`EXCERPT_LENGTH` characters (``...`` marks a cut). Not escaped: see :func:`printable`.
    """
    head = body[:4096]
    title = _TITLE.search(head)
    text = (title.group(1) if title else head).decode("utf-8", "replace")
    if title is None and text.lstrip().startswith("<"):
        text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_LENGTH else text[: EXCERPT_LENGTH - 3] + "..."


class HandshakeRejected(HandshakeError):
    """Client side: the server answered the opening handshake with a status other than 101.

    Attributes:
        status: The status received (403, 404, a redirect not followed, ...).
        headers: The response headers received.
        body: The first bytes (at most 4 KiB) of the response body.
    """

    status: int

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(status, reason, headers=headers, body=body)


class InvalidHandshake(HandshakeError):
    """Client side: no valid HTTP response arrived, or the 101 response is invalid.

    For example: the server closed the connection without answering, answered something that
    is not HTTP, or answered 101 with a wrong ``Sec-WebSocket-Accept`` or a subprotocol or
    extension that was not offered (RFC 6455 §4.1: the client MUST fail the connection).

    Attributes:
        status: The status received (101 for an invalid 101), or None when no HTTP response
            arrived (never 0).
    """


class ProtocolError(WebSocketError):
    """The remote peer broke RFC 6455; the connection is failed with :attr:`close_code`.

    Attributes:
        close_code: The close code sent to the peer (1002, 1007, 1009, ...).
        reason: What was wrong; also sent to the peer as the close reason (kept under 123 bytes).
    """

    close_code: int = 1002

    def __init__(self, reason: str, close_code: int | None = None) -> None:
        if close_code is not None:
            self.close_code = close_code
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"{self.reason} (close code {self.close_code})"


class MessageTooBig(ProtocolError):
    """A frame or message is larger than the configured limit (close code 1009)."""

    close_code = 1009


class ConnectionClosed(WebSocketError):
    """The connection is closed (or closing) and the operation cannot proceed.

    Always raised as one of its two subclasses, :class:`ConnectionClosedOK` or
    :class:`ConnectionClosedError`, built by :func:`closed_error` (the one place that picks).

    Attributes:
        code: The close code that ended the connection: the one received from the peer, 1005 when
            its close frame carried none, 1006 when the connection ended without a close frame.
            While the closing handshake is still under way (:attr:`closing`), the code the side
            that started it sent.
        reason: The close reason that came with :attr:`code` (may be empty).
        initiated_by: ``"local"``, ``"remote"`` or ``None`` when no close handshake was started.
        closing: True when the connection is not closed yet but closing: a send after
            ``initiate_close()`` is refused with the code we closed with, not 1006.
    """

    def __init__(
        self,
        code: int,
        reason: str = "",
        initiated_by: str | None = None,
        *,
        closing: bool = False,
    ) -> None:
        self.code = code
        self.reason = reason
        self.initiated_by = initiated_by
        self.closing = closing
        super().__init__(code, reason, initiated_by)

    @property
    def ok(self) -> bool:
        """True when the connection ended normally (close code 1000 or 1001, or 1005)."""
        return self.code in _NORMAL_CLOSE_CODES

    def __str__(self) -> str:
        reason = f" {self.reason!r}" if self.reason else ""
        if self.closing:
            whose = "our" if self.initiated_by == "local" else "the peer's"
            return f"connection closing at {whose} request: code {self.code}{reason}"
        who = f", closed by the {self.initiated_by} side" if self.initiated_by else ""
        return f"connection closed: code {self.code}{reason}{who}"


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended normally: close code 1000 (normal), 1001 (going away) or 1005 (none)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended abnormally: a protocol error, a timeout, or TCP lost (1006)."""


def closed_error(
    code: int, reason: str = "", initiated_by: str | None = None, *, closing: bool = False
) -> ConnectionClosed:
    """Build the :class:`ConnectionClosed` for how a connection ended (or is ending).

    The one constructor every transport and the core use, so that the same event raises the
    same class with the same text everywhere: :class:`ConnectionClosedOK` for 1000, 1001 and
    1005, :class:`ConnectionClosedError` for anything else (1006 for an abort or a lost TCP
    connection, a send timeout included).

    Args:
        code: The close code (see :attr:`ConnectionClosed.code`).
        reason: The close reason.
        initiated_by: ``"local"``, ``"remote"`` or ``None``.
        closing: The closing handshake is still under way (see :attr:`ConnectionClosed.closing`).
    """
    kind = ConnectionClosedOK if code in _NORMAL_CLOSE_CODES else ConnectionClosedError
    return kind(code, reason, initiated_by, closing=closing)


class InvalidState(WebSocketError, RuntimeError):
    """The API was used in a state that does not allow it (local misuse, never the peer's fault).

    For example: attaching a connection twice, or upgrading with a connection that another
    handshake is already using.
    """


class InvalidURI(WebSocketError, ValueError):
    """A URL given to :func:`connect` is not a valid ``ws://`` or ``wss://`` URL."""


class OpenTimeout(WebSocketError, TimeoutError):
    """The TCP connection, TLS handshake or opening handshake took longer than allowed."""
