"""The Go package's functions for asyncio connections: coroutines where they wait.

``await send_blob_data(c, data)``, ``await send_text(c, text)``,
``await initiate_close(c, code, reason)``, ``await wait_until_connected(c, timeout)``;
:func:`is_connected` and :func:`is_closing` are plain functions. They mean what their threaded
namesakes in :mod:`tube.websocket` mean (``await connection.ping(data)`` waits for a pong).
The package's ``__all__`` lists them.

Concurrency: as :class:`~.connection.Connection`: on the connection's event loop only.
"""

from __future__ import annotations

from ..core.frames import Buffer
from .connection import Connection


def is_connected(connection: Connection) -> bool:
    """True while the connection is open and no close frame was sent or received."""
    return connection.connected and not connection.closing


def is_closing(connection: Connection) -> bool:
    """True from the moment a close frame is sent (ours or the echo) or the connection fails."""
    return connection.closing


async def send_blob_data(connection: Connection, data: Buffer) -> None:
    """Send ``data`` as one binary message (the Go package's ``SendBlobData``).

    Raises:
        ConnectionClosed: The connection is not open, or no byte could be written for
            ``send_timeout`` (the connection is then aborted, close code 1006).
        TypeError: ``data`` is not bytes-like.
    """
    if isinstance(data, str):  # send() would make it a text message
        raise TypeError("send_blob_data takes bytes-like data, got str (see send_text)")
    await connection.send(data)


async def send_text(connection: Connection, text: str) -> None:
    """Send ``text`` as one text message.

    Raises:
        ConnectionClosed: As for :func:`send_blob_data`.
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"send_text takes a str, got {type(text).__name__}")
    await connection.send(text)


async def initiate_close(connection: Connection, code: int = 1000, reason: str = "") -> None:
    """Send a close frame and mark the connection closing (the Go package's ``InitiateClose``).

    Returns once the close frame is written. If no close frame comes back within
    ``close_retry_time`` it is sent once more; after ``close_give_up_time`` the TCP connection
    is closed whatever happens. Does nothing if the connection is already closing or closed.
    Messages the peer sent before its close frame are still delivered by ``incoming``.

    Raises:
        ValueError: ``code`` may not be sent or ``reason`` is too long.
    """
    await connection.initiate_close(code, reason)


async def wait_until_connected(connection: Connection, timeout: float | None = None) -> bool:
    """Wait until the opening handshake is done (Go: ``WaitUntilConnected``).

    Returns:
        True once connected (even if closed since); False on timeout or a failed handshake.
    """
    return await connection.wait_until_connected(timeout)
