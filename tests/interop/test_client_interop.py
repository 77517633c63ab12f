"""Our client against real servers: the Python ``websockets`` library and Node's ``ws``.

Both servers echo every message and understand two test commands (text messages):
``tube-test:close CODE REASON`` makes the server start the closing handshake, and
``tube-test:ping HEX`` makes it send a ping and answer ``tube-test:pong HEX`` once our client's
pong came back. Under ``CI=true`` a missing peer fails the tests; elsewhere it skips them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from websockets.exceptions import ConnectionClosed as PeerClosed
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Subprotocol

from tests.conftest import under_ci
from tube.websocket.core.errors import ConnectionClosed
from tube.websocket.threads.client import connect
from tube.websocket.threads.connection import Connection

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).parent / "node"
SIZES = [0, 125, 126, 65535, 65536, 4 * 1024 * 1024]
SUBPROTOCOL = "tube.test"
TIMEOUT = 20.0


def missing_peer(what: str) -> None:
    """Fail loudly in CI (the peer must be installed there), skip on a developer's machine."""
    if under_ci():
        pytest.fail(f"interop peer missing in CI: {what}")
    pytest.skip(f"interop peer missing: {what}")


@dataclass
class EchoServer:
    """A running echo server: where to connect and how it saw each connection end."""

    name: str
    url: str
    closes: queue.SimpleQueue[tuple[int, str]] = field(default_factory=queue.SimpleQueue)
    client_context: ssl.SSLContext | None = None

    def next_close(self) -> tuple[int, str]:
        """The (code, reason) the server saw at the end of the next connection."""
        return self.closes.get(timeout=TIMEOUT)


# ---------------------------------------------------------------- the websockets server


def websockets_handler(
    closes: queue.SimpleQueue[tuple[int, str]],
) -> Callable[[ServerConnection], None]:
    def handler(ws: ServerConnection) -> None:
        try:
            for message in ws:
                if isinstance(message, str) and message.startswith("tube-test:close "):
                    code, _, reason = message.removeprefix("tube-test:close ").partition(" ")
                    ws.close(int(code), reason)
                    break
                if isinstance(message, str) and message.startswith("tube-test:ping "):
                    payload = message.removeprefix("tube-test:ping ")
                    if ws.ping(bytes.fromhex(payload)).wait(TIMEOUT):
                        ws.send(f"tube-test:pong {payload}")
                    continue
                ws.send(message)
        except PeerClosed:
            pass
        finally:
            close_code = ws.close_code if ws.close_code is not None else 1006
            closes.put((close_code, ws.close_reason or ""))

    return handler


@contextlib.contextmanager
def websockets_server(
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[int, queue.SimpleQueue[tuple[int, str]]]]:
    closes: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
    with serve(
        websockets_handler(closes),
        "127.0.0.1",
        0,
        ssl=tls,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        compression=None,
        max_size=None,
        ping_interval=None,
    ) as server:
        thread = threading.Thread(target=server.serve_forever, name="websockets-server")
        thread.start()
        try:
            yield server.socket.getsockname()[1], closes
        finally:
            server.shutdown()
            thread.join(timeout=TIMEOUT)
            assert not thread.is_alive()


# ---------------------------------------------------------------- the Node ws server


