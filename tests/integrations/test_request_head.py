"""serve()'s own request head reading (tube/websocket/integrations/request_head.py).

The reading function is driven deterministically by a scripted socket (every split of the bytes
is a separate read); the server end to end by raw sockets on 127.0.0.1.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tube.websocket import Connection, Request, Response, Server, connect
from tube.websocket.core.errors import HandshakeError
from tube.websocket.core.http import MAX_HEADERS, MAX_LINE_SIZE, parse_request_head
from tube.websocket.integrations.request_head import (
    MAX_HEAD_SIZE,
    plain_response,
    read_request_head,
)

from ..conftest import RawPeer, build_frame

TIMEOUT = 10.0
# The name serve() gives each connection's thread.
CONNECTION_THREAD = "tube-server-connection"


def handshake_head(target: str = "/", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


# ---------------------------------------------------------------------- read_request_head


class ScriptedSocket:
    """Stands for a socket: each ``recv_into`` returns the next chunk (as much as fits)."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = [bytes(chunk) for chunk in chunks if chunk]
        self.reads = 0

    def settimeout(self, timeout: float | None) -> None:
        assert timeout is not None and timeout > 0

    def recv_into(self, view: memoryview) -> int:
        self.reads += 1
        if not self.chunks:
            return 0  # EOF
        chunk = self.chunks[0]
        size = min(len(chunk), len(view))
        view[:size] = chunk[:size]
        if size == len(chunk):
            del self.chunks[0]
        else:
            self.chunks[0] = chunk[size:]
        return size


def read_scripted(chunks: Sequence[bytes]) -> tuple[Request, bytes] | None:
    sock = cast(socket.socket, ScriptedSocket(chunks))
    return read_request_head(sock, time.monotonic() + TIMEOUT, TIMEOUT)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    behind=st.binary(max_size=300),
    padding=st.integers(min_value=0, max_value=6000),
)
@settings(max_examples=200, deadline=None)
def test_any_split_of_a_head_reads_as_the_whole(
    cuts: list[int], behind: bytes, padding: int
) -> None:
    # Padding makes some heads longer than the first buffer, so that it has to grow.
    head = handshake_head(extra=f"X-Padding: {'p' * padding}\r\n" if padding else "")
    data = head + behind
    whole = parse_request_head(head)
    assert whole is not None
    result = read_scripted(splits(data, cuts))
    assert result is not None
    request, rest = result
    assert request == whole[0]
    # What came behind the head is handed over, at least as much as the buffer held.
    assert behind.startswith(rest)


def test_each_byte_in_its_own_read() -> None:
    head = handshake_head()
    chunks = [head[index : index + 1] for index in range(len(head) - 1)] + [head[-1:] + b"\x81"]
    sock = ScriptedSocket(chunks)
    result = read_request_head(cast(socket.socket, sock), time.monotonic() + TIMEOUT, TIMEOUT)
    assert result is not None
    assert result[0].method == "GET"
    assert result[1] == b"\x81"
    assert sock.reads == len(head)


def test_eof_before_a_whole_head_is_none() -> None:
    assert read_scripted([]) is None
    assert read_scripted([b"GET / HTTP/1.1\r\nHost: x\r\n"]) is None


