"""WSGI: a real Flask application (tests/integrations/wsgi_app.py) under werkzeug's server and
gunicorn.

The servers run as subprocesses on 127.0.0.1, started as a user starts them
(``flask --app tests.integrations.wsgi_app run --port 0``,
``gunicorn -k gthread ... -b 127.0.0.1:0``), and
are driven by Tube's client, a hand-written raw peer, ``http.client`` and headless Chromium.
Flask and gunicorn are test extras: missing, they skip these tests, or fail them under CI=true.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tube.websocket import ConnectionClosed, HandshakeRejected, connect, upgrade_connection
from tube.websocket.core.protocol import Role
from tube.websocket.integrations.wsgi import WebSocketResponse, request_from_environ
from tube.websocket.threads.connection import Connection, open_connection

from ..conftest import RawPeer, build_frame, require

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
TIMEOUT = 10.0
_LISTENING = re.compile(rb"(?:Running on|Listening at:) http://127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    """A WSGI server running tests/integrations/wsgi_app.py in a subprocess."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def url(self, path: str, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(name: str, command: list[str], log: Path) -> Server:
    """Start ``command``; wait (bounded) for the line naming its port in its log."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        match = _LISTENING.search(log.read_bytes())
        if match:
            server = Server(name, process, log, int(match.group(1)))
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(f"{name} did not start: {log.read_text(errors='replace')}")
        # Polling a subprocess's log until it listens, bounded by START_TIMEOUT.
        time.sleep(0.05)
    # gunicorn logs "Listening" before its worker is ready: wait until a request is answered.
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
            connection.request("GET", "/health")
            connection.getresponse().read()  # any answer: raw_app refuses it with 400
            connection.close()
            return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"{name} does not answer: {server.output()}")
        time.sleep(0.05)


def flask_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "tests.integrations.wsgi_app",
        "run",
        "--port",
        "0",
    ]


def gunicorn_command(worker: str, target: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker,
        "-b",
        "127.0.0.1:0",
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        *extra,
        target,
    ]


@pytest.fixture(scope="module", params=["werkzeug", "gunicorn"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The Flask application under werkzeug (``flask run``) and under gunicorn -k gthread."""
    require("flask")
    log = tmp_path_factory.mktemp(request.param) / "server.log"
    if request.param == "werkzeug":
        command = flask_command()
    else:
        require("gunicorn")
        command = gunicorn_command("gthread", "tests.integrations.wsgi_app:app", "--threads", "150")
    server = start_server(request.param, command, log)
    try:
        yield server
    finally:
        server.stop()
    # A WSGI server logs the errors of the application: none is expected but /boom's.
    text = server.output()
    expected = text.count("RuntimeError: the view failed on purpose")
    assert text.count("Traceback") == expected, f"unexpected errors in the server's log:\n{text}"


# ---------------------------------------------------------------------- echo, bytes, closing


def test_echo_text_and_binary(server: Server) -> None:
    text = "héllo ✓ " * 100
    blob = os.urandom(200_000)
    with connect(server.url("/echo")) as connection:
        connection.send(text)
        assert connection.incoming.get(timeout=TIMEOUT) == text
        connection.send(blob)
        assert connection.incoming.get(timeout=TIMEOUT) == blob
        connection.send(b"")
        assert connection.incoming.get(timeout=TIMEOUT) == b""
    assert connection.close_code == 1000


def test_permessage_deflate_is_negotiated_when_the_view_accepts_it(server: Server) -> None:
    offer = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    with RawPeer(server.port, path="/deflate", headers=offer) as peer:
        assert b"permessage-deflate" in peer.response_head.lower()
    with RawPeer(server.port, path="/echo", headers=offer) as peer:
        assert b"permessage-deflate" not in peer.response_head.lower()  # off by default
    text = "compressible " * 10_000
    with connect(server.url("/deflate")) as connection:  # connect() offers it
        connection.send(text)
        assert connection.incoming.get(timeout=TIMEOUT) == text
    assert connection.close_code == 1000


def test_first_frame_behind_the_handshake_and_nothing_after_the_close(server: Server) -> None:
    """A frame sent with the request head is not lost; after our close frame comes EOF."""
    with RawPeer(server.port, path="/echo", after_request=build_frame(0x1, b"early")) as peer:
        assert peer.recv_message(TIMEOUT) == "early"
        peer.send_close(1000, "done")
        frame = peer.recv_data_frame(TIMEOUT)
        assert (frame.opcode, frame.close_code) == (0x8, 1000)
        # No HTTP response (or anything else) from the server behind the close frame: EOF.
        assert peer.expect_eof(TIMEOUT) == []
        assert peer.buffer == b""


def test_the_server_closes_with_a_code(server: Server) -> None:
    with connect(server.url("/echo")) as connection:
        connection.send("close 4001 bye now")
        with pytest.raises(ConnectionClosed):
            connection.incoming.get(timeout=TIMEOUT)
    assert (connection.close_code, connection.close_reason) == (4001, "bye now")


