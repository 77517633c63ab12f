"""A served connection before its upgrade: TLS, the request head under deadlines, plain answers.

:class:`~.server.Server` reads each connection's opening request itself rather than through
``http.server``, whose ``email``-based header parsing costs about 130 us a head: it receives into
a small buffer with ``recv_into`` and parses with the core's bounded
:func:`~tube.websocket.core.http.parse_request_head`, so the head limits, the statuses (400, 414,
431, ...) and their plain-text reasons are the core's, as under :func:`.upgrade_connection`.

Deadlines: ``deadline`` (a ``time.monotonic()`` value) bounds the TLS handshake and the whole
head together; ``read_timeout`` bounds each wait for bytes. A client that stays silent, or
dribbles its head a byte at a time, is cut off by :exc:`TimeoutError` and holds its thread no
longer than that.

Nothing here keeps a reference to what it read once it returns: the connection's thread goes on
to run the handler for as long as the WebSocket lives, and the head's buffer must not live with it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from ..core.errors import HandshakeError
from ..core.http import (
    MAX_HEADERS,
    MAX_LINE_SIZE,
    Request,
    Response,
    get_header,
    parse_request_head,
)

__all__ = [
    "MAX_HEAD_SIZE",
    "close_socket",
    "plain_response",
    "read_request_head",
    "send_and_close",
    "start_tls",
]

#: The most bytes a head within the core's limits can take: the request line and
#: ``MAX_HEADERS`` header lines of ``MAX_LINE_SIZE`` bytes each with their CRLF, and the blank line.
MAX_HEAD_SIZE = (MAX_HEADERS + 1) * (MAX_LINE_SIZE + 2) + 2

# The first receive buffer: a handshake head is a few hundred bytes (a browser's with cookies
# rarely more than 2-3 KiB). It doubles, up to MAX_HEAD_SIZE, while a longer head is within limits.
_FIRST_BUFFER = 4096


def _wait_limit(deadline: float, read_timeout: float) -> float:
    """Seconds the next wait may take: the read timeout, cut to what is left of the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the request head deadline has passed")
    return min(read_timeout, remaining)


def start_tls(sock: ssl.SSLSocket, deadline: float, read_timeout: float) -> None:
    """Run the server side of the TLS handshake, within the deadlines.

    Raises:
        TimeoutError: The handshake did not end in time.
        OSError: It failed (``ssl.SSLError`` included), or the client left.
    """
    # The ssl module bounds the whole handshake (not each wait) by the socket's timeout.
    sock.settimeout(_wait_limit(deadline, read_timeout))
    sock.do_handshake()


def read_request_head(
    sock: socket.socket, deadline: float, read_timeout: float
) -> tuple[Request, bytes] | None:
    """Receive and parse a request head.

    Args:
        sock: The connected socket (TLS already started); its timeout is changed.
        deadline: ``time.monotonic()`` value by which the whole head must have arrived.
        read_timeout: Seconds allowed for each wait for bytes.

    Returns:
        The request and the bytes received behind its head (a first frame the client did not
        wait to send), or None if the client closed the connection before a whole head.

    Raises:
        HandshakeError: The head is malformed or breaks a limit (its status says which), as soon
            as that is certain.
        TimeoutError: The head did not arrive in time.
        OSError: The connection failed.
    """
    buffer = bytearray(_FIRST_BUFFER)
    size = 0
    while True:
        if size == len(buffer):
            if size >= MAX_HEAD_SIZE:
                # Unreachable while the parser enforces the limits MAX_HEAD_SIZE is made of; a
                # bound of our own all the same, so that the buffer can never grow further.
                raise HandshakeError(431, f"request head longer than {MAX_HEAD_SIZE} bytes")
            buffer += bytes(min(size, MAX_HEAD_SIZE - size))
        sock.settimeout(_wait_limit(deadline, read_timeout))
        with memoryview(buffer) as view:
            received = sock.recv_into(view[size:])
        if not received:
            return None
        start = size
        size += received
        # The parser rescans from the start on each call: call it only when a line may have
        # ended (it answers after at most MAX_HEADERS + 2 lines) or the buffer is full (its
        # limits decide whether to grow), so a client dribbling bytes costs a read per byte, not
        # a rescan per byte.
        if size < len(buffer) and buffer.find(b"\n", start, size) < 0:
            continue
        parsed = parse_request_head(buffer[:size])
        if parsed is not None:
            request, consumed = parsed
            return request, bytes(buffer[consumed:size])


def plain_response(response: Response, method: str) -> bytes:
    """The bytes of a plain-HTTP answer after which the server closes the connection.

    ``Content-Length`` and ``Connection: close`` are added unless present; the body is dropped
    for ``HEAD`` (RFC 9110 §9.3.2), its ``Content-Length`` kept.
    """
    headers = list(response.headers)
    if get_header(headers, "Content-Length") is None:
        headers.append(("Content-Length", str(len(response.body))))
    if get_header(headers, "Connection") is None:
        headers.append(("Connection", "close"))
    body = b"" if method == "HEAD" else response.body
    return Response(response.status, response.reason, headers, body).to_bytes()


# What send_and_close() reads and drops at most before closing: 16 reads of 64 KiB.
_DISCARD_READS = 16
_DISCARD_SIZE = 65536


def send_and_close(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Write ``data`` (``timeout`` seconds at most per wait), end the stream, close the socket.

    A client that went away is no error: there is nobody left to answer.
    """
    with contextlib.suppress(OSError):
        sock.settimeout(timeout)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        _discard_received(sock)
    sock.close()


def _discard_received(sock: socket.socket) -> None:
    """Drop, without waiting, the bytes the client sent that were not read (bounded).

    Closing a socket with unread bytes makes the kernel send a reset instead of a clean end: a
    client that sent more than its head (a body, a head refused for its size) would see its
    connection reset, perhaps before it reads the answer.
    """
    # Non-blocking mode, not MSG_DONTWAIT: with a timeout set, Python polls before each read.
    # The plain socket's methods also under TLS: the TLS session has ended (shutdown).
    socket.socket.setblocking(sock, False)
    for _ in range(_DISCARD_READS):
        try:
            if not socket.socket.recv(sock, _DISCARD_SIZE):
                return
        except OSError:  # BlockingIOError: nothing more for now
            return


def close_socket(sock: socket.socket) -> None:
    """Shut the write side down (FIN after what was written), then close; errors ignored."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    sock.close()
