"""The relay's asyncio adapter: sockets, tasks and the clock around the sans-I/O core.

:class:`RelayServer` runs :func:`tube.websocket.aio.serve` with the TRP/1 options, answers
plain HTTP through :class:`~tube.relay.web.Web`, and gives each WebSocket one task that reads its
``incoming`` channel: control messages go to the core, binary frames to the peer the core names.

Forwarding is bounded by the library's own flow control, per direction: while the receiving
side's transport holds more than its write high-water mark, ``send`` waits; the sending side's
``incoming`` then fills to ``incoming_bytes`` (1 MiB) and the connection stops reading the
socket until it drains to a quarter (256 KiB), so TCP slows the sender down. Memory per pair
stays near 2 x (1 MiB + a frame + the write buffer) whatever the peers do; a receiver that
stops reading gets 4008 after ``idle_s`` (the core's stall timer), never unbounded buffering.

One ``loop.call_at`` timer is re-armed at the core's next deadline after every core call.

Hooks for tests of hostile relays (override in a subclass; production never changes them):
:meth:`RelayServer.forward` carries one frame to the peer, :meth:`RelayServer.outgoing` may
rewrite a control message before it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl as ssl_module
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..websocket import ConnectionClosed, aio
from ..websocket.core.http import Request
from .core import (
    BUSY,
    STALLED,
    SUBPROTOCOL,
    Action,
    Allocation,
    Close,
    ConnState,
    Forget,
    Refusal,
    Relay,
    Send,
    TrackRid,
    decode_id,
)
from .limits import Limits
from .registry import InMemoryRegistry, Registry, RegistryUnavailable
from .web import Assets, Web, client_address, nameplate_of, rate_key

__all__ = ["RelayConfig", "RelayServer"]

logger = logging.getLogger("tube.relay")


@dataclass(frozen=True)
class RelayConfig:
    """How a relay server runs.

    Attributes:
        host: The address to listen on.
        port: The port (0: a free one).
        ssl: A server ``SSLContext`` for ``https://``/``wss://``, or None.
        trusted_proxies: Addresses of proxies whose forwarded-address header counts.
        client_ip_header: That header (its right-most entry is the client).
        allowed_origins: Web origins allowed besides the relay's own host.
        metrics: Serve ``/metrics``.
        limits: The relay's limits and timeouts.
        reuse_port: Let several processes listen on the port.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    ssl: ssl_module.SSLContext | None = None
    trusted_proxies: frozenset[str] = frozenset()
    client_ip_header: str = "X-Forwarded-For"
    allowed_origins: tuple[str, ...] = ()
    metrics: bool = False
    limits: Limits = field(default_factory=Limits)
    reuse_port: bool = False