def test_the_client_closes_with_a_code(server: Server) -> None:
    key = uuid.uuid4().hex
    with connect(server.url(f"/echo?id={key}")) as connection:
        connection.send("ping?")
        assert connection.incoming.get(timeout=TIMEOUT) == "ping?"
        connection.close(4002, "see you")
    assert connection.close_code == 4002
    seen = http_get(server, f"/closed/{key}")
    assert (seen[0], json.loads(seen[1])) == (200, {"code": 4002, "reason": "see you"})


def test_a_plain_view_upgrading_by_hand(server: Server) -> None:
    with connect(server.url("/raw")) as connection:
        connection.send(b"\x00\xff")
        assert connection.incoming.get(timeout=TIMEOUT) == b"\x00\xff"
        connection.send("close 4003 raw")
        with pytest.raises(ConnectionClosed):
            connection.incoming.get(timeout=TIMEOUT)
    assert (connection.close_code, connection.close_reason) == (4003, "raw")


def test_a_view_that_raises_closes_with_1011(server: Server) -> None:
    with connect(server.url("/boom")) as connection:
        connection.send("go")
        with pytest.raises(ConnectionClosed):
            connection.incoming.get(timeout=TIMEOUT)
    assert connection.close_code == 1011
    assert connection.close_reason == ""  # no detail for the peer


# ---------------------------------------------------------------------- refusals


def http_get(server: Server, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_a_cross_origin_browser_is_refused_with_403(server: Server) -> None:
    status, body = http_get(server, "/echo", {**UPGRADE_HEADERS, "Origin": "http://evil.example"})
    assert status == 403
    assert body == "origin not allowed: http://evil.example"
    # Through the client too: the refusal arrives as the handshake's answer.
    with pytest.raises(HandshakeRejected) as refused:
        connect(server.url("/echo"), origin="https://evil.example")
    assert refused.value.status == 403
    # The server's own origin is accepted.
    with connect(server.url("/echo"), origin=f"http://127.0.0.1:{server.port}") as connection:
        connection.send("same origin")
        assert connection.incoming.get(timeout=TIMEOUT) == "same origin"


def test_a_bad_handshake_gets_its_status(server: Server) -> None:
    status, body = http_get(server, "/raw", {**UPGRADE_HEADERS, "Sec-WebSocket-Version": "8"})
    assert (status, body) == (426, "expected Sec-WebSocket-Version: 13, got '8'")
    # Plain HTTP goes on working beside the WebSockets.
    assert http_get(server, "/health") == (200, "ok\n")


# ---------------------------------------------------------------------- load


def test_a_slow_reader_does_not_hold_up_others(server: Server) -> None:
    """A client that stops reading a flood blocks only its own view; it gets every byte."""
    count, size = 48, 128 * 1024
    with connect(server.url("/echo"), incoming_size=2) as slow:
        slow.send(f"flood {count} {size}")
        # While the flood is stuck in TCP buffers, another client is served normally.
        with connect(server.url("/echo")) as other:
            for number in range(20):
                other.send(f"message {number}")
                assert other.incoming.get(timeout=TIMEOUT) == f"message {number}"
        from .wsgi_app import flood_payload

        for number in range(count):
            assert slow.incoming.get(timeout=TIMEOUT) == flood_payload(number, size)
        slow.send("still there?")
        assert slow.incoming.get(timeout=TIMEOUT) == "still there?"
    assert slow.close_code == 1000


def test_100_concurrent_connections(server: Server) -> None:
    clients, messages = 100, 10
    errors: list[BaseException] = []
    codes: list[int | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients, timeout=30)

    def client(index: int) -> None:
        try:
            with connect(server.url("/echo"), open_timeout=30) as connection:
                barrier.wait()  # all 100 are open at once
                for number in range(messages):
                    connection.send(f"{index}:{number}")
                    assert connection.incoming.get(timeout=30) == f"{index}:{number}"
            with lock:
                codes.append(connection.close_code)
        except BaseException as error:
            with lock:
                errors.append(error)
            barrier.abort()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]
    assert codes == [1000] * clients
    print(
        f"\n{server.name}: {clients} concurrent connections x {messages} echoes in {elapsed:.2f} s"
    )


def test_werkzeug_debug_mode_logs_no_error(tmp_path: Path) -> None:
    """``flask run --debug``: the debugger sees no exception, the client sees a clean end."""
    require("flask")
    command = [*flask_command(), "--debug", "--no-reload"]
    server = start_server("werkzeug-debug", command, tmp_path / "server.log")
    try:
        with RawPeer(server.port, path="/echo") as peer:
            peer.send_text("debug")
            assert peer.recv_message(TIMEOUT) == "debug"
            peer.send_close(1000)
            frame = peer.recv_data_frame(TIMEOUT)
            assert (frame.opcode, frame.close_code) == (0x8, 1000)
            assert peer.expect_eof(TIMEOUT) == []
            assert peer.buffer == b""
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


