"""Events the sans-I/O :class:`~tube.websocket.core.protocol.Protocol` reports to its transport."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolError

__all__ = [
    "BinaryMessage",
    "CloseReceived",
    "Event",
    "Ping",
    "Pong",
    "ProtocolFailure",
    "TextMessage",
]


@dataclass(slots=True)
class TextMessage:
    """A complete text message, already validated as UTF-8."""

    data: str


@dataclass(slots=True)
class BinaryMessage:
    """A complete binary message."""

    data: bytes


@dataclass(slots=True)
class Ping:
    """A ping arrived; the protocol has already queued the pong that answers it."""

    payload: bytes


@dataclass(slots=True)
class Pong:
    """A pong arrived (solicited or not; RFC 6455 §5.5.3 allows unsolicited pongs)."""

    payload: bytes


@dataclass(slots=True)
class CloseReceived:
    """A close frame arrived; the protocol has already queued the echo if one was due.

    Attributes:
        code: The close code in the frame, or 1005 when the frame carried none.
        reason: The close reason (may be empty).
    """

    code: int
    reason: str


@dataclass(slots=True)
class ProtocolFailure:
    """The peer broke the protocol; nothing after the violation is parsed.

    No close frame is queued yet, and ``Protocol.should_close_transport()`` is still false:
    the violation waits behind the messages received before it (README, "Closing and
    timeouts"). The transport commits it with ``Protocol.fail(error.close_code, error.reason)``
    once the application has taken those messages, or after ``close_give_up_time``
    (:class:`~tube.websocket.core.session.Session` decides when); the close frame is queued and
    the TCP connection closed then.
    """

    error: ProtocolError


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived | ProtocolFailure