@contextlib.contextmanager
def node_server() -> Iterator[tuple[int, queue.SimpleQueue[tuple[int, str]]]]:
    node = shutil.which("node")
    if node is None:
        missing_peer("the node executable")
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        missing_peer(f"the ws package (run npm install in {NODE_DIR})")
    process = subprocess.Popen(
        [str(node), str(NODE_DIR / "ws_echo_server.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=NODE_DIR,
    )
    assert process.stdin is not None and process.stdout is not None
    lines: queue.SimpleQueue[dict[str, object] | None] = queue.SimpleQueue()
    closes: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()

    def read_stdout() -> None:
        # Ends when the process exits (its stdout closes).
        assert process.stdout is not None
        for raw in process.stdout:
            report = json.loads(raw)
            if report.get("event") == "closed":
                closes.put((int(report["code"]), str(report["reason"])))
            else:
                lines.put(report)
        lines.put(None)

    reader = threading.Thread(target=read_stdout, name="node-stdout")
    reader.start()
    try:
        ready = lines.get(timeout=TIMEOUT)
        assert ready is not None and "port" in ready, f"node server did not start: {ready}"
        port = ready["port"]
        assert isinstance(port, int)
        yield port, closes
    finally:
        process.stdin.close()  # the server stops at the end of its input
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
        process.stdout.close()


@pytest.fixture(params=["websockets", "node"])
def echo_server(request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    starter = websockets_server if request.param == "websockets" else node_server
    with starter() as (port, closes):
        yield EchoServer(request.param, f"ws://127.0.0.1:{port}/echo?x=1", closes)


# ---------------------------------------------------------------- helpers


def ascii_text(size: int) -> str:
    """Text of exactly ``size`` bytes in UTF-8."""
    return os.urandom(size // 2 + 1).hex()[:size]


def open_client(server: EchoServer) -> Connection:
    return connect(
        server.url,
        subprotocols=[SUBPROTOCOL],
        ssl=server.client_context,
        open_timeout=TIMEOUT,
        max_message_size=8 * 1024 * 1024,
    )


def exchange_every_size(connection: Connection) -> None:
    for size in SIZES:
        text = ascii_text(size)
        connection.send(text)
        assert connection.incoming.get(timeout=TIMEOUT) == text, f"text of {size} bytes"
        data = os.urandom(size)
        connection.send(data)
        assert connection.incoming.get(timeout=TIMEOUT) == data, f"binary of {size} bytes"


# ---------------------------------------------------------------- tests


def test_messages_of_every_size_then_client_close(echo_server: EchoServer) -> None:
    with open_client(echo_server) as connection:
        assert connection.subprotocol == SUBPROTOCOL
        exchange_every_size(connection)
    # Leaving the block closed with 1000, and the server saw exactly that.
    assert connection.close_code == 1000
    assert echo_server.next_close() == (1000, "")


def test_client_close_with_a_code_and_reason(echo_server: EchoServer) -> None:
    connection = open_client(echo_server)
    connection.send("before the close")
    assert connection.incoming.get(timeout=TIMEOUT) == "before the close"
    connection.close(4000, "client says bye")
    assert connection.close_code == 4000
    assert echo_server.next_close() == (4000, "client says bye")
    with pytest.raises(ConnectionClosed):
        connection.send("after the close")


def test_server_close(echo_server: EchoServer) -> None:
    connection = open_client(echo_server)
    try:
        connection.send(b"\x00\x01")
        connection.send("tube-test:close 4001 server says bye")
        # Messages sent before the close are delivered, then the channel ends.
        assert connection.incoming.get(timeout=TIMEOUT) == b"\x00\x01"
        with pytest.raises(ConnectionClosed) as info:
            connection.incoming.get(timeout=TIMEOUT)
        assert info.value.code == 4001
        assert info.value.reason == "server says bye"
        assert connection.close_code == 4001
        assert connection.close_reason == "server says bye"
        # Our client echoed the code (RFC 6455 §5.5.1), without repeating the reason.
        assert echo_server.next_close()[0] == 4001
    finally:
        connection.close()


def test_pings_from_the_server_are_answered(echo_server: EchoServer) -> None:
    with open_client(echo_server) as connection:
        for payload in ("01", "deadbeef", "ab" * 125):
            connection.send(f"tube-test:ping {payload}")
            assert connection.incoming.get(timeout=TIMEOUT) == f"tube-test:pong {payload}"


def test_wss_against_websockets() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with websockets_server(server_context) as (port, closes):
        server = EchoServer("websockets", f"wss://127.0.0.1:{port}/", closes, client_context)
        with open_client(server) as connection:
            exchange_every_size(connection)
            connection.send("tube-test:ping 0102")
            assert connection.incoming.get(timeout=TIMEOUT) == "tube-test:pong 0102"
        assert server.next_close() == (1000, "")
