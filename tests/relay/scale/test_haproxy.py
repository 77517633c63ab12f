"""The deploy files at work: two ``python -m tube`` processes behind haproxy
(``deploy/haproxy.cfg``) sharing a redis-server, spoken to over TRP/1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tube.websocket import aio

from ..server.test_server import FRAME, SUBPROTOCOLS
from .cluster import Cluster, cluster
from .conftest import Redis


def run(coroutine: Any) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))


async def allocate(url: str) -> str:
    import urllib.request

    def call() -> str:
        request = urllib.request.Request(f"{url}/v1/nameplates", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
            return str(json.load(response)["nameplate"])

    return await asyncio.to_thread(call)


async def join(base: str, nameplate: str, role: str) -> tuple[aio.Connection, list[str]]:
    """hello + wait/claim on ``base``, following redirects; the connection and the URLs tried."""
    url = f"{base}/v1/relay/{nameplate}"
    tried = []
    for _ in range(3):
        tried.append(url)
        connection = await aio.connect(
            url, subprotocols=SUBPROTOCOLS, compression=None, max_message_size=2 << 20
        )
        await connection.send(json.dumps({"t": "hello", "v": 1, "role": role}))
        first = json.loads(await connection.incoming.get(timeout=5))
        if first["t"] == "redirect":
            url = first["url"]
            await connection.close()
            continue
        assert first["t"] == "welcome", first
        await connection.send(json.dumps({"t": "wait" if role == "send" else "claim"}))
        return connection, tried
    raise AssertionError(f"redirected too often: {tried}")


def test_both_sides_meet_through_haproxy_wherever_the_code_was_allocated(redis: Redis) -> None:
    with cluster(redis) as running:

        async def main(running: Cluster) -> None:
            front = f"ws://127.0.0.1:{running.port}"
            owners: set[str] = set()
            for _ in range(6):  # allocations go round-robin: both instances allocate some
                nameplate = await allocate(running.url)
                owners.add(str(await asyncio.to_thread(owner_of, running, nameplate)))
                sender, tried_s = await join(front, nameplate, "send")
                receiver, tried_r = await join(front, nameplate, "recv")
                # Hashing the path sends both to one instance: the same route for both.
                assert tried_s == tried_r
                paired = json.loads(await sender.incoming.get(timeout=5))
                assert paired["t"] == "paired"
                assert json.loads(await receiver.incoming.get(timeout=5)) == paired
                frame = bytes(FRAME)
                await sender.send(frame)
                assert await receiver.incoming.get(timeout=5) == frame
                for connection in (sender, receiver):
                    await connection.send('{"t":"bye","mood":"happy"}')
                    await connection.close()
            assert owners == {i.url for i in running.instances}

        run(main(running))


def owner_of(running: Cluster, nameplate: str) -> str:
    from .conftest import redis_command

    reply = redis_command(running.redis.port, "GET", f"tube:np:{nameplate}")
    assert reply.startswith(b"$") and not reply.startswith(b"$-1"), reply
    return reply.split(b"\r\n")[1].decode()


def test_a_receiver_sent_to_the_other_instance_is_redirected(redis: Redis) -> None:
    with cluster(redis) as running:

        async def main(running: Cluster) -> None:
            nameplate = await allocate(running.url)
            owner = owner_of(running, nameplate)
            other = next(i for i in running.instances if i.url != owner)
            sender, _ = await join(owner, nameplate, "send")
            receiver, tried = await join(other.url, nameplate, "recv")
            assert tried == [f"{other.url}/v1/relay/{nameplate}", f"{owner}/v1/relay/{nameplate}"]
            assert json.loads(await receiver.incoming.get(timeout=5))["t"] == "paired"
            await sender.close()
            await receiver.close()

        run(main(running))
