"""What a failed transfer raises: :class:`TransferError` and its family, and the words for
each relay close code.

One place maps a relay close code (or its last ``error`` message) to a :class:`RelayError`
and an end-to-end failure of the peer to the error people read; the rest of the package
raises what these return.
"""

from __future__ import annotations

from typing import Any

from ..e2e.errors import E2EError, IntegrityError, WrongCode
from ..e2e.peer import CANCEL_INTEGRITY, CANCEL_PROTOCOL

__all__ = [
    "IntegrityFailure",
    "RelayError",
    "RelayUnavailable",
    "ResumeFailed",
    "TransferCancelled",
    "TransferError",
    "WrongCodeError",
    "peer_failure",
    "relay_failure",
]

_RELAY_MESSAGES = {
    1001: "the relay is shutting down",
    1006: "the connection to the relay was lost",
    1009: "a message was too big for the relay",
    4000: "the relay reported a protocol error",
    4001: "the relay speaks another protocol version",
    4002: "no such code (already used or expired)",
    4003: "this code is already in use by someone else",
    4004: "rate limited by the relay",
    4005: "nobody came: the code expired unused",
    4006: "the other side is gone",
    4007: "the transfer exceeded the relay's limits",
    4008: "the transfer stalled (the receiver stopped reading)",
    4009: "the relay is busy",
    4010: "the relay no longer knows this transfer (it restarted, or the pause was too long)",
    4011: "the relay refused this web origin",
    4013: "the relay could not route this code",
}

# The reasons of the cancel a peer sends when it fails itself (tube.relay.e2e.peer), in words.
_PEER_FAILURES = {CANCEL_INTEGRITY: "integrity error", CANCEL_PROTOCOL: "protocol error"}


class TransferError(Exception):
    """A transfer failed; ``str(error)`` says why, for people.

    Attributes:
        close_code: The relay's close code behind it, if any.
    """

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class RelayError(TransferError):
    """The relay refused or ended the connection (a close code, an HTTP error).

    Attributes:
        retry_after: Seconds the relay asks to wait before trying again (rate limits), or None.
    """

    def __init__(
        self, message: str, *, close_code: int | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, close_code=close_code)
        self.retry_after = retry_after


class RelayUnavailable(RelayError):
    """The relay cannot be reached (not running, wrong address, network down)."""


class ResumeFailed(RelayError):
    """The connection dropped and the pair could not be resumed (relay restarted, grace over).

    The receiver keeps what it wrote: the same file sent again with a new code continues there.
    """


class WrongCodeError(TransferError):
    """The key confirmation failed: a wrong code, or someone in the middle (one cannot tell)."""


class IntegrityFailure(TransferError):
    """A chunk or control message failed authentication; the partial output was deleted."""


class TransferCancelled(TransferError):
    """The transfer was declined or cancelled.

    A peer that fails once the keys are confirmed (a chunk or message that failed
    authentication, or one it cannot take) cancels with the reason ``"integrity"`` or
    ``"protocol"``: the message then says so ("the receiver stopped: integrity error").

    Args:
        reason: As stated.
        by_peer: True if the other side cancelled, False if this side did.
        peer_role: The other side's role (``"send"`` or ``"recv"``), to name it in the
            message; None says "the other side".

    Attributes:
        reason: As stated (``"declined"`` when the receiver said no; ``"integrity"`` or
            ``"protocol"`` when the other side stopped on a failure of its own).
        by_peer: True if the other side cancelled, False if this side did.
    """

    def __init__(self, reason: str, *, by_peer: bool, peer_role: str | None = None) -> None:
        who = "the other side" if by_peer else "this side"
        if reason == "declined":
            message = "the receiver declined the file" if by_peer else "declined"
        elif by_peer and reason in _PEER_FAILURES:
            peer = {"send": "the sender", "recv": "the receiver"}.get(peer_role or "", who)
            message = f"{peer} stopped: {_PEER_FAILURES[reason]}"
        else:
            message = f"cancelled by {who}: {reason}"
        super().__init__(message)
        self.reason = reason
        self.by_peer = by_peer


def relay_failure(code: int | None, reason: str, error: dict[str, Any] | None) -> RelayError:
    """The error for a connection the relay closed (``error``: its last error message)."""
    if error is not None and isinstance(error.get("code"), int):
        code = error["code"]
        reason = str(error.get("reason", reason))
    retry = error.get("retry_after") if error else None
    retry_after = retry if isinstance(retry, int) and not isinstance(retry, bool) else None
    message = _RELAY_MESSAGES.get(code or 0) or (
        f"the connection to the relay ended ({code}{': ' + reason if reason else ''})"
    )
    if retry_after is not None:
        message += f"; try again in {retry_after} s"
    if code == 4010:
        return ResumeFailed(message, close_code=code)
    return RelayError(message, close_code=code, retry_after=retry_after)


def peer_failure(error: E2EError) -> TransferError:
    """The error for a session the peer's protocol ended (``Failed``): for people."""
    if isinstance(error, WrongCode):
        return WrongCodeError("wrong code or interference")
    if isinstance(error, IntegrityError):
        return IntegrityFailure(f"integrity error: {error}")
    return TransferError(f"protocol error from the other side: {error}")
