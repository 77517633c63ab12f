"""A ready threaded WebSocket server: :func:`serve` (``http.server`` done right, in one call).

``http.server`` needs several things before it can face the internet; :class:`Server` does them:

* a listen backlog of 1024 (``http.server`` asks for 5: a burst of clients sees its SYNs
  dropped and retried a second later), and ``TCP_NODELAY`` on every WebSocket;
* deadlines on each request head (``request_head_timeout``, the whole head) and on each read
  (``read_timeout``): a client that connects and stays silent, or dribbles its head, holds its
  thread no longer;
* TLS with the handshake in the connection's thread, under those deadlines, never in the
  accepting thread (the listening socket is wrapped with ``do_handshake_on_connect=False``):
  a client that connects and stays silent stalls nobody else;
* plain HTTP beside the WebSockets: ``process_request(request)`` may answer any ``GET`` or
  ``HEAD`` itself with a :class:`~tube.websocket.core.http.Response` (a health check, a static
  page), or return ``None`` to go on with the upgrade;
* a graceful shutdown (:meth:`Server.shutdown`, or SIGTERM / SIGINT while
  :meth:`Server.serve_forever` runs in the main thread): stop accepting, close every WebSocket
  with 1001 (going away), wait for the handlers, bounded by ``shutdown_timeout``;
* at the file-descriptor limit (``EMFILE``) it stops accepting for a moment, with a growing
  pause, instead of spinning: ``socketserver``'s loop takes a whole core there, because the
  pending connection keeps the listening socket readable. The connections already open go on.
  The warning is logged once per episode.

Threads: one thread accepts (the one running :meth:`Server.serve_forever`); each connection
gets a daemon thread that reads its request head and, after the upgrade, runs
``handler(connection)``. When ``handler`` returns, the connection is closed with 1000 (1011 if it
raised) if it is still open.

The request head is read and parsed without ``http.server`` (:mod:`.request_head`: the core's
bounded parser, about 20 times cheaper than ``http.server``'s), with the same limits and
statuses as :func:`~tube.websocket.upgrade_connection` applies. Methods other than ``GET`` and
``HEAD`` get 501. This module is an integration, not part of the transport: it composes the
core's handshake with the threaded :class:`~tube.websocket.Connection`, and the transport never
imports upwards.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import signal
import socket
import ssl as ssl_module
import threading
import time
import types
from collections.abc import Callable
from typing import Any, Self

from ..core.errors import ConnectionClosed, HandshakeError
from ..core.handshake import rejection_response
from ..core.http import Request, Response
from ..core.options import ConnectionOptions
from ..core.protocol import Role
from ..sockets import listen_error
from ..threads.connection import Connection, open_connection
from ..threads.lean import start_daemon_thread
from .request_head import close_socket, plain_response, read_request_head, send_and_close, start_tls

__all__ = ["ProcessRequest", "Server", "serve"]

logger = logging.getLogger("tube.websocket.server")

#: ``handler(connection)``: serves one upgraded connection, on its own thread.
Handler = Callable[[Connection], object]
#: ``process_request(request)``: a response to send instead of upgrading, or ``None``.
ProcessRequest = Callable[[Request], "Response | None"]

# accept() errors that mean "out of resources for now", not "this connection failed".
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Pauses between accept attempts while out of descriptors: first, and at most (seconds).
_BACKOFF_FIRST = 0.01
_BACKOFF_MAX = 0.5
# Connections accepted per wake-up: drains a burst without starving the stop request.
_ACCEPT_BATCH = 64


class Server:
    """A threaded WebSocket server; build it with :func:`serve`.

    Args:
        handler: ``handler(connection)`` serves each upgraded connection on its own thread.
        host: The address to listen on (an IPv6 address such as ``"::1"`` selects IPv6).
        port: The port; 0 picks a free one (see :attr:`port`).
        ssl: An ``ssl.SSLContext`` for ``wss://``, or None.
        process_request: Called with each ``GET``/``HEAD`` request before the upgrade; a
            :class:`~tube.websocket.core.http.Response` is sent instead of upgrading (a
            ``Content-Length`` is added if missing; the body is dropped for ``HEAD``), None goes
            on with the upgrade. It runs on the connection's thread and may raise (500).
        shutdown_timeout: Seconds :meth:`shutdown` waits for the handlers, in all.
        **connection_options: Options of every connection (those of
            :func:`~tube.websocket.create_connection`), validated at once.

    Attributes:
        options: The connections' :class:`~tube.websocket.core.options.ConnectionOptions`.
        socket: The listening socket (an ``ssl.SSLSocket`` with ``ssl``).
        server_address: The address it is bound to, as ``socket.getsockname()`` gives it.

    Concurrency contract: :meth:`serve_forever` runs in one thread; :meth:`shutdown` may be
    called from any other thread (or a handler), once or more.

    Raises:
        ValueError, TypeError: An invalid option.
        OSError: The address cannot be bound.
    """

    #: The listen backlog (the kernel caps it at ``net.core.somaxconn``).
    request_queue_size = 1024
    #: Seconds allowed, from the thread's start, for the TLS handshake and the whole request head.
    request_head_timeout = 10.0
    #: Seconds of silence allowed while reading a request head (and writing a plain answer).
    read_timeout = 10.0
    #: Set ``SO_REUSEADDR``: a restarted server can bind while old connections are in TIME_WAIT.
    allow_reuse_address = True

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        process_request: ProcessRequest | None = None,
        shutdown_timeout: float = 5.0,
        **connection_options: Any,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if process_request is not None and not callable(process_request):
            raise TypeError(f"process_request must be callable or None, got {process_request!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {ssl!r}")
        if isinstance(shutdown_timeout, bool) or not (
            isinstance(shutdown_timeout, int | float) and shutdown_timeout >= 0
        ):
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}")
        self.options = ConnectionOptions.from_kwargs(**connection_options)
        self.handler = handler
        self.process_request_callback = process_request
        self.shutdown_timeout = float(shutdown_timeout)
        self.ssl_context = ssl
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active: dict[Connection, threading.Thread] = {}
        self._stopping = threading.Event()
        self._serving = False
        self._done = threading.Event()
        self._done.set()
        self._wake_read, self._wake_write = socket.socketpair()
        listener = socket.socket(self.address_family, socket.SOCK_STREAM)
        try:
            if self.allow_reuse_address:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(self.request_queue_size)
        except OSError as exc:
            listener.close()
            self._wake_read.close()
            self._wake_write.close()
            raise listen_error(exc, host, port) from exc
        except BaseException:
            listener.close()
            self._wake_read.close()
            self._wake_write.close()
            raise
        self.server_address: Any = listener.getsockname()
        if ssl is not None:
            # The TLS handshake happens in each connection's thread (see _upgrade).
            listener = ssl.wrap_socket(  # SSLContext.wrap_socket (``ssl`` is the context)
                listener, server_side=True, do_handshake_on_connect=False
            )
        self.socket: socket.socket = listener

    def __enter__(self) -> Self:
        """Return the server; leaving the block shuts it down and closes it (see ``__exit__``)."""
        return self

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when 0 was asked for)."""
        port: int = self.socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The ``ws://`` (or ``wss://``) URL of the server's root."""
        host: str = self.socket.getsockname()[0]
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self.port}/"

    # ------------------------------------------------------------------ serving

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections until :meth:`shutdown` (or SIGTERM / SIGINT), then shut down.

        In the main thread, SIGTERM and SIGINT start the graceful shutdown for as long as it
        runs (the previous handlers are restored on return). Once asked to stop, it closes
        every WebSocket with 1001 and waits for the handlers (``shutdown_timeout``) before
        returning.

        Args:
            poll_interval: Seconds between checks of the stop request when nothing happens
                (a stop request also wakes it at once).
        """
        with self._lock:
            if self._serving:
                raise RuntimeError("serve_forever() is already running")
            self._serving = True
            self._done.clear()
        try:
            with _StopOnSignals(self._request_stop), selectors.DefaultSelector() as selector:
                self.socket.setblocking(False)
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                self._accept_loop(selector, poll_interval)
        finally:
            self._close_connections(self.shutdown_timeout)
            with self._lock:
                self._serving = False
            self._done.set()

    def _accept_loop(self, selector: selectors.BaseSelector, poll_interval: float) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            if backoff:
                # Out of descriptors: the pending connection keeps the socket readable, so
                # waiting on the selector would spin. Sleep on the stop event instead.
                if self._stopping.wait(backoff):
                    return
            else:
                selector.select(poll_interval)
            if self._stopping.is_set():
                return
            backoff = self._accept_batch(backoff)

    def _accept_batch(self, backoff: float) -> float:
        """Accept what is pending; return the pause before the next attempt (0: none)."""
        for _ in range(_ACCEPT_BATCH):
            try:
                # The address is not kept: _peer() looks it up again if a log line needs it.
                sock = self.socket.accept()[0]
            except (BlockingIOError, InterruptedError):
                return 0.0
            except OSError as error:
                if error.errno in _RESOURCE_ERRORS:
                    if not backoff:
                        logger.warning(
                            "cannot accept connections: %s; pausing accepts until descriptors "
                            "are freed (open connections go on)",
                            error.strerror,
                        )
                    return min(_BACKOFF_MAX, max(_BACKOFF_FIRST, backoff * 2))
                # ECONNABORTED and the like: that client gave up; the next may be fine.
                logger.debug("accept failed: %s", error)
                continue
            if backoff:
                logger.info("accepting connections again")
                backoff = 0.0
            self._start(sock)
        return 0.0

    def _start(self, sock: socket.socket) -> None:
        """Hand an accepted socket to a new daemon thread of its own."""
        # Everything else (timeouts, TCP_NODELAY) is set in that thread: the accepting thread
        # makes no system call per connection but accept() and the thread's start.
        try:
            start_daemon_thread(self._serve_socket, (sock,), "tube-server-connection")
        except RuntimeError as error:  # can't start new thread
            logger.warning("cannot serve a connection: %s", error)
            close_socket(sock)

    # ------------------------------------------------------------------ stopping

    def _request_stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting, close every WebSocket with 1001 and wait for the handlers.

        Args:
            timeout: Seconds to wait for the handlers (default ``shutdown_timeout``).

        Returns:
            True if every handler ended in time.
        """
        limit = self.shutdown_timeout if timeout is None else timeout
        self._request_stop()
        with self._lock:
            serving = self._serving
        if serving and threading.current_thread() not in self._active.values():
            # serve_forever closes the connections itself once it sees the stop request.
            self._done.wait(limit + 1.0)
            with self._lock:
                return not self._active
        return self._close_connections(limit)

    def _close_connections(self, timeout: float) -> bool:
        """Close every connection with 1001, then wait (bounded) for their handlers."""
        with self._lock:
            connections = list(self._active)
        for connection in connections:
            with contextlib.suppress(ConnectionClosed, OSError):
                connection.initiate_close(1001, "server shutting down")
        me = threading.current_thread()
        deadline = time.monotonic() + timeout
        with self._changed:
            ended = self._changed.wait_for(
                lambda: all(thread is me for thread in self._active.values()),
                max(0.0, deadline - time.monotonic()),
            )
        if not ended:
            logger.warning(
                "%d WebSocket handlers did not end within %s s", len(self._active), timeout
            )
        return ended

    def server_close(self) -> None:
        """Close the listening socket (after :meth:`shutdown`)."""
        self.socket.close()
        self._wake_read.close()
        self._wake_write.close()

    def __exit__(self, *exc_info: object) -> None:
        """Shut down (bounded) and close the listening socket."""
        self.shutdown()
        self.server_close()

    # ------------------------------------------------------------------ connections

    def _serve_socket(self, sock: socket.socket) -> None:
        """A connection's thread: the opening handshake, then the handler."""
        # _upgrade's frame, with the head's buffer and the request, is gone before the handler
        # runs: an idle connection keeps only what the Connection holds.
        connection = self._upgrade(sock)
        if connection is not None:
            self._run(connection)

    def _upgrade(self, sock: socket.socket) -> Connection | None:
        """Read the request head and answer it; the attached connection, or None (closed)."""
        read_timeout = self.read_timeout
        deadline = time.monotonic() + self.request_head_timeout
        request: Request | None = None
        try:
            if isinstance(sock, ssl_module.SSLSocket):
                start_tls(sock, deadline, read_timeout)
            head = read_request_head(sock, deadline, read_timeout)
            if head is None:
                close_socket(sock)  # the client left without a request: nothing to answer
                return None
            request, initial_data = head
            request.remote_address = _address(sock)
            if request.method != "GET" and request.method != "HEAD":
                # What http.server answers for a method without a do_ handler.
                raise HandshakeError(501, f"unsupported method {request.method!r}")
            answer = self._answer(request)
            if answer is not None:
                send_and_close(sock, plain_response(answer, request.method), read_timeout)
                logger.debug("answered %s %s: %d", request.method, request.target, answer.status)
                return None
            response, subprotocol, deflate = self.options.accept(request)
        except HandshakeError as error:
            logger.info(
                "refused WebSocket handshake from %s for %s: %s",
                _peer(sock),
                "?" if request is None else request.target,
                error,
            )
            method = "" if request is None else request.method
            send_and_close(sock, plain_response(rejection_response(error), method), read_timeout)
            return None
        except TimeoutError:
            logger.info(
                "closing connection from %s: no complete request head within %.1f s",
                _peer(sock),
                self.request_head_timeout,
            )
            close_socket(sock)
            return None
        except OSError as error:  # ssl.SSLError included
            logger.debug("lost %s before the upgrade: %s", _peer(sock), error)
            close_socket(sock)
            return None
        except Exception:
            # Local misuse (a subprotocol callback returning a name not offered, ...): the
            # client gets a 500 without detail, the traceback goes to the log.
            logger.exception("error while answering %s", _peer(sock))
            method = "" if request is None else request.method
            send_and_close(sock, plain_response(_internal_error(), method), read_timeout)
            return None
        try:
            sock.sendall(response.to_bytes())
        except OSError as error:
            logger.info("lost %s during the upgrade: %s", _peer(sock), error)
            close_socket(sock)
            return None
        try:
            # The Connection takes the socket over (its own timeouts, TCP_NODELAY, keepalive).
            return open_connection(
                sock,
                Role.SERVER,
                self.options,
                initial_data=initial_data,
                subprotocol=subprotocol,
                deflate=deflate,
            )
        except RuntimeError as error:  # no reader thread: open_connection closed the socket
            logger.warning("cannot serve %s: %s", request.target, error)
            return None

    def _answer(self, request: Request) -> Response | None:
        """``process_request``'s response to a GET or HEAD (500 if it raised), or None."""
        callback = self.process_request_callback
        if callback is None:
            return None
        try:
            return callback(request)
        except Exception:
            logger.exception("error in process_request for %s", request.target)
            return _internal_error()

    def _run(self, connection: Connection) -> None:
        """Serve one upgraded connection with the handler (the connection's thread)."""
        with self._lock:
            stopping = self._stopping.is_set()
            if not stopping:
                self._active[connection] = threading.current_thread()
        if stopping:
            with contextlib.suppress(ConnectionClosed, OSError):
                connection.close(1001, "server shutting down")
            return
        try:
            self.handler(connection)
        except ConnectionClosed:
            pass  # the peer went away while the handler was sending
        except Exception:
            logger.exception("error in the WebSocket handler")
            with contextlib.suppress(ConnectionClosed, OSError):
                connection.close(1011, wait=False)  # no detail for the peer
        finally:
            with contextlib.suppress(ConnectionClosed, OSError):
                connection.close(1000)
            with self._changed:
                self._active.pop(connection, None)
                self._changed.notify_all()