# ---------------------------------------------------------------------- gunicorn's sync worker


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The framework-free ``raw_app`` under gunicorn's default (sync) worker."""
    require("flask")  # tests/integrations/wsgi_app.py imports it
    require("gunicorn")
    log = tmp_path_factory.mktemp("sync") / "server.log"
    server = start_server(
        "gunicorn-sync", gunicorn_command("sync", "tests.integrations.wsgi_app:raw_app"), log
    )
    try:
        yield server
    finally:
        server.stop()


def test_sync_worker_serves_one_websocket_and_warns(sync_server: Server) -> None:
    for _ in range(2):
        with connect(sync_server.url("/anything")) as connection:
            connection.send("over sync")
            assert connection.incoming.get(timeout=TIMEOUT) == "over sync"
        assert connection.close_code == 1000
    status, body = http_get(sync_server, "/x", {**UPGRADE_HEADERS, "Origin": "http://evil.example"})
    assert (status, body) == (403, "origin not allowed: http://evil.example")
    # Warned once: the worker is held for the connection's life.
    assert sync_server.output().count("single-threaded gunicorn worker") == 1, sync_server.output()


# ---------------------------------------------------------------------- in process


def test_a_server_without_a_socket_gets_500_and_an_error_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """wsgiref exposes no socket: refused with 500 and a logged error, never a hang."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    require("flask")
    from .wsgi_app import raw_app

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = make_server("127.0.0.1", 0, raw_app, handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.handle_request)
    thread.start()
    try:
        with caplog.at_level(logging.ERROR, logger="tube.websocket"):
            connection = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=TIMEOUT)
            connection.request("GET", "/ws", headers={**UPGRADE_HEADERS, "Host": "x"})
            response = connection.getresponse()
            status, body = response.status, response.read().decode()
            connection.close()
    finally:
        thread.join(TIMEOUT)
        httpd.server_close()
    assert (status, body) == (500, "this server cannot upgrade the connection to a WebSocket")
    assert any("does not expose the request's socket" in r.getMessage() for r in caplog.records)


def test_request_from_environ() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/app",
        "PATH_INFO": "/chat room",
        "QUERY_STRING": "a=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "example.com",
        "HTTP_SEC_WEBSOCKET_KEY": "k",
        "CONTENT_LENGTH": "",
        "wsgi.input": object(),
    }
    request = request_from_environ(environ)
    assert (request.method, request.target, request.version) == (
        "GET",
        "/app/chat%20room?a=1",
        "HTTP/1.1",
    )
    assert sorted(request.headers) == [("Host", "example.com"), ("Sec-Websocket-Key", "k")]
    assert request_from_environ({**environ, "RAW_URI": "/raw?x"}).target == "/raw?x"


def test_upgrade_connection_dispatch_refuses_other_arguments() -> None:
    connection = Connection()
    with pytest.raises(TypeError, match="WSGI environ"):
        upgrade_connection("GET /", connection)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="start_response"):
        upgrade_connection({}, "not callable", connection)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="Connection"):
        upgrade_connection({}, None, object())  # type: ignore[call-overload]


def test_the_response_finishes_the_connection_before_the_server_writes() -> None:
    """Iterated, called or closed, the response closes an open connection and reports EPIPE."""
    ours, theirs = socket.socketpair()
    servers = ours.dup()  # what the server keeps of the socket
    connection = open_connection(ours, Role.SERVER)
    peer = RawPeer.on_socket(theirs, mask=True)
    response = WebSocketResponse(connection, servers)
    after_close: list[Any] = []

    def answer_close() -> None:
        frame = peer.recv_frame(TIMEOUT)
        assert (frame.opcode, frame.close_code) == (0x8, 1000)
        peer.send_close(1000)
        after_close.extend(peer.expect_eof(TIMEOUT))  # then closes, as a client does
        after_close.append("eof")

    thread = threading.Thread(target=answer_close)
    thread.start()
    try:
        with pytest.raises(BrokenPipeError):
            next(iter(response))
        # By the time the server gets control back, TCP is shut down: nothing can follow.
        assert connection.wait_closed(0)
        thread.join(TIMEOUT)
        assert after_close == ["eof"]
        with pytest.raises(BrokenPipeError):
            response({}, lambda *args: None)
        response.close()
        # The server's own descriptor is shut down too: whatever it writes fails.
        with pytest.raises(OSError):
            servers.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        # Under werkzeug's debugger the response ends empty instead of raising.
        quiet = WebSocketResponse(connection, servers, quiet=True)
        assert list(quiet) == []
    finally:
        thread.join(TIMEOUT)
        peer.close()
        servers.close()
