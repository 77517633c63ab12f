"""Closing the WebSockets of a host server when it stops: 1001, not a dropped TCP connection.

A WebSocket upgraded by :func:`~tube.websocket.upgrade_connection` (``http.server``, werkzeug,
gunicorn) lives on a thread the host server knows nothing about, so a server that stops would
drop it (the client sees 1006) or wait for it until it is killed. Every such connection is
registered here, per process, until it ends; what closes them with 1001 (going away):

* :func:`close_websockets` -- for any host, on the way out;
* :func:`stop_on_signals` -- ``http.server`` and any ``socketserver`` server: SIGTERM and Ctrl-C
  stop ``serve_forever()`` (no ``KeyboardInterrupt`` traceback), then the WebSockets are closed;
* at interpreter exit (``atexit``), whatever is still open: werkzeug's development server
  (``flask run``), whose request threads are daemon threads killed at exit;
* under gunicorn, a watcher thread: when the worker stops (``worker.alive`` false: SIGTERM,
  SIGINT/SIGQUIT, ``--max-requests``, a reload), the worker's WebSockets are closed at once,
  within its graceful timeout, so the worker exits instead of waiting for them until the
  arbiter kills it. The worker is found through the process's SIGTERM handler, a bound method
  of the gunicorn worker (gunicorn installs it before loading the application); the watcher
  runs only while WebSockets are open and looks every :data:`WATCH_INTERVAL` seconds.

Concurrency: every function may be called from any thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socketserver
import threading
import time
import types
from collections.abc import Iterator
from typing import Any, TypeVar

from ..core.errors import ConnectionClosed
from ..threads.connection import Connection

__all__ = ["close_websockets", "stop_on_signals"]

logger = logging.getLogger("tube.websocket")

#: How often the gunicorn watcher looks whether its worker is stopping, in seconds (while
#: WebSockets are open): the most a shutdown waits before the 1001s go out.
WATCH_INTERVAL = 0.1

#: The close reason sent with 1001.
REASON = "server shutting down"

_ServerT = TypeVar("_ServerT", bound=socketserver.BaseServer)


class _Registry:
    """The process's upgraded connections that may still be open.

    Held strongly (a threaded ``Connection`` takes no weak reference) and dropped by
    :func:`unregister`, or by a sweep of the ended ones each time the set has doubled since
    the last sweep (amortised constant time per upgrade) for hosts without an end hook.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.Lock())
        self.connections: set[Connection] = set()
        self.sweep_at = 64  # sweep when the set reaches this size
        self.stopping = False  # the host is stopping: a late upgrade is closed at once
        self.pid = os.getpid()
        self.watching = False
        self.at_exit = False


_registry = _Registry()


def _current() -> _Registry:
    """This process's registry (a forked child, a gunicorn worker, starts with a new one)."""
    global _registry
    registry = _registry
    if registry.pid != os.getpid():
        registry = _registry = _Registry()
    return registry


def register(connection: Connection, server: str) -> None:
    """Track an upgraded connection until it ends (the integrations call it once attached).

    Args:
        connection: The connection, attached.
        server: The host (``"http.server"``, ``"werkzeug"``, ``"gunicorn"``).
    """
    registry = _current()
    with registry.lock:
        stopping = registry.stopping
        if not stopping:
            connections = registry.connections
            if len(connections) >= registry.sweep_at:
                connections -= {each for each in connections if each.wait_closed(0)}
                registry.sweep_at = max(64, 2 * len(connections))
            connections.add(connection)
            registry.lock.notify_all()
        if not registry.at_exit:
            registry.at_exit = True
            # After the main thread's end and the non-daemon threads' (threading's shutdown):
            # daemon request threads (werkzeug's, http.server's) still run their WebSockets.
            atexit.register(_close_at_exit)
        watch = server == "gunicorn" and not registry.watching
        if watch:
            registry.watching = True
    if stopping:
        with contextlib.suppress(ConnectionClosed, OSError):
            connection.close(1001, REASON, wait=False)
    if watch:
        _watch_gunicorn(registry)


def unregister(connection: Connection) -> None:
    """Forget a connection that has ended (the WSGI response does it once it is over)."""
    registry = _current()
    with registry.lock:
        registry.connections.discard(connection)


