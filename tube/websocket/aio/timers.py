"""One re-armable timer on ``loop.call_at``: how an asyncio connection keeps its deadlines.

The deadlines themselves (the opening handshake, keepalive, close retry, give-up, the bound on
a deferred violation or close reply) and what happens when one is due are the core's
:class:`~tube.websocket.core.session.Session`'s. The connection arms one :class:`Alarm` at
``session.next_deadline()`` after every call that may move it, and asks
``session.on_deadline(now)`` when it rings. No task per connection: one ``TimerHandle``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Alarm"]


class Alarm:
    """At most one pending ``loop.call_at`` of one callback, moved with :meth:`arm`.

    A deadline moved later keeps the pending ``TimerHandle``, which rings early and moves
    itself then: opening a connection moves its deadline from the opening handshake's bound
    to the first keepalive ping, and a new handle for each move would cost a push onto the
    loop's timer heap (and a cancelled entry left in it) on every connection.

    Args:
        loop: The connection's event loop (whose clock the deadlines use: ``loop.time()``).
        callback: What to call when it rings (no arguments).

    Concurrency: asyncio only, on ``loop``.
    """

    __slots__ = ("_at", "_callback", "_handle", "_loop", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        # When the pending handle rings: never later than ``when``. Kept here, not read from
        # ``TimerHandle.when()``: uvloop's reports the time in its own rounding, so a deadline
        # equal to the handle's would look later than it and re-arm the handle forever.
        self._at = 0.0
        #: When it rings (``loop.time()``), or None when not armed.
        self.when: float | None = None

    def arm(self, when: float | None) -> None:
        """Ring at ``when`` instead (None: not at all)."""
        self.when = when
        handle = self._handle
        if when is None:
            if handle is not None:
                # Cancelled, not left to ring: the handle holds the connection until then.
                handle.cancel()
                self._handle = None
            return
        if handle is not None:
            if self._at <= when:
                return
            handle.cancel()
        self._at = when
        self._handle = self._loop.call_at(when, self._ring)

    def cancel(self) -> None:
        """Do not ring."""
        self.arm(None)

    def _ring(self) -> None:
        self._handle = None
        when = self.when
        if when is None:
            return
        if when > self._at:  # moved later since it was armed
            self._at = when
            self._handle = self._loop.call_at(when, self._ring)
            return
        self.when = None
        self._callback()
