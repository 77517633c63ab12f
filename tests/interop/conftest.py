"""Fixtures for the interop tests: real peers (websockets, Node ws, Chromium) and an echo server.

A missing peer skips the test with the reason, except under ``CI=true``, where it fails the
test loudly: CI must run every interop test (``./scripts/test`` installs the peers).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import under_ci

NODE_DIR = Path(__file__).parent / "node"
CHROMIUM = Path("/usr/bin/chromium")
# Messages up to 4 MiB are exchanged; leave room for the multi-byte text too.
ECHO_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
# Seconds a test waits for threads of the echo server to end at teardown.
TEARDOWN_TIMEOUT = 10.0
CLOSE_COMMAND = "tube-test:close "


def missing_peer(what: str, how: str) -> None:
    """Skip the current test because ``what`` is missing, or fail under CI."""
    message = f"{what} is not available; {how} (./scripts/test installs it)"
    if under_ci():
        pytest.fail(f"interop peer missing under CI: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def websockets_client() -> Any:
    """The ``websockets.sync.client`` module (Python websockets library)."""
    if importlib.util.find_spec("websockets") is None:
        missing_peer("the Python package websockets", "pip install -e '.[test]'")
    import websockets.sync.client

    return websockets.sync.client


@dataclass
class NodeWs:
    """How to run the Node ``ws`` client script."""

    node: str
    script: Path
    version: str


@pytest.fixture
def node_ws() -> NodeWs:
    """The ``node`` executable and the ``ws_client.mjs`` script with ``ws`` installed."""
    node = shutil.which("node")
    if node is None:
        missing_peer("node (Node.js)", "apt-get install nodejs")
        raise AssertionError("unreachable")
    package = NODE_DIR / "node_modules" / "ws" / "package.json"
    if not package.is_file():
        missing_peer(f"the npm package ws in {NODE_DIR}", f"run npm ci in {NODE_DIR}")
    version = json.loads(package.read_text())["version"]
    return NodeWs(node=node, script=NODE_DIR / "ws_client.mjs", version=version)


@pytest.fixture
def chromium() -> Path:
    """The Debian Chromium binary."""
    if not os.access(CHROMIUM, os.X_OK):
        missing_peer(str(CHROMIUM), "apt-get install chromium")
    return CHROMIUM


def sha256(data: str | bytes) -> str:
    """Hex SHA-256 of ``data`` (text is hashed as UTF-8)."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


@dataclass
class EchoServer:
    """An echo application on Tube's public API, served by ``http.server``.

    Every message comes back unchanged; the text message ``"tube-test:close CODE REASON"``
    makes the server call ``initiate_close(connection, CODE, REASON)`` instead.
    """

    url: str
    # (kind, size, sha256) of every message the server received, in order, all connections.
    received: list[tuple[str, int, str]] = field(default_factory=list)
    # (close_code, close_reason) of every connection once its incoming channel ended.
    closed: list[tuple[int | None, str | None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_closed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.all_closed = threading.Condition(self.lock)

    def wait_closed(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` connections have ended; return False on timeout."""
        with self.all_closed:
            return self.all_closed.wait_for(lambda: len(self.closed) >= count, timeout)


def _echo(server: EchoServer, connection: Any) -> None:
    from tube.websocket import initiate_close

    try:
        for message in connection.incoming:
            if isinstance(message, str) and message.startswith(CLOSE_COMMAND):
                code, _, reason = message[len(CLOSE_COMMAND) :].partition(" ")
                initiate_close(connection, int(code), reason)
                continue
            kind = "text" if isinstance(message, str) else "binary"
            size = len(message.encode()) if isinstance(message, str) else len(message)
            with server.lock:
                server.received.append((kind, size, sha256(message)))
            connection.send(message)
    except BaseException as error:  # recorded and re-raised by the test at teardown
        with server.lock:
            server.errors.append(error)
    finally:
        with server.all_closed:
            server.closed.append(
                (getattr(connection, "close_code", None), getattr(connection, "close_reason", None))
            )
            server.all_closed.notify_all()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    """An echo server on 127.0.0.1 (ephemeral port); ``url`` is its ``ws://`` URL."""
    from tube.websocket import HandshakeError, create_connection, upgrade_connection

    state: list[EchoServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state[0]
            connection = create_connection(max_message_size=ECHO_MAX_MESSAGE_SIZE)
            try:
                upgrade_connection(self, connection)
            except HandshakeError as error:
                with server.lock:
                    server.errors.append(error)
                return
            thread = threading.Thread(target=_echo, args=(server, connection), name="echo-app")
            with server.lock:
                server.connections.append(connection)
                server.threads.append(thread)
            thread.start()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = EchoServer(url=f"ws://127.0.0.1:{httpd.server_address[1]}/")
    state.append(server)
    serving = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="echo-http")
    serving.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        serving.join()
        httpd.server_close()
        from tube.websocket import ConnectionClosed, initiate_close, is_connected

        with server.lock:
            connections = list(server.connections)
            threads = list(server.threads)
        for connection in connections:
            if is_connected(connection):
                with contextlib.suppress(ConnectionClosed):
                    initiate_close(connection, 1001, "test over")
        for thread in threads:
            thread.join(TEARDOWN_TIMEOUT)
        assert not [t for t in threads if t.is_alive()], "echo threads did not end"
    if server.errors:
        raise server.errors[0]