@pytest.mark.parametrize(
    ("chunks", "status"),
    [
        # Lines that never end: refused once the buffer fills past the limit.
        ([b"GET /" + b"a" * (3 * MAX_LINE_SIZE)], 414),
        ([b"GET / HTTP/1.1\r\nX: " + b"v" * (3 * MAX_LINE_SIZE)], 431),
        ([b"GET / HTTP/1.1\r\n", b"X: v\r\n" * (MAX_HEADERS + 1)], 431),
        ([b"GET / HTTP/1.1\n"], 400),  # bare LF: refused at the first line end
        ([b"GET / HTTP/1.1\r\nno colon\r\n\r\n"], 400),
        ([b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n"], 400),
    ],
)
def test_a_bad_head_is_refused_with_its_status(chunks: list[bytes], status: int) -> None:
    with pytest.raises(HandshakeError) as raised:
        read_scripted(chunks)
    assert raised.value.status == status


def test_a_head_at_the_limits_fits() -> None:
    line = b"X: " + b"v" * (MAX_LINE_SIZE - 3) + b"\r\n"
    head = b"GET /" + b"a" * (MAX_LINE_SIZE - 14) + b" HTTP/1.1\r\n" + line * MAX_HEADERS + b"\r\n"
    assert len(head) == MAX_HEAD_SIZE
    result = read_scripted([head, b"behind"])
    assert result is not None
    assert len(result[0].headers) == MAX_HEADERS
    assert result[1] == b""  # the buffer was exactly full: the rest stays on the socket


def test_plain_response_completes_the_head_and_drops_the_body_of_head() -> None:
    response = Response(200, "OK", [("Content-Type", "text/plain")], b"hello")
    assert plain_response(response, "GET") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello"
    )
    assert plain_response(response, "HEAD").endswith(b"Connection: close\r\n\r\n")
    kept = Response(204, "No Content", [("content-length", "0"), ("connection", "close")])
    assert plain_response(kept, "GET") == (
        b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )


# ---------------------------------------------------------------------- through serve()


def exchange(port: int, data: bytes, *, chunk: int = 0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` (``chunk`` bytes per write if set), read the answer until the server's EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if chunk:
            for start in range(0, len(data), chunk):
                sock.sendall(data[start : start + chunk])
        else:
            sock.sendall(data)
        received = bytearray()
        try:
            while block := sock.recv(65536):
                received += block
        except ConnectionResetError:
            pass  # the server closed with bytes of ours unread: the answer came before
        assert received, "no answer"
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def test_a_head_in_tiny_writes_upgrades(running: Callable[..., Server]) -> None:
    server = running(echo)
    with RawPeer(server.port, handshake=False) as peer:
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = handshake_head()
        for index in range(len(head)):
            peer.sock.sendall(head[index : index + 1])
        assert peer._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        peer.send_text("after a slow head")
        assert peer.recv_message(TIMEOUT) == "after a slow head"


def test_bytes_right_behind_the_head_are_the_first_message(
    running: Callable[..., Server],
) -> None:
    server = running(echo)
    behind = build_frame(0x1, b"first") + build_frame(0x2, b"second")
    with RawPeer(server.port, after_request=behind) as peer:
        assert peer.recv_message(TIMEOUT) == "first"
        assert peer.recv_message(TIMEOUT) == b"second"


def test_limits_answer_431_and_414(running: Callable[..., Server]) -> None:
    server = running(echo)
    many = "".join(f"X-{index}: v\r\n" for index in range(MAX_HEADERS + 1))
    status, headers, body = exchange(server.port, handshake_head(extra=many))
    assert (status, body) == (431, f"more than {MAX_HEADERS} header lines\n".encode())
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    long_line = f"X-Long: {'v' * MAX_LINE_SIZE}\r\n"
    assert exchange(server.port, handshake_head(extra=long_line))[0] == 431
    status, _, body = exchange(server.port, handshake_head("/" + "a" * MAX_LINE_SIZE))
    assert (status, body) == (414, f"request line longer than {MAX_LINE_SIZE} bytes\n".encode())
    # A head that never ends is refused as soon as it breaks a limit, not at the deadline.
    status, _, _ = exchange(server.port, b"GET /" + b"a" * (3 * MAX_LINE_SIZE))
    assert status == 414


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /\r\n\r\n",  # HTTP/0.9
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on a plain port
    ],
)
def test_a_malformed_head_gets_400(running: Callable[..., Server], head: bytes) -> None:
    server = running(echo)
    status, headers, body = exchange(server.port, head)
    assert status == 400
    assert headers["Connection"] == "close"
    assert body.endswith(b"\n") and body.isascii()


def test_head_and_other_methods(running: Callable[..., Server]) -> None:
    def process_request(request: Request) -> Response | None:
        if request.target == "/page":
            return Response(200, "OK", [("Content-Type", "text/plain")], b"page\n")
        return None

    server = running(echo, process_request=process_request)
    status, headers, body = exchange(server.port, b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["Content-Length"], body) == (200, "5", b"")
    # Not answered by process_request: the upgrade refuses HEAD, without a body.
    status, headers, body = exchange(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["Allow"], body) == (405, "GET", b"")
    assert int(headers["Content-Length"]) > 0
    # Other methods never reach process_request.
    status, _, body = exchange(server.port, b"POST /page HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert (status, body) == (501, b"unsupported method 'POST'\n")
    assert exchange(server.port, b"get /page HTTP/1.1\r\n\r\n")[0] == 501


def test_a_misbehaving_subprotocol_callback_gets_500(
    running: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = running(echo, subprotocols=lambda offered: "not offered")
    head = handshake_head(extra="Sec-WebSocket-Protocol: chat\r\n")
    with caplog.at_level(logging.ERROR, logger="tube.websocket.server"):
        status, _, body = exchange(server.port, head)
    assert (status, body) == (500, b"internal server error\n")
    assert any(record.exc_info for record in caplog.records)


def connection_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == CONNECTION_THREAD}


@pytest.mark.parametrize(
    ("head_timeout", "read_timeout"), [(0.3, TIMEOUT), (TIMEOUT, 0.3)], ids=["head", "read"]
)
def test_a_silent_client_is_cut_off_alone(
    running: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    head_timeout: float,
    read_timeout: float,
) -> None:
    server = running(echo)
    server.request_head_timeout = head_timeout
    server.read_timeout = read_timeout
    before = connection_threads()
    with (
        caplog.at_level(logging.INFO, logger="tube.websocket.server"),
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as silent,
    ):
        silent.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        # Meanwhile another client is served as usual.
        with connect(server.url, open_timeout=TIMEOUT) as other:
            other.send("not stalled")
            assert other.incoming.get(timeout=TIMEOUT) == "not stalled"
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed without an answer
        assert time.monotonic() - started < TIMEOUT / 2
    for thread in connection_threads() - before:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert any("no complete request head" in record.getMessage() for record in caplog.records)


def test_a_dribbling_client_is_cut_by_the_head_deadline(running: Callable[..., Server]) -> None:
    server = running(echo)
    server.request_head_timeout = 0.5
    server.read_timeout = TIMEOUT
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
        started = time.monotonic()
        sock.settimeout(0.05)  # the pace of the dribble: far inside the read timeout
        while True:
            try:
                sock.sendall(b"v")
                if sock.recv(100) == b"":
                    break
            except TimeoutError:
                continue  # still open: one more byte
            except (BrokenPipeError, ConnectionResetError):
                break
            assert time.monotonic() - started < TIMEOUT, "never cut off"
        assert time.monotonic() - started < TIMEOUT / 2


def test_a_client_that_leaves_early_is_no_error(
    running: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = running(echo)
    before = connection_threads()
    with caplog.at_level(logging.INFO, logger="tube.websocket"):
        for sent in (b"", b"GET / HTTP/1.1\r\n"):  # nothing at all, or half a head
            with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
                sock.sendall(sent)
                sock.shutdown(socket.SHUT_WR)  # the client leaves
                # The server closes in turn, without an answer: its thread has started and
                # is ending (joining a thread the server is still starting would fail).
                assert sock.recv(100) == b""
        for thread in connection_threads() - before:
            thread.join(TIMEOUT)
            assert not thread.is_alive()
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


# ---------------------------------------------------------------------- TLS


def test_tls_head_in_pieces_and_a_frame_behind_it(
    running: Callable[..., Server], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    server = running(echo, ssl=server_context)
    behind = build_frame(0x1, b"over tls")
    with RawPeer(server.port, ssl_context=client_context, handshake=False) as peer:
        head = handshake_head()
        # Several TLS records, the last holding the end of the head and a frame.
        for start in range(0, len(head) - 10, 7):
            peer.sock.sendall(head[start : start + 7])
        peer.sock.sendall(head[start + 7 :] + behind)
        assert peer._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        assert peer.recv_message(TIMEOUT) == "over tls"


def test_a_failed_tls_handshake_ends_quietly(
    running: Callable[..., Server], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    server = running(echo, ssl=server_context)
    before = connection_threads()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as plain:
        plain.sendall(handshake_head())  # plain HTTP on a TLS port
        try:
            while plain.recv(65536):
                pass  # perhaps a TLS alert
        except ConnectionResetError:
            pass
    for thread in connection_threads() - before:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    with connect(
        f"wss://localhost:{server.port}/", ssl=client_context, open_timeout=TIMEOUT
    ) as client:
        client.send("still serving")
        assert client.incoming.get(timeout=TIMEOUT) == "still serving"


# ---------------------------------------------------------------------- property, end to end


def test_random_chunking_of_a_handshake_still_upgrades(running: Callable[..., Server]) -> None:
    server = running(echo)

    @given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
    @settings(max_examples=25, deadline=None)
    def upgrades(cuts: list[int]) -> None:
        data = handshake_head() + build_frame(0x1, b"behind")
        with RawPeer(server.port, handshake=False) as peer:
            peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in splits(data, cuts):
                peer.sock.sendall(piece)
            assert peer._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
            assert peer.recv_message(TIMEOUT) == "behind"
            peer.send_close(1000)
            closes = [frame for frame in peer.expect_eof(TIMEOUT) if frame.opcode == 0x8]
            assert [frame.close_code for frame in closes] == [1000]

    upgrades()


def test_nothing_of_the_head_stays_with_the_handler(running: Callable[..., Server]) -> None:
    # An idle connection's thread keeps its frames for as long as the WebSocket lives: none of
    # them may hold the head's buffer or the parsed request.
    held: list[str] = []

    def handler(connection: Connection) -> None:
        frame = sys._getframe()
        while frame is not None:
            for name, value in frame.f_locals.items():
                if isinstance(value, Request | bytearray | memoryview):
                    held.append(f"{frame.f_code.co_name}: {name}")
            frame = frame.f_back  # type: ignore[assignment]
        echo(connection)

    server = running(handler)
    with connect(server.url, open_timeout=TIMEOUT) as client:
        client.send("hi")
        assert client.incoming.get(timeout=TIMEOUT) == "hi"
    assert held == []
