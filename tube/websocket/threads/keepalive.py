"""The timers of a :class:`~.connection.Connection`: keepalive, close retry and close give-up.

They run on the one shared timer thread (:mod:`.timers`) and do only non-blocking work: they
queue frames and write what the socket takes at once (:meth:`ConnectionWriter._try_flush`).
:meth:`ConnectionTimers._sync_locked`, which queues the protocol's output after every protocol
call, lives here because it arms the give-up timer once the closing handshake starts.
"""

from __future__ import annotations

import logging
import socket
import time

from ..core.protocol import State
from .state import _OPEN
from .timers import call_later
from .writer import _JOIN_LIMIT, ConnectionWriter

__all__ = ["ConnectionTimers"]

logger = logging.getLogger("tube.websocket")


class ConnectionTimers(ConnectionWriter):
    """The timers of a connection (see ``Connection`` for the concurrency contract)."""

    __slots__ = ()

    def _sync_locked(self) -> None:
        """After a protocol call (lock held): queue its output and update ``closing``."""
        protocol = self._protocol
        assert protocol is not None
        chunks = protocol.data_to_send()
        if chunks:
            if len(chunks) == 1:
                self._out.append(chunks[0])
            elif sum(len(chunk) for chunk in chunks) <= _JOIN_LIMIT:
                # One send call for everything: fewer system calls and TCP segments.
                self._out.append(b"".join(chunks))
            else:
                self._out.extend(chunks)
        if not self.closing and (protocol.close_sent is not None or protocol.state is State.CLOSED):
            self.closing = True
            # The closing handshake has started: bound how long the TCP connection may live.
            self._give_up_timer = call_later(self.close_give_up_time, self._on_give_up)
            self.status_changed.notify_all()

    def _cancel_timers_locked(self) -> None:
        for timer in (self._keepalive_timer, self._retry_timer, self._give_up_timer):
            if timer is not None:
                timer.cancel()
        self._keepalive_timer = self._retry_timer = self._give_up_timer = None

    # ------------------------------------------------------------------ timers

    def _shutdown_if_open_locked(self) -> None:
        # Under `lock`: if the reader has not finished, it has not closed the socket yet.
        if self._state == _OPEN and self._io is not None:
            self._io.shutdown(socket.SHUT_RDWR)

    def _on_keepalive(self) -> None:
        """Timer: send a ping after ``ping_interval`` of silence; fail if no answer comes."""
        now = time.monotonic()
        failed = False
        with self.lock:
            protocol = self._protocol
            interval = self.ping_interval
            if self._state != _OPEN or self.closing or protocol is None or interval is None:
                self._keepalive_timer = None
                return
            if self.incoming._paused:
                # The reader is not reading because the application is not: the silence is
                # ours, not the peer's. Count the peer as alive.
                self._last_received = now
                self._ping_sent_at = None
            ping_sent_at = self._ping_sent_at
            if ping_sent_at is not None and self._last_received >= ping_sent_at:
                ping_sent_at = self._ping_sent_at = None  # something came back: alive
            if ping_sent_at is None:
                next_ping = self._last_received + interval
                if now < next_ping:
                    self._keepalive_timer = call_later(next_ping - now, self._on_keepalive)
                    return
                protocol.send_ping(b"")
                self._sync_locked()
                if self.ping_timeout is None:
                    self._keepalive_timer = call_later(interval, self._on_keepalive)
                else:
                    self._ping_sent_at = now
                    self._keepalive_timer = call_later(self.ping_timeout, self._on_keepalive)
            else:
                logger.info(
                    "WebSocket peer %s did not answer a ping within %s s; closing with 1011",
                    self._peer_name(),
                    self.ping_timeout,
                )
                self._keepalive_timer = None
                protocol.fail(1011, "keepalive ping timeout")
                self._sync_locked()
                failed = True
        self._try_flush()
        if failed:
            with self.lock:
                self._shutdown_if_open_locked()

    def _on_close_retry(self) -> None:
        """Timer: no close frame came back within ``close_retry_time``: send ours again."""
        with self.lock:
            self._retry_timer = None
            protocol = self._protocol
            if self._state != _OPEN or protocol is None or protocol.close_received is not None:
                return
            protocol.resend_close()
            self._sync_locked()
        self._try_flush()

    def _on_give_up(self) -> None:
        """Timer: the closing handshake took ``close_give_up_time``: close TCP regardless."""
        with self.lock:
            self._give_up_timer = None
            if self._state != _OPEN:
                return
            logger.info(
                "closing the TCP connection to %s: the close did not finish within %s s",
                self._peer_name(),
                self.close_give_up_time,
            )
            self._shutdown_if_open_locked()
        self.incoming._release()