class RelayServer:
    """One relay instance on asyncio.

    Use ``async with RelayServer(config) as relay:`` (listening on entry, drained on exit)
    or :meth:`start` and :meth:`close`.

    Attributes:
        core: The sans-I/O :class:`~tube.relay.core.Relay`.
        registry: Where nameplates and resume ids are registered.

    Concurrency contract: asyncio only, on the loop that started it.
    """

    def __init__(
        self,
        config: RelayConfig | None = None,
        *,
        registry: Registry | None = None,
        core: Relay | None = None,
        assets: Assets | None = None,
    ) -> None:
        self.config = config = config or RelayConfig()
        self.core = core or Relay(config.limits)
        self.registry: Registry = registry or InMemoryRegistry()
        self.assets = assets or Assets()
        self._web = Web(
            self._allocate,
            self.metrics if config.metrics else None,
            self.assets,
            allowed_origins=config.allowed_origins,
        )
        self._links: dict[int, aio.Connection] = {}
        self._in_hand: dict[int, int] = {}  # cid -> size of the frame it is forwarding
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._server: aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> RelayServer:
        """Listen; returns once the socket is bound."""
        config = self.config
        limits = config.limits
        self._loop = asyncio.get_running_loop()
        self._server = aio.serve(
            self._serve,
            config.host,
            config.port,
            ssl=config.ssl,
            process_request=self._web,
            reuse_port=config.reuse_port,
            subprotocols=[SUBPROTOCOL],
            max_message_size=limits.frame,
            incoming_bytes=limits.high_water,
            incoming_size=256,
            ping_interval=20.0,
            ping_timeout=20.0,
            close_give_up_time=5.0,
            send_timeout=None,  # a stalled receiver is the core's 4008, after idle_s
            compression=None,
            check_origin=True,
            origins=list(config.allowed_origins) or None,
        )
        await self._server.start()
        return self

    @property
    def port(self) -> int:
        """The listening port."""
        assert self._server is not None, "the relay is not started"
        return self._server.port

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` is called."""
        assert self._server is not None, "the relay is not started"
        await self._server.serve_forever()

    async def close(self) -> None:
        """Drain: close every WebSocket with 1001 (clients resume elsewhere), then stop."""
        if self._server is not None:
            await self._server.close()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.registry.close()

    async def __aenter__(self) -> RelayServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ hooks

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        """Carry one binary frame from connection ``source`` to its peer (a test hook)."""
        await destination.send(frame)

    def outgoing(self, cid: int, message: dict[str, Any]) -> dict[str, Any]:
        """The control message to send on ``cid`` (a test hook; unchanged in production)."""
        return message

    # ------------------------------------------------------------------ connections

    def client_ip(self, request: Request) -> str:
        """The key under which this request's client is rate-limited."""
        config = self.config
        address = client_address(request, config.trusted_proxies, config.client_ip_header)
        return rate_key(address)

    async def _serve(self, connection: aio.Connection) -> None:
        request = connection.request
        assert request is not None
        if connection.subprotocol != SUBPROTOCOL:
            await connection.close(4001, f"subprotocol {SUBPROTOCOL} required")
            return
        _, nameplate = nameplate_of(request.target)
        loop = asyncio.get_running_loop()
        core = self.core
        cid = next(self._ids)
        self._links[cid] = connection
        try:
            # Another instance may own the nameplate (it was allocated there, or the
            # balancer's ring changed since): send the client there.
            if (
                nameplate is not None
                and not core.knows_nameplate(nameplate)
                and await self._redirected(connection, cid, nameplate, None)
            ):
                return
            self._apply(core.connect(cid, self.client_ip(request), loop.time(), nameplate))
            async for message in connection.incoming:
                if type(message) is str:
                    if (
                        core.state_of(cid) is ConnState.HELLO_OK
                        and '"resume"' in message
                        and await self._redirected(connection, cid, None, message)
                    ):
                        return
                    self._apply(core.text(cid, message, loop.time()))
                    continue
                assert isinstance(message, bytes)
                target, actions = core.binary(cid, len(message), loop.time())
                if actions:
                    self._apply(actions)
                if target is None:
                    continue
                self._rearm()  # the first frame in flight arms the stall timer
                destination = self._links.get(target)
                if destination is None:
                    core.sent(cid, loop.time())
                    continue
                self._in_hand[cid] = len(message)
                try:
                    await self.forward(cid, destination, message)
                except ConnectionClosed:
                    pass  # the destination went: the core hears of it from its own task
                finally:
                    del self._in_hand[cid]
                    core.sent(cid, loop.time())
        finally:
            del self._links[cid]
            self._apply(core.disconnected(cid, loop.time()))

    async def _redirected(
        self, connection: aio.Connection, cid: int, nameplate: str | None, resume: str | None
    ) -> bool:
        """Send the client to the instance that owns ``nameplate`` (or the resume id in the
        ``resume`` message) when that is not this one; True if the connection was closed."""
        try:
            if nameplate is not None:
                owner = await self.registry.owner(nameplate)
                path = f"/v1/relay/{nameplate}"
            else:
                rid = _resume_id(resume)
                if rid is None or self.core.knows_rid(rid):
                    return False
                owner = await self.registry.rid_owner(rid)
                path = "/v1/relay"
        except RegistryUnavailable:
            # Nobody can tell where the name lives: "busy, retry" rather than a false 4002.
            error = {"t": "error", "code": BUSY, "reason": "busy", "retry_after": 5}
            await self._say_and_close(connection, cid, error, BUSY, "registry unavailable")
            return True
        if not owner or owner == self.registry.instance:
            return False
        redirect = {"t": "redirect", "url": owner + path}
        await self._say_and_close(connection, cid, redirect, 1000, "redirected")
        return True

    async def _say_and_close(
        self, connection: aio.Connection, cid: int, message: dict[str, Any], code: int, reason: str
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(Send(cid, self.outgoing(cid, message)).text())
        await connection.close(code, reason)

    async def _registry_call(self, call: Coroutine[Any, Any, None]) -> None:
        # The registry logs its outages; a missed release expires with its TTL.
        with contextlib.suppress(RegistryUnavailable):
            await call

    # ------------------------------------------------------------------ the core's actions

    def _apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if type(action) is Send:
                self._send(action.cid, action.message)
            elif type(action) is Close:
                link = self._links.get(action.cid)
                if link is not None:
                    self._spawn(link.close(action.code, action.reason))
                    transport = link.transport
                    if (
                        action.code == STALLED
                        and transport is not None
                        and transport.get_write_buffer_size()
                    ):
                        # It reads nothing: our close frame would wait behind the stuck
                        # bytes for close_give_up_time, and so would the forwarding task
                        # of its peer, which is then told 4008 without delay.
                        transport.abort()
                if action.code != 1000:
                    logger.debug(
                        "closing connection %d: %d %s", action.cid, action.code, action.reason
                    )
            elif type(action) is Forget:
                self._spawn(self._registry_call(self.registry.release(action.nameplate)))
            elif type(action) is TrackRid:
                registry = self.registry
                if action.grace is None:
                    self._spawn(self._registry_call(registry.release_rid(action.rid)))
                else:
                    # Registered for the pair's whole life: a drop may come at any time, and
                    # the pair's end releases it (the TTL only outlives a dead instance).
                    ttl = self.config.limits.lifetime_s + action.grace
                    self._spawn(self._registry_call(registry.register_rid(action.rid, ttl)))
        self._rearm()

    def _send(self, cid: int, message: dict[str, Any]) -> None:
        link = self._links.get(cid)
        if link is not None:
            text = Send(cid, self.outgoing(cid, message)).text()
            self._spawn(self._quietly(link.send(text)))

    @staticmethod
    async def _quietly(coroutine: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await coroutine

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        # The coroutines queue their frame in their first step, so tasks created in order
        # write in order.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rearm(self) -> None:
        when = self.core.next_deadline()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None and self._loop is not None:
            self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = self._timer_at = None
        assert self._loop is not None
        self._apply(self.core.on_deadline(self._loop.time()))

    # ------------------------------------------------------------------ HTTP

    async def _allocate(self, request: Request) -> Allocation | Refusal:
        loop = asyncio.get_running_loop()
        ip = self.client_ip(request)
        for _ in range(8):
            result = self.core.allocate(ip, loop.time())
            self._rearm()
            if isinstance(result, Refusal):
                return result
            try:
                reserved = await self.registry.reserve(result.nameplate, result.expires_in)
            except RegistryUnavailable:
                self.core.release_nameplate(result.nameplate)
                return Refusal(503, "the relay's registry is unavailable", 5.0)
            if reserved:
                return result
            self.core.release_nameplate(result.nameplate)  # another instance holds it
        return Refusal(503, "the relay is busy", 30.0)

    def bytes_queued(self) -> int:
        """Bytes held for forwarding, both ways: what waits in ``incoming``, the frames in hand,
        and what the transports have not written yet."""
        total = sum(self._in_hand.values())
        for link in self._links.values():
            total += link.incoming.buffered_bytes
            transport = link.transport
            if transport is not None:
                total += transport.get_write_buffer_size()
        return total

    def metrics(self) -> str:
        """The Prometheus text exposition of the relay's aggregates."""
        stats = self.core.stats()
        lines = [
            "# HELP tube_relay_pairs Pairs by state.",
            "# TYPE tube_relay_pairs gauge",
        ]
        lines += [f'tube_relay_pairs{{state="{k}"}} {v}' for k, v in stats["pairs"].items()]
        lines += [
            "# HELP tube_relay_connections Connections by state.",
            "# TYPE tube_relay_connections gauge",
        ]
        lines += [
            f'tube_relay_connections{{state="{k}"}} {v}' for k, v in stats["connections"].items()
        ]
        lines += [
            "# HELP tube_relay_nameplates Nameplates waiting to be paired.",
            "# TYPE tube_relay_nameplates gauge",
            f"tube_relay_nameplates {stats['nameplates']}",
            "# HELP tube_relay_bytes_forwarded_total Bytes of binary frames forwarded.",
            "# TYPE tube_relay_bytes_forwarded_total counter",
            f"tube_relay_bytes_forwarded_total {stats['bytes_forwarded']}",
            "# HELP tube_relay_bytes_queued Bytes held for forwarding now, both ways.",
            "# TYPE tube_relay_bytes_queued gauge",
            f"tube_relay_bytes_queued {self.bytes_queued()}",
            "# HELP tube_relay_allocations_total Nameplates allocated.",
            "# TYPE tube_relay_allocations_total counter",
            f"tube_relay_allocations_total {stats['allocated']}",
            "# HELP tube_relay_pairings_total Pairs made.",
            "# TYPE tube_relay_pairings_total counter",
            f"tube_relay_pairings_total {stats['paired']}",
            "# HELP tube_relay_closes_total Connections closed by the relay, by close code.",
            "# TYPE tube_relay_closes_total counter",
        ]
        lines += [
            f'tube_relay_closes_total{{code="{k}"}} {v}' for k, v in sorted(stats["closes"].items())
        ]
        lines += [
            "# HELP tube_relay_rate_limited_total Requests refused by a rate limit, by kind.",
            "# TYPE tube_relay_rate_limited_total counter",
        ]
        lines += [
            f'tube_relay_rate_limited_total{{kind="{k}"}} {v}'
            for k, v in sorted(stats["rate_limited"].items())
        ]
        lines += [
            "# HELP tube_relay_byes_total Transfers' outcomes as the peers reported them.",
            "# TYPE tube_relay_byes_total counter",
        ]
        lines += [
            f'tube_relay_byes_total{{mood="{k}"}} {v}' for k, v in sorted(stats["moods"].items())
        ]
        return "\n".join(lines) + "\n"


def _resume_id(text: str | None) -> bytes | None:
    """The rid of a ``resume`` control message, or None (the core judges anything else)."""
    try:
        message = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("t") != "resume":
        return None
    return decode_id(message.get("rid"))
