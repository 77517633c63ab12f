"""The client: URL parsing, the opening handshake over TCP and TLS, its failures, and messages
exchanged with our own server."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from tube.websocket.core.client_handshake import _explanation
from tube.websocket.core.errors import (
    ConnectionClosed,
    HandshakeError,
    HandshakeRejected,
    InvalidHandshake,
    InvalidURI,
    OpenTimeout,
)
from tube.websocket.core.events import CloseReceived, Pong, TextMessage
from tube.websocket.core.handshake import accept_key
from tube.websocket.core.http import decode_chunked, get_header, parse_request_head
from tube.websocket.core.protocol import Protocol, Role
from tube.websocket.core.uri import MAX_REDIRECTS
from tube.websocket.integrations.http_server import upgrade_connection
from tube.websocket.threads.client import _Deadline, _read_response_head, connect
from tube.websocket.threads.functions import create_connection


def test_connect_rejects_bad_options_before_connecting() -> None:
    # Port 1 on 127.0.0.1 refuses connections: reaching the network would raise another error.
    with pytest.raises(ValueError, match="subprotocol"):
        connect("ws://127.0.0.1:1/", subprotocols=["not a token"])
    with pytest.raises(ValueError, match="Origin"):
        connect("ws://127.0.0.1:1/", origin="https://a\r\nX: y")
    with pytest.raises(TypeError, match="origins"):
        connect("ws://127.0.0.1:1/", origins=["https://example.com"])
    with pytest.raises(ValueError, match="max_message_size"):
        connect("ws://127.0.0.1:1/", max_message_size=-1)
    with pytest.raises(InvalidURI):
        connect("http://127.0.0.1:1/")
    with pytest.raises(ValueError, match=r"^ssl is only used with wss:// URLs"):
        connect("ws://127.0.0.1:1/", ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="open_timeout"):
        connect("ws://127.0.0.1:1/", open_timeout=0)
    with pytest.raises(ValueError, match="Sec-WebSocket-Key"):
        connect("ws://127.0.0.1:1/", headers={"Sec-WebSocket-Key": "x"})
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        connect("ws://127.0.0.1:1/", headers=[("X-A", "1\r\nX-B: 2")])
    with pytest.raises(ValueError, match="header name"):
        connect("ws://127.0.0.1:1/", headers=[("X A", "1")])


# ---------------------------------------------------------------- a scripted raw server

Handler = Callable[["RawServer", socket.socket], None]


class RawServer:
    """A TCP listener on 127.0.0.1 whose thread serves each accepted socket with ``handler``.

    Connections are served one after the other. ``requests`` collects the request heads read with
    :meth:`read_request`. :meth:`close` stops the thread and closes every socket, even one a
    handler keeps open on purpose (``stopped`` tells such handlers to give up).
    """

    def __init__(
        self, handler: Handler, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.handler = handler
        self.tls = tls
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[list[tuple[str, str]]] = []
        self.targets: list[str] = []
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="raw-server")
        self._thread.start()

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue  # poll the stop flag
            except OSError:
                return
            with sock:
                sock.settimeout(5)
                try:
                    if self.tls is not None:
                        with self.tls.wrap_socket(sock, server_side=True) as tls_sock:
                            self.handler(self, tls_sock)
                    else:
                        self.handler(self, sock)
                except (OSError, ssl.SSLError) as exc:  # the client hung up: fine
                    self.errors.append(exc)

    def read_request(self, sock: socket.socket) -> bytes:
        """Read one request head; record it; return the bytes received after it."""
        data = b""
        while True:
            parsed = parse_request_head(data)
            if parsed is not None:
                request, consumed = parsed
                self.requests.append(request.headers)
                self.targets.append(request.target)
                return data[consumed:]
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("client closed before its request was complete")
            data += chunk

    def close(self) -> None:
        self.stopped.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        self.listener.close()


@contextlib.contextmanager
def raw_server(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Iterator[RawServer]:
    server = RawServer(handler, tls=tls)
    try:
        yield server
    finally:
        server.close()


def answer(response: bytes, *, then: Callable[[socket.socket], None] | None = None) -> Handler:
    """A handler that reads the request, sends ``response``, and closes (or calls ``then``)."""

    def handle(server: RawServer, sock: socket.socket) -> None:
        server.read_request(sock)
        sock.sendall(response)
        if then is not None:
            then(sock)

    return handle


def hold(server: RawServer, sock: socket.socket) -> None:
    """Read nothing, answer nothing, keep the connection open until the server stops."""
    server.stopped.wait(10)


def refusal(status: str, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *extra, f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------- the request


def test_request_head() -> None:
    with (
        raw_server(answer(refusal("403 Forbidden", b"captured"))) as server,
        pytest.raises(HandshakeError),
    ):
        connect(
            server.url("/chat?room=1"),
            subprotocols=["chat.v2", "chat.v1"],
            origin="https://example.com",
            headers={"Authorization": "Bearer t", "X-Custom": "yes"},
            open_timeout=5,
        )
    (headers,) = server.requests
    assert server.targets == ["/chat?room=1"]
    assert get_header(headers, "Host") == f"127.0.0.1:{server.port}"
    assert get_header(headers, "Upgrade") == "websocket"
    assert get_header(headers, "Connection") == "Upgrade"
    assert get_header(headers, "Sec-WebSocket-Version") == "13"
    assert get_header(headers, "Sec-WebSocket-Protocol") == "chat.v2, chat.v1"
    assert get_header(headers, "Origin") == "https://example.com"
    assert get_header(headers, "Authorization") == "Bearer t"
    assert get_header(headers, "X-Custom") == "yes"
    # Like browsers, the client offers permessage-deflate by default (RFC 7692).
    assert get_header(headers, "Sec-WebSocket-Extensions") == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )


def test_request_head_without_compression() -> None:
    with (
        raw_server(answer(refusal("403 Forbidden", b"captured"))) as server,
        pytest.raises(HandshakeError),
    ):
        connect(server.url("/"), open_timeout=5, compression=None)
    (headers,) = server.requests
    assert get_header(headers, "Sec-WebSocket-Extensions") is None


# ---------------------------------------------------------------- refusals


def test_refused_handshake_carries_status_headers_and_body() -> None:
    response = refusal(
        "403 Forbidden", b"origin not allowed\n", "Content-Type: text/plain; charset=utf-8"
    )
    with raw_server(answer(response)) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    error = info.value
    assert error.status == 403
    assert error.body == b"origin not allowed\n"
    assert get_header(error.headers, "Content-Type") == "text/plain; charset=utf-8"
    assert str(error) == "403 Forbidden: origin not allowed"


def test_refusal_body_arriving_after_the_head() -> None:
    def handle(server: RawServer, sock: socket.socket) -> None:
        server.read_request(sock)
        sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\n\r\n")
        sock.sendall(b"token ")
        sock.sendall(b"expired")

    with raw_server(handle) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    assert info.value.status == 401
    assert info.value.body == b"token expired"
    assert str(info.value) == "401 Unauthorized: token expired"


def test_refusal_body_is_bounded() -> None:
    # The server announces 10 MiB; the client keeps 4 KiB and does not wait for the rest.
    def handle(server: RawServer, sock: socket.socket) -> None:
        server.read_request(sock)
        sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10485760\r\n\r\n")
        sock.sendall(b"busy\n" + b"x" * 8000)
        server.stopped.wait(10)

    with raw_server(handle) as server:
        start = time.monotonic()
        with pytest.raises(HandshakeError) as info:
            connect(server.url(), open_timeout=5)
        assert time.monotonic() - start < 3
    assert info.value.status == 503
    assert len(info.value.body) == 4096
    assert info.value.body.startswith(b"busy\n")
    assert str(info.value).startswith("503 Service Unavailable: busy")


def test_refusal_with_a_chunked_body() -> None:
    response = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    with raw_server(answer(response)) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    assert info.value.status == 500
    assert info.value.body == b"hello world"


def test_refusal_with_a_body_until_eof() -> None:
    response = b"HTTP/1.1 400 Bad Request\r\n\r\nmissing key"
    with raw_server(answer(response)) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    assert info.value.status == 400
    assert info.value.body == b"missing key"


def test_refusal_with_an_html_body() -> None:
    body = b"<html><body>Not Found</body></html>"
    with (
        raw_server(answer(refusal("404 Not Found", body))) as server,
        pytest.raises(HandshakeError) as info,
    ):
        connect(server.url(), open_timeout=5)
    assert info.value.status == 404
    assert info.value.body == body
    assert str(info.value).startswith("404 Not Found: the server refused the WebSocket upgrade")


def test_refusal_without_a_body() -> None:
    with (
        raw_server(answer(refusal("426 Upgrade Required", b""))) as server,
        pytest.raises(HandshakeError) as info,
    ):
        connect(server.url(), open_timeout=5)
    assert info.value.status == 426
    assert info.value.body == b""
    assert str(info.value) == "426 Upgrade Required: the server refused the WebSocket upgrade"


def test_101_with_a_wrong_accept_value() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
    )
    with raw_server(answer(response)) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    assert info.value.status == 101
    assert "Sec-WebSocket-Accept" in str(info.value)


def switching_protocols(sock: socket.socket, request_tail: bytes, server: RawServer) -> str:
    """The 101 answer to the last request ``server`` read."""
    key = get_header(server.requests[-1], "Sec-WebSocket-Key")
    assert key is not None
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
    )


def test_101_with_a_subprotocol_not_offered() -> None:
    def handle(server: RawServer, sock: socket.socket) -> None:
        tail = server.read_request(sock)
        head = switching_protocols(sock, tail, server) + "Sec-WebSocket-Protocol: other\r\n\r\n"
        sock.sendall(head.encode())

    with raw_server(handle) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), subprotocols=["chat"], open_timeout=5)
    assert "Sec-WebSocket-Protocol" in str(info.value)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"", "without answering"),
        (b"HTTP/1.1 101 Switching", "in the middle"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "status line"),
        (b"HTTP/1.1 101 OK\nUpgrade: websocket\n\n", "CRLF"),
    ],
)
def test_not_an_http_response(response: bytes, reason: str) -> None:
    with raw_server(answer(response)) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    assert isinstance(info.value, InvalidHandshake)
    assert info.value.status is None
    assert reason in str(info.value)


def test_endless_response_head_is_bounded() -> None:
    def handle(server: RawServer, sock: socket.socket) -> None:
        server.read_request(sock)
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")
        with contextlib.suppress(OSError):
            for _ in range(1000):  # 8 MB of headers if nobody stopped reading
                sock.sendall(b"X-Filler: " + b"y" * 8000 + b"\r\n")

    with raw_server(handle) as server, pytest.raises(HandshakeError) as info:
        connect(server.url(), open_timeout=5)
    assert isinstance(info.value, InvalidHandshake)
    assert info.value.status is None
    assert "more than 128 header lines" in str(info.value)


# ---------------------------------------------------------------- timeouts and network errors


def test_open_timeout_when_the_server_never_answers() -> None:
    with raw_server(hold) as server:
        start = time.monotonic()
        with pytest.raises(OpenTimeout, match="waiting for the handshake response") as info:
            connect(server.url(), open_timeout=0.5)
        elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 2.5
    assert isinstance(info.value, TimeoutError)


def test_open_timeout_during_the_tls_handshake() -> None:
    context = ssl.create_default_context()
    with raw_server(hold) as server:
        start = time.monotonic()
        with pytest.raises(OpenTimeout, match="TLS handshake"):
            connect(server.url(scheme="wss"), ssl=context, open_timeout=0.5)
        assert time.monotonic() - start < 2.5


def test_open_timeout_when_the_backlog_is_full() -> None:
    # A listener that never accepts, with a backlog of 0: once one connection waits in its
    # queue, Linux drops the next SYNs, so connecting hangs until the timeout.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            start = time.monotonic()
            with pytest.raises(OpenTimeout, match=r"connecting to 127\.0\.0\.1"):
                connect(f"ws://127.0.0.1:{port}/", open_timeout=0.5)
            assert time.monotonic() - start < 2.5


def test_connection_refused() -> None:
    # A bound socket that does not listen: the kernel answers SYNs with a reset.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(ConnectionRefusedError, match=f"connection refused by 127.0.0.1:{port}"):
            connect(f"ws://127.0.0.1:{port}/", open_timeout=5)


def test_dns_failure() -> None:
    # RFC 6761: .invalid names never resolve.
    with pytest.raises(socket.gaierror, match=r"cannot resolve host 'no-such-host\.invalid'"):
        connect("ws://no-such-host.invalid/", open_timeout=5)


def test_the_three_failures_are_distinct() -> None:
    # Callers can tell them apart with except clauses, most specific first.
    assert not issubclass(OpenTimeout, ConnectionRefusedError)
    assert not issubclass(socket.gaierror, ConnectionRefusedError)
    assert not issubclass(OpenTimeout, socket.gaierror)
    assert not issubclass(HandshakeError, OSError)


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def server_tls_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


def client_tls_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_tls_self_signed_refused_by_default(tls_ca: trustme.CA) -> None:
    with (
        raw_server(hold, tls=server_tls_context(tls_ca)) as server,
        pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
    ):
        connect(server.url(scheme="wss"), open_timeout=5)


def test_tls_host_name_is_checked(tls_ca: trustme.CA) -> None:
    # Trusted CA, but the certificate names another host than the one in the URL.
    with (
        raw_server(hold, tls=server_tls_context(tls_ca, "example.com")) as server,
        pytest.raises(ssl.SSLCertVerificationError, match=r"127\.0\.0\.1"),
    ):
        connect(server.url(scheme="wss"), ssl=client_tls_context(tls_ca), open_timeout=5)


def test_tls_trusted_context_reaches_the_http_layer(tls_ca: trustme.CA) -> None:
    response = refusal("403 Forbidden", b"spoken over TLS")
    with (
        raw_server(answer(response), tls=server_tls_context(tls_ca)) as server,
        pytest.raises(HandshakeError) as info,
    ):
        connect(server.url(scheme="wss"), ssl=client_tls_context(tls_ca), open_timeout=5)
    assert info.value.status == 403
    assert info.value.body == b"spoken over TLS"
    # 443 is not the port: the Host header names it.
    assert get_header(server.requests[0], "Host") == f"127.0.0.1:{server.port}"


# ---------------------------------------------------------------- redirects


def redirect(status: str, location: str) -> bytes:
    return refusal(status, b"moved", f"Location: {location}")


def test_redirects_are_not_followed_by_default() -> None:
    with (
        raw_server(answer(redirect("302 Found", "ws://127.0.0.1:1/elsewhere"))) as server,
        pytest.raises(HandshakeError) as info,
    ):
        connect(server.url(), open_timeout=5)
    assert info.value.status == 302
    assert "redirected to ws://127.0.0.1:1/elsewhere" in str(info.value)
    assert "follow_redirects=True" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "status",
    [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ],
)
def test_redirect_to_another_origin_drops_credentials(status: str) -> None:
    with (
        raw_server(answer(refusal("403 Forbidden", b"end of the line"))) as target,
        raw_server(answer(redirect(status, target.url("/b?x=1")))) as first,
        pytest.raises(HandshakeError) as info,
    ):
        connect(
            first.url("/a"),
            headers=[("Authorization", "Basic abc"), ("Cookie", "s=1"), ("X-Keep", "1")],
            follow_redirects=True,
            open_timeout=5,
        )
    assert info.value.status == 403
    assert get_header(first.requests[0], "Authorization") == "Basic abc"
    assert target.targets == ["/b?x=1"]
    (headers,) = target.requests
    assert get_header(headers, "Authorization") is None
    assert get_header(headers, "Cookie") is None
    assert get_header(headers, "X-Keep") == "1"
    assert get_header(headers, "Host") == f"127.0.0.1:{target.port}"


def test_redirect_within_the_origin_keeps_credentials() -> None:
    def handle(server: RawServer, sock: socket.socket) -> None:
        server.read_request(sock)
        if len(server.requests) == 1:
            sock.sendall(redirect("307 Temporary Redirect", "second?y=2"))
        else:
            sock.sendall(refusal("403 Forbidden", b"stop"))

    with (
        raw_server(handle) as server,
        pytest.raises(HandshakeError, match="stop"),
    ):
        connect(
            server.url("/dir/first"),
            headers={"Authorization": "Bearer t"},
            follow_redirects=True,
            open_timeout=5,
        )
    assert server.targets == ["/dir/first", "/dir/second?y=2"]
    assert [get_header(h, "Authorization") for h in server.requests] == ["Bearer t"] * 2


def test_http_location_is_mapped_to_ws() -> None:
    with raw_server(answer(refusal("403 Forbidden", b"arrived"))) as target:
        location = f"http://127.0.0.1:{target.port}/mapped"
        with (
            raw_server(answer(redirect("301 Moved Permanently", location))) as first,
            pytest.raises(HandshakeError, match="arrived"),
        ):
            connect(first.url(), follow_redirects=True, open_timeout=5)
    assert target.targets == ["/mapped"]


def test_too_many_redirects() -> None:
    with (
        raw_server(answer(redirect("302 Found", "/again"))) as server,
        pytest.raises(HandshakeError, match="too many redirects") as info,
    ):
        connect(server.url(), follow_redirects=True, open_timeout=10)
    assert info.value.status == 302
    assert len(server.requests) == MAX_REDIRECTS + 1


def test_redirect_from_wss_to_ws_is_refused(tls_ca: trustme.CA) -> None:
    with raw_server(answer(refusal("403 Forbidden", b"must not get here"))) as plain:
        response = redirect("302 Found", plain.url())
        with (
            raw_server(answer(response), tls=server_tls_context(tls_ca)) as secure,
            pytest.raises(HandshakeError, match="from wss:// to ws://"),
        ):
            connect(
                secure.url(scheme="wss"),
                ssl=client_tls_context(tls_ca),
                follow_redirects=True,
                open_timeout=5,
            )
    assert plain.requests == []


def test_redirect_to_an_invalid_location() -> None:
    with (
        raw_server(answer(redirect("302 Found", "ftp://127.0.0.1/file"))) as server,
        pytest.raises(HandshakeError, match="cannot follow the redirect") as info,
    ):
        connect(server.url(), follow_redirects=True, open_timeout=5)
    assert info.value.status == 302


def test_redirects_share_the_open_timeout() -> None:
    with raw_server(hold) as silent:
        with (
            raw_server(answer(redirect("302 Found", silent.url()))) as first,
            pytest.raises(OpenTimeout),
        ):
            start = time.monotonic()
            connect(first.url(), follow_redirects=True, open_timeout=0.5)
        assert time.monotonic() - start < 2.5


# ---------------------------------------------------------------- against our own server


class _EchoHandler(BaseHTTPRequestHandler):
    """Upgrades every GET and echoes. Test commands: ``tube-test:close CODE REASON`` makes it
    close, ``tube-test:binary HEX`` makes it send those bytes as a binary message."""

    server: TubeServer

    def do_GET(self) -> None:
        connection = create_connection(**self.server.options)
        try:
            upgrade_connection(self, connection)
        except HandshakeError:
            return
        for message in connection.incoming:
            if isinstance(message, str) and message.startswith("tube-test:close "):
                code, _, reason = message.removeprefix("tube-test:close ").partition(" ")
                connection.close(int(code), reason)
                break
            if isinstance(message, str) and message.startswith("tube-test:binary "):
                message = bytes.fromhex(message.removeprefix("tube-test:binary "))
            try:
                connection.send(message)
            except ConnectionClosed:
                break
        connection.close()
        self.server.closes.put((connection.close_code, connection.close_reason))

    def log_message(self, format: str, *args: object) -> None:
        pass


class TubeServer(ThreadingHTTPServer):
    """Our echo server (http.server + upgrade_connection) on 127.0.0.1, in a thread."""

    daemon_threads = False  # server_close() joins the handler threads: nothing leaks

    def __init__(self, *, tls: ssl.SSLContext | None = None, **options: Any) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.options = options
        self.port: int = self.server_address[1]
        self.closes: queue.SimpleQueue[tuple[int | None, str]] = queue.SimpleQueue()
        self.scheme = "ws" if tls is None else "wss"
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,))

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def next_close(self) -> tuple[int | None, str]:
        return self.closes.get(timeout=10)

    def __enter__(self) -> TubeServer:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.shutdown()
        self._thread.join(timeout=10)
        self.server_close()


SIZES = [0, 125, 126, 65535, 65536, 4 * 1024 * 1024]
BIG = 8 * 1024 * 1024


@pytest.fixture
def tube_server() -> Iterator[TubeServer]:
    with TubeServer(max_message_size=BIG, ping_interval=None) as server:
        yield server


def test_messages_of_every_size(tube_server: TubeServer) -> None:
    with connect(tube_server.url("/echo"), max_message_size=BIG) as connection:
        assert connection.connected
        for size in SIZES:
            text = "é" * (size // 2) + "x" * (size % 2)  # exactly `size` bytes of UTF-8
            connection.send(text)
            assert connection.incoming.get(timeout=10) == text
            data = os.urandom(size)
            connection.send(data)
            assert connection.incoming.get(timeout=10) == data
    assert connection.close_code == 1000
    assert not connection.connected
    assert tube_server.next_close() == (1000, "")


def test_close_started_by_the_client(tube_server: TubeServer) -> None:
    connection = connect(tube_server.url(), close_give_up_time=10)
    connection.send("last words")
    assert connection.incoming.get(timeout=10) == "last words"
    start = time.monotonic()
    connection.close(4000, "done")
    # The server closes TCP right after the handshake: no waiting for the give-up time.
    assert time.monotonic() - start < 5
    assert not connection.connected
    assert connection.close_code == 4000
    assert tube_server.next_close() == (4000, "done")
    with pytest.raises(ConnectionClosed):
        connection.send("too late")


def test_close_started_by_the_server(tube_server: TubeServer) -> None:
    connection = connect(tube_server.url())
    try:
        connection.send(b"first")
        connection.send("tube-test:close 4002 server leaves")
        assert connection.incoming.get(timeout=10) == b"first"
        with pytest.raises(ConnectionClosed) as info:
            connection.incoming.get(timeout=10)
        assert info.value.code == 4002
        assert info.value.reason == "server leaves"
        assert info.value.initiated_by == "remote"
        assert tube_server.next_close()[0] == 4002
    finally:
        connection.close()
    assert connection.close_code == 4002


def test_keepalive_pings_from_the_server_are_answered() -> None:
    # The server pings after 50 ms of silence and gives up 200 ms later; the client sends
    # nothing by itself, so only its pongs keep the connection alive for a full second.
    with (
        TubeServer(ping_interval=0.05, ping_timeout=0.2) as server,
        connect(server.url(), ping_interval=None) as connection,
    ):
        with pytest.raises(TimeoutError):
            connection.incoming.get(timeout=1.0)
        assert connection.connected
        connection.send("still here")
        assert connection.incoming.get(timeout=10) == "still here"
    assert server.next_close() == (1000, "")


def test_subprotocol_negotiated(tube_server: TubeServer) -> None:
    tube_server.options["subprotocols"] = ["chat.v2", "chat.v1"]
    with connect(tube_server.url(), subprotocols=["chat.v1", "chat.v2"]) as connection:
        assert connection.subprotocol == "chat.v2"


def test_refused_by_our_server_shows_status_and_body(tube_server: TubeServer) -> None:
    with pytest.raises(HandshakeError) as info:
        connect(tube_server.url(), origin="https://evil.example")
    assert info.value.status == 403
    assert info.value.body == b"origin not allowed: https://evil.example\n"
    assert str(info.value) == "403 Forbidden: origin not allowed: https://evil.example"


def test_wss_with_a_trusted_self_signed_certificate(tls_ca: trustme.CA) -> None:
    with (
        TubeServer(tls=server_tls_context(tls_ca), max_message_size=BIG) as server,
        connect(server.url(), ssl=client_tls_context(tls_ca), max_message_size=BIG) as connection,
    ):
        assert isinstance(connection.conn, ssl.SSLSocket)
        for size in SIZES:
            data = os.urandom(size)
            connection.send(data)
            assert connection.incoming.get(timeout=10) == data
    assert server.next_close() == (1000, "")


def test_wss_refused_with_the_default_context(tls_ca: trustme.CA) -> None:
    with (
        TubeServer(tls=server_tls_context(tls_ca)) as server,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        connect(server.url())


def test_redirect_followed_to_our_server(tube_server: TubeServer) -> None:
    location = tube_server.url("/after-redirect")
    with (
        raw_server(answer(redirect("308 Permanent Redirect", location))) as first,
        connect(first.url(), follow_redirects=True) as connection,
    ):
        connection.send("redirected")
        assert connection.incoming.get(timeout=10) == "redirected"
    assert tube_server.next_close() == (1000, "")


# ---------------------------------------------------------------- byte-level checks


def client_frames(data: bytes) -> list[tuple[int, bytes | None]]:
    """(opcode, masking key or None) of each complete frame in ``data``."""
    frames = []
    position = 0
    while position + 2 <= len(data):
        first, second = data[position], data[position + 1]
        length = second & 0x7F
        position += 2
        if length == 126:
            length = int.from_bytes(data[position : position + 2], "big")
            position += 2
        elif length == 127:
            length = int.from_bytes(data[position : position + 8], "big")
            position += 8
        key = None
        if second & 0x80:
            key = data[position : position + 4]
            position += 4
        position += length
        frames.append((first & 0x0F, key))
    return frames


def upgrade_raw(server: RawServer, sock: socket.socket, behind: bytes = b"") -> bytes:
    """Answer the request with a valid 101 (plus ``behind`` in the same segment)."""
    tail = server.read_request(sock)
    key = get_header(server.requests[-1], "Sec-WebSocket-Key")
    assert key is not None
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    )
    sock.sendall(head.encode() + behind)
    return tail


def test_frames_masked_with_fresh_keys_and_pings_answered() -> None:
    received = bytearray()
    events: list[object] = []

    def handle(server: RawServer, sock: socket.socket) -> None:
        protocol = Protocol(Role.SERVER)
        protocol.send_text("welcome")
        protocol.send_ping(b"are you there")
        # The first frames ride in the same segment as the 101: the client must not lose them.
        upgrade_raw(server, sock, b"".join(bytes(b) for b in protocol.data_to_send()))
        while not any(isinstance(event, CloseReceived) for event in events):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received.extend(chunk)
            events.extend(protocol.receive_data(chunk))
        sock.sendall(b"".join(bytes(b) for b in protocol.data_to_send()))  # the close echo

    with raw_server(handle) as server:
        connection = connect(server.url(), ping_interval=None)
        assert connection.incoming.get(timeout=10) == "welcome"
        for index in range(20):
            connection.send(f"message {index}")
        connection.close()
    assert connection.close_code == 1000
    # The server's protocol refuses unmasked frames: these events prove they were all masked.
    assert events[0] == Pong(b"are you there")
    assert events[1:21] == [TextMessage(f"message {index}") for index in range(20)]
    assert isinstance(events[21], CloseReceived) and events[21].code == 1000
    frames = client_frames(bytes(received))
    assert len(frames) == 22
    keys = [key for _, key in frames]
    assert all(key is not None for key in keys)
    assert len(set(keys)) == len(keys)  # a fresh key per frame


def test_client_closes_tcp_itself_when_the_server_does_not() -> None:
    # After the closing handshake the server keeps TCP open: the client waits for it up to
    # close_give_up_time, then closes the connection itself.
    def handle(server: RawServer, sock: socket.socket) -> None:
        tail = upgrade_raw(server, sock)
        protocol = Protocol(Role.SERVER)
        events = protocol.receive_data(tail)
        while not any(isinstance(event, CloseReceived) for event in events):
            chunk = sock.recv(65536)
            assert chunk
            events = protocol.receive_data(chunk)
        sock.sendall(b"".join(bytes(b) for b in protocol.data_to_send()))
        # Hold the connection until the client gives up and closes (recv sees EOF).
        assert sock.recv(1) == b""

    with raw_server(handle) as server:
        connection = connect(server.url(), close_give_up_time=0.5, ping_interval=None)
        start = time.monotonic()
        connection.close()
        elapsed = time.monotonic() - start
        assert not connection.connected
    assert connection.close_code == 1000
    # README: close() takes at most close_give_up_time plus a second (here 1.5 s; it takes
    # the give-up's 0.5 s). The margin for a loaded 2-core machine is 0.5 s more.
    assert 0.4 < elapsed < 0.5 + 1 + 0.5, elapsed
    assert server.errors == []


# ---------------------------------------------------------------- IPv6 and parsing what arrives


def test_ipv6_literal() -> None:
    try:
        server = RawServer(answer(refusal("403 Forbidden", b"over IPv6")), host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        with pytest.raises(HandshakeError, match="over IPv6"):
            connect(f"ws://[::1]:{server.port}/six", open_timeout=5)
    finally:
        server.close()
    assert get_header(server.requests[0], "Host") == f"[::1]:{server.port}"
    assert server.targets == ["/six"]


VALID_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
)


@given(
    st.one_of(
        st.binary(max_size=3000),
        st.builds(lambda cut, tail: VALID_HEAD[:cut] + tail, st.integers(0, 90), st.binary()),
    )
)
def test_response_reader_on_arbitrary_bytes(data: bytes) -> None:
    # Whatever the server sends, the reader returns a parsed head and the exact bytes after it,
    # or raises InvalidHandshake (status None: no valid HTTP response); never anything else.
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        try:
            response, rest = _read_response_head(ours, _Deadline(5))
        except InvalidHandshake as error:
            assert error.status is None
            return
    assert 100 <= response.status <= 999
    assert data.endswith(rest)
    assert b"\r\n\r\n" in data[: len(data) - len(rest)]


@given(st.binary(max_size=500))
def test_dechunk_on_arbitrary_bytes(data: bytes) -> None:
    assert len(decode_chunked(data)) <= len(data)


@given(st.binary(max_size=500))
def test_explanation_on_arbitrary_bytes(data: bytes) -> None:
    text = _explanation(data)
    assert len(text) <= 200
    assert "\n" not in text and "\r" not in text
    assert text == "" or text.isprintable()


def test_host_name_with_several_addresses(tube_server: TubeServer) -> None:
    # "localhost" may resolve to ::1 first, where nothing listens: the next address is tried.
    with connect(f"ws://localhost:{tube_server.port}/") as connection:
        connection.send("via localhost")
        assert connection.incoming.get(timeout=10) == "via localhost"


# ---------------------------------------------------------------- issue 8 §4/§5, issue 9 errors


def test_open_timeout_bounds_dns_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    # An injected resolver that blocks until released: no real DNS is queried.
    release = threading.Event()
    asked: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "slow.example":
            return real_getaddrinfo(host, *args, **kwargs)
        asked.append(host)
        release.wait(10)
        raise socket.gaierror(socket.EAI_NONAME, "released")

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    start = time.monotonic()
    try:
        with pytest.raises(OpenTimeout, match=r"during DNS resolution of 'slow\.example'"):
            connect("ws://slow.example/", open_timeout=0.3)
        elapsed = time.monotonic() - start
    finally:
        release.set()  # the abandoned resolver thread ends
    assert asked == ["slow.example"]
    assert 0.25 < elapsed < 3


def test_dns_failure_within_the_deadline_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", failing_getaddrinfo)
    with pytest.raises(socket.gaierror, match=r"cannot resolve host 'nowhere\.example'"):
        connect("ws://nowhere.example/", open_timeout=5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"X": "\u20ac"}},
        {"headers": {"X": "a\x1bb"}},
        {"origin": "https://b\u00fccher.example"},
        {"headers": {"Sec-WebSocket-Accept": "x"}},
    ],
)
def test_unwritable_request_fails_before_any_connection(kwargs: dict[str, Any]) -> None:
    # Port 1 refuses connections: a check made after connecting would raise that instead.
    with pytest.raises(ValueError):
        connect("ws://127.0.0.1:1/", **kwargs)


def test_single_string_subprotocols_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        connect("ws://127.0.0.1:1/", subprotocols="chat")


def test_junk_after_an_ipv6_literal_is_refused() -> None:
    with pytest.raises(InvalidURI):
        connect("ws://[::1]junk/", open_timeout=5)


def test_refusal_is_handshake_rejected() -> None:
    response = refusal("404 Not Found", b"no such endpoint\n", "X-Why: path")
    with raw_server(answer(response)) as server, pytest.raises(HandshakeRejected) as info:
        connect(server.url(), open_timeout=5)
    assert (info.value.status, info.value.body) == (404, b"no such endpoint\n")
    assert get_header(info.value.headers, "X-Why") == "path"


def test_invalid_101_is_invalid_handshake() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
    )
    with raw_server(answer(response)) as server, pytest.raises(InvalidHandshake) as info:
        connect(server.url(), open_timeout=5)
    assert info.value.status == 101


def test_no_response_is_invalid_handshake_without_status() -> None:
    with raw_server(answer(b"")) as server, pytest.raises(InvalidHandshake) as info:
        connect(server.url(), open_timeout=5)
    assert info.value.status is None
    assert "without answering" in str(info.value)


def test_redirect_to_a_malformed_location_is_handshake_rejected() -> None:
    # urllib raises a bare ValueError on "ws://[::1": connect() must not.
    with (
        raw_server(answer(redirect("302 Found", "ws://[::1"))) as server,
        pytest.raises(HandshakeRejected, match="cannot follow the redirect") as info,
    ):
        connect(server.url(), follow_redirects=True, open_timeout=5)
    assert info.value.status == 302


def test_server_text_cannot_reach_the_terminal_raw() -> None:
    escapes = b"\x1b]0;owned\x07\x1b[2J"
    body_refusal = refusal("403 Forbidden", b"<p>" + escapes + b"</p>")
    with raw_server(answer(body_refusal)) as server, pytest.raises(HandshakeRejected) as info:
        connect(server.url(), open_timeout=5)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)
    assert "\\x1b]0;owned" in str(info.value)
    location = "ws://127.0.0.1:1/\x1b[31mred"
    with (
        raw_server(answer(redirect("302 Found", location))) as server,
        pytest.raises(HandshakeRejected) as info,
    ):
        connect(server.url(), open_timeout=5)
    assert "\x1b" not in str(info.value) and "\x1b" not in info.value.reason
    assert "redirected to ws://127.0.0.1:1/\\x1b[31mred" in str(info.value)
