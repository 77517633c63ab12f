"""What the life cycle asks a transport to do, and the no-progress rule of sending.

:class:`~.session.Session` returns these actions from every call; the transport carries them out
in order (the table in the session's module docstring). :class:`SendWatch` is ``send_timeout`` as
time without progress, kept by whoever writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConnectionClosed, closed_error
from .frames import Buffer

__all__ = [
    "Abort",
    "Action",
    "CloseTransport",
    "DeferEnd",
    "EndIncoming",
    "SendWatch",
    "Write",
    "send_timeout_reason",
]


@dataclass(slots=True, frozen=True)
class Write:
    """Write these buffers, in order, after anything written before."""

    chunks: list[Buffer]


@dataclass(slots=True, frozen=True)
class DeferEnd:
    """A peer's violation or close frame waits behind the messages before it.

    The end is in effect the next item of ``incoming``: when the application asks for it (the
    channel is drained), the transport calls :meth:`Session.end_reached`. The session commits it
    by itself at its deadline if the application does not come back. Nothing after it is
    parsed; ``stop_reading`` (a violation) asks the transport to stop reading too, so that TCP
    pushes back on a peer that goes on sending (after a close frame it reads on, to see the
    peer's EOF).
    """

    stop_reading: bool


@dataclass(slots=True, frozen=True)
class EndIncoming:
    """No message can arrive any more: ``incoming`` ends once the messages in it are taken.

    ``close_code``, ``close_reason`` and the initiator are final (also on the session).
    """

    code: int
    reason: str
    initiated_by: str | None

    def error(self) -> ConnectionClosed:
        """The exception ``incoming`` raises at its end (one constructor for all)."""
        return closed_error(self.code, self.reason, self.initiated_by)


@dataclass(slots=True, frozen=True)
class CloseTransport:
    """This end closes TCP now, after what is written (RFC 6455 §7.1.1: the server first, and
    either side after a failure). A server shuts its write side and reads until the peer's EOF;
    the give-up deadline bounds that."""


@dataclass(slots=True, frozen=True)
class Abort:
    """Drop TCP now, both ways (the close did not finish in time, the opening handshake took
    too long, a keepalive timeout). ``reason`` is the close reason if the end is 1006."""

    reason: str


Action = Write | DeferEnd | EndIncoming | CloseTransport | Abort


def send_timeout_reason(timeout: float | None) -> str:
    """The close reason of a connection aborted by ``send_timeout`` (same text everywhere)."""
    return f"send timed out: no byte could be written for {timeout} s (the peer is not reading)"


class SendWatch:
    """``send_timeout`` as time without progress, for whoever writes.

    The writer reports when it finds the write side full (:meth:`blocked`) and when bytes leave
    (:meth:`progressed`); the deadline is ``send_timeout`` after the first block with no progress
    since. A slow reader that keeps taking bytes is never aborted. A threaded writer keeps one
    per connection under its write lock (it is the one thread that waits on a full socket); an
    event loop's send path under its loop.

    Args:
        timeout: ``send_timeout`` in seconds; ``None`` never expires.
    """

    __slots__ = ("deadline", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        #: When the write side, full since the last progress, counts as stuck (or None).
        self.deadline: float | None = None

    def blocked(self, now: float) -> float | None:
        """The write side is full: start the deadline if not running; return it."""
        if self.deadline is None and self.timeout is not None:
            self.deadline = now + self.timeout
        return self.deadline

    def progressed(self) -> None:
        """Some bytes left: the deadline starts again at the next block."""
        self.deadline = None

    def expired(self, now: float) -> bool:
        """True once no byte could be written for ``send_timeout``."""
        return self.deadline is not None and now >= self.deadline

    @property
    def reason(self) -> str:
        """The abort reason to record."""
        return send_timeout_reason(self.timeout)
