"""Connection.on_message(): messages handed to a callback inside the read, replies sent with
send_nowait(), backpressure through pause/resume, and an end that loses nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.conftest import build_frame
from tube.websocket import ConnectionClosed, ConnectionClosedOK, aio

from .conftest import RawPeer, run


def frames(*payloads: bytes) -> bytes:
    """Masked binary frames, to be written in one segment (one read on the server)."""
    return b"".join(build_frame(0x2, payload) for payload in payloads)


class Server:
    """A server whose handler sets a message callback, recording what it saw."""

    def __init__(self) -> None:
        self.connection: aio.Connection | None = None
        self.seen: list[aio.Message] = []
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()

    async def echo(self, connection: aio.Connection) -> None:
        self.connection = connection

        def on_message(message: aio.Message) -> None:
            self.seen.append(message)
            connection.send_nowait(message)

        connection.on_message(on_message)
        self.opened.set()
        await connection.wait_closed()
        self.ended.set()


def test_an_echo_in_the_callback_keeps_order_and_ends_with_the_peers_close() -> None:
    async def main() -> None:
        server = Server()
        # Without the callback's hand-over, the close reply would wait for the application to
        # read incoming, up to close_reply_time (1 s); it comes in the same read, and 0.5 s is
        # the margin allowed for a loaded machine.
        async with aio.serve(server.echo, "127.0.0.1", 0) as listening:
            peer = await RawPeer.connect(listening.port)
            await server.opened.wait()
            # One small message, alone: its echo leaves when the callback returns.
            peer.writer.write(frames(b"alone"))
            assert (await peer.recv_data_frame(timeout=2)).payload == b"alone"
            payloads = [bytes([n]) * (n * 100) for n in range(1, 40)]
            peer.writer.write(frames(*payloads))
            for payload in payloads:
                frame = await peer.recv_data_frame()
                assert (frame.opcode, frame.payload) == (0x2, payload)
            # A message and the close frame in one read: the message is handed over and
            # echoed, then the close is answered (nobody reads incoming).
            peer.writer.write(frames(b"last") + build_frame(0x8, (1000).to_bytes(2, "big")))
            echo = await peer.recv_data_frame()
            assert echo.payload == b"last"
            close = await peer.recv_frame(timeout=0.5)
            assert close.opcode == 0x8 and close.close_code == 1000
            await peer.expect_eof()
            await peer.close()
            await asyncio.wait_for(server.ended.wait(), 5)
            connection = server.connection
            assert connection is not None
            assert server.seen == [b"alone", *payloads, b"last"]
            assert connection.close_code == 1000
            assert len(connection.incoming) == 0
            with pytest.raises(ConnectionClosedOK):
                await connection.incoming.get()
            with pytest.raises(ConnectionClosedOK):
                connection.send_nowait(b"after the end")

    run(main)


def test_a_violation_after_messages_is_answered_once_they_were_handed_over() -> None:
    async def main() -> None:
        server = Server()
        # The violation's close frame waits for the application at most close_give_up_time
        # (10 s here) without a callback; with one, it leaves in the same read (2 s allowed).
        async with aio.serve(server.echo, "127.0.0.1", 0, close_give_up_time=10) as listening:
            peer = await RawPeer.connect(listening.port)
            await server.opened.wait()
            peer.writer.write(frames(b"ok", b"fine") + build_frame(0x2, b"x", rsv=4))
            assert (await peer.recv_data_frame(timeout=2)).payload == b"ok"
            assert (await peer.recv_data_frame(timeout=2)).payload == b"fine"
            close = await peer.recv_frame(timeout=2)
            assert close.opcode == 0x8 and close.close_code == 1002
            peer.send_close(1002)
            await peer.expect_eof()
            await peer.close()
            await asyncio.wait_for(server.ended.wait(), 5)
        assert server.seen == [b"ok", b"fine"]
        assert server.connection is not None and server.connection.close_code == 1002

    run(main)


def test_messages_already_waiting_are_handed_over_first_in_order() -> None:
    async def main() -> None:
        handed: list[aio.Message] = []
        at_once: list[aio.Message] = []
        done = asyncio.Event()

        async def handler(connection: aio.Connection) -> None:
            first = await connection.incoming.get()  # the other two arrived in the same read
            assert first == b"1" and len(connection.incoming) == 2
            connection.on_message(handed.append)
            at_once.extend(handed)  # handed over inside on_message(), before it returned
            assert len(connection.incoming) == 0
            done.set()
            await connection.wait_closed()

        async with aio.serve(handler, "127.0.0.1", 0) as listening:
            peer = await RawPeer.connect(listening.port)
            peer.writer.write(frames(b"1", b"2", b"3"))
            await asyncio.wait_for(done.wait(), 5)
            peer.writer.write(frames(b"4"))
            peer.send_close(1000)
            close = await peer.recv_frame()
            assert close.opcode == 0x8
            await peer.expect_eof()
            await peer.close()
        assert at_once == [b"2", b"3"]
        assert handed == [b"2", b"3", b"4"]

    run(main)


def test_a_callback_that_raises_closes_with_1011_and_keeps_the_rest_of_the_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        kept: list[aio.Message] = []

        async def handler(connection: aio.Connection) -> None:
            def on_message(message: aio.Message) -> None:
                if message == b"bad":
                    raise RuntimeError("the application's bug")

            connection.on_message(on_message)
            await connection.wait_closed()
            # Nothing after the failing message was dropped: it waits in incoming.
            kept.extend(await connection.incoming.get_many())

        async with aio.serve(handler, "127.0.0.1", 0) as listening:
            peer = await RawPeer.connect(listening.port)
            peer.writer.write(frames(b"good", b"bad", b"after", b"and after"))
            close = await peer.recv_frame()
            assert close.opcode == 0x8 and close.close_code == 1011
            peer.send_close(1011)
            await peer.expect_eof()
            await peer.close()
        assert kept == [b"after", b"and after"]

    with caplog.at_level(logging.ERROR, logger="tube.websocket.aio"):
        run(main)
    failures = [r for r in caplog.records if "error in the on_message callback" in r.message]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_none_goes_back_to_incoming_for_the_messages_that_follow() -> None:
    async def main() -> None:
        handed: list[aio.Message] = []
        through_incoming: list[aio.Message] = []

        async def handler(connection: aio.Connection) -> None:
            def on_message(message: aio.Message) -> None:
                handed.append(message)
                if message == b"switch":
                    connection.on_message(None)

            connection.on_message(on_message)
            async for message in connection.incoming:
                through_incoming.append(message)

        async with aio.serve(handler, "127.0.0.1", 0) as listening:
            peer = await RawPeer.connect(listening.port)
            peer.writer.write(frames(b"a", b"switch", b"b", b"c"))
            peer.send_close(1000)
            close = await peer.recv_frame()
            assert close.opcode == 0x8
            await peer.expect_eof()
            await peer.close()
        assert handed == [b"a", b"switch"]
        assert through_incoming == [b"b", b"c"]

    run(main)


def test_pause_and_resume_follow_the_transport_and_pause_reading_holds_the_source() -> None:
    """A relay between two connections on callbacks: the far end stops reading, the
    destination's pause callback pauses the source, and every message arrives in order."""

    async def main() -> None:
        events: list[str] = []
        paused = asyncio.Event()
        count, size = 200, 64 * 1024
        received: list[int] = []
        relay_done = asyncio.Event()
        loop = asyncio.get_running_loop()
        destination_ready: asyncio.Future[aio.Connection] = loop.create_future()

        async def destination_handler(connection: aio.Connection) -> None:
            destination_ready.set_result(connection)
            await connection.wait_closed()

        async with (
            aio.serve(destination_handler, "127.0.0.1", 0) as destination_server,
            aio.connect(f"ws://127.0.0.1:{destination_server.port}/") as reader,
        ):
            reader.pause_reading()  # the far end reads nothing until we say so
            destination = await destination_ready

            async def relay_handler(source: aio.Connection) -> None:
                def pause() -> None:
                    events.append("pause")
                    source.pause_reading()
                    paused.set()

                def resume() -> None:
                    events.append("resume")
                    source.resume_reading()

                destination.on_message(lambda message: None, pause=pause, resume=resume)
                source.on_message(destination.send_nowait)
                await source.wait_closed()
                relay_done.set()

            async with aio.serve(relay_handler, "127.0.0.1", 0, max_message_size=size) as relay:
                async with aio.connect(f"ws://127.0.0.1:{relay.port}/") as writer:
                    sending = asyncio.ensure_future(
                        writer.send_many(n.to_bytes(4, "big") * (size // 4) for n in range(count))
                    )
                    await asyncio.wait_for(paused.wait(), 10)
                    assert destination.writing_paused
                    reader.resume_reading()
                    async with asyncio.timeout(20):
                        while len(received) < count:
                            message = await reader.incoming.get()
                            assert isinstance(message, bytes) and len(message) == size
                            received.append(int.from_bytes(message[:4], "big"))
                    await sending
                await asyncio.wait_for(relay_done.wait(), 5)
        assert received == list(range(count))
        assert events[0] == "pause" and "resume" in events
        assert not destination.writing_paused

    run(main, timeout=40)


def test_send_nowait_outside_a_callback_and_its_errors() -> None:
    async def main() -> None:
        async def handler(connection: aio.Connection) -> None:
            message = await connection.incoming.get()
            connection.send_nowait(message)
            connection.send_nowait("text too")
            with pytest.raises(TypeError):
                connection.send_nowait(42)  # type: ignore[arg-type]
            await connection.wait_closed()

        async with aio.serve(handler, "127.0.0.1", 0) as listening:
            async with aio.connect(f"ws://127.0.0.1:{listening.port}/") as client:
                await client.send(b"ping")
                assert await client.incoming.get(timeout=5) == b"ping"
                assert await client.incoming.get(timeout=5) == "text too"
            with pytest.raises(ConnectionClosed):
                client.send_nowait(b"closed")

    run(main)
