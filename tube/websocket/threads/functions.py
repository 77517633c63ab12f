"""The Go package's functions (README, "Go → Python") over a :class:`~.connection.Connection`.

:func:`create_connection` makes an unattached connection; the others send, ping, close and
query it, and may be called from any thread (see the concurrency contract of
:class:`~.connection.Connection`). Each is a thin wrapper over the connection's own method.
"""

from __future__ import annotations

from typing import Any

from ..core.frames import Buffer
from ..core.options import ConnectionOptions
from .connection import Connection

__all__ = [
    "create_connection",
    "initiate_close",
    "is_closing",
    "is_connected",
    "ping",
    "send_blob_data",
    "send_text",
    "wait_until_connected",
]


def create_connection(options: ConnectionOptions | None = None, /, **kwargs: Any) -> Connection:
    """Create a :class:`Connection` not yet linked to a socket (Go: ``CreateConnection``).

    Args:
        options: A :class:`~tube.websocket.ConnectionOptions` built once and shared by many
            connections (a server's); or none, and the options as keyword arguments, with the
            names and defaults of :class:`~tube.websocket.ConnectionOptions`:
            ``close_retry_time`` (2.0 s), ``close_give_up_time`` (10.0 s),
            ``max_message_size`` (1 MiB), ``max_fragments`` (``"auto"``), ``incoming_size``
            (16), ``incoming_bytes`` (4 MiB), ``ping_interval`` (20.0 s), ``ping_timeout``
            (20.0 s), ``send_timeout`` (10.0 s), ``open_timeout`` (10.0 s), ``subprotocols``,
            ``origins``, ``check_origin`` (True), ``extra_headers``, ``compression``
            (``None``: off on a server; ``"deflate"`` or a ``DeflateOptions`` to accept
            permessage-deflate offers; see the README on its memory cost and CRIME/BREACH).
        **kwargs: Options (or, with ``options``, changes to it).

    Returns:
        The connection, unattached: ``connected`` is False until the handshake completes.

    Raises:
        ValueError: An option is out of range.
        TypeError: An unknown option, or an option of the wrong type.
    """
    return Connection(options, **kwargs)


def is_connected(connection: Connection) -> bool:
    """Tell whether the connection is connected and ready to send and receive.

    Returns:
        True when attached to its socket and no close frame has been sent or received yet.
    """
    return connection.connected and not connection.closing


def is_closing(connection: Connection) -> bool:
    """Tell whether the connection is closing or closed.

    Returns:
        True from the moment a close frame is sent (by :func:`initiate_close`, or as the echo
        of the peer's close frame) or the connection fails; False before, and before attaching.
    """
    return connection.closing


def send_blob_data(connection: Connection, data: Buffer) -> None:
    """Send ``data`` as one binary message (the Go package's ``SendBlobData``).

    Args:
        connection: The connection.
        data: ``bytes``, ``bytearray`` or ``memoryview``; a buffer is not copied, so it must not
            change until this call returns.

    Raises:
        ConnectionClosed: The connection is not open, or the write did not finish within
            ``send_timeout`` (the connection is then aborted, close code 1006).
        TypeError: ``data`` is not bytes-like.
    """
    connection.send_binary(data)


def send_text(connection: Connection, text: str) -> None:
    """Send ``text`` as one text message.

    Raises:
        ConnectionClosed: As for :func:`send_blob_data`.
        TypeError: ``text`` is not a ``str``.
    """
    connection.send_text(text)


def ping(connection: Connection, data: Buffer = b"") -> None:
    """Send a ping frame with ``data`` (at most 125 bytes) as payload.

    Raises:
        ValueError: ``data`` is longer than 125 bytes.
        ConnectionClosed: The connection is not open.
    """
    connection.ping(data)


def initiate_close(connection: Connection, code: int = 1000, reason: str = "") -> None:
    """Send a close frame and mark the connection closing (the Go package's ``InitiateClose``).

    If no close frame comes back within ``close_retry_time`` the frame is sent once more; after
    ``close_give_up_time`` the TCP connection is closed whatever happens. Returns once the
    close frame is written (or the connection was aborted). Does nothing if the connection is
    already closing or closed, or was never attached. Messages the peer sent before its close
    frame are still delivered through :attr:`Connection.incoming`.

    Args:
        connection: The connection.
        code: The close code: 1000-1003, 1007-1014 or 3000-4999.
        reason: A short explanation, at most 123 bytes once encoded as UTF-8.

    Raises:
        ValueError: ``code`` may not be sent or ``reason`` is too long.
    """
    connection.initiate_close(code, reason)


def wait_until_connected(connection: Connection, timeout: float | None = None) -> bool:
    """Block until the connection is attached to its socket (Go: ``WaitUntilConnected``).

    Args:
        connection: The connection.
        timeout: Seconds to wait at most; ``None`` waits as long as needed.

    Returns:
        True once the connection has been connected (even if it has closed since: sends then
        raise and :attr:`Connection.incoming` delivers what arrived); False on timeout or when
        the opening handshake failed.
    """
    return connection.wait_until_connected(timeout)
