"""The asyncio Connection's behaviours its mutation run left untested (issue 24): on_message's
pause callback called at once on a full transport, pause and resume callbacks that raise
(logged by name, closing with 1011, never called again), a ping waiting when the connection
ends, the peer named in the log lines, send_nowait with every bytes-like type, and a large
message read in place counting as a sign of life for keepalive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.conftest import build_frame
from tube.websocket import ConnectionClosed, ConnectionClosedOK, aio

from .conftest import PEER_TIMEOUT, RawPeer, run

CHUNK = b"x" * 65536


@asynccontextmanager
async def full_transport() -> AsyncIterator[tuple[aio.Connection, aio.Connection]]:
    """(a server's connection whose transport is over its high-water mark, the client that
    does not read it): the client resumes reading to drain it."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[aio.Connection] = loop.create_future()

    async def handler(connection: aio.Connection) -> None:
        ready.set_result(connection)
        await connection.wait_closed()

    async with (
        aio.serve(handler, "127.0.0.1", 0) as server,
        aio.connect(f"ws://127.0.0.1:{server.port}/") as client,
    ):
        client.pause_reading()
        connection = await asyncio.wait_for(ready, PEER_TIMEOUT)
        for _ in range(2000):  # at most 128 MiB; the kernel's buffers take a few
            if connection.writing_paused:
                break
            connection.send_nowait(CHUNK)
            await asyncio.sleep(0)  # the scheduled write
        assert connection.writing_paused
        yield connection, client


async def drain(client: aio.Connection) -> int | None:
    """Read every message until the end; the close code."""
    client.resume_reading()
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionClosed):
            while True:
                await client.incoming.get()
    return client.close_code


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_pause_is_called_at_once_when_the_transport_is_already_full() -> None:
    async def main() -> None:
        events: list[str] = []
        resumed = asyncio.Event()

        def resume() -> None:
            events.append("resume")
            resumed.set()

        async with full_transport() as (connection, client):
            connection.on_message(lambda message: None, pause=lambda: events.append("pause"))
            assert events == ["pause"]
            connection.on_message(lambda message: None, resume=resume)  # no pause: none called
            assert events == ["pause"]
            client.resume_reading()
            await asyncio.wait_for(resumed.wait(), 10)
            assert events == ["pause", "resume"]
            assert not connection.closing
            await connection.initiate_close()
            assert await drain(client) == 1000  # every message read, then the close frame

    run(main)


def test_a_pause_callback_that_raises_closes_with_1011_and_is_not_called_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Logged once with its name; resume, dropped with it, is never called."""

    def pause() -> None:
        raise RuntimeError("pause failed")

    async def main() -> None:
        resumed: list[str] = []
        async with full_transport() as (connection, client):
            connection.on_message(
                lambda message: None, pause=pause, resume=lambda: resumed.append("resume")
            )
            assert connection.closing
            assert await drain(client) == 1011
            assert await connection.wait_closed(PEER_TIMEOUT)
        assert resumed == []

    caplog.set_level(logging.ERROR, logger="tube.websocket.aio")
    run(main)
    assert errors(caplog) == ["error in the on_message pause callback; closing with 1011"]


def test_a_resume_callback_that_raises_is_logged_by_name_and_closes_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def resume() -> None:
        raise RuntimeError("resume failed")

    async def main() -> None:
        async with full_transport() as (connection, client):
            connection.on_message(lambda message: None, resume=resume)
            assert not connection.closing
            assert await drain(client) == 1011

    caplog.set_level(logging.ERROR, logger="tube.websocket.aio")
    run(main)
    assert errors(caplog) == ["error in the on_message resume callback; closing with 1011"]


def test_a_ping_waiting_for_its_pong_raises_connection_closed_when_the_connection_ends() -> None:
    """The peer never answers pings; its close frame ends the connection: the ping raises
    ConnectionClosedOK at once, not after its 10 s timeout."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[aio.Connection] = loop.create_future()

        async def handler(connection: aio.Connection) -> None:
            ready.set_result(connection)
            await connection.wait_closed()

        async with aio.serve(handler, "127.0.0.1", 0) as server:
            peer = await RawPeer.connect(server.port)
            try:
                connection = await asyncio.wait_for(ready, PEER_TIMEOUT)
                pinging = asyncio.ensure_future(connection.ping(b"hello", timeout=10))
                frame = await peer.recv_frame()
                assert (frame.opcode, frame.payload) == (0x9, b"hello")
                peer.send_close(1000)
                async with asyncio.timeout(PEER_TIMEOUT):
                    with pytest.raises(ConnectionClosedOK):
                        await pinging
            finally:
                await peer.close()

    run(main)


def test_log_lines_name_the_peer_as_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(connection: aio.Connection) -> None:
        await connection.wait_closed()

    async def main() -> int:
        async with aio.serve(handler, "127.0.0.1", 0) as server:
            async with aio.connect(f"ws://127.0.0.1:{server.port}/") as client:
                port: int = client.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            return port

    caplog.set_level(logging.DEBUG, logger="tube.websocket")
    port = run(main)
    assert f"close frame from 127.0.0.1:{port}: 1000 ''" in caplog.messages


def test_send_nowait_takes_every_bytes_like_type_on_a_server() -> None:
    """A server's small messages take the fast path only for bytes and str; bytearray and
    memoryview go the general way and arrive the same."""

    async def handler(connection: aio.Connection) -> None:
        connection.send_nowait(bytearray(b"ab"))
        connection.send_nowait(memoryview(b"cd"))
        connection.send_nowait(b"ef")
        connection.send_nowait("gh")
        await connection.wait_closed()

    async def main() -> None:
        async with (
            aio.serve(handler, "127.0.0.1", 0) as server,
            aio.connect(f"ws://127.0.0.1:{server.port}/") as client,
            asyncio.timeout(PEER_TIMEOUT),
        ):
            received = [await client.incoming.get() for _ in range(4)]
        assert received == [b"ab", b"cd", b"ef", "gh"]

    run(main)


def test_a_large_message_arriving_slowly_keeps_the_peer_alive() -> None:
    """The payload of a 512 KiB message is read in place, 20 KiB every 50 ms for about 1.3 s
    (the peer cannot answer a ping inside a frame): each read is a sign of life, so keepalive
    (0.2 s + 0.2 s) never gives up, and the message arrives whole."""
    payload = bytes(range(256)) * 2048
    frame = build_frame(0x2, payload)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        received: asyncio.Future[tuple[aio.Message, bool]] = loop.create_future()

        async def handler(connection: aio.Connection) -> None:
            message = await connection.incoming.get()
            received.set_result((message, connection.closing))
            await connection.wait_closed()

        async with aio.serve(
            handler, "127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.2
        ) as server:
            peer = await RawPeer.connect(server.port)
            try:
                for start in range(0, len(frame), 20 * 1024):
                    peer.writer.write(frame[start : start + 20 * 1024])
                    await asyncio.sleep(0.05)  # the slow sender itself, not a wait for an event
                assert await asyncio.wait_for(received, PEER_TIMEOUT) == (payload, False)
                peer.send_close(1000)
                closing = await peer.recv_data_frame()
                assert closing.close_code == 1000
            finally:
                await peer.close()

    run(main)
