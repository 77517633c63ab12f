"""The asyncio Connection: messages, the seed's functions, limits, close codes and close order."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import pytest

from tests.conftest import build_frame
from tube.websocket import ConnectionClosed, ConnectionClosedOK, aio
from tube.websocket.core.http import Request
from tube.websocket.core.options import DEFAULTS
from tube.websocket.core.protocol import Role

from .conftest import RawPeer, echo, next_message, run


def test_echo_text_binary_batches_and_ping() -> None:
    async def main() -> None:
        async with (
            aio.serve(echo, "127.0.0.1", 0) as server,
            aio.connect(f"ws://127.0.0.1:{server.port}/") as client,
        ):
            assert aio.is_connected(client) and not aio.is_closing(client)
            assert await aio.wait_until_connected(client, timeout=1)
            await aio.send_text(client, "héllo")
            await aio.send_blob_data(client, b"\x00\x01")
            await client.send(bytearray(b"mutable"))
            await client.send(memoryview(bytes(range(200)))[::2])  # non-contiguous: copied
            await client.send_many(["a", b"b", "c"])
            got = [await client.incoming.get(timeout=5) for _ in range(4)]
            assert got == ["héllo", b"\x00\x01", b"mutable", bytes(range(0, 200, 2))]
            batch: list[aio.Message] = []
            while len(batch) < 3:
                batch += await client.incoming.get_many(timeout=5)
            assert batch == ["a", b"b", "c"]
            await client.ping(b"abc", timeout=5)
            await client.ping()
            large = bytes(3 * 1024 * 1024 // 4) * 4
            await client.send(large[: 1 << 20])
            assert await client.incoming.get(timeout=10) == large[: 1 << 20]
            assert client.request is not None and client.request.target == "/"
        assert client.close_code == 1000
        assert not client.connected and aio.is_closing(client)
        with pytest.raises(ConnectionClosedOK):
            await client.send("after")

    run(main)


def test_send_many_is_atomic_and_arguments_are_checked() -> None:
    async def main() -> None:
        async with (
            aio.serve(echo, "127.0.0.1", 0) as server,
            aio.connect(f"ws://127.0.0.1:{server.port}/") as client,
        ):
            with pytest.raises(UnicodeEncodeError):
                await client.send_many([b"first", "second", "\ud800"])
            with pytest.raises(TypeError):
                await client.send_many([b"first", 5])  # type: ignore[list-item]
            with pytest.raises(TypeError):
                await client.ping(5)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="125"):
                await client.ping(bytes(126))
            with pytest.raises(ValueError):
                await client.initiate_close(1005)
            await client.send(b"later")
            assert await client.incoming.get(timeout=5) == b"later"
            assert len(client.incoming) == 0
            with pytest.raises(TimeoutError):
                await client.incoming.get(timeout=0.05)

    run(main)


def test_options_are_checked_at_once() -> None:
    with pytest.raises(TypeError, match="unknown connection options"):
        aio.serve(echo, "127.0.0.1", 0, max_mesage_size=5)
    with pytest.raises(ValueError):
        aio.serve(echo, "127.0.0.1", 0, ping_interval=-1)

    async def main() -> None:
        with pytest.raises(TypeError, match="server-side"):
            await aio.connect("ws://127.0.0.1:1/", origins=["https://x"])
        with pytest.raises(ValueError):
            await aio.connect("ws://127.0.0.1:1/", headers={"X": "a\r\nb"})

    run(main)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(0x1, b"\xff\xfe", {})], 1007),
        ([(0x3, b"", {})], 1002),
        ([(0x1, b"x", {"rsv": 4})], 1002),
        ([(0x0, b"x", {})], 1002),
        ([(0x9, b"x" * 126, {})], 1002),
        ([(0x2, b"x", {"mask": False})], 1002),
        ([(0x2, b"", {"length": 1 << 62})], 1009),
        ([(0x2, b"x" * 2000, {})], 1009),
        ([(0x2, b"x", {"fin": False})] + [(0x0, b"x", {"fin": False})] * 40, 1009),
    ],
)
def test_a_violation_after_a_good_message_lets_the_reply_out_first(
    frames: list[tuple[int, bytes, dict[str, Any]]], code: int
) -> None:
    """Issue 8 §2: the reply to the good message, then the close frame with the right code."""

    async def main() -> None:
        async with aio.serve(
            echo, "127.0.0.1", 0, max_message_size=1000, max_fragments=32
        ) as server:
            peer = await RawPeer.connect(server.port)
            data = b"".join(build(opcode, payload, **opts) for opcode, payload, opts in frames)
            peer.writer.write(build(0x1, b"good") + data)  # one segment
            reply = await peer.recv_data_frame()
            assert (reply.opcode, reply.payload) == (0x1, b"good")
            close = await peer.recv_data_frame()
            assert close.opcode == 0x8 and close.close_code == code
            peer.send_close(code)
            await peer.expect_eof()
            await peer.close()

    from tests.conftest import build_frame as build

    run(main)


def test_a_violation_is_committed_after_the_bound_if_the_application_does_not_come_back() -> None:
    taken = asyncio.Event

    async def main() -> None:
        event = taken()
        seen: asyncio.Future[tuple[Any, int | None, Any]] = (
            asyncio.get_running_loop().create_future()
        )

        async def slow(connection: aio.Connection) -> None:
            # What the handler sees is asserted by the test, below: an assert in a handler
            # would only close its connection with 1011.
            first = await next_message(connection)
            await event.wait()  # never asks for the next message
            code = connection.close_code
            seen.set_result((first, code, await next_message(connection)))

        give_up = 0.3
        async with aio.serve(slow, "127.0.0.1", 0, close_give_up_time=give_up) as server:
            peer = await RawPeer.connect(server.port)
            from tests.conftest import build_frame

            started = time.monotonic()
            peer.writer.write(build_frame(0x1, b"good") + build_frame(0x1, b"x", rsv=2))
            close = await peer.recv_data_frame()
            elapsed = time.monotonic() - started
            assert close.opcode == 0x8 and close.close_code == 1002
            # README: committed close_give_up_time after the violation; margin 0.5 s for a
            # loaded 2-core machine.
            assert give_up <= elapsed < give_up + 0.5, elapsed
            event.set()
            first, code, end = await asyncio.wait_for(seen, 5)
            assert first == "good"
            assert code == 1002
            assert isinstance(end, ConnectionClosed) and end.code == 1002
            peer.send_close(1002)
            await peer.expect_eof()
            await peer.close()

    run(main)


def test_incoming_ends_once_the_handshake_is_complete_while_the_peer_keeps_tcp_open() -> None:
    """Issue 8 §1: the handler's loop ends at once, not after close_give_up_time."""

    async def main() -> None:
        ended = asyncio.get_running_loop().create_future()

        async def handler(connection: aio.Connection) -> None:
            async for message in connection.incoming:
                if message == b"Hello Server":
                    await aio.initiate_close(connection)
            ended.set_result((time.monotonic(), connection.close_code, connection.connected))

        async with aio.serve(handler, "127.0.0.1", 0, close_give_up_time=3.0) as server:
            peer = await RawPeer.connect(server.port)
            peer.send_frame(0x2, b"Hello Server")
            close = await peer.recv_data_frame()
            assert close.opcode == 0x8 and close.close_code == 1000
            answered = time.monotonic()
            peer.send_close(1000)
            when, code, connected = await asyncio.wait_for(ended, 1.0)
            assert when - answered < 0.5 and code == 1000 and connected is False
            # The server shut its write side down; our socket stays open meanwhile.
            assert await peer.expect_eof() == b""
            await peer.close()

    run(main)


