"""The timers of a threaded connection: keepalive, close retry, close give-up, failure bound.

They run on the one shared timer thread (:mod:`.timers`). This part owns *when* each timer
fires (the keepalive rule itself is the core's :class:`~tube.websocket.core.keepalive.Keepalive`);
the connection owns *what* happens then, through the small :class:`TimerOwner` interface. Every
callback does only non-blocking work: it queues frames, writes what the socket takes at once and
shuts sockets down.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol as Interface

from ..core.keepalive import Keepalive, KeepaliveAction
from ..core.options import ConnectionOptions
from .timers import Timer, call_later

__all__ = ["CloseTimers", "TimerOwner"]


class TimerOwner(Interface):
    """What a connection does when one of its timers fires (each takes its own locks)."""

    lock: threading.RLock

    def _on_keepalive(self, action: KeepaliveAction) -> bool:
        """Send a ping, or fail with 1011 (lock held); False if it is no longer open."""

    def _on_close_retry(self) -> None:
        """Send the close frame once more if no close frame came back."""

    def _on_give_up(self) -> None:
        """Close the TCP connection, whatever state the closing handshake is in."""

    def _commit_deferred_end(self) -> None:
        """Send the close frame of a peer's violation, or the answer to the peer's close frame,
        now (the application did not come back)."""

    def _reading_paused(self) -> bool:
        """True while the reader waits for the application to take messages."""


class CloseTimers:
    """The pending timers of one connection.

    Args:
        owner: The connection.
        options: Its options (``ping_interval``, ``ping_timeout``, ``close_retry_time``,
            ``close_give_up_time``).

    Attributes:
        keepalive: The keepalive state, or ``None`` without keepalive; the reader thread sets
            ``keepalive.last_received`` on every read.

    Concurrency: every method is called with the connection's lock held (the timer callbacks
    take it themselves).
    """

    __slots__ = (
        "_failure",
        "_give_up",
        "_keepalive_timer",
        "_options",
        "_owner",
        "_retry",
        "keepalive",
    )

    def __init__(self, owner: TimerOwner, options: ConnectionOptions) -> None:
        self._owner = owner
        self._options = options
        self.keepalive: Keepalive | None = None
        self._keepalive_timer: Timer | None = None
        self._retry: Timer | None = None
        self._give_up: Timer | None = None
        self._failure: Timer | None = None

    def start_keepalive(self) -> None:
        """Start keepalive pings (once the connection is open), if configured."""
        interval = self._options.ping_interval
        if interval is None:
            return
        self.keepalive = Keepalive(interval, self._options.ping_timeout, time.monotonic())
        self._keepalive_timer = call_later(interval, self._fire_keepalive)

    def _fire_keepalive(self) -> None:
        owner = self._owner
        with owner.lock:
            keepalive = self.keepalive
            if keepalive is None:
                return  # stopped meanwhile
            now = time.monotonic()
            action, when = keepalive.check(now, reading_paused=owner._reading_paused())
            if action is not KeepaliveAction.WAIT and not owner._on_keepalive(action):
                return
            if action is KeepaliveAction.TIMEOUT:
                return
            self._keepalive_timer = call_later(when - now, self._fire_keepalive)

    def start_close_retry(self) -> None:
        """Arm the close retry (after this side sent its close frame), if configured."""
        retry_time = self._options.close_retry_time
        if retry_time is not None and self._retry is None:
            self._retry = call_later(retry_time, self._owner._on_close_retry)

    def start_give_up(self) -> None:
        """Arm the give-up timer once the closing handshake starts (idempotent)."""
        if self._give_up is None:
            self._give_up = call_later(self._options.close_give_up_time, self._owner._on_give_up)

    def start_failure_bound(self, delay: float | None = None) -> None:
        """Bound how long a peer's violation (``close_give_up_time``, or ``delay`` seconds) or
        close frame (``close_reply_time``) may wait for the application to come back."""
        if self._failure is None:
            if delay is None:
                delay = self._options.close_give_up_time
            self._failure = call_later(delay, self._owner._commit_deferred_end)

    def stop_open_timers(self) -> None:
        """The WebSocket is closed: no more pings, retries or pending failure (give-up stays)."""
        self.keepalive = None
        for timer in (self._keepalive_timer, self._retry, self._failure):
            if timer is not None:
                timer.cancel()
        self._keepalive_timer = self._retry = self._failure = None

    def cancel_all(self) -> None:
        """The TCP connection is closed: cancel everything."""
        self.stop_open_timers()
        if self._give_up is not None:
            self._give_up.cancel()
            self._give_up = None
