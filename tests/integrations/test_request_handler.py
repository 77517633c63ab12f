"""WebSocketRequestHandler: deadlines on reading request heads (slow and silent clients)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tube.websocket import (
    Connection,
    WebSocketRequestHandler,
    connect,
    create_connection,
    upgrade_connection,
)

from ..conftest import require


class EchoHandler(WebSocketRequestHandler):
    request_head_timeout = 0.5
    timeout = 5.0

    def do_GET(self) -> None:
        connection = create_connection()
        upgrade_connection(self, connection)
        threading.Thread(target=self.echo, args=(connection,), daemon=True).start()

    @staticmethod
    def echo(connection: Connection) -> None:
        with contextlib.suppress(Exception):
            for message in connection.incoming:
                connection.send(message)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="test-http")
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def read_until_closed(sock: socket.socket, limit: float) -> float:
    """Read until EOF or reset; return when it happened (monotonic)."""
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(4096):
            pass
    return time.monotonic()


def test_client_dribbling_its_request_head_is_cut_off(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed = threading.Event()

        def dribble() -> None:
            # One header byte every 50 ms: the per-read timeout (5 s) never fires.
            for _ in range(200):
                if closed.wait(0.05):
                    return
                try:
                    sock.send(b"X")
                except OSError:
                    return

        dribbler = threading.Thread(target=dribble)
        dribbler.start()
        try:
            ended = read_until_closed(sock, limit=5.0)
        finally:
            closed.set()
            dribbler.join()
    assert ended - start < 3.0, "the server kept a dribbling client past its head deadline"


def test_silent_client_is_cut_off(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.monotonic()
        ended = read_until_closed(sock, limit=5.0)
    assert ended - start < 3.0


def test_upgraded_connection_outlives_the_head_deadline(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    with connect(f"ws://127.0.0.1:{port}/") as connection:
        connection.send("first")
        assert connection.incoming.get(timeout=5) == "first"
        # Well past request_head_timeout: the deadline must not touch a WebSocket.
        deadline_passed = threading.Event()
        deadline_passed.wait(EchoHandler.request_head_timeout * 3)
        connection.send(b"second")
        assert connection.incoming.get(timeout=5) == b"second"


def test_a_head_cut_short_by_the_deadline_is_not_dispatched(
    server: ThreadingHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.server_address[1]
    caplog.set_level("INFO", logger="tube.websocket")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # A request line and a header line, then silence: the deadline cuts the head short.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ab")
        read_until_closed(sock, limit=5.0)
    messages = [record.getMessage() for record in caplog.records]
    assert any("no complete request head" in message for message in messages), messages
    assert not any("refused WebSocket handshake" in message for message in messages), messages


def test_refused_upgrade_in_handler_ends_quietly(
    server: ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not an upgrade: 400
        sock.settimeout(5)
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.0 400 ") or response.startswith(b"HTTP/1.1 400 ")
    assert b"Upgrade" in response
    # The uncaught HandshakeError is not a server error: no socketserver traceback.
    assert "Exception occurred during processing" not in capsys.readouterr().err


def test_silent_tls_client_stalls_nobody_and_is_cut_off() -> None:
    require("trustme")  # a pinned test dependency: a skip here fails under CI
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    httpd.daemon_threads = True
    # The README's advice: the TLS handshake happens in the handler thread, under its deadlines.
    httpd.socket = server_context.wrap_socket(
        httpd.socket, server_side=True, do_handshake_on_connect=False
    )
    thread = threading.Thread(target=httpd.serve_forever, name="test-https")
    thread.start()
    port = httpd.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port)) as silent:
            start = time.monotonic()
            # Another client gets through while the silent one holds its connection open.
            with connect(
                f"wss://localhost:{port}/", ssl=client_context, open_timeout=3
            ) as connection:
                connection.send("through")
                assert connection.incoming.get(timeout=3) == "through"
            # And the silent one is cut off by the request head deadline.
            ended = read_until_closed(silent, limit=5.0)
            assert ended - start < 3.0
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
