"""Parking of idle connections: one shared thread watches the sockets nobody is reading.

A reader thread costs about 16 KiB of resident memory (its stack and interpreter state),
whatever ``threading.stack_size`` says, so a server holding many idle connections spends most
of its memory on reader threads that wait. Instead, a reader that has seen no byte for
``PARK_AFTER`` seconds hands its socket to this module and ends; a single watcher thread waits
on all parked sockets with a selector and, as soon as one becomes readable (data, EOF, or a
shutdown by a timer or a failed send), calls its callback, which starts a new reader thread.

The same thread also *sweeps*: a socket that an application thread read while it waited for a
message (see :mod:`.reader`) is left unread while the application handles what it got. If
nobody comes back for it within ``LINGER`` seconds, the sweep parks it, so that pings, close
frames and the peer's messages are read even by an application that stopped reading.

So each connection still has at most one reader at any time; a parked connection has none
until the peer speaks. Writes (sends, keepalive pings, close frames) never need the reader and
work the same while parked.

Concurrency: :func:`park` and :func:`linger` may be called from any thread. Callbacks run on
the watcher thread and must be quick (starting a thread is).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol as Interface

__all__ = ["LINGER", "PARK_AFTER", "Lingering", "linger", "park"]

logger = logging.getLogger("tube.websocket")

# Seconds without a received byte before a reader thread parks its connection.
PARK_AFTER = 2.0
# Seconds a socket may stay unread after an application thread read it, before it is parked.
LINGER = 0.02
# Seconds the watcher thread stays alive with nothing parked before it exits.
IDLE_EXIT = 10.0
# Seconds the sweep goes on ticking with nothing lingering, before it waits for a linger()
# to wake it: a busy server wakes the watcher at most about once per this long.
_SWEEP_IDLE = 1.0


class Lingering(Interface):
    """A connection left unread by the application thread that last read it."""

    def _sweep(self, now: float, lingering: set[Lingering]) -> None:
        """Park the socket if still unread ``LINGER`` seconds on; drop it from ``lingering``
        once it needs no more sweeping (under the connection's lock, so that a concurrent
        :func:`linger` is never lost)."""


class _Watcher:
    """The selector of parked sockets and the thread that waits on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[socket.socket, Callable[[], None]]] = []
        self._thread: threading.Thread | None = None
        self._wake_send: socket.socket | None = None
        # Connections to sweep; added to without the lock (set.add is atomic), read by the
        # watcher thread. _ticking: the watcher wakes every LINGER seconds to sweep them.
        self._lingering: set[Lingering] = set()
        self._ticking = False

    def park(self, sock: socket.socket, on_ready: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append((sock, on_ready))
            try:
                self._ensure_running_locked()
            except BaseException:
                self._pending.pop()
                raise

    def linger(self, item: Lingering) -> None:
        self._lingering.add(item)
        # Read after the add, as the watcher clears _ticking before it looks at the set again:
        # one of the two sees the other's change.
        if not self._ticking:
            with self._lock:
                if not self._ticking:
                    self._ticking = True
                    try:
                        self._ensure_running_locked()
                    except BaseException:
                        self._ticking = False
                        self._lingering.discard(item)
                        raise

    def _ensure_running_locked(self) -> None:
        if self._thread is None:
            # Everything the watcher needs is made here, in the caller's thread, so that a
            # failure (EMFILE at the descriptor limit, no thread left) raises to the caller,
            # which then keeps its reader; only these three descriptors exist per watcher,
            # none per parked connection.
            self._start_locked()
        elif self._wake_send is not None and threading.current_thread() is not self._thread:
            # The selector belongs to the watcher thread (selectors are not thread-safe):
            # wake it so that it registers the socket itself. Under the lock, so that the
            # watcher cannot close this socket meanwhile.
            with contextlib.suppress(OSError):  # a full buffer already wakes it
                self._wake_send.send(b"\0")

    def _start_locked(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            receiver, sender = socket.socketpair()
        except BaseException:
            selector.close()
            raise
        try:
            receiver.setblocking(False)
            sender.setblocking(False)
            selector.register(receiver, selectors.EVENT_READ)
            thread = threading.Thread(
                target=self._run, args=(selector, receiver), name="tube-parking", daemon=True
            )
            thread.start()
        except BaseException:
            selector.close()
            receiver.close()
            sender.close()
            raise
        self._wake_send = sender
        self._thread = thread

    def _run(self, selector: selectors.BaseSelector, receiver: socket.socket) -> None:
        parked = 0
        idle = False
        swept_empty_since = time.monotonic()
        try:
            while True:
                with self._lock:
                    pending, self._pending = self._pending, []
                    if idle and not pending and not self._ticking:
                        # Nothing parked for IDLE_EXIT seconds: end; the next park starts anew.
                        self._thread = None
                        if self._wake_send is not None:
                            self._wake_send.close()
                            self._wake_send = None
                        return
                for sock, on_ready in pending:
                    try:
                        selector.register(sock, selectors.EVENT_READ, on_ready)
                        parked += 1
                    except (OSError, ValueError):
                        self._call(on_ready)  # unusable socket: a reader will find out and finish
                if self._ticking:
                    timeout: float | None = LINGER
                else:
                    timeout = None if parked else IDLE_EXIT
                events = selector.select(timeout)
                idle = not events and not parked
                if self._ticking:
                    now = time.monotonic()
                    if self._sweep(now):
                        swept_empty_since = now
                    elif now - swept_empty_since > _SWEEP_IDLE:
                        self._ticking = False
                        if self._lingering:  # a linger() that saw _ticking still True
                            self._ticking = True
                for key, _ in events:
                    if key.fileobj is receiver:
                        with contextlib.suppress(OSError):
                            receiver.recv(4096)
                        continue
                    selector.unregister(key.fileobj)
                    parked -= 1
                    self._call(key.data)
        finally:
            # Normally nothing is left here; after an unexpected error, wake every parked
            # connection rather than strand it (each gets a reader thread again).
            stranded = [
                key.data for key in selector.get_map().values() if key.fileobj is not receiver
            ]
            with self._lock:
                stranded += [on_ready for _, on_ready in self._pending]
                self._pending = []
                if self._thread is threading.current_thread():
                    self._thread = None
                    # Lingering connections stay in the set: the next linger() starts a new
                    # watcher, which sweeps them all.
                    self._ticking = False
                    if self._wake_send is not None:
                        self._wake_send.close()
                        self._wake_send = None
            selector.close()
            receiver.close()
            for on_ready in stranded:
                self._call(on_ready)

    def _sweep(self, now: float) -> bool:
        """Sweep the lingering connections; True if there were any."""
        lingering = self._lingering
        if not lingering:
            return False
        for item in list(lingering):
            try:
                item._sweep(now, lingering)
            except Exception:
                lingering.discard(item)
                logger.exception("error while sweeping a WebSocket connection")
        return True

    @staticmethod
    def _call(on_ready: Callable[[], None]) -> None:
        try:
            on_ready()
        except Exception:
            logger.exception("error while waking a parked WebSocket connection")


_watcher = _Watcher()


def park(sock: socket.socket, on_ready: Callable[[], None]) -> None:
    """Watch ``sock`` and call ``on_ready()`` once, on the watcher thread, when it is readable.

    Args:
        sock: A socket with nothing buffered in user space (for TLS, ``pending() == 0``).
        on_ready: Called once the socket is readable (data, EOF or error); the socket is no
            longer watched by then.
    """
    _watcher.park(sock, on_ready)


def linger(item: Lingering) -> None:
    """Sweep ``item`` every ``LINGER`` seconds (``item._sweep``) until it drops out of the set.

    Raises:
        OSError, RuntimeError: The watcher thread could not be started.
    """
    _watcher.linger(item)