def test_client_and_server_close_codes() -> None:
    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            client = await aio.connect(url)
            await client.send("close 4001")
            closed = await next_message(client)
            assert isinstance(closed, ConnectionClosed)
            assert (closed.code, closed.reason, closed.initiated_by) == (4001, "asked", "remote")
            assert (client.close_code, client.close_reason) == (4001, "asked")
            await client.wait_closed()
            client = await aio.connect(url)
            await client.close(3000, "bye")
            assert (client.close_code, client.close_reason) == (3000, "")  # the echo's
            # The peer vanishes without a close frame: 1006.
            peer = await RawPeer.connect(server.port)
            peer.abort()

    run(main)


def test_async_with_closes_with_1011_when_the_block_raises() -> None:
    """README: leaving ``async with connection`` closes with 1000, or 1011 if the block raised
    (the handler here catches the error, so the 1011 is the block's, not ``serve()``'s)."""

    async def main() -> None:
        caught = asyncio.get_running_loop().create_future()

        async def handler(connection: aio.Connection) -> None:
            try:
                async with connection:
                    raise RuntimeError("the block failed")
            except RuntimeError as error:
                caught.set_result(error)

        async with aio.serve(handler, "127.0.0.1", 0) as server:
            peer = await RawPeer.connect(server.port)
            frame = await peer.recv_data_frame()
            assert (frame.opcode, frame.close_code) == (0x8, 1011)
            peer.send_close(1011)
            await peer.expect_eof()
            await peer.close()
            assert str(await asyncio.wait_for(caught, 5)) == "the block failed"

    run(main)


def test_a_close_frame_without_a_code_ends_with_connection_closed_ok() -> None:
    """A close frame with no status code: 1005, a normal end (``ConnectionClosedOK``)."""

    async def main() -> None:
        ended = asyncio.get_running_loop().create_future()

        async def handler(connection: aio.Connection) -> None:
            ended.set_result(await next_message(connection))

        async with aio.serve(handler, "127.0.0.1", 0) as server:
            peer = await RawPeer.connect(server.port)
            peer.send_close(None)
            closed = await asyncio.wait_for(ended, 5)
            assert isinstance(closed, ConnectionClosedOK), closed
            assert closed.code == 1005 and closed.ok
            frame = await peer.recv_data_frame()
            assert (frame.opcode, frame.payload) == (0x8, b"")
            await peer.expect_eof()
            await peer.close()

    run(main)


