"""Keepalive decisions without a clock: when to ping a silent peer, when to give up on it.

The transports own the timers and read the clock; :class:`Keepalive` only decides, from the
times they pass in (seconds, any monotonic clock), so that every transport detects a dead peer
in the same ``ping_interval + ping_timeout`` and the rule is tested once.

:func:`tcp_keepalive` derives the kernel's TCP keepalive settings from the same two options:
they keep detecting a vanished peer while the application leaves the incoming channel full
(reading is then paused, and a WebSocket ping could not be answered through a full channel).
"""

from __future__ import annotations

import enum
import math

__all__ = ["Keepalive", "KeepaliveAction", "tcp_keepalive"]


class KeepaliveAction(enum.Enum):
    """What the transport does when its keepalive timer fires."""

    WAIT = "wait"  # the peer spoke recently: arm the timer again, nothing to send
    PING = "ping"  # send a ping, then arm the timer again
    TIMEOUT = "timeout"  # no answer to the ping: fail the connection with 1011


class Keepalive:
    """The keepalive state of one connection.

    Args:
        interval: ``ping_interval``: seconds of silence before a ping.
        timeout: ``ping_timeout``: seconds after a ping within which some byte must arrive;
            ``None`` never gives up.
        now: The current time, which counts as the last sign of life.

    Attributes:
        last_received: When the last byte arrived; the transport sets it on every read (a
            plain assignment on the hot path, no call).

    Concurrency: not thread-safe; the transport calls it under its connection lock.
    """

    __slots__ = ("_ping_sent_at", "interval", "last_received", "timeout")

    def __init__(self, interval: float, timeout: float | None, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_received = now
        self._ping_sent_at: float | None = None

    def check(self, now: float, *, reading_paused: bool = False) -> tuple[KeepaliveAction, float]:
        """Decide what to do now that the timer fired.

        Args:
            now: The current time.
            reading_paused: True while the transport does not read because the application
                does not take messages: the silence is ours, so the peer counts as alive
                (TCP keepalive covers that time, see :func:`tcp_keepalive`).

        Returns:
            ``(action, when)``: the action, and when to fire the timer next (absolute time;
            meaningless after :attr:`KeepaliveAction.TIMEOUT`).
        """
        if reading_paused:
            self.last_received = now
            self._ping_sent_at = None
        ping_sent_at = self._ping_sent_at
        if ping_sent_at is not None and self.last_received >= ping_sent_at:
            ping_sent_at = self._ping_sent_at = None  # something came back: alive
        if ping_sent_at is not None:
            return KeepaliveAction.TIMEOUT, now
        next_ping = self.last_received + self.interval
        if now < next_ping:
            return KeepaliveAction.WAIT, next_ping
        if self.timeout is None:
            return KeepaliveAction.PING, now + self.interval
        self._ping_sent_at = now
        return KeepaliveAction.PING, now + self.timeout


def tcp_keepalive(interval: float | None, timeout: float | None) -> tuple[int, int, int] | None:
    """TCP keepalive settings that detect a dead peer about as fast as the WebSocket pings.

    Returns:
        ``(idle, probe_interval, probe_count)`` in whole seconds for ``TCP_KEEPIDLE``,
        ``TCP_KEEPINTVL`` and ``TCP_KEEPCNT``, or ``None`` when keepalive is disabled (either
        option is ``None``).
    """
    if interval is None or timeout is None:
        return None
    idle = max(1, math.ceil(interval))
    # Spread the ping timeout over a few probes, so that one lost probe is not fatal.
    count = 3
    probe_interval = max(1, math.ceil(timeout / count))
    return idle, probe_interval, count
