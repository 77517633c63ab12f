"""Upgrade a request of the standard library's ``http.server`` to a WebSocket connection.

:func:`upgrade_connection` is the Go package's ``UpgradeConnection``: called from a request
handler's ``do_GET``, it validates the opening handshake, answers it, and **hijacks** the socket:
from then on only the :class:`~tube.websocket.Connection` uses it. The handler then returns
normally; the HTTP server neither reads, writes, nor shuts down or closes that socket.

How the hijack works with ``socketserver``:

* ``handler.close_connection = True`` stops ``handle()`` from reading another request;
* once the handler returns, ``socketserver`` calls ``server.shutdown_request(sock)``, which
  would shut the socket down and close it. The first upgrade on a server instance installs a
  wrapper of that method on the instance which skips the sockets registered as hijacked (this
  works for TLS sockets too, whose SSL state must stay inside the ``ssl.SSLSocket``);
* bytes that ``handler.rfile`` already buffered behind the request head (a client may send its
  first frame in the same packet as the handshake) are taken without blocking and fed to the
  protocol before anything read from the socket.

Head limits: ``http.server`` accepts request lines and header lines of up to 64 KiB, bare LF
line ends and obsolete line folding. :func:`upgrade_connection` re-checks what it parsed against
the core's rules (:mod:`tube.websocket.core.http`) before accepting, whatever the handler class:
414 for a request line over 8 KiB, 431 for a header line over 8 KiB or more than 128 headers, 400
for a bare LF, obs-fold, a NUL or a malformed header line, with a plain-text reason. Under a
plain ``BaseHTTPRequestHandler`` a bare LF can only be seen on the request line (``http.server``
drops header line ends); :class:`WebSocketRequestHandler` records the raw header lines and
refuses a bare LF on any of them.

Handshake timeout: ``http.server`` reads the request head before :func:`upgrade_connection`
runs, so the deadline on a slow or silent client belongs to the handler. Derive handlers that
face untrusted clients from :class:`WebSocketRequestHandler`: it bounds both the silence between
two reads (``timeout``) and the time to receive a whole request head (``request_head_timeout``),
so a client that dribbles one byte at a time cannot hold a thread for ever. The socket's
timeout is reset when the connection takes it over.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
import socketserver
import ssl
import threading
import weakref
from http.server import BaseHTTPRequestHandler

from ..core.errors import HandshakeError
from ..core.handshake import rejection_response
from ..core.http import MAX_HEADERS, MAX_LINE_SIZE, Request, is_token, quote_peer_text
from ..core.protocol import Role
from ..threads.connection import Connection
from ..threads.timers import Timer, call_later
from . import shutdown

__all__ = ["WebSocketRequestHandler", "upgrade_connection"]

logger = logging.getLogger("tube.websocket")

_install_lock = threading.Lock()
_hijacked_by_server: weakref.WeakKeyDictionary[socketserver.BaseServer, set[object]] = (
    weakref.WeakKeyDictionary()
)


def upgrade_connection(handler: BaseHTTPRequestHandler, connection: Connection) -> None:
    """Answer a WebSocket opening handshake and hand the socket over to ``connection``.

    Call it from the handler's ``do_GET`` (the Go package's ``UpgradeConnection``). On success the
    101 response is written, ``connection`` is attached (its reader thread runs, ``connected``
    is True) and the handler should return; it may also keep running application code first.

    Args:
        handler: The ``http.server.BaseHTTPRequestHandler`` serving the request.
        connection: A connection from :func:`~tube.websocket.create_connection`, not yet used;
            its ``subprotocols``, ``origins``, ``check_origin``, ``extra_headers`` and
            ``compression`` options decide the handshake.

    Raises:
        HandshakeError: The request is not an acceptable WebSocket handshake. The client has
            already been answered with the error's HTTP status (400, 403, 405, 414, 426, 431,
            505) and a plain-text body saying why; the handler should just return.
        InvalidState: ``connection`` was already used (or is being upgraded by another thread).
        OSError: The socket failed while writing the 101 response.
    """
    connection._begin_opening()
    options = connection.options
    try:
        request = _parsed_request(handler)
        response, subprotocol, deflate = options.accept(request)
    except HandshakeError as error:
        logger.info(
            "refused WebSocket handshake from %s for %s: %s",
            handler.client_address[0],
            handler.path,
            error,
        )
        connection._opening_failed()
        _reject(handler, error)
        raise
    except Exception:
        # Local misuse (a subprotocol callback returning an unoffered name, bad options):
        # the connection will never open; the error propagates like any bug in a handler.
        connection._opening_failed()
        raise

    sock: socket.socket = handler.connection
    hijacked = _hijacked_sockets(handler.server)
    handler.close_connection = True
    try:
        protocol = options.make_protocol(Role.SERVER, deflate)
        handler.wfile.write(response.to_bytes())
        handler.wfile.flush()
    except Exception:
        connection._opening_failed()
        raise
    handler.log_request(101)
    initial_data = _take_buffered(handler, sock)
    _detach_files(handler)
    connection._open(sock, protocol, initial_data=initial_data, subprotocol=subprotocol)
    # Registered only once the connection owns the socket (if attaching failed, http.server
    # closes it as usual); socketserver looks only after the handler has returned.
    if hijacked is not None:
        hijacked.add(sock)
    # Known to the process, so that a stopping server closes it with 1001 (shutdown.py).
    shutdown.register(connection, "http.server")


# A line break followed by a space or tab inside a header value: obsolete line folding.
_OBS_FOLD_RE = re.compile(r"\r?\n[ \t]")


def _parsed_request(handler: BaseHTTPRequestHandler) -> Request:
    """The request ``http.server`` parsed, held to the core's head rules (else HandshakeError).

    ``http.server`` is laxer than :func:`~tube.websocket.core.http.parse_request_head`: 64 KiB
    lines, bare LF, obs-fold. The same limits and statuses must hold whichever front-end read
    the head, so the parsed head is re-checked here, in the order the core's parser checks.
    """
    raw_line: bytes = getattr(handler, "raw_requestline", b"") or b""
    line = handler.requestline
    # RFC 9112 §2.2: a bare LF is refused, as the core does (a request-smuggling vector).
    # raw_requestline is http.server's; the header lines only WebSocketRequestHandler records.
    recorded: list[bytes] | None = getattr(handler, "_tube_head_lines", None)
    lines = [raw_line] if raw_line else []
    lines += recorded or ()
    if any(not raw.endswith(b"\r\n") or b"\r" in raw[:-2] for raw in lines):
        raise HandshakeError(400, "expected CRLF line endings, got a bare CR or LF")
    if "\x00" in line:
        raise HandshakeError(400, "NUL byte in the message head")
    if len(line) > MAX_LINE_SIZE:
        raise HandshakeError(414, f"request line longer than {MAX_LINE_SIZE} bytes")
    headers = [(name, str(value)) for name, value in handler.headers.raw_items()]
    if len(headers) > MAX_HEADERS:
        raise HandshakeError(431, f"more than {MAX_HEADERS} header lines")
    for name, value in headers:
        if _OBS_FOLD_RE.search(value):
            # RFC 9112 §5.2: a server MUST either reject obs-fold or replace it; we reject.
            raise HandshakeError(400, "obsolete line folding is not supported")
        if "\r" in value or "\n" in value:
            raise HandshakeError(400, "expected CRLF line endings, got a bare CR or LF")
        if "\x00" in name or "\x00" in value:
            raise HandshakeError(400, "NUL byte in the message head")
        # "name:value" is the shortest the line can have been: never refuse what the core takes.
        if len(name) + 1 + len(value) > MAX_LINE_SIZE:
            raise HandshakeError(431, f"header line longer than {MAX_LINE_SIZE} bytes")
        if not is_token(name):
            raise HandshakeError(
                400,
                f"expected a header line 'name: value', got {quote_peer_text(name + ':' + value)}",
            )
    # A line without a colon ends http.server's headers: the rest, unseen, is the "payload".
    if handler.headers.defects or handler.headers.get_payload():
        raise HandshakeError(400, "expected header lines 'name: value', got a malformed line")
    request = Request(handler.command, handler.path, handler.request_version, headers)
    request.remote_address = handler.client_address
    return request


def _detach_files(handler: BaseHTTPRequestHandler) -> None:
    """Close the handler's file objects on the socket and put inert ones in their place.

    Closing them here, in the handler thread and before the reader thread exists, matters:
    ``socket.close()`` and the files' ``close()`` share an unlocked reference count, and a close
    racing with ``handler.finish()`` in another thread could leave the socket open for ever.
    The replacements keep the rest of ``http.server`` working (``finish()`` flushes and closes
    them) while guaranteeing it never touches the socket again: reads see EOF, writes raise.
    """
    rfile, wfile = handler.rfile, handler.wfile
    handler.rfile = io.BytesIO()
    handler.wfile = _HijackedWriter()
    wfile.close()
    rfile.close()


class _HijackedWriter(io.BufferedIOBase):
    """``handler.wfile`` after the upgrade: the socket belongs to the WebSocket connection."""

    def writable(self) -> bool:
        return True

    def write(self, data: object, /) -> int:
        raise OSError("this socket was upgraded to a WebSocket connection: use the Connection")


def _reject(handler: BaseHTTPRequestHandler, error: HandshakeError) -> None:
    """Send the refusal (status, headers, plain-text body) through the handler."""
    response = rejection_response(error)
    handler.close_connection = True
    try:
        handler.send_response(response.status, response.reason)
        for name, value in response.headers:
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(response.body)
        handler.wfile.flush()
    except OSError:
        pass  # the client is gone; the HandshakeError still tells the application why


def _take_buffered(handler: BaseHTTPRequestHandler, sock: socket.socket) -> bytes:
    """Return the bytes ``handler.rfile`` read ahead of the request head, without blocking."""
    read1 = getattr(handler.rfile, "read1", None)
    if read1 is None:
        return b""  # an unbuffered rfile holds nothing back
    # Non-blocking, so that an empty read-ahead buffer makes read1 return at once instead of
    # waiting for the client; the connection sets the mode it needs right after. One call:
    # read1 returns the buffered bytes without touching the socket when there are some, else
    # makes one bounded read (a flooding client cannot make this loop).
    sock.setblocking(False)
    try:
        data = read1(65536)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return b""  # nothing buffered and nothing waiting on the socket
    except OSError:
        return b""  # the socket failed: the reader thread will see it at its first read
    return bytes(data) if data else b""


def _hijacked_sockets(server: object) -> set[object] | None:
    """Return the set of hijacked sockets of ``server``, installing the skip wrapper once."""
    if not isinstance(server, socketserver.BaseServer):
        return None  # not served by socketserver: nobody will shut the socket down for us
    with _install_lock:
        sockets = _hijacked_by_server.get(server)
        if sockets is None:
            sockets = set()
            original = server.shutdown_request
            hijacked = sockets

            def shutdown_request(request: socket.socket | tuple[bytes, socket.socket]) -> None:
                # socketserver calls this after the handler returns; a hijacked socket
                # belongs to its Connection now.
                if request in hijacked:
                    hijacked.discard(request)
                    return
                original(request)

            server.shutdown_request = shutdown_request  # type: ignore[method-assign]
            _hijacked_by_server[server] = sockets
    return sockets


class WebSocketRequestHandler(BaseHTTPRequestHandler):
    """A ``BaseHTTPRequestHandler`` with deadlines on reading requests, for untrusted clients.

    Use it as the base class of handlers that call :func:`upgrade_connection`. ``http.server``
    has no deadline of its own: a client that opens a connection and sends nothing, or sends
    its request head one byte at a time, holds a server thread for as long as it likes.

    Attributes:
        timeout: Seconds of silence allowed while reading a request (``socketserver`` applies it
            to the socket); also closes idle keep-alive connections.
        request_head_timeout: Seconds allowed to receive a whole request head, counted from the
            first read. Past it the socket is shut down and the handler ends; the WebSocket, if
            the request was an upgrade, is never opened.
    """

    timeout = 10.0
    request_head_timeout: float = 10.0

    _head_timer: Timer | None = None
    _head_pending = False
    _head_expired = False

    def handle_one_request(self) -> None:
        """Read and serve one request, under the request head deadline.

        A :class:`HandshakeError` escaping ``do_GET`` is not an error of the server: the client
        has already been answered with the right status and :func:`upgrade_connection` logged
        the refusal, so it ends the request quietly instead of printing a traceback.
        """
        self._head_lock = threading.Lock()
        self._head_pending = True
        self._head_expired = False
        self._head_timer = call_later(self.request_head_timeout, self._request_head_too_slow)
        try:
            super().handle_one_request()
        except HandshakeError:
            self.close_connection = True
        finally:
            self._disarm_head_deadline()

    def parse_request(self) -> bool:
        """Parse the request line and headers; the head deadline ends once they are in.

        A head cut short by the deadline is never dispatched to ``do_GET``.
        """
        # Record the raw header lines as http.server reads them: it drops their line ends, and
        # upgrade_connection must refuse a bare LF on any of them.
        recorder = _LineRecorder(self.rfile)
        self.rfile = recorder
        try:
            parsed = super().parse_request()
        finally:
            self.rfile = recorder.raw
            self._tube_head_lines = recorder.lines  # the blank line included
            self._disarm_head_deadline()
        if self._head_expired:
            self.close_connection = True
            return False
        return parsed

    def _disarm_head_deadline(self) -> None:
        with self._head_lock:
            self._head_pending = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _request_head_too_slow(self) -> None:
        # Runs on the shared timer thread: must not block. Shutting the socket down makes the
        # handler's pending read return at once; the lock stops it from hitting a socket whose
        # head has just been parsed (and may be a WebSocket by now).
        with self._head_lock:
            if not self._head_pending:
                return
            self._head_pending = False
            self._head_expired = True
        logger.info(
            "closing connection from %s: no complete request head within %.1f s",
            self.client_address[0],
            self.request_head_timeout,
        )
        # socket.socket.shutdown, not ssl.SSLSocket.shutdown, which would drop the SSL object
        # under the reading thread.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)


class _LineRecorder(io.BufferedIOBase):
    """``handler.rfile`` while ``http.server`` parses a head: keeps each line read, as read."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        super().__init__()
        self.raw = raw
        self.lines: list[bytes] = []

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1, /) -> bytes:
        line = self.raw.readline(-1 if size is None else size)
        # Bounded: http.server stops after 100 header lines of at most 64 KiB each.
        self.lines.append(line)
        return line

    def read(self, size: int | None = -1, /) -> bytes:
        return self.raw.read(size)

    def read1(self, size: int = -1, /) -> bytes:
        return self.raw.read1(size)