def test_close_retry_and_give_up_with_a_silent_peer() -> None:
    async def main() -> None:
        result = asyncio.get_running_loop().create_future()

        async def handler(connection: aio.Connection) -> None:
            await aio.initiate_close(connection, 1000)
            closed = await next_message(connection, timeout=5)
            result.set_result((closed.code, time.monotonic()))

        async with aio.serve(
            handler, "127.0.0.1", 0, close_retry_time=0.2, close_give_up_time=0.6
        ) as server:
            peer = await RawPeer.connect(server.port)
            started = time.monotonic()
            first = await peer.recv_frame()
            second = await peer.recv_frame()
            assert first.opcode == second.opcode == 0x8
            assert 0.15 < time.monotonic() - started < 1
            await peer.expect_eof()
            assert 0.5 < time.monotonic() - started < 2
            code, _ = await result
            assert code == 1006
            await peer.close()

    run(main)


def test_keepalive_pings_and_times_out_with_1011() -> None:
    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.3) as server:
            # A live peer: answers each ping with its pong, and the server keeps it. Each ping
            # after the first shows that the pong before it was taken as a sign of life (without
            # it, a close with 1011 would come instead, ping_timeout after the ping).
            peer = await RawPeer.connect(server.port)
            for _ in range(3):
                ping = await peer.recv_frame(timeout=2)
                assert ping.opcode == 0x9
                peer.send_frame(0xA, ping.payload)
            peer.send_frame(0x1, b"still here")
            echoed = await peer.recv_data_frame(timeout=5)
            assert (echoed.opcode, echoed.payload) == (0x1, b"still here")
            await peer.close()
            # A silent peer: never answers.
            peer = await RawPeer.connect(server.port)
            ping = await peer.recv_frame(timeout=2)
            assert ping.opcode == 0x9
            close = await peer.recv_frame(timeout=2)
            assert close.opcode == 0x8 and close.close_code == 1011
            await peer.close()

    run(main)


def test_unknown_close_reason_and_status_fields() -> None:
    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0) as server:
            peer = await RawPeer.connect(server.port)
            peer.send_frame(0x8, struct.pack("!H", 1000) + b"\xff")  # invalid UTF-8 reason
            close = await peer.recv_data_frame()
            assert close.close_code == 1007
            await peer.expect_eof()
            await peer.close()

    run(main)


def test_permessage_deflate_between_aio_server_and_client() -> None:
    async def main() -> None:
        async with (
            aio.serve(echo, "127.0.0.1", 0, compression="deflate") as server,
            aio.connect(f"ws://127.0.0.1:{server.port}/") as client,
        ):
            assert client.options.deflate_options is not None
            text = "compressible " * 10_000
            await client.send(text)
            await client.send(b"\x00" * 100_000, compress=False)
            await client.send_many(["a" * 5000, b"b" * 5000], compress=True)
            got = [await client.incoming.get(timeout=5) for _ in range(4)]
            assert got == [text, b"\x00" * 100_000, "a" * 5000, b"b" * 5000]
        assert client.close_code == 1000

    run(main)


def test_adopt_a_transport_whose_handshake_another_server_answered() -> None:
    """``Connection._adopt()`` (the uvicorn integration's entry): bytes read past the head are
    the first frames, reading resumes, and the connection runs as after its own handshake."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server_sock, client_sock = socket.socketpair()
        client_sock.setblocking(False)
        try:
            # Another server's protocol reads the head, then holds reading.
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_sock)
            transport.pause_reading()
            connection = aio.Connection(Role.SERVER, DEFAULTS)
            transport.set_protocol(connection)
            request = Request("GET", "/chat", "HTTP/1.1", [("Host", "example")])
            connection._adopt(transport, request, "chat.v1", None, build_frame(0x1, b"early"))
            assert connection.connected and connection.subprotocol == "chat.v1"
            assert connection.request is request
            assert await connection.incoming.get(timeout=5) == "early"
            await loop.sock_sendall(client_sock, build_frame(0x2, b"later"))
            assert await connection.incoming.get(timeout=5) == b"later"
            await connection.send("reply")
            async with asyncio.timeout(5):
                assert await loop.sock_recv(client_sock, 100) == b"\x81\x05reply"
            await connection.send(b"bytes")
            async with asyncio.timeout(5):
                assert await loop.sock_recv(client_sock, 100) == b"\x82\x05bytes"
            await loop.sock_sendall(client_sock, build_frame(0x8, struct.pack("!H", 1000)))
            assert isinstance(await next_message(connection), ConnectionClosedOK)
            for late in ("text", b"binary"):  # the one-step framing declines: the usual error
                with pytest.raises(ConnectionClosedOK):
                    await connection.send(late)
            client_sock.close()  # the EOF the server waits for after its close frame
            async with asyncio.timeout(5):
                await connection.wait_closed()
        finally:
            client_sock.close()

    run(main)
