"""The pings an asyncio :class:`~.connection.Connection` waits a pong for."""

from __future__ import annotations

import asyncio

from ..core.errors import ConnectionClosed

__all__ = ["PongWaiters"]


class PongWaiters:
    """Futures of the pings sent by :meth:`Connection.ping`, resolved by their pongs.

    A pong answers the ping with the same payload and every ping sent before it (RFC 6455
    §5.5.3 lets a peer answer only the latest of several pings).

    Concurrency: asyncio only, on the connection's loop.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[tuple[bytes, asyncio.Future[None]]] = []

    def add(self, payload: bytes, waiter: asyncio.Future[None]) -> None:
        """Wait for the pong of a ping with ``payload`` (just sent)."""
        self._waiters.append((payload, waiter))

    def received(self, payload: bytes) -> None:
        """A pong arrived."""
        waiters = self._waiters
        for index, (sent, _) in enumerate(waiters):
            if sent == payload:
                for _, waiter in waiters[: index + 1]:
                    if not waiter.done():
                        waiter.set_result(None)
                del waiters[: index + 1]
                return

    def fail_all(self, error: ConnectionClosed) -> None:
        """The connection ended: every waiting ping raises ``error``."""
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # marked retrieved: its task may have stopped waiting
        self._waiters.clear()
