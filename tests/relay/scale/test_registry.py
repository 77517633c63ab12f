"""Two relay instances sharing a real Redis: ownership, redirects, outages, and no file bytes
in Redis (relay-design §8), spoken over TRP/1 on real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tube.relay.redis_registry import RedisRegistry
from tube.relay.registry import RegistryUnavailable
from tube.relay.server import RelayConfig, RelayServer
from tube.websocket import aio

from ..server.test_server import (
    SUBPROTOCOLS,
    allocate,
    client,
    closed_with,
    control,
    errors,
    request,
    run,
)
from .conftest import Redis, redis_command


@asynccontextmanager
async def instances(redis: Redis, count: int = 2) -> AsyncIterator[list[RelayServer]]:
    """``count`` relays on their own ports, registered in one Redis under their own URLs."""
    servers = []
    try:
        for _ in range(count):
            server = RelayServer(
                RelayConfig(host="127.0.0.1", port=0), registry=RedisRegistry(redis.url, "")
            )
            await server.start()
            server.registry.instance = f"ws://127.0.0.1:{server.port}"
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            await server.close()


async def first_message(server: RelayServer, path: str) -> tuple[dict[str, Any], aio.Connection]:
    connection = await aio.connect(
        f"ws://127.0.0.1:{server.port}{path}", subprotocols=SUBPROTOCOLS, compression=None
    )
    return json.loads(await connection.incoming.get(timeout=5)), connection


def test_the_registry_keeps_names_single_owner_with_ttls(redis: Redis) -> None:
    async def main() -> None:
        one = RedisRegistry(redis.url, "ws://one:1")
        two = RedisRegistry(redis.url, "ws://two:2")
        try:
            assert await one.reserve("4821", 60)
            assert not await two.reserve("4821", 60)  # SET NX: one owner
            assert await two.owner("4821") == "ws://one:1"
            await one.release("4821")
            assert await two.owner("4821") is None
            rid = os.urandom(16)
            await two.register_rid(rid, 60)
            assert await one.rid_owner(rid) == "ws://two:2"
            await two.release_rid(rid)
            assert await one.rid_owner(rid) is None
            # Every name carries its TTL, so a dead instance's names go away by themselves.
            assert await one.reserve("555", 30)
            assert 0 < int(redis_command(redis.port, "PTTL", "tube:np:555")[1:]) <= 30_000
            await two.register_rid(rid, 90)
            key = "tube:rid:" + base64.urlsafe_b64encode(rid).rstrip(b"=").decode()
            assert 30_000 < int(redis_command(redis.port, "PTTL", key)[1:]) <= 90_000
        finally:
            await one.close()
            await two.close()

    run(main)


def test_a_client_on_the_wrong_instance_is_redirected_to_the_owner(redis: Redis) -> None:
    async def main() -> None:
        async with instances(redis) as (a, b):
            nameplate = await allocate(a)
            # Both sides reach B (say, the balancer's ring changed): B redirects them to A.
            for _side in ("send", "recv"):
                message, wrong = await first_message(b, f"/v1/relay/{nameplate}")
                assert message == {
                    "t": "redirect",
                    "url": f"{a.registry.instance}/v1/relay/{nameplate}",
                }
                assert (await closed_with(wrong))[0] == 1000
            sender = await client(a, nameplate, "send")
            receiver = await client(a, nameplate, "recv")
            await sender.send('{"t":"wait"}')
            await receiver.send('{"t":"claim"}')
            assert (await control(sender))["t"] == (await control(receiver))["t"] == "paired"
            await sender.send(b"through A")
            assert await receiver.incoming.get(timeout=5) == b"through A"
            # Paired: the nameplate left Redis (single use), so B now says it is unknown.
            assert await b.registry.owner(nameplate) is None
            late = await client(b, nameplate, "recv")
            await late.send('{"t":"claim"}')
            assert (await closed_with(late))[0] == 4002

            # A resume reaching B is sent to the instance holding the pair.
            rid = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
            for side in (sender, receiver):
                await side.send(json.dumps({"t": "resumable", "rid": rid}))
            await sender.send(b"registered")  # the rid is in Redis once this crossed
            assert await receiver.incoming.get(timeout=5) == b"registered"
            assert receiver.transport is not None
            receiver.transport.abort()
            assert await control(sender) == {"t": "peer", "state": "lost"}
            elsewhere = await client(b, None, "recv")
            await elsewhere.send(json.dumps({"t": "resume", "rid": rid, "role": "recv"}))
            assert await control(elsewhere) == {
                "t": "redirect",
                "url": f"{a.registry.instance}/v1/relay",
            }
            back = await client(a, None, "recv")
            await back.send(json.dumps({"t": "resume", "rid": rid, "role": "recv"}))
            assert (await control(back))["t"] == "paired"
            await sender.send(b"again")
            assert await back.incoming.get(timeout=5) == b"again"
            for connection in (sender, back):
                await connection.close()

    run(main)


def test_a_redis_outage_keeps_pairs_refuses_new_names_and_heals(redis: Redis) -> None:
    async def main() -> None:
        async with instances(redis) as (a, b):
            nameplate = await allocate(a)
            sender = await client(a, nameplate, "send")
            receiver = await client(a, nameplate, "recv")
            await sender.send('{"t":"wait"}')
            await receiver.send('{"t":"claim"}')
            await control(sender), await control(receiver)
            waiting = await allocate(a)  # allocated before the outage, claimed during it

            redis.stop()
            # The pair goes on: no byte of it goes through Redis.
            for index in range(20):
                await sender.send(index.to_bytes(4, "big") * 1000)
                assert await receiver.incoming.get(timeout=5) == index.to_bytes(4, "big") * 1000
            # A new allocation: "busy, retry", with when.
            status, headers, body = await request(a, "POST", "/v1/nameplates")
            assert status == 503 and int(headers["Retry-After"]) > 0, body
            # A name this instance does not know cannot be looked up: 4009 with retry_after,
            # not a false "no such code".
            lost = await aio.connect(
                f"ws://127.0.0.1:{b.port}/v1/relay/{waiting}",
                subprotocols=SUBPROTOCOLS,
                compression=None,
            )
            code, seen = await closed_with(lost)
            assert code == 4009 and errors(seen)[0]["retry_after"] > 0
            # A name this instance holds still pairs (the core knows it without Redis).
            s2 = await client(a, waiting, "send")
            r2 = await client(a, waiting, "recv")
            await s2.send('{"t":"wait"}')
            await r2.send('{"t":"claim"}')
            assert (await control(s2))["t"] == (await control(r2))["t"] == "paired"

            redis.start()  # same port, empty: the relays reconnect by themselves
            nameplate = await allocate(b)
            message, wrong = await first_message(a, f"/v1/relay/{nameplate}")
            assert message["t"] == "redirect"
            await wrong.close()
            for connection in (sender, receiver, s2, r2):
                await connection.close()

    run(main)


def test_redis_carries_no_file_bytes(redis: Redis) -> None:
    async def main() -> None:
        async with instances(redis) as (a, _):
            before = redis.stats()
            nameplate = await allocate(a)
            sender = await client(a, nameplate, "send")
            receiver = await client(a, nameplate, "recv")
            await sender.send('{"t":"wait"}')
            await receiver.send('{"t":"claim"}')
            await control(sender), await control(receiver)
            frame = os.urandom(262_169)
            total = 0

            async def drain() -> None:
                nonlocal total
                while total < 128 * len(frame):
                    total += len(await receiver.incoming.get(timeout=10))

            reader = asyncio.create_task(drain())
            for _ in range(128):  # 32 MiB
                await sender.send(frame)
            await reader
            after = redis.stats()
            moved = after["total_net_input_bytes"] - before["total_net_input_bytes"]
            assert moved < 64 * 1024, moved  # a few commands, not the 32 MiB
            for connection in (sender, receiver):
                await connection.close()

    run(main)


def test_an_unreachable_redis_fails_fast_with_registry_unavailable() -> None:
    async def main() -> None:
        from .conftest import free_port

        registry = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", "ws://x:1", timeout=0.5)
        try:
            for call in (registry.reserve("4821", 1), registry.owner("4821")):
                try:
                    await asyncio.wait_for(call, 5)
                except RegistryUnavailable:
                    continue
                raise AssertionError("no RegistryUnavailable")
        finally:
            await registry.close()

    run(main)
