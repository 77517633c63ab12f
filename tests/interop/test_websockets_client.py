"""Interop: the Python ``websockets`` library's sync client against Tube's server."""

from __future__ import annotations

import os
import random
import string
import threading
from typing import Any

import pytest

from .conftest import EchoServer, sha256

pytestmark = pytest.mark.interop

SIZES = [0, 125, 126, 65535, 65536, 4 * 1024 * 1024]
TIMEOUT = 10.0


def random_ascii(size: int) -> str:
    """A random ASCII string of exactly ``size`` bytes."""
    return "".join(random.choices(string.ascii_letters + string.digits + " ", k=size))


def multi_byte_text() -> str:
    """Text with 1- to 4-byte UTF-8 characters, longer than 65536 bytes."""
    unit = "héllo wörld ✓ €uro 🚀 "
    return unit * (70_000 // len(unit.encode()) + 1) + random_ascii(7)


def connect(client: Any, server: EchoServer) -> Any:
    return client.connect(
        server.url,
        max_size=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
        ping_interval=None,
    )


@pytest.mark.parametrize("size", SIZES)
def test_binary_echo(websockets_client: Any, echo_server: EchoServer, size: int) -> None:
    payload = os.urandom(size)
    with connect(websockets_client, echo_server) as ws:
        ws.send(payload)
        echoed = ws.recv(timeout=TIMEOUT)
    assert isinstance(echoed, bytes)
    assert len(echoed) == size
    assert echoed == payload
    assert echo_server.received == [("binary", size, sha256(payload))]


@pytest.mark.parametrize("size", SIZES)
def test_text_echo(websockets_client: Any, echo_server: EchoServer, size: int) -> None:
    text = random_ascii(size)
    with connect(websockets_client, echo_server) as ws:
        ws.send(text)
        echoed = ws.recv(timeout=TIMEOUT)
    assert isinstance(echoed, str)
    assert echoed == text
    assert echo_server.received == [("text", size, sha256(text))]


def test_multi_byte_text_and_fragments(websockets_client: Any, echo_server: EchoServer) -> None:
    text = multi_byte_text()
    with connect(websockets_client, echo_server) as ws:
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text
        # A fragmented message (websockets sends each item of an iterable as one frame),
        # split inside multi-byte characters' neighbours but on character boundaries.
        parts = ["€" * 1000, "🚀" * 1000, "x" * 70_000]
        ws.send(parts)
        assert ws.recv(timeout=TIMEOUT) == "".join(parts)
        fragments = [os.urandom(1000), b"", os.urandom(65_536)]
        ws.send(fragments)
        assert ws.recv(timeout=TIMEOUT) == b"".join(fragments)


def test_pings_from_the_client(websockets_client: Any, echo_server: EchoServer) -> None:
    with connect(websockets_client, echo_server) as ws:
        for payload in [b"", b"ping-1", os.urandom(125)]:
            pong = ws.ping(payload)
            assert pong.wait(TIMEOUT), f"no pong for ping {payload!r}"
        # The connection still carries data after the pings.
        ws.send("after pings")
        assert ws.recv(timeout=TIMEOUT) == "after pings"


def test_client_closes_first(websockets_client: Any, echo_server: EchoServer) -> None:
    with connect(websockets_client, echo_server) as ws:
        ws.send(b"data")
        assert ws.recv(timeout=TIMEOUT) == b"data"
        assert ws.ping(b"p").wait(TIMEOUT)
        ws.close(1000, "client bye")
        # The server answered our close frame: the client saw the handshake complete.
        assert ws.close_code == 1000
    # The server got our code and reason (its echo need not repeat the reason, §5.5.1).
    assert echo_server.wait_closed(1)
    assert echo_server.closed == [(1000, "client bye")]


def test_server_closes_first(websockets_client: Any, echo_server: EchoServer) -> None:
    from websockets.exceptions import ConnectionClosedOK

    with connect(websockets_client, echo_server) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        assert ws.ping(b"p").wait(TIMEOUT)
        ws.send("tube-test:close 1000 server bye")
        with pytest.raises(ConnectionClosedOK) as raised:
            ws.recv(timeout=TIMEOUT)
    assert raised.value.rcvd is not None
    assert (raised.value.rcvd.code, raised.value.rcvd.reason) == (1000, "server bye")
    assert echo_server.wait_closed(1)
    assert echo_server.closed == [(1000, "server bye")]


def test_many_messages_in_order(websockets_client: Any, echo_server: EchoServer) -> None:
    messages: list[str | bytes] = [
        random_ascii(i) if i % 2 else os.urandom(i) for i in range(0, 3000, 7)
    ]
    with connect(websockets_client, echo_server) as ws:
        # Send from another thread while this one reads, so that neither side's buffers
        # need to hold the whole exchange.
        sender = threading.Thread(target=lambda: [ws.send(m) for m in messages])
        sender.start()
        try:
            echoed = [ws.recv(timeout=TIMEOUT) for _ in messages]
        finally:
            sender.join(TIMEOUT)
    assert echoed == messages
