"""The asyncio client's errors, IPv6, frames right behind the 101, and uvloop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import GUID, build_frame, mask_bytes, require
from tube.websocket import HandshakeRejected, InvalidURI, OpenTimeout, aio

from .conftest import echo, next_message, run


def test_connect_errors() -> None:
    async def main() -> None:
        with pytest.raises(InvalidURI):
            await aio.connect("http://127.0.0.1/")
        with pytest.raises(ValueError, match="wss"):
            await aio.connect("ws://127.0.0.1/", ssl=__import__("ssl").create_default_context())
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        with pytest.raises(ConnectionRefusedError, match="refused"):
            await aio.connect(f"ws://127.0.0.1:{port}/")
        with pytest.raises(socket.gaierror, match="cannot resolve"):
            await aio.connect("ws://does-not-exist.invalid/")

        # A server that accepts TCP and never answers: OpenTimeout names the step.
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(OpenTimeout, match="waiting for the handshake response"):
                await aio.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)

        # A server that answers something else than a WebSocket.
        async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nno such ws")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(http, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeRejected) as refused:
                await aio.connect(f"ws://127.0.0.1:{port}/")
            assert refused.value.status == 404 and refused.value.body == b"no such ws"

    run(main)


def test_ipv6_and_a_message_right_behind_the_101() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def greet(connection: aio.Connection) -> None:
        await connection.send("welcome")  # may travel in the same segment as the 101
        await echo(connection)

    async def main() -> None:
        try:
            server = await aio.serve(greet, "::1", 0)
        except OSError:
            pytest.skip("no IPv6 loopback")
        try:
            async with aio.connect(f"ws://[::1]:{server.port}/") as client:
                assert await client.incoming.get(timeout=5) == "welcome"
                assert client.remote_address[0] == "::1"
        finally:
            await server.close()

    run(main)


def test_reuse_port_lets_two_servers_share_a_port() -> None:
    async def main() -> None:
        first = await aio.serve(echo, "127.0.0.1", 0, reuse_port=True)
        async with (
            first,
            aio.serve(echo, "127.0.0.1", first.port, reuse_port=True) as second,
            aio.connect(f"ws://127.0.0.1:{first.port}/") as client,
        ):
            assert second.port == first.port
            await client.send("shared")
            assert await client.incoming.get(timeout=5) == "shared"

    run(main)


def _with_uvloop(main: Callable[[], Awaitable[None]]) -> None:
    require("uvloop")  # a pinned test dependency: a skip here fails under CI
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 20))


def test_on_uvloop() -> None:
    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0, incoming_size=2) as server:
            async with aio.connect(f"ws://127.0.0.1:{server.port}/") as client:
                await client.send_many([b"x" * 100_000, "text"] * 10)
                got = [await client.incoming.get(timeout=5) for _ in range(20)]
                assert got == [b"x" * 100_000, "text"] * 10
                await client.ping(b"uv", timeout=5)
                await client.send("close 4002")
                assert (await next_message(client)).code == 4002
            assert client.close_code == 4002

    _with_uvloop(main)


class RawServer:
    """A hand-written WebSocket server on asyncio streams: answers the handshake, then
    ``script(reader, writer)`` plays the server's part frame by frame."""

    def __init__(self, script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]):
        self.script = script
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", head)
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.group(1) + GUID.encode()).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        try:
            await self.script(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.done.set_result(None)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (masked) client frame: (opcode, unmasked payload)."""
    first, second = await asyncio.wait_for(reader.readexactly(2), 5)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    key = await reader.readexactly(4)
    return first & 0x0F, mask_bytes(await reader.readexactly(length), key)


def test_client_incoming_ends_at_the_handshake_while_the_server_keeps_tcp_open() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(build_frame(0x1, b"hello", mask=False))
            writer.write(build_frame(0x8, struct.pack("!H", 1000), mask=False))
            assert await read_frame(reader) == (0x8, struct.pack("!H", 1000))
            await release.wait()  # keeps TCP open: no EOF for the client

        raw = RawServer(script)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = await aio.connect(f"ws://127.0.0.1:{port}/", close_give_up_time=0.5)
            started = time.monotonic()
            assert await client.incoming.get(timeout=5) == "hello"
            closed = await next_message(client)
            assert closed.code == 1000 and time.monotonic() - started < 0.3
            assert client.close_code == 1000 and not client.connected
            await client.wait_closed()  # the give-up bound closes TCP on our side
            # README: at most close_give_up_time plus a second (here 1.5 s; it takes the
            # give-up's 0.5 s). The margin for a loaded 2-core machine is 0.5 s more.
            elapsed = time.monotonic() - started
            assert 0.3 < elapsed < 0.5 + 1 + 0.5, elapsed
            release.set()
            await raw.done

    run(main)


def test_client_replies_to_a_good_message_before_the_violation_close() -> None:
    async def main() -> None:
        frames: list[tuple[int, bytes]] = []

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(
                build_frame(0x1, b"ping me", mask=False) + build_frame(0x1, b"x", mask=True)
            )
            frames.append(await read_frame(reader))
            frames.append(await read_frame(reader))
            writer.write(build_frame(0x8, struct.pack("!H", 1002), mask=False))
            await reader.read()

        raw = RawServer(script)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = await aio.connect(f"ws://127.0.0.1:{port}/")
            message = await client.incoming.get(timeout=5)
            assert message == "ping me"
            await client.send(f"reply to {message!s}")
            closed = await next_message(client)  # commits the violation: 1002
            assert closed.code == 1002
            await raw.done
            await client.wait_closed()
        assert frames[0] == (0x1, b"reply to ping me")
        assert frames[1][0] == 0x8 and frames[1][1][:2] == struct.pack("!H", 1002)

    run(main)
