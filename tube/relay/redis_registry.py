"""The registry in Redis, for several relay instances behind one load balancer (relay-design §8).

Only *who owns what* lives here, never a file byte: ``tube:np:<nameplate>`` and
``tube:rid:<rid>`` hold the owning instance's own URL, with a TTL, set with ``NX`` so that two
instances never own one name. The owner deletes a nameplate at pairing (single use) and a resume
id when its pair ends; the TTLs clean up after an instance that died.

Needs the ``redis`` extra (``pip install 'tube-websocket[redis]'``); imported only when
``python -m tube --redis URL`` is given. When Redis cannot be reached, every method raises
:class:`~tube.relay.registry.RegistryUnavailable` within ``timeout`` seconds and the relay
degrades (pairs already made go on; allocations and foreign names are refused with "busy,
retry"); the client reconnects by itself on the next call.
"""

from __future__ import annotations

import logging
from typing import Any

from .core import encode_id
from .registry import RegistryUnavailable

__all__ = ["RedisRegistry"]

logger = logging.getLogger("tube.relay")

_NAMEPLATE = "tube:np:"
_RID = "tube:rid:"


class RedisRegistry:
    """Nameplate and resume-id ownership in Redis (the :class:`~.registry.Registry` interface).

    Args:
        url: ``redis://host:port/db`` (or ``rediss://`` for TLS, ``unix://`` for a socket).
        instance: This instance's own URL (``ws://relay-2.internal:8080``), which other
            instances send in ``redirect`` to clients that reached them for a name it owns.
        timeout: Seconds each Redis call may take before the registry counts as unavailable
            (generous: a busy event loop must not pass for an outage; a refused connection
            is seen at once).
        connections: Connections to Redis at most; more calls at once wait for one.
        client: A ready ``redis.asyncio.Redis`` (tests); by default one is made from ``url``.
    """

    def __init__(
        self,
        url: str,
        instance: str,
        *,
        timeout: float = 3.0,
        connections: int = 16,
        client: Any | None = None,
    ) -> None:
        if client is None:
            import redis.asyncio

            # A bounded pool that makes callers wait for a connection (up to ``timeout``):
            # a burst of pairings must queue, not fail as "too many connections".
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
            )
            client = redis.asyncio.Redis.from_pool(pool)  # owns it: aclose() closes it
        self.instance = instance
        self._client = client
        self._available = True

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        import redis.exceptions

        try:
            result = await getattr(self._client, name)(*args, **kwargs)
        except (redis.exceptions.RedisError, OSError) as error:
            if self._available:
                logger.warning("Redis unavailable (%s): new pairs wait for it", error)
                self._available = False
            raise RegistryUnavailable(str(error)) from error
        if not self._available:
            logger.warning("Redis is back")
            self._available = True
        return result

    async def reserve(self, nameplate: str, ttl: float) -> bool:
        """``SET tube:np:<nameplate> <instance> NX PX <ttl>``: False if another owns it."""
        milliseconds = max(1, int(ttl * 1000))
        done = await self._call(
            "set", _NAMEPLATE + nameplate, self.instance, nx=True, px=milliseconds
        )
        return bool(done)

    async def release(self, nameplate: str) -> None:
        """``DEL`` the nameplate (paired or expired: it is single use)."""
        await self._call("delete", _NAMEPLATE + nameplate)

    async def owner(self, nameplate: str) -> str | None:
        """The URL of the instance that owns ``nameplate``, or None."""
        value = await self._call("get", _NAMEPLATE + nameplate)
        return value.decode() if isinstance(value, bytes) else value

    async def register_rid(self, rid: bytes, ttl: float) -> None:
        """This instance holds ``rid``'s detached or live pair for up to ``ttl`` seconds."""
        milliseconds = max(1, int(ttl * 1000))
        await self._call("set", _RID + encode_id(rid), self.instance, px=milliseconds)

    async def release_rid(self, rid: bytes) -> None:
        """``rid``'s pair ended."""
        await self._call("delete", _RID + encode_id(rid))

    async def rid_owner(self, rid: bytes) -> str | None:
        """The URL of the instance holding ``rid``'s pair, or None."""
        value = await self._call("get", _RID + encode_id(rid))
        return value.decode() if isinstance(value, bytes) else value

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
