"""Options of a :class:`~.connection.Connection`: their defaults and the argument checks.

Every option is validated when the connection is created (``ValueError`` at once, not at
first use); messages given to the send functions are checked before anything is queued.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.frames import Buffer

__all__ = [
    "DEFAULT_CLOSE_GIVE_UP_TIME",
    "DEFAULT_CLOSE_RETRY_TIME",
    "DEFAULT_INCOMING_BYTES",
    "DEFAULT_INCOMING_SIZE",
    "DEFAULT_OPEN_TIMEOUT",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "SubprotocolSelector",
]

SubprotocolSelector = Callable[[list[str]], str | None]

# Defaults of the options (seconds for times, bytes for sizes). They are documented in
# create_connection's docstring; keep both in sync.
DEFAULT_CLOSE_RETRY_TIME = 2.0
DEFAULT_CLOSE_GIVE_UP_TIME = 10.0
DEFAULT_INCOMING_SIZE = 16
DEFAULT_INCOMING_BYTES = 4 * 1024 * 1024
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_OPEN_TIMEOUT = 10.0


def _check_seconds(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        expected = "a positive number of seconds" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_size(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        expected = "a positive int" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_message(message: object, function: str) -> None:
    if not isinstance(message, str | bytes | bytearray | memoryview):
        raise TypeError(f"{function} takes str or bytes-like data, got {type(message).__name__}")


def _byte_view(data: Buffer) -> Buffer:
    """Make a memoryview of any format count bytes, as the frame length does."""
    if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1):
        return data.cast("B") if data.c_contiguous else data.tobytes()
    return data
