"""The asyncio send path's direct writes (issue 25): a large frame's header and payload leave
with one ``writev`` on plain TCP when the transport holds nothing; what the kernel does not
take, TLS, and a transport already buffering all go through the transport, in order."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import pytest

from tube.websocket import aio
from tube.websocket.aio import sending

from .conftest import echo, run


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
