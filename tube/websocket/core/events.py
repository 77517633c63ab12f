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
    """The peer broke the protocol; a close frame with ``error.close_code`` has been queued.

    The transport should log the error, send what :meth:`Protocol.data_to_send` returns, and
    close the TCP connection (``Protocol.should_close_transport()`` is now true).
    """

    error: ProtocolError


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived | ProtocolFailure