def _internal_error() -> Response:
    """The answer when our side failed: 500, and no detail for the client."""
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    return Response(500, "Internal Server Error", headers, b"internal server error\n")


def _address(sock: socket.socket) -> Any:
    """The client's socket address, or None once it left."""
    try:
        return sock.getpeername()
    except OSError:
        return None


def _peer(sock: socket.socket) -> str:
    """The client's address, for a log line (looked up only when one is written)."""
    try:
        address = sock.getpeername()
    except OSError:
        return "a client that left"
    return str(address[0])


class _StopOnSignals:
    """In the main thread: SIGTERM and SIGINT call ``stop`` (previous handlers restored)."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        self._stop()


def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    **connection_options: Any,
) -> Server:
    """Listen on ``host``:``port`` for WebSocket connections served by ``handler``.

    Returns the :class:`Server`, listening but not yet accepting: run
    :meth:`Server.serve_forever` (in the main thread it also handles SIGTERM and SIGINT)::

        def echo(connection):
            for message in connection.incoming:
                connection.send(message)

        with serve(echo, "127.0.0.1", 8765) as server:
            server.serve_forever()

    Args:
        handler: ``handler(connection)`` serves each connection on its own thread; when it
            returns, the connection is closed with 1000 (1011 if it raised).
        host: The address to listen on.
        port: The port; 0 picks a free one (:attr:`Server.port`).
        ssl: An ``ssl.SSLContext`` for ``wss://``; each client's TLS handshake runs in its own
            thread, under the request head deadlines.
        process_request: ``process_request(request)`` may return a
            :class:`~tube.websocket.core.http.Response` to answer a ``GET``/``HEAD`` with plain
            HTTP instead of upgrading it (health checks, a static page), or None.
        **connection_options: The :func:`~tube.websocket.create_connection` options of every
            connection (``max_message_size``, ``origins``, ...), and ``shutdown_timeout``
            (seconds :meth:`Server.shutdown` waits for the handlers; default 5).

    Raises:
        ValueError, TypeError: An invalid option.
        OSError: The address cannot be bound.
    """
    return Server(
        handler, host, port, ssl=ssl, process_request=process_request, **connection_options
    )