def close_websockets(
    code: int = 1001, reason: str = REASON, *, timeout: float | None = None
) -> bool:
    """Close every WebSocket this process upgraded and that is still open; wait for their end.

    For any host server, on the way out: the connections upgraded by
    :func:`~tube.websocket.upgrade_connection` (``http.server``, werkzeug, gunicorn) get a
    close frame with ``code`` (1001, going away), and their handlers see ``incoming`` end.
    Upgrades that arrive later in this process are closed at once the same way.

    Args:
        code: The close code.
        reason: The close reason.
        timeout: How long to wait for the closing handshakes and TCP ends, in seconds; None:
            each connection's ``close_give_up_time`` plus a second (the bound of ``close()``).

    Returns:
        True if every connection ended in time.
    """
    connections = _start_closing(code, reason)
    now = time.monotonic()
    ended = True
    for connection in connections:
        bound = connection.options.close_give_up_time + 1.0 if timeout is None else timeout
        remaining = max(0.0, now + bound - time.monotonic())
        ended = connection.wait_closed(remaining) and ended
    return ended


def _start_closing(code: int, reason: str) -> list[Connection]:
    """Send the close frames (once per connection) and return the connections to wait for."""
    registry = _current()
    with registry.lock:
        registry.stopping = True
        connections = list(registry.connections)
    if connections:
        logger.info("closing %d WebSocket connection(s) with %d", len(connections), code)
    for connection in connections:
        with contextlib.suppress(ConnectionClosed, OSError):
            connection.close(code, reason, wait=False)
    return connections


@contextlib.contextmanager
def stop_on_signals(server: _ServerT) -> Iterator[_ServerT]:
    """Run a ``socketserver`` server (``http.server``'s) until SIGTERM or Ctrl-C, then close
    its WebSockets with 1001. ::

        with stop_on_signals(ThreadingHTTPServer(("127.0.0.1", 8080), Handler)) as server:
            server.serve_forever()

    Within the block, in the main thread, SIGTERM and SIGINT (when their handlers are Python's
    defaults) make ``serve_forever()`` return instead of killing the process or raising
    ``KeyboardInterrupt``; the previous handlers are restored on exit. On exit (however the
    block ends) every WebSocket this process upgraded is closed with 1001 and waited for
    (:func:`close_websockets`), then the server is closed (``server_close()``).

    Args:
        server: The server, whose ``serve_forever()`` the block runs.

    Returns:
        A context manager giving ``server``.
    """
    previous: dict[signal.Signals, Any] = {}

    def handle(signum: int, frame: types.FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return, and that runs in this very thread.
        threading.Thread(target=stop, name="tube-shutdown", daemon=True).start()

    def stop() -> None:
        # The close frames leave now, not after serve_forever's next poll (up to 0.5 s).
        _start_closing(1001, REASON)
        server.shutdown()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(signum)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                previous[signum] = signal.signal(signum, handle)
    try:
        yield server
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        try:
            close_websockets()
        finally:
            server.server_close()


def exit_on_sigterm() -> None:
    """In the main thread, if SIGTERM has its default action (killing the process without
    running any Python code), make it exit the way ``sys.exit(0)`` does, so that the exit
    closes the WebSockets (werkzeug's development server, whose reloader does the same)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: types.FrameType | None) -> None:
    logger.info("received SIGTERM, shutting down")
    raise SystemExit(0)


def _close_at_exit() -> None:
    if _current().connections:
        close_websockets()


def _watch_gunicorn(registry: _Registry) -> None:
    """Start the watcher of this gunicorn worker, found through its SIGTERM handler."""
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if not type(worker).__module__.startswith("gunicorn.") or not hasattr(worker, "alive"):
        logger.debug("no gunicorn worker found; its WebSockets are closed at exit only")
        return
    threading.Thread(
        target=_watch, args=(registry, worker), name="tube-gunicorn-watch", daemon=True
    ).start()


def _watch(registry: _Registry, worker: Any) -> None:
    while True:
        with registry.lock:
            # Sleep while no WebSocket is open: nothing to close, nothing to poll.
            registry.lock.wait_for(lambda: bool(registry.connections))
            registry.lock.wait(WATCH_INTERVAL)
        if not worker.alive:
            break
    close_websockets()
