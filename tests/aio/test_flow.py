"""Backpressure both ways, send_timeout as "no progress", and hostile peers."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.conftest import build_frame
from tube.websocket import ConnectionClosed, aio

from .conftest import RawPeer, run

CHUNK = bytes(64 * 1024)


def _small_send_buffer(connection: aio.Connection) -> None:
    # Test only: keep the kernel's buffers small, so that a peer that does not read is felt
    # after a few KiB instead of several MiB.
    sock = connection.transport.get_extra_info("socket") if connection.transport else None
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def test_send_timeout_is_no_progress_a_slow_reader_is_kept_a_stopped_one_aborted() -> None:
    async def main() -> None:
        outcome = asyncio.get_running_loop().create_future()

        async def producer(connection: aio.Connection) -> None:
            _small_send_buffer(connection)
            sent = 0
            try:
                while sent < 4000:
                    await connection.send(CHUNK)
                    sent += 1
            except ConnectionClosed as closed:
                outcome.set_result((time.monotonic(), closed.code, closed.reason))

        async with aio.serve(producer, "127.0.0.1", 0, send_timeout=0.3) as server:
            peer = await RawPeer.connect(server.port, rcvbuf=8192)
            # Phase 1: read about 320 KB/s, slower than the server sends, for 1.2 s: bytes keep
            # leaving, so the server never gives up although single sends wait > send_timeout.
            reading_until = time.monotonic() + 1.2
            received = 0
            while time.monotonic() < reading_until:
                received += len(await peer.reader.read(8192))
                await asyncio.sleep(0.025)
            assert not outcome.done(), outcome.result()
            assert received > 64 * 1024
            # Phase 2: stop reading entirely: aborted after send_timeout without progress.
            stopped = time.monotonic()
            when, code, reason = await asyncio.wait_for(outcome, 5)
            assert code == 1006 and "send timed out" in reason
            assert 0.2 < when - stopped < 2.0
            peer.abort()

    run(main)


def test_a_peer_flooding_an_application_that_does_not_read_is_slowed_down_by_tcp() -> None:
    async def main() -> None:
        connected = asyncio.get_running_loop().create_future()
        release = asyncio.Event()
        counted = asyncio.get_running_loop().create_future()

        async def lazy(connection: aio.Connection) -> None:
            connected.set_result(connection)
            await release.wait()
            count = 0
            async for message in connection.incoming:
                assert message == count.to_bytes(4, "big") + bytes(60 * 1024)
                count += 1
            counted.set_result(count)

        async with aio.serve(lazy, "127.0.0.1", 0, incoming_size=4) as server:
            peer = await RawPeer.connect(server.port)
            connection = await connected
            sent = 0
            try:
                while sent < 2000:  # at most 120 MiB; TCP must stop us long before
                    peer.send_frame(0x2, sent.to_bytes(4, "big") + bytes(60 * 1024))
                    sent += 1
                    async with asyncio.timeout(0.5):
                        await peer.writer.drain()
            except TimeoutError:
                pass
            assert sent < 2000, "the server kept reading for an application that does not"
            assert len(connection.incoming) <= 4 + 8
            assert connection.incoming.buffered_bytes <= 4 * 1024 * 1024 + 512 * 1024
            release.set()
            async with asyncio.timeout(5):
                await peer.writer.drain()
            peer.send_close(1000)
            assert await asyncio.wait_for(counted, 5) == sent
            await peer.expect_eof()
            await peer.close()

    run(main)


def test_incoming_is_bounded_by_its_bytes_before_its_count() -> None:
    """README: ``incoming`` holds at most ``incoming_bytes`` (4 MiB by default) plus one socket
    read. 1 MiB messages under the default 16-message bound: the byte bound stops reading at
    4 MiB (one read may complete a fifth message), where the count alone would allow 16 MiB."""

    async def main() -> None:
        connected = asyncio.get_running_loop().create_future()
        release = asyncio.Event()
        counted = asyncio.get_running_loop().create_future()
        size = 1 << 20

        async def lazy(connection: aio.Connection) -> None:
            connected.set_result(connection)
            await release.wait()
            count = 0
            async for _ in connection.incoming:
                count += 1
            counted.set_result(count)

        async with aio.serve(lazy, "127.0.0.1", 0) as server:
            peer = await RawPeer.connect(server.port)
            connection = await connected
            assert (connection.options.incoming_size, connection.options.incoming_bytes) == (
                16,
                4 << 20,
            )
            sent = 0
            try:
                while sent < 40:  # 40 MiB at most; the byte bound must stop us near 4
                    peer.send_frame(0x2, bytes(size))
                    sent += 1
                    async with asyncio.timeout(0.5):
                        await peer.writer.drain()
            except TimeoutError:
                pass
            assert sent < 40, "the server kept reading for an application that does not"
            assert connection.incoming.buffered_bytes <= (4 << 20) + size
            assert len(connection.incoming) <= 5
            release.set()
            async with asyncio.timeout(5):
                await peer.writer.drain()
            peer.send_close(1000)
            assert await asyncio.wait_for(counted, 5) == sent
            await peer.expect_eof()
            await peer.close()

    run(main)


def test_a_ping_flood_from_a_peer_that_never_reads_stays_bounded() -> None:
    async def main() -> None:
        connected = asyncio.get_running_loop().create_future()

        async def idle(connection: aio.Connection) -> None:
            _small_send_buffer(connection)
            connected.set_result(connection)
            async for _ in connection.incoming:
                pass

        async with aio.serve(idle, "127.0.0.1", 0) as server:
            peer = await RawPeer.connect(server.port, rcvbuf=8192)
            connection = await connected
            ping = build_frame(0x9, b"p" * 125)
            sent = 0
            try:
                while sent < 200_000:  # 26 MB at most
                    peer.writer.write(ping * 100)
                    sent += 100
                    async with asyncio.timeout(0.5):
                        await peer.writer.drain()
            except TimeoutError:
                pass
            assert sent < 200_000, "the server kept reading pings it could not answer"
            assert connection.transport is not None
            assert connection.transport.get_write_buffer_size() < 1024 * 1024
            peer.abort()

    run(main)


def test_a_slow_head_is_dropped_after_open_timeout() -> None:
    async def main() -> None:
        async with aio.serve(
            lambda c: asyncio.sleep(0), "127.0.0.1", 0, open_timeout=0.5
        ) as server:
            peer = await RawPeer.connect(server.port, handshake=False)
            request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            started = time.monotonic()
            try:
                for byte in request * 10:
                    peer.writer.write(bytes([byte]))
                    await peer.writer.drain()
                    await asyncio.sleep(0.02)
            except ConnectionError:
                pass
            assert await peer.expect_eof(timeout=2) == b""
            assert 0.4 < time.monotonic() - started < 2.0
            peer.abort()
            # A silent client too, beside a good one that is served meanwhile.
            silent = await RawPeer.connect(server.port, handshake=False)
            good = await RawPeer.connect(server.port)
            await good.close()
            assert await silent.expect_eof(timeout=2) == b""
            silent.abort()

    run(main)


def test_absurd_heads_are_refused_with_their_status() -> None:
    async def main() -> None:
        async with aio.serve(lambda c: asyncio.sleep(0), "127.0.0.1", 0) as server:
            for request, status in [
                (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
                (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
                (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 200 + b"\r\n", b"431"),
                (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
                (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
            ]:
                peer = await RawPeer.connect(server.port, handshake=False)
                peer.writer.write(request)
                response = await peer.expect_eof()
                assert response.startswith(b"HTTP/1.1 " + status), response[:80]
                await peer.close()

    run(main)


def _refused_exchange(port: int, request: bytes) -> tuple[bytes, str]:
    """Send ``request`` whole, then read to the end: (the answer, "FIN" or "reset")."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            return answer, "reset"
        return answer, "FIN"


def test_a_refused_head_with_unread_bytes_ends_with_fin_not_a_reset() -> None:
    """Issue 22: the server answers a head too large as soon as it knows (414 after 8 KiB of
    request line), while the rest is still arriving; closing then, with those bytes unread,
    made the kernel reset the connection (the threaded server reads and drops them first)."""

    async def main() -> None:
        async with aio.serve(lambda c: asyncio.sleep(0), "127.0.0.1", 0) as server:
            for request, status in [
                (b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n", b"414"),
                (b"GET / HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n", b"431"),
            ]:
                answer, end = await asyncio.to_thread(_refused_exchange, server.port, request)
                assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
                assert end == "FIN"
            # A client that keeps its socket open after the answer is closed after a bound.
            peer = await RawPeer.connect(server.port, handshake=False)
            peer.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await peer.expect_eof()).startswith(b"HTTP/1.1 400 ")
            async with asyncio.timeout(5):
                while server._connections:
                    await asyncio.sleep(0.05)
            peer.abort()

    run(main)
