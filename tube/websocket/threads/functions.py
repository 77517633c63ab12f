"""The seed's module functions over a :class:`~.connection.Connection`.

:func:`create_connection` makes an unattached connection; the others send, ping, close and
query it, and may be called from any thread (see the concurrency contract of
:class:`~.connection.Connection`). Each is a thin wrapper over the connection's own method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..core.frames import Buffer
from ..core.protocol import DEFAULT_MAX_MESSAGE_SIZE
from .connection import Connection
from .options import (
    DEFAULT_CLOSE_GIVE_UP_TIME,
    DEFAULT_CLOSE_RETRY_TIME,
    DEFAULT_INCOMING_BYTES,
    DEFAULT_INCOMING_SIZE,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    SubprotocolSelector,
)

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


def create_connection(
    *,
    close_retry_time: float | None = DEFAULT_CLOSE_RETRY_TIME,
    close_give_up_time: float = DEFAULT_CLOSE_GIVE_UP_TIME,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_fragments: int | Literal["auto"] | None = "auto",
    incoming_size: int = DEFAULT_INCOMING_SIZE,
    incoming_bytes: int = DEFAULT_INCOMING_BYTES,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    subprotocols: Sequence[str] | SubprotocolSelector | None = None,
    origins: Sequence[str] | None = None,
    check_origin: bool = True,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> Connection:
    """Create a :class:`Connection` not yet linked to a socket (the seed's ``CreateConnection``).

    Times are in seconds, sizes in bytes. Every option is checked here.

    Args:
        close_retry_time: After :func:`initiate_close`, send the close frame once more if none
            came back within this time (default 2.0). ``None`` disables the retry, which is the
            strict RFC 6455 behaviour (one close frame per side).
        close_give_up_time: Once the closing handshake has started (by either side, or by a
            failure), close the TCP connection after this time whatever happens (default 10.0).
            It also bounds the wait for the peer's EOF after the handshake.
        max_message_size: The largest message accepted (default 1 MiB); a larger one fails
            the connection with 1009. ``None`` removes the limit: only for trusted peers.
        max_fragments: The most frames a message may be split into (1009 beyond); the default
            ``"auto"`` is ``max(1024, max_message_size // 64)`` (no limit if
            ``max_message_size`` is ``None``).
        incoming_size: The bound of :attr:`Connection.incoming` in messages (default 16); the
            reader stops reading the socket at this count and resumes at half of it.
        incoming_bytes: The bound of :attr:`Connection.incoming` in bytes (default 4 MiB); the
            reader stops at this size and resumes at a quarter of it.
        ping_interval: Send a ping after this much silence from the peer (default 20.0);
            ``None`` disables keepalive.
        ping_timeout: Fail the connection with 1011 when nothing at all (any byte counts) has
            arrived within this time after a keepalive ping (default 20.0); ``None`` never fails.
        send_timeout: A send that cannot finish writing within this time aborts the connection
            (1006 locally) and raises :class:`ConnectionClosed` (default 10.0); ``None`` waits
            forever for a peer that does not read.
        open_timeout: The bound of the opening handshake for the client's ``connect()``
            (default 10.0). On the server, ``http.server`` has already read the request when
            :func:`upgrade_connection` runs: bound it with the request handler's ``timeout``
            class attribute instead.
        subprotocols: Supported subprotocols in preference order, or a function choosing one
            from the client's list; ``None`` (default) selects none.
        origins: Origins allowed besides the server's own host (``"https://example.com"``).
        check_origin: Refuse (403) browser requests from other origins (default True).
        extra_headers: Headers added to the 101 response.

    Returns:
        The connection, unattached: ``connected`` is False until the handshake completes.

    Raises:
        ValueError: An option is out of range.
    """
    return Connection(
        close_retry_time=close_retry_time,
        close_give_up_time=close_give_up_time,
        max_message_size=max_message_size,
        max_fragments=max_fragments,
        incoming_size=incoming_size,
        incoming_bytes=incoming_bytes,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        send_timeout=send_timeout,
        open_timeout=open_timeout,
        subprotocols=subprotocols,
        origins=origins,
        check_origin=check_origin,
        extra_headers=extra_headers,
    )


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
    """Send ``data`` as one binary message (the seed's ``SendBlobData``).

    Args:
        connection: The connection.
        data: ``bytes``, ``bytearray`` or ``memoryview``; a buffer is not copied, so it must not
            change until this call returns.

    Raises:
        ConnectionClosed: The connection is not open, or the write did not finish within
            ``send_timeout`` (the connection is then aborted, close code 1006).
        TypeError: ``data`` is not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"send_blob_data takes bytes-like data, got {type(data).__name__}")
    connection._send((data,))


def send_text(connection: Connection, text: str) -> None:
    """Send ``text`` as one text message.

    Raises:
        ConnectionClosed: As for :func:`send_blob_data`.
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"send_text takes a str, got {type(text).__name__}")
    connection._send((text,))


def ping(connection: Connection, data: Buffer = b"") -> None:
    """Send a ping frame with ``data`` (at most 125 bytes) as payload.

    Raises:
        ValueError: ``data`` is longer than 125 bytes.
        ConnectionClosed: The connection is not open.
    """
    connection.ping(data)


def initiate_close(connection: Connection, code: int = 1000, reason: str = "") -> None:
    """Send a close frame and mark the connection closing (the seed's ``InitiateClose``).

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
    connection._initiate_close(code, reason)


def wait_until_connected(connection: Connection, timeout: float | None = None) -> bool:
    """Block until the connection is attached to its socket (the seed's ``WaitUntilConnected``).

    Args:
        connection: The connection.
        timeout: Seconds to wait at most; ``None`` waits as long as needed.

    Returns:
        True once the connection has been connected (even if it has closed since: sends then
        raise and :attr:`Connection.incoming` delivers what arrived); False on timeout or when
        the opening handshake failed.
    """
    return connection.wait_until_connected(timeout)
