"""upgrade_connection on http.server: hijack, bytes behind the handshake, refusals over
http.client, the seed's pattern (handler returns, an application thread goes on)."""

from __future__ import annotations

import http.client
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tube.websocket import (
    Connection,
    ConnectionClosed,
    HandshakeError,
    WebSocketRequestHandler,
    create_connection,
    initiate_close,
    send_blob_data,
    upgrade_connection,
    wait_until_connected,
)
from tube.websocket.core.codes import is_valid_received_close_code

from ..conftest import RawPeer, WsServer, build_frame, wait_ended

ServerFactory = Callable[..., WsServer]
PeerFactory = Callable[..., RawPeer]


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


# ---------------------------------------------------------------------- hijack


def test_first_frame_in_the_same_packet_as_the_handshake(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(echo)
    behind = (
        build_frame(0x1, b"first")
        + build_frame(0x2, b"second", fin=False)
        + build_frame(0x0, b" part")
        + build_frame(0x9, b"p")
    )
    peer = raw_peer(server, after_request=behind)
    assert peer.recv_message() == "first"
    frame = peer.recv_data_frame()
    assert (frame.opcode, frame.payload) == (0x2, b"second part")
    peer.send_close()
    assert [f.opcode for f in peer.expect_eof()] == [0x8]


def test_handshake_and_close_in_one_packet(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    received: list[Any] = []
    server = ws_server(lambda connection: received.extend(connection.incoming))
    behind = build_frame(0x1, b"only") + build_frame(0x8, b"\x03\xe8")
    peer = raw_peer(server, after_request=behind)
    assert [f.close_code for f in peer.expect_eof()] == [1000]
    server.stop()
    assert received == ["only"]


def test_seed_pattern_handler_returns_and_the_connection_lives_on(raw_peer: PeerFactory) -> None:
    """The seed's example: an application thread waits until connected; the handler returns."""
    handler_returned = threading.Event()
    app_threads: list[threading.Thread] = []
    outcome: list[Any] = []

    def app(connection: Connection) -> None:
        assert wait_until_connected(connection, timeout=5)
        send_blob_data(connection, b"Hello Client")
        handler_returned.wait(5)
        for message in connection.incoming:
            if message == b"Hello Server":
                initiate_close(connection)
        outcome.append(connection.close_code)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            connection = create_connection()
            thread = threading.Thread(target=app, args=(connection,))
            app_threads.append(thread)
            thread.start()
            upgrade_connection(self, connection)

        def finish(self) -> None:
            super().finish()
            handler_returned.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        peer = raw_peer(httpd.server_address[1])
        assert peer.recv_message() == b"Hello Client"
        assert handler_returned.wait(5)
        # The handler is gone and socketserver did not shut the socket down.
        peer.send_binary(b"Hello Server")
        frame = peer.recv_frame()
        assert frame.close_code == 1000
        peer.send_close(1000)
        assert peer.expect_eof() == []
        for thread in app_threads:
            thread.join(5)
        assert outcome == [1000]
    finally:
        httpd.shutdown()
        serving.join()
        httpd.server_close()


def test_plain_http_still_served_next_to_websockets(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(echo)
    peer = raw_peer(server)
    peer.send_text("x")
    assert peer.recv_message() == "x"
    # The same server answers an ordinary GET with a refusal, on a keep-alive connection.
    client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for _ in range(2):
            client.request("GET", "/")
            response = client.getresponse()
            assert response.status == 400
            response.read()
            client.close()
    finally:
        client.close()
    peer.send_text("still fine")
    assert peer.recv_message() == "still fine"
    peer.send_close()
    peer.expect_eof()


def test_subprotocol_and_extra_headers(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(echo, subprotocols=["chat", "superchat"], extra_headers=[("X-Tube", "1")])
    peer = raw_peer(server, headers=[("Sec-WebSocket-Protocol", "superchat, chat")])
    assert b"Sec-WebSocket-Protocol: chat\r\n" in peer.response_head
    assert b"X-Tube: 1\r\n" in peer.response_head
    assert server.next_connection().subprotocol == "chat"
    peer.send_close()
    peer.expect_eof()


def test_a_connection_cannot_be_upgraded_twice(raw_peer: PeerFactory) -> None:
    errors: list[BaseException] = []
    shared = create_connection()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                upgrade_connection(self, shared)
            except RuntimeError as error:
                errors.append(error)
                self.send_error(500)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        first = raw_peer(httpd.server_address[1])
        with pytest.raises(AssertionError):
            raw_peer(httpd.server_address[1])  # answered with 500, not 101
        assert len(errors) == 1
        first.send_close()
        first.expect_eof()
        wait_ended(shared)
    finally:
        httpd.shutdown()
        serving.join()
        httpd.server_close()


# ---------------------------------------------------------------------- refusals


def request(port: int, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        client.request(method, "/chat", headers=headers)
        response = client.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        client.close()


GOOD = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.mark.parametrize(
    ("changes", "status", "in_body"),
    [
        ({"Upgrade": None}, 400, "Upgrade"),
        ({"Connection": "keep-alive"}, 400, "Connection"),
        ({"Sec-WebSocket-Version": "8"}, 426, "Sec-WebSocket-Version"),
        ({"Sec-WebSocket-Key": "short"}, 400, "Sec-WebSocket-Key"),
        ({"Origin": "https://evil.example"}, 403, "origin"),
    ],
)
def test_refused_handshake_answers_status_and_reason(
    ws_server: ServerFactory, changes: dict[str, str | None], status: int, in_body: str
) -> None:
    server = ws_server(echo)
    headers = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    got_status, got_headers, body = request(server.port, "GET", headers)
    assert got_status == status
    assert in_body in body
    assert got_headers["Content-Type"].startswith("text/plain")
    if status == 426:
        assert got_headers["Sec-WebSocket-Version"] == "13"
    assert server.next_rejection().status == status
    assert server.connections == []


def test_refusal_wakes_waiters_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    waited: list[bool] = []
    # What the handler saw, asserted below: socketserver's handle_error would swallow an
    # assertion raised in do_GET.
    raised: list[type[BaseException]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            connection = create_connection()
            waiter = threading.Thread(
                target=lambda: waited.append(wait_until_connected(connection, 5))
            )
            waiter.start()
            try:
                upgrade_connection(self, connection)
            except HandshakeError as error:
                raised.append(type(error))
            waiter.join(5)
            try:
                connection.incoming.get(timeout=1)
            except ConnectionClosed as error:
                raised.append(type(error))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        with caplog.at_level(logging.INFO, logger="tube.websocket"):
            status, _, _ = request(httpd.server_address[1], "GET", {"Upgrade": "websocket"})
    finally:
        httpd.shutdown()
        serving.join()
        httpd.server_close()
    assert status == 400
    assert waited == [False]
    assert len(raised) == 2, raised
    assert issubclass(raised[0], HandshakeError) and issubclass(raised[1], ConnectionClosed)
    assert any("refused WebSocket handshake" in r.getMessage() for r in caplog.records)


def test_slow_handshake_is_bounded_by_the_handler_timeout(ws_server: ServerFactory) -> None:
    server = ws_server(echo, handler_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        assert sock.recv(100) == b""  # the server hangs up
        assert time.monotonic() - started < 3


# ---------------------------------------------------------------------- hostile bytes


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(min_size=1, max_size=300))
def test_random_bytes_after_the_handshake_end_cleanly(
    garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = WsServer(echo, ping_interval=None, close_give_up_time=2)
    try:
        with RawPeer(server.port, after_request=garbage) as peer:
            peer.sock.shutdown(socket.SHUT_WR)  # nothing more: the server must end the story
            frames = peer.expect_eof(timeout=5)
        connection = server.next_connection()
        wait_ended(connection)
    finally:
        server.stop()
    assert not server.errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    closes = [f for f in frames if f.opcode == 0x8]
    assert len(closes) <= 1
    if closes and closes[0].close_code is not None:
        assert is_valid_received_close_code(closes[0].close_code)
    assert connection.close_code is not None


# ---------------------------------------------------------------------- head limits (issue 8 §3)


class _Refusals(ThreadingHTTPServer):
    """Upgrades every GET with ``handler_base``; records what upgrade_connection raised."""

    daemon_threads = True

    def __init__(self, handler_base: type[BaseHTTPRequestHandler], **options: Any) -> None:
        owner = self
        self.rejections: queue.SimpleQueue[HandshakeError] = queue.SimpleQueue()
        self.options = options

        class Handler(handler_base):  # type: ignore[valid-type,misc]
            timeout = 5.0

            def do_GET(self) -> None:
                connection = create_connection(**owner.options)
                try:
                    upgrade_connection(self, connection)
                except HandshakeError as error:
                    owner.rejections.put(error)
                    return
                connection.close(wait=False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="refusals")
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.thread.join(5)
        self.server_close()


@pytest.fixture(params=["BaseHTTPRequestHandler", "WebSocketRequestHandler"])
def head_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., _Refusals]]:
    """Factory of servers on a plain handler and on WebSocketRequestHandler."""
    base = (
        BaseHTTPRequestHandler
        if request.param == "BaseHTTPRequestHandler"
        else WebSocketRequestHandler
    )
    servers: list[_Refusals] = []

    def start(**options: Any) -> _Refusals:
        server = _Refusals(base, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def exchange(port: int, head: bytes) -> tuple[int, str]:
    """Send ``head``; return the status and body of the answer (the body of a refusal only)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        status = int(status_line.split(b" ")[1])
        if status == 101:
            return status, ""
        head_part, _, body = rest.partition(b"\r\n\r\n")
        length = [
            int(line.split(b":")[1])
            for line in head_part.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        while length and len(body) < length[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body.decode("utf-8", "replace")


def handshake_head(target: str = "/chat", *extra: str, line_end: str = "\r\n") -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return (line_end.join(lines) + line_end + line_end).encode("latin-1")


def test_valid_head_is_still_accepted(head_server: Callable[..., _Refusals]) -> None:
    server = head_server()
    assert exchange(server.server_address[1], handshake_head("/" + "a" * 8000))[0] == 101
    assert server.rejections.empty()


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        # http.server alone accepts lines up to 64 KiB: the library's 8 KiB must hold.
        (handshake_head("/" + "a" * 9000), 414, "request line longer than 8192 bytes"),
        (handshake_head("/", "X-Big: " + "b" * 9000), 431, "header line longer than 8192 bytes"),
        (handshake_head("/", *[f"X-{i}: {i}" for i in range(150)]), 431, ""),
        (handshake_head(line_end="\n"), 400, "expected CRLF line endings"),
        (handshake_head("/", "Content-Length: 5") + b"hello", 400, "request body"),
        (handshake_head("/", "Transfer-Encoding: chunked") + b"0\r\n\r\n", 400, "request body"),
        (handshake_head("/a\x7fb"), 400, "control characters"),
        (handshake_head("/", "Sec-WebSocket-Protocol: a,", " b"), 400, "obsolete line folding"),
        (handshake_head("/", "X-Nul: a\x00b"), 400, "NUL byte"),
    ],
    ids=[
        "long-request-line",
        "long-header-line",
        "150-headers",
        "bare-lf",
        "content-length",
        "transfer-encoding",
        "del-in-target",
        "obs-fold",
        "nul",
    ],
)
def test_head_rules_hold_under_any_handler(
    head_server: Callable[..., _Refusals], head: bytes, status: int, reason: str
) -> None:
    server = head_server()
    got_status, body = exchange(server.server_address[1], head)
    assert got_status == status
    assert reason in body


def test_obs_folded_subprotocol_with_a_selector_is_400(
    head_server: Callable[..., _Refusals],
) -> None:
    # Before, the folded value reached the selector and building the 101 raised ValueError:
    # the client was dropped without an answer.
    server = head_server(subprotocols=lambda offered: offered[-1])
    head = handshake_head("/", "Sec-WebSocket-Protocol: chat,", "\tother")
    status, body = exchange(server.server_address[1], head)
    assert (status, body.strip()) == (400, "obsolete line folding is not supported")
    # The handler records the error after the client was answered: wait for it.
    assert server.rejections.get(timeout=5).status == 400


def test_upgrade_refusals_are_plain_text_with_the_core_reason(
    head_server: Callable[..., _Refusals],
) -> None:
    server = head_server()
    status, body = exchange(server.server_address[1], handshake_head("/" + "a" * 9000))
    assert (status, body) == (414, "request line longer than 8192 bytes\n")
    assert server.rejections.get(timeout=5).status == 414


def test_bare_lf_on_a_header_line_with_the_library_handler() -> None:
    # http.server drops header line ends; WebSocketRequestHandler records them to check.
    server = _Refusals(WebSocketRequestHandler)
    try:
        head = handshake_head().replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\n")
        status, body = exchange(server.server_address[1], head)
        assert status == 400
        assert "CRLF" in body
    finally:
        server.stop()
