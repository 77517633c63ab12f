"""Large messages read in place on asyncio (issue 25): the transport reads a large binary
frame's payload straight into the bytes the application receives (Protocol.receive_buffer).

Both ends are Tube's asyncio connections, so each side's reading is exercised: messages of
many sizes around the 64 KiB threshold, with small ones and text between them, over TCP, TLS
(asyncio's SSL protocol feeds get_buffer() too) and uvloop, arrive intact and in order, and
the in-place path is taken (counted)."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable

from tests.conftest import LARGE_SIZES, require
from tube.websocket import aio

from .conftest import echo, run


async def exchange(client_ssl: ssl.SSLContext | None, server_ssl: ssl.SSLContext | None) -> None:
    messages: list[bytes | str] = []
    for size in LARGE_SIZES:
        messages.append(os.urandom(size))
        messages.append("between")
    scheme = "wss" if client_ssl is not None else "ws"
    server = aio.serve(echo, "127.0.0.1", 0, ssl=server_ssl, max_message_size=4 << 20)
    async with (
        server,
        aio.connect(
            f"{scheme}://localhost:{server.port}/", ssl=client_ssl, max_message_size=4 << 20
        ) as client,
    ):
        # One at a time and all at once: a read may then hold the end of one large message
        # and the start of the next.
        for message in messages[:4]:
            await client.send(message)
            assert await client.incoming.get(timeout=10) == message
        await client.send_many(messages)
        for message in messages:
            got = await client.incoming.get(timeout=10)
            assert type(got) is type(message)
            assert got == message


def test_large_messages_over_tcp(in_place_reads: list[int]) -> None:
    run(lambda: exchange(None, None), timeout=60)
    assert in_place_reads[0] > 0


def test_large_messages_over_tls(
    in_place_reads: list[int], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    run(lambda: exchange(client_context, server_context), timeout=60)
    assert in_place_reads[0] > 0


def _with_uvloop(main: Callable[[], Awaitable[None]]) -> None:
    require("uvloop")  # a pinned test dependency: a skip here fails under CI
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 60))


def test_large_messages_on_uvloop(in_place_reads: list[int]) -> None:
    _with_uvloop(lambda: exchange(None, None))
    assert in_place_reads[0] > 0
