"""The exceptions of the end-to-end layer, in one hierarchy under :class:`E2EError`.

Every one of them is caused by the *remote* side (the peer, or a relay in the middle): a wrong
code, a message that failed authentication, a message of the wrong shape. Local misuse of the API
(a key of the wrong length, a negative size) raises the built-in ``ValueError`` instead, so a
caller can tell "the other side misbehaved" from "my own bug" by the exception type.
"""

from __future__ import annotations

__all__ = ["E2EError", "IntegrityError", "ProtocolViolation", "WrongCode"]


class E2EError(Exception):
    """Base class of every end-to-end failure; the session must end when one is raised."""


class WrongCode(E2EError):
    """The key exchange or its confirmation failed: wrong code, or someone in the middle.

    The two cannot be told apart on purpose (CPace gives an attacker nothing to test offline),
    hence the one message users see.
    """

    def __init__(self, message: str = "wrong code or interference") -> None:
        super().__init__(message)


class IntegrityError(E2EError):
    """A DATA chunk or a sealed control message failed authentication or a sequence check.

    Raised for a bad tag, a wrong or replayed index or counter, a chunk after the final one, a
    truncated frame or a plaintext of the wrong length.
    """


class ProtocolViolation(E2EError):
    """A message of the wrong shape: unknown type, malformed body, reflection or downgrade."""
