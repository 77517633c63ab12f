"""The timers of an asyncio :class:`~.connection.Connection`, all on ``loop.call_at``.

No task per connection: each timer is one ``TimerHandle``, re-armed from its own callback.

* **open**: the opening handshake must finish within ``open_timeout`` (a client that sends its
  request one byte at a time is dropped);
* **keepalive**: the decisions of :class:`~tube.websocket.core.keepalive.Keepalive` (shared with
  every transport), a ping after ``ping_interval`` of silence, 1011 after ``ping_timeout``;
* **close retry**: the seed's second close frame after ``close_retry_time``;
* **give-up**: the TCP connection is closed ``close_give_up_time`` after the closing started;
* **violation**: a peer's protocol violation is committed at most ``close_give_up_time`` after
  it arrived, and a peer's close frame answered at most ``close_reply_time`` after, if the
  application does not ask for the next message before;
* **refusal linger** (in the give-up slot): a refused client's connection is closed at the
  latest this long after the answer, if its EOF did not come first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..core.keepalive import Keepalive, KeepaliveAction

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Timers"]

logger = logging.getLogger("tube.websocket.aio")


class Timers:
    """The timer handles of one connection, and what each does when it fires.

    Concurrency: asyncio only, on the connection's loop.
    """

    __slots__ = ("_connection", "_give_up", "_keepalive", "_open", "_retry", "_violation", "policy")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._open: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._give_up: asyncio.TimerHandle | None = None
        self._violation: asyncio.TimerHandle | None = None
        # The keepalive policy (None without keepalive); the connection sets last_received.
        self.policy: Keepalive | None = None

    def _later(self, delay: float, callback: object) -> asyncio.TimerHandle:
        loop = self._connection._loop
        return loop.call_at(loop.time() + delay, callback)  # type: ignore[arg-type]

    def cancel_all(self) -> None:
        """Cancel every timer (the connection is lost)."""
        for handle in (self._open, self._keepalive, self._retry, self._give_up, self._violation):
            if handle is not None:
                handle.cancel()
        self._open = self._keepalive = self._retry = self._give_up = self._violation = None

    # ------------------------------------------------------------------ open

    def start_open(self, timeout: float | None) -> None:
        """Bound the opening handshake by ``timeout`` seconds from now."""
        if timeout is not None:
            self._open = self._later(timeout, self._on_open_timeout)

    def stop_open(self) -> None:
        """The opening handshake finished in time."""
        if self._open is not None:
            self._open.cancel()
            self._open = None

    def _on_open_timeout(self) -> None:
        self._open = None
        connection = self._connection
        logger.info(
            "dropping %s: the opening handshake took more than %s s",
            connection._peer_name(),
            connection.options.open_timeout,
        )
        connection._abort("the opening handshake timed out")

    # ------------------------------------------------------------------ keepalive

    def start_keepalive(self) -> None:
        """Start keepalive pings (the connection is open), if ``ping_interval`` is set."""
        options = self._connection.options
        if options.ping_interval is None:
            return
        loop = self._connection._loop
        self.policy = Keepalive(options.ping_interval, options.ping_timeout, loop.time())
        self._keepalive = self._later(options.ping_interval, self._on_keepalive)

    def _on_keepalive(self) -> None:
        self._keepalive = None
        connection = self._connection
        policy = self.policy
        protocol = connection._protocol
        if policy is None or protocol is None or connection.closing or connection._lost:
            return
        loop = connection._loop
        action, when = policy.check(loop.time(), reading_paused=bool(connection._reading.reasons))
        if action is KeepaliveAction.TIMEOUT:
            logger.info(
                "WebSocket peer %s did not answer a ping within %s s; closing with 1011",
                connection._peer_name(),
                policy.timeout,
            )
            connection._fail(1011, "keepalive ping timeout")
            return
        if action is KeepaliveAction.PING:
            protocol.send_ping(b"")
            connection._sync()
        self._keepalive = loop.call_at(when, self._on_keepalive)

    # ------------------------------------------------------------------ closing

    def start_close_retry(self, delay: float | None) -> None:
        """Resend our close frame after ``delay`` seconds if none came back (the seed's retry)."""
        if delay is not None and self._retry is None:
            self._retry = self._later(delay, self._on_close_retry)

    def _on_close_retry(self) -> None:
        self._retry = None
        connection = self._connection
        protocol = connection._protocol
        if protocol is None or connection._lost or protocol.close_received is not None:
            return
        protocol.resend_close()
        connection._sync()

    def start_give_up(self) -> None:
        """The closing started: close TCP after ``close_give_up_time`` whatever happens."""
        if self._give_up is None:
            self._give_up = self._later(
                self._connection.options.close_give_up_time, self._on_give_up
            )
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def start_refusal_linger(self, delay: float) -> None:
        """A refusal was answered: close TCP after ``delay`` seconds unless the client's EOF
        comes first (the give-up slot: no closing handshake can start any more)."""
        if self._give_up is None:
            self._give_up = self._later(delay, self._on_refusal_linger)

    def _on_refusal_linger(self) -> None:
        self._give_up = None
        connection = self._connection
        logger.debug("closing the refused connection to %s: no EOF", connection._peer_name())
        connection._abort("the refused client did not close")

    def _on_give_up(self) -> None:
        self._give_up = None
        connection = self._connection
        if connection._lost:
            return
        logger.info(
            "closing the TCP connection to %s: the close did not finish within %s s",
            connection._peer_name(),
            connection.options.close_give_up_time,
        )
        connection._abort("the closing handshake did not finish in time")

    def start_violation(self, delay: float) -> None:
        """A peer's violation or close waits behind messages: commit it after ``delay``."""
        if self._violation is None:
            self._violation = self._later(delay, self._on_violation)

    def _on_violation(self) -> None:
        self._violation = None
        self._connection.incoming._commit_end()
