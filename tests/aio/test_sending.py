"""The asyncio send path's direct writes (issue 25): a large frame's header and payload leave
with one ``writev`` on plain TCP when the transport holds nothing; what the kernel does not
take, TLS, and a transport already buffering all go through the transport, in order."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import pytest

from tube.websocket import aio
from tube.websocket.aio import sending
from tube.websocket.core.protocol import Role

from .conftest import aio_pair, echo, run


@pytest.fixture
def writev_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every direct writev: (bytes asked, bytes the kernel took)."""
    calls: list[tuple[int, int]] = []
    real = sending._writev
    assert real is not None

    def counting(fd: int, buffers: Sequence[Any]) -> int:
        written: int = real(fd, buffers)
        calls.append((sum(len(b) for b in buffers), written))
        return written

    monkeypatch.setattr(sending, "_writev", counting)
    return calls


def _messages() -> list[bytes | str]:
    # Large binary messages between small ones and text: each distinct, so that a byte out of
    # order or lost shows.
    out: list[bytes | str] = []
    for i in range(12):
        out.append(bytes([i]) * (256 * 1024 + i) + bytes(range(256)) * (i + 1))
        out.append(f"small {i}")
        out.append(bytes([255 - i]) * 100)
    out.append(b"\x07" * (1 << 20))
    return out


def test_large_frames_are_one_writev_and_arrive_whole_in_order(
    writev_calls: list[tuple[int, int]],
) -> None:
    async def main() -> None:
        messages = _messages()
        async with aio.serve(echo, "127.0.0.1", 0, max_message_size=2 << 20) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with aio.connect(url, max_message_size=2 << 20) as client:
                assert client._sender._fd >= 0
                # All at once: the kernel's buffers fill, so later frames find the transport
                # buffering (they must queue behind it) and some writev are partial.
                for message in messages:
                    await client.send(message)
                received = [await client.incoming.get(timeout=10) for _ in messages]
                assert received == messages

    run(main)
    assert writev_calls  # the client's masked frames and the server's echoes
    assert all(0 <= written <= asked for asked, written in writev_calls)


def test_tls_never_writes_around_the_transport(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    writev_calls: list[tuple[int, int]],
) -> None:
    server_context, client_context = tls_contexts

    async def main() -> None:
        messages = _messages()[:6]
        async with aio.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
            url = f"wss://127.0.0.1:{server.port}/"
            async with aio.connect(url, ssl=client_context) as client:
                assert client._sender._fd == -1
                for message in messages:
                    await client.send(message)
                received = [await client.incoming.get(timeout=10) for _ in messages]
                assert received == messages

    run(main)
    assert writev_calls == []


def test_sends_that_write_at_once_leave_no_flush_scheduled() -> None:
    """``send_many`` writes its batch before it returns, and what an ``on_message`` callback
    sends is written when the callback returns: neither schedules a flush for the next loop
    iteration as well (a handle that would run for nothing, one per send)."""

    async def main() -> None:
        connection, peer = await aio_pair(Role.SERVER)
        loop = asyncio.get_running_loop()
        scheduled: list[object] = []
        real_call_soon = loop.call_soon

        def call_soon(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
            scheduled.append(callback)
            return real_call_soon(callback, *args, **kwargs)

        loop.call_soon = call_soon  # type: ignore[method-assign,assignment]
        try:
            batch: list[str | bytes] = [b"one", "two", b"3" * 300]
            await connection.send_many(batch)
            assert [peer.recv_message() for _ in batch] == batch
            # In the callback: a message too long for the small-frame path (the general one).
            connection.on_message(lambda message: connection.send_nowait(message * 2))
            peer.send_binary(b"x" * 200)
            assert await asyncio.to_thread(peer.recv_message) == b"x" * 400
            assert connection._sender.flush not in scheduled
            # Outside a callback, send_nowait still leaves the write to the loop iteration.
            connection.send_nowait(b"y" * 200)
            assert connection._sender.flush in scheduled
            assert await asyncio.to_thread(peer.recv_message) == b"y" * 200
        finally:
            loop.call_soon = real_call_soon  # type: ignore[method-assign]
            peer.close()
            connection._abort("test over")
            await connection.wait_closed()

    run(main)
