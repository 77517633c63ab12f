"""The benchmark's echo server: text stays text, binary stays binary, limits hold."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tube.websocket import ConnectionClosed, connect
from tube.websocket.echo import EchoServer


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = EchoServer(("127.0.0.1", 0), max_message_size=1000)
    thread = threading.Thread(target=server.serve_forever, name="test-echo")
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_echoes_a_batch_keeping_types_and_order(echo_url: str) -> None:
    messages: list[str | bytes] = ["text", b"\x00binary", "", b"", "é" * 100]
    with connect(echo_url) as connection:
        connection.send_many(messages)
        assert [connection.incoming.get(timeout=5) for _ in messages] == messages


def test_message_over_the_limit_is_refused_with_1009(echo_url: str) -> None:
    with connect(echo_url) as connection:
        connection.send(b"x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            connection.incoming.get(timeout=5)
    assert info.value.code == 1009


def test_invalid_max_message_size_is_refused() -> None:
    with pytest.raises(ValueError):
        EchoServer(("127.0.0.1", 0), max_message_size=0)


@pytest.mark.parametrize(
    "arguments",
    [
        ["--transport", "asyncio"],
        ["--transport", "asyncio", "--api", "message"],
        ["--transport", "asyncio", "--api", "message", "--allocator", "default"],
        ["--transport", "asyncio", "--api", "callback"],
        ["--api", "message"],
    ],
    ids=[
        "asyncio-batch",
        "asyncio-message",
        "asyncio-message-malloc-default",
        "asyncio-callback",
        "threads-message",
    ],
)
def test_the_command_echoes_on_each_transport_and_api(arguments: list[str]) -> None:
    """``python -m tube.websocket.echo`` as bench/run.py starts it: the readiness line, then
    every message back in order, text as text."""
    with subprocess.Popen(
        [sys.executable, "-m", "tube.websocket.echo", "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        check_echo(process)


def check_echo(process: subprocess.Popen[str]) -> None:
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        messages: list[str | bytes] = ["one", b"\x00two", "three" * 100, b"x" * 70_000]
        with connect(f"ws://127.0.0.1:{port}/") as connection:
            for message in messages:
                connection.send(message)
            assert [connection.incoming.get(timeout=5) for _ in messages] == messages
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


def test_the_callback_api_is_refused_on_threads_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tube.websocket.echo", "--port", "0", "--api", "callback"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--api callback is asyncio's (on_message)" in result.stderr
