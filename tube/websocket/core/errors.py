"""The exceptions Tube raises, in one hierarchy under :class:`WebSocketError`.

Each failure maps to exactly one thing on the wire: a :class:`HandshakeError` carries the HTTP
status to answer with, a :class:`ProtocolError` carries the close code to send. Errors caused by
the *remote* peer (it broke the protocol) are told apart from errors caused by *local* misuse of
the API, which raise the built-in ``ValueError`` / ``TypeError`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeError",
    "InvalidState",
    "InvalidURI",
    "MessageTooBig",
    "OpenTimeout",
    "ProtocolError",
    "WebSocketError",
    "closed_error",
]


# Close codes of a normal end: a requested close, a peer going away, a close frame without code.
_NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})


class WebSocketError(Exception):
    """Base class of every exception raised by Tube."""


class HandshakeError(WebSocketError):
    """The opening handshake failed.

    On the server side, :attr:`status` is the HTTP status to answer with and :attr:`reason` the
    plain-text explanation sent as the body. On the client side, :attr:`status` is the status the
    server answered with (0 when no HTTP response arrived) and :attr:`body` the start of its body.

    Attributes:
        status: HTTP status code.
        reason: What was wrong, in words a user understands.
        headers: Extra response headers (for example ``Sec-WebSocket-Version: 13`` with 426).
        body: On the client side, the first bytes of the response body, if any.
    """

    def __init__(
        self,
        status: int,
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
        try:
            phrase: str = HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"
        return phrase

    def __str__(self) -> str:
        text = f"{self.status} {self.status_phrase}: {self.reason}" if self.status else self.reason
        if self.body:
            snippet = self.body[:200].decode("utf-8", "replace").strip()
            if snippet and snippet not in text:
                text = f"{text} ({snippet})"
        return text


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

    Attributes:
        code: The close code that ended the connection: the one received from the peer, 1005 when
            its close frame carried none, 1006 when the connection ended without a close frame.
        reason: The close reason that came with :attr:`code` (may be empty).
        initiated_by: ``"local"``, ``"remote"`` or ``None`` when no close handshake was started.
    """

    def __init__(self, code: int, reason: str = "", initiated_by: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.initiated_by = initiated_by
        super().__init__(code, reason, initiated_by)

    @property
    def ok(self) -> bool:
        """True when the connection ended normally (close code 1000 or 1001, or 1005)."""
        return self.code in _NORMAL_CLOSE_CODES

    def __str__(self) -> str:
        who = f", closed by the {self.initiated_by} side" if self.initiated_by else ""
        reason = f" {self.reason!r}" if self.reason else ""
        return f"connection closed: code {self.code}{reason}{who}"


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended normally: close code 1000 (normal), 1001 (going away) or 1005 (none)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended abnormally: a protocol error, a timeout, or TCP lost (1006)."""


def closed_error(code: int, reason: str = "", initiated_by: str | None = None) -> ConnectionClosed:
    """The :class:`ConnectionClosed` subclass for how a connection ended (OK or error)."""
    kind = ConnectionClosedOK if code in _NORMAL_CLOSE_CODES else ConnectionClosedError
    return kind(code, reason, initiated_by)


class InvalidState(WebSocketError, RuntimeError):
    """The API was used in a state that does not allow it (local misuse, never the peer's fault).

    For example: attaching a connection twice, or upgrading with a connection that another
    handshake is already using.
    """


class InvalidURI(WebSocketError, ValueError):
    """A URL given to :func:`connect` is not a valid ``ws://`` or ``wss://`` URL."""


class OpenTimeout(WebSocketError, TimeoutError):
    """The TCP connection, TLS handshake or opening handshake took longer than allowed."""
