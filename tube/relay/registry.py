"""Where nameplates and resume ids live when several relay instances share the work.

One process holds its pairs itself (:class:`~tube.relay.core.Relay`); the registry only says
which *instance* owns a nameplate or a resume id, so that a client that reached the wrong
instance can be redirected to the right one (relay-design §8). File bytes never go through it.

:class:`InMemoryRegistry` is the default: one instance owns everything it allocated. A shared
registry (Redis) implements the same interface.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["InMemoryRegistry", "Registry", "RegistryUnavailable"]


class RegistryUnavailable(Exception):
    """The shared registry cannot be reached now (any method of a shared registry may raise it).

    The relay then keeps the pairs it has, refuses what needs the registry with "busy, retry"
    (HTTP 503, close code 4009 with ``retry_after``), and tries again on the next call.
    """


class Registry(Protocol):
    """The registry interface the relay's adapter uses (every method may do I/O and raise
    :class:`RegistryUnavailable`)."""

    instance: str
    """This instance's own URL (``wss://relay-2.internal:8443``), or ``""`` when alone."""

    async def reserve(self, nameplate: str, ttl: float) -> bool:
        """Claim ``nameplate`` for this instance for ``ttl`` seconds; False if it is taken."""
        ...

    async def release(self, nameplate: str) -> None:
        """Forget ``nameplate`` (paired, expired or abandoned: it is single use)."""
        ...

    async def owner(self, nameplate: str) -> str | None:
        """The instance URL that owns ``nameplate``, or None if no instance does."""
        ...

    async def register_rid(self, rid: bytes, ttl: float) -> None:
        """This instance holds the pair resumable with ``rid`` for up to ``ttl`` seconds."""
        ...

    async def release_rid(self, rid: bytes) -> None:
        """The pair of ``rid`` ended."""
        ...

    async def rid_owner(self, rid: bytes) -> str | None:
        """The instance URL holding ``rid``'s pair, or None."""
        ...

    async def close(self) -> None:
        """Release connections; the registry is not used afterwards."""
        ...


class InMemoryRegistry:
    """The registry of a relay that runs alone: this instance owns what it allocated.

    The core already keeps the nameplates and resume ids, so nothing is stored twice: a
    nameplate the core does not know is owned by nobody.
    """

    def __init__(self, instance: str = "") -> None:
        self.instance = instance

    async def reserve(self, nameplate: str, ttl: float) -> bool:
        """Always granted: the core drew a nameplate it does not hold."""
        return True

    async def release(self, nameplate: str) -> None:
        """Nothing to do: the core forgot it."""

    async def owner(self, nameplate: str) -> str | None:
        """No other instance exists."""
        return None

    async def register_rid(self, rid: bytes, ttl: float) -> None:
        """Nothing to do: the core holds the pair."""

    async def release_rid(self, rid: bytes) -> None:
        """Nothing to do: the core forgot it."""

    async def rid_owner(self, rid: bytes) -> str | None:
        """No other instance exists."""
        return None

    async def close(self) -> None:
        """Nothing to release."""
