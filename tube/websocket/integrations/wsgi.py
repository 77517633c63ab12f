"""Upgrade a WSGI request to a WebSocket: werkzeug's server (Flask) and gunicorn.

:func:`upgrade_connection` is the Go package's ``UpgradeConnection`` for a WSGI application (or
a Flask view): it validates the opening handshake found in the request's ``environ``, writes the
101 response on the server's socket itself, attaches the :class:`~tube.websocket.Connection`
to that socket and returns a :class:`WebSocketResponse`. The application then serves the
WebSocket **on the request's own thread** and, once done, returns that response to the server.

Why on the request's thread: a WSGI server owns its socket. Once the application returns, the
server writes the response and closes (gunicorn) or shuts down (werkzeug) the socket, so the
WebSocket must be over by then. The returned :class:`WebSocketResponse` makes sure of it: when
the server starts sending it, it closes the connection (code 1000) if the application has not
done so, waits for the closing handshake and the TCP shutdown (bounded by
``close_give_up_time``), and then reports a broken pipe. Both servers take a broken pipe for a
client that went away and write nothing more; and since the connection has shut the TCP
connection down in both directions by then, nothing *can* be written after our close frame,
whatever a server or middleware in between tries.

How the socket is found (the WSGI standard has no hijack): werkzeug's development server puts
it in ``environ["werkzeug.socket"]`` and gunicorn in ``environ["gunicorn.socket"]``. Bytes the
server read ahead of the request head (a client may send its first frame in the same packet as
the handshake) are taken from the server's buffer -- werkzeug's ``wsgi.input`` buffered reader,
gunicorn's request parser -- and fed to the protocol first, never lost. The connection works
on a duplicate of the server's file descriptor (``socket.dup()``), so that each side closes
only its own; a TLS socket cannot be duplicated and is shared instead.

Servers:

* werkzeug (``flask run``, ``app.run()``): threaded by default since werkzeug 1.0, one thread
  per connection. Flask only routes a WebSocket upgrade to a rule declared with
  ``websocket=True`` (werkzeug answers 400 otherwise).
* gunicorn ``-k gthread --threads N``: each WebSocket holds one of the worker's ``N`` threads
  for its whole life, so ``N`` bounds the WebSockets open per worker.
* gunicorn's ``sync`` worker works, but holds the whole worker process for the life of one
  WebSocket, and the arbiter kills it after ``--timeout`` seconds (30 by default) without a
  heartbeat, which a worker busy with one request never sends: use ``gthread``.
* Any other server that exposes neither key (wsgiref, uWSGI, mod_wsgi, ...): the hijack is
  impossible; :func:`upgrade_connection` logs an error and raises :class:`HandshakeError`
  with status 500, which the application returns like any refusal.

Stopping: every upgraded connection is known to the process until it ends
(:mod:`~tube.websocket.integrations.shutdown`), so that a stopping server closes it with 1001
instead of dropping it (werkzeug, at exit) or waiting for it until it is killed (gunicorn: as
soon as the worker stops, within its graceful timeout).

Limits on the request head are those of the server (gunicorn: 4094-byte request line, 100
header fields of 8190 bytes; werkzeug: those of ``http.server``); the handshake rules (method,
version, ``Host``, ``Upgrade``, ``Connection``, key, version, origin, no body) are the core's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from ..core.errors import HandshakeError
from ..core.http import Headers, Request
from ..core.protocol import Role
from ..threads.connection import Connection
from . import shutdown

__all__ = ["StartResponse", "WebSocketResponse", "request_from_environ", "upgrade_connection"]

logger = logging.getLogger("tube.websocket")

#: A WSGI ``start_response`` callable (PEP 3333); ``upgrade_connection`` never calls it.
StartResponse = Callable[..., Any]

# The environ keys under which servers put the request's socket, with their names for logs.
_SOCKET_KEYS = (("werkzeug.socket", "werkzeug"), ("gunicorn.socket", "gunicorn"))

# Seconds added to close_give_up_time when waiting for the end of the TCP connection: the
# connection closes it by then at the latest; the margin covers the reader thread's wake-up.
_END_MARGIN = 1.0

_warned_single_threaded = False
_warn_lock = threading.Lock()


def upgrade_connection(
    environ: Mapping[str, Any],
    start_response: StartResponse | None,
    connection: Connection,
) -> WebSocketResponse:
    """Answer a WebSocket opening handshake made to a WSGI application; attach ``connection``.

    Call it from the WSGI application (or the Flask view) serving the request. On success the
    101 response is written and ``connection`` is attached (its reader thread runs,
    ``connected`` is True). Serve the WebSocket on the calling thread (``incoming``,
    ``send_blob_data``, ``initiate_close``, ...), then return the :class:`WebSocketResponse`
    to the server: the server writes nothing more on the socket.

    Args:
        environ: The request's WSGI environ (``flask.request.environ`` in a view).
        start_response: The server's ``start_response`` for this request, or ``None`` (a Flask
            view cannot see it). It is never called: the 101 is written on the socket itself,
            and a refusal is answered by what the application returns.
        connection: A connection from :func:`~tube.websocket.create_connection`, not yet used;
            its ``subprotocols``, ``origins``, ``check_origin``, ``extra_headers`` and
            ``compression`` options decide the handshake.

    Returns:
        The response the application must return once the WebSocket is over (a Flask view
        returns it as its response).

    Raises:
        HandshakeError: The request is not an acceptable handshake (400, 403, 405, 426, 505),
            or the server does not let the application take the socket over (500; logged as an
            error). Nothing was written: answer with ``error.status``, ``error.headers`` and
            ``error.reason`` as a plain-text body (a Flask view returns
            ``(error.reason, error.status, error.headers)``).
        InvalidState: ``connection`` was already used (or is being upgraded by another thread).
        OSError: The socket failed while writing the 101 response.
    """
    connection._begin_opening()
    options = connection.options
    request = request_from_environ(environ)
    try:
        response, subprotocol, deflate = options.accept(request)
        sock, server = _server_socket(environ)
    except HandshakeError as error:
        if error.status is not None and error.status < 500:
            logger.info(
                "refused WebSocket handshake from %s for %s: %s",
                environ.get("REMOTE_ADDR", "?"),
                request.target,
                error,
            )
        connection._opening_failed()
        raise
    except Exception:
        # Local misuse (a subprotocol callback returning an unoffered name, bad options).
        connection._opening_failed()
        raise
    _warn_if_single_threaded(environ, server)

    try:
        protocol = options.make_protocol(Role.SERVER, deflate)
        # Taken before the 101 goes out: the server's buffer only holds what it read already,
        # and nothing reads it once the connection's reader runs.
        initial_data = _take_buffered(environ, sock, server)
        sock.sendall(response.to_bytes())
        ours = _duplicate(sock)
    except Exception:
        connection._opening_failed()
        raise
    logger.debug("WebSocket upgrade on %s for %s", server, request.target)
    # If no reader thread can be started, _open closes `ours` and raises; the server closes
    # its own descriptor as usual.
    connection._open(ours, protocol, initial_data=initial_data, subprotocol=subprotocol)
    # Known to the process, so that a stopping server closes it with 1001 (shutdown.py): at
    # exit under werkzeug, as soon as the worker stops under gunicorn.
    shutdown.register(connection, server)
    # werkzeug's debugger (flask run --debug) reports any exception from the response as an
    # application error, with a traceback: there the response ends empty instead, and the
    # server's attempt to write a status line meets the shut-down socket (a dropped client).
    debugger = "werkzeug.debug.preserve_context" in environ
    return WebSocketResponse(connection, sock, quiet=debugger)


class WebSocketResponse:
    """The response a WSGI application returns after serving an upgraded connection.

    It is both a WSGI response iterable and a WSGI application (``response(environ,
    start_response)``), so that it works returned from a plain WSGI application, from a Flask
    view (Flask wraps an iterator in its own response and iterates it), and under middleware.
    Whichever way the server first touches it, it:

    1. closes the connection with code 1000 if the application left it open, and waits until
       the TCP connection is shut down (at most ``close_give_up_time`` plus a second), then
       shuts the server's socket down in both directions: from then on no byte can be sent;
    2. raises :class:`BrokenPipeError`: werkzeug and gunicorn treat it as a client that went
       away and write nothing (no status line, no body) on the socket.

    Args:
        connection: The upgraded connection.
        server_socket: The server's socket for the request (shut down at the end), if any.
        quiet: End as an empty body instead of raising (under werkzeug's debugger, which logs
            any exception as an application error); the server's write then fails on the
            shut-down socket, which it takes for a dropped client.

    Attributes:
        connection: The upgraded connection.
    """

    __slots__ = ("_lock", "_quiet", "_server_socket", "connection")

    def __init__(
        self,
        connection: Connection,
        server_socket: socket.socket | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        self.connection = connection
        self._server_socket = server_socket
        self._quiet = quiet
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<WebSocketResponse {self.connection!r}>"

    def finish(self) -> None:
        """Close the connection if it is still open and wait for the TCP connection's end.

        Idempotent; called by the server through :meth:`__next__`, :meth:`__call__` or
        :meth:`close`. Never raises.
        """
        connection = self.connection
        with self._lock:
            try:
                # 1000: the application is done with it (as leaving a `with connection:` does).
                connection.close(1000, wait=False)
            except Exception:
                logger.exception("error while closing a WebSocket after its application")
            if not connection.wait_closed(connection.options.close_give_up_time + _END_MARGIN):
                logger.warning("a WebSocket connection did not end in time; cutting it")
            shutdown.unregister(connection)
            if self._server_socket is not None:
                # RFC 6455 §7.1.1 ends with TCP closed: whatever the server or a middleware
                # writes now fails (EPIPE) instead of reaching the client after our close frame.
                # socket.socket.shutdown: for TLS, never an unwrap under another thread.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._server_socket, socket.SHUT_RDWR)

    def _skip(self) -> BrokenPipeError:
        self.finish()
        return BrokenPipeError(
            errno.EPIPE, "the connection was upgraded to a WebSocket: no HTTP response is sent"
        )

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        """Finish the WebSocket and raise :class:`BrokenPipeError` (the server's skip signal)."""
        error = self._skip()
        if self._quiet:
            raise StopIteration
        raise error

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterator[bytes]:
        """As a WSGI application: finish the WebSocket and raise :class:`BrokenPipeError`."""
        error = self._skip()
        if self._quiet:
            return iter(())
        raise error

    def close(self) -> None:
        """WSGI ``close()``: finish the WebSocket (servers call it after the iteration)."""
        self.finish()


def request_from_environ(environ: Mapping[str, Any]) -> Request:
    """Rebuild the request head of a WSGI ``environ`` for the core's handshake checks.

    The request target is the raw one when the server gives it (``RAW_URI``, ``REQUEST_URI``),
    else ``SCRIPT_NAME`` + ``PATH_INFO`` quoted, plus ``QUERY_STRING``. Header names come back
    from their ``HTTP_*`` form (``HTTP_SEC_WEBSOCKET_KEY`` -> ``Sec-Websocket-Key``; the core
    compares names case-insensitively); a server joins repeated headers with commas.
    """
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(target, str) or not target:
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        # PEP 3333: PATH_INFO holds the bytes of the path decoded as latin-1.
        target = quote(path.encode("latin-1", "replace"), safe="/;=,@:!$&'()*+~") or "/"
        query = environ.get("QUERY_STRING")
        if query:
            target += f"?{query}"
    headers: Headers = []
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_LENGTH", "CONTENT_TYPE") and value:
            name = key
        else:
            continue
        headers.append(("-".join(part.capitalize() for part in name.split("_")), value))
    request = Request(
        str(environ.get("REQUEST_METHOD", "GET")),
        target,
        str(environ.get("SERVER_PROTOCOL", "HTTP/1.0")),
        headers,
    )
    address = environ.get("REMOTE_ADDR")
    if isinstance(address, str) and address:
        port = str(environ.get("REMOTE_PORT"))
        request.remote_address = (address, int(port) if port.isdigit() else 0)
    return request


def _server_socket(environ: Mapping[str, Any]) -> tuple[socket.socket, str]:
    """The request's socket and the server's name, or HandshakeError(500) if there is none."""
    for key, server in _SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return sock, server
    logger.error(
        "cannot upgrade %s to a WebSocket: this WSGI server (%s) does not expose the request's "
        "socket (werkzeug.socket or gunicorn.socket in the environ); use werkzeug's server or "
        "gunicorn -k gthread",
        environ.get("PATH_INFO", "?"),
        environ.get("SERVER_SOFTWARE", "unknown"),
    )
    raise HandshakeError(500, "this server cannot upgrade the connection to a WebSocket")


def _warn_if_single_threaded(environ: Mapping[str, Any], server: str) -> None:
    """Warn once when each WebSocket holds a whole worker process (gunicorn's sync worker)."""
    global _warned_single_threaded
    if environ.get("wsgi.multithread", True):
        return
    with _warn_lock:
        if _warned_single_threaded:
            return
        _warned_single_threaded = True
    logger.warning(
        "WebSocket on a single-threaded %s worker: it holds the worker for the connection's "
        "whole life (gunicorn kills it after --timeout); run gunicorn with -k gthread",
        server,
    )


def _take_buffered(environ: Mapping[str, Any], sock: socket.socket, server: str) -> bytes:
    """Bytes the server read from the socket beyond the request head, without blocking."""
    stream = environ.get("wsgi.input")
    if server == "gunicorn":
        # gunicorn: the request parser's "unreader" holds the read-ahead; the body of a GET
        # without Content-Length is a zero-length reader over it.
        unreader = getattr(getattr(stream, "reader", None), "unreader", None)
        take = getattr(unreader, "take_buffered", None)
        if callable(take):
            return bytes(take())
        buffer = getattr(unreader, "buf", None)  # gunicorn before 25: the same, by hand
        if buffer is not None and hasattr(buffer, "getvalue"):
            data = bytes(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
            return data
        return b""
    # werkzeug: wsgi.input is the handler's buffered reader over the socket.
    read1 = getattr(stream, "read1", None)
    if read1 is None:
        return b""
    # Non-blocking for one read1 call: it returns the buffered bytes without touching the
    # socket when there are some, else makes one read that must not wait for the client.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = read1(65536)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        data = b""
    except OSError:
        data = b""  # the socket failed: the reader thread will see it at its first read
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return bytes(data) if data else b""


def _duplicate(sock: socket.socket) -> socket.socket:
    """A socket of our own on the server's TCP connection (the same one for TLS).

    With a duplicate, the server closes its descriptor whenever it likes and the connection
    its own: neither ever uses a descriptor the other closed. TLS state lives in the
    ``SSLSocket`` object, which cannot be duplicated: it is shared, and the response waits for
    the connection's end before the server touches it again.
    """
    if isinstance(sock, ssl.SSLSocket):
        return sock
    return sock.dup()
