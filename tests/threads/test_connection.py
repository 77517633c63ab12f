"""The threaded Connection against a hand-written peer: messages, pings, keepalive, close retry
and give-up, protocol failures, backpressure, concurrent senders, slow readers."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tube.websocket import (
    Connection,
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidState,
    create_connection,
    initiate_close,
    is_closing,
    is_connected,
    ping,
    send_blob_data,
    send_text,
    wait_until_connected,
)
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Role
from tube.websocket.threads.connection import open_connection

from ..conftest import Frame, RawPeer, WsServer, abort, wait_ended

ServerFactory = Callable[..., WsServer]
PeerFactory = Callable[..., RawPeer]
PairFactory = Callable[..., tuple[Connection, RawPeer]]


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def drain(connection: Connection) -> None:
    """Take every message (so that a peer's violation is reached at once) until the end."""
    for _ in connection.incoming:
        pass


def idle(connection: Connection) -> None:
    """Read nothing; return once the connection has ended."""
    wait_ended(connection, 30)


# ---------------------------------------------------------------------- options and API


@pytest.mark.parametrize(
    "options",
    [
        {"close_retry_time": 0},
        {"close_give_up_time": None},
        {"close_give_up_time": -1.0},
        {"max_message_size": 0},
        {"max_fragments": 0},
        {"incoming_size": 0},
        {"ping_interval": -1},
        {"ping_timeout": float("nan")},
        {"open_timeout": 0},
    ],
)
def test_invalid_options_are_refused_at_once(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        create_connection(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"subprotocols": "chat"},
        {"origins": "https://example.com"},
        {"check_origin": "yes"},
        {"max_mesage_size": 10},
        # A number of the wrong type is a TypeError too (README, Options; issue 23).
        {"max_message_size": "64k"},
        {"max_fragments": 2.5},
        {"incoming_bytes": 1.5},
        {"ping_interval": "20"},
        {"ping_timeout": "1"},
        {"send_timeout": True},
        {"close_give_up_time": b"10"},
    ],
)
def test_options_of_the_wrong_type_or_name_raise_type_error(options: dict[str, object]) -> None:
    # One exception type per kind of mistake: a wrong type or an unknown name is a TypeError.
    with pytest.raises(TypeError):
        create_connection(**options)


def test_unattached_connection() -> None:
    connection = create_connection()
    assert not is_connected(connection)
    assert not is_closing(connection)
    assert connection.conn is None
    assert not wait_until_connected(connection, timeout=0.01)
    # Sending before the connection is attached is a misuse of the API, not a closed peer.
    with pytest.raises(InvalidState, match="not connected yet"):
        send_blob_data(connection, b"x")
    with pytest.raises(InvalidState):
        send_text(connection, "x")
    initiate_close(connection)  # nothing to close: no error
    connection.close()
    with pytest.raises(TypeError):
        connection.send(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- messages


def test_echo_text_binary_and_fragments(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(echo)
    peer = raw_peer(server)
    connection = server.next_connection()
    assert wait_until_connected(connection, timeout=1)
    assert is_connected(connection) and connection.connected and not connection.closing
    assert connection.subprotocol is None

    peer.send_text("héllo")
    assert peer.recv_message() == "héllo"
    peer.send_binary(b"\x00\xff" * 40000)
    assert peer.recv_message() == b"\x00\xff" * 40000
    peer.send_binary(b"")
    assert peer.recv_message() == b""
    # A text message split inside a character, with a ping between the fragments.
    data = "é€😀".encode()
    peer.send_frame(0x1, data[:1], fin=False)
    peer.send_frame(0x9, b"between")
    peer.send_frame(0x0, data[1:5], fin=False)
    peer.send_frame(0x0, data[5:])
    pong = peer.recv_frame()
    assert (pong.opcode, pong.payload, pong.masked) == (0xA, b"between", False)
    assert peer.recv_message() == "é€😀"

    peer.send_close(1000, "done")
    frames = peer.expect_eof()
    assert [(f.opcode, f.close_code) for f in frames] == [(0x8, 1000)]
    wait_ended(connection)
    assert (connection.close_code, connection.close_reason) == (1000, "done")
    assert is_closing(connection) and not is_connected(connection)


def test_ping_is_answered_by_the_reader_thread(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    # The application reads nothing: the reader thread answers by itself (as long as the
    # incoming channel is not full; a full channel stops all reading, which is backpressure).
    server = ws_server(idle, incoming_size=16)
    peer = raw_peer(server)
    for index in range(5):
        peer.send_text(f"unread {index}")
    for payload in (b"", b"abc", b"x" * 125):
        peer.send_frame(0x9, payload)
        frame = peer.recv_frame()
        assert (frame.opcode, frame.payload) == (0xA, payload)
    peer.send_close()
    peer.expect_eof()


def test_server_ping(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(idle)
    peer = raw_peer(server)
    connection = server.next_connection()
    ping(connection, b"hello")
    frame = peer.recv_frame()
    assert (frame.opcode, frame.payload) == (0x9, b"hello")
    with pytest.raises(ValueError):
        ping(connection, b"x" * 126)
    peer.send_close()
    peer.expect_eof()


def test_incoming_ends_after_delivering_every_message(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    received: list[str | bytes] = []
    errors: list[ConnectionClosed] = []

    def app(connection: Connection) -> None:
        wait_ended(connection)  # read only once the connection is closed
        received.extend(connection.incoming)
        try:
            connection.incoming.get(timeout=1)
        except ConnectionClosed as error:
            errors.append(error)

    server = ws_server(app)
    peer = raw_peer(server)
    for index in range(5):
        peer.send_text(f"message {index}")
    peer.send_binary(b"last")
    peer.send_close(4000, "bye")
    assert [f.close_code for f in peer.expect_eof()] == [4000]
    server.stop()
    assert received == [f"message {index}" for index in range(5)] + [b"last"]
    assert [(e.code, e.reason, e.initiated_by) for e in errors] == [(4000, "bye", "remote")]


def test_incoming_get_timeout(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(idle)
    raw_peer(server)
    connection = server.next_connection()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.incoming.get(timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 2


# ---------------------------------------------------------------------- closing


def test_close_retry_then_give_up(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    closed = threading.Event()

    def app(connection: Connection) -> None:
        initiate_close(connection, 1001, "going away")
        assert is_closing(connection)
        closed.set()
        wait_ended(connection)

    server = ws_server(app, close_retry_time=0.3, close_give_up_time=1.0)
    peer = raw_peer(server)  # never answers the close frame
    first = peer.recv_frame()
    started = time.monotonic()
    assert (first.opcode, first.close_code, first.close_reason) == (0x8, 1001, "going away")
    assert closed.wait(1)
    second = peer.recv_frame(timeout=2)
    retried_after = time.monotonic() - started
    assert (second.opcode, second.payload) == (0x8, first.payload)
    assert 0.2 <= retried_after < 1.0
    assert peer.expect_eof(timeout=3) == []
    gave_up_after = time.monotonic() - started
    assert 0.8 <= gave_up_after < 2.5
    connection = server.connections[0]
    wait_ended(connection)
    assert connection.close_code == 1006


def test_close_without_retry(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(lambda c: initiate_close(c), close_retry_time=None, close_give_up_time=0.5)
    peer = raw_peer(server)
    assert peer.recv_frame().close_code == 1000
    # Only EOF follows: no second close frame.
    assert peer.expect_eof(timeout=3) == []


def test_server_initiated_close_handshake(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    def app(connection: Connection) -> None:
        connection.send("before close")
        connection.close(3001, "server done")  # waits for the end
        assert not connection.connected
        with pytest.raises(ConnectionClosed):
            connection.send("after close")

    server = ws_server(app)
    peer = raw_peer(server)
    assert peer.recv_message() == "before close"
    frame = peer.recv_frame()
    assert (frame.close_code, frame.close_reason) == (3001, "server done")
    peer.send_text("sent before our close: still delivered")
    peer.send_close(3001)
    started = time.monotonic()
    assert peer.expect_eof() == []
    assert time.monotonic() - started < 1  # the server closes TCP at once, not at give-up
    connection = server.connections[0]
    wait_ended(connection)
    assert (connection.close_code, connection.close_reason) == (3001, "")
    assert list(connection.incoming) == ["sent before our close: still delivered"]


def test_context_manager_closes(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    def app(connection: Connection) -> None:
        with connection:
            connection.send(b"hi")

    server = ws_server(app, close_give_up_time=2.0)
    peer = raw_peer(server)
    assert peer.recv_message() == b"hi"
    frame = peer.recv_frame()
    assert frame.close_code == 1000
    peer.send_close(1000)
    assert peer.expect_eof() == []


def test_context_manager_closes_with_1011_when_the_block_raises(
    socket_pair: PairFactory,
) -> None:
    """README: leaving a ``with connection:`` block calls ``close()`` with 1000, or 1011 if the
    block raised; the exception goes on."""
    connection, peer = socket_pair(Role.SERVER, close_give_up_time=5.0)
    received: list[Frame] = []

    def answer() -> None:  # the peer answers the close frame with its code, then sees EOF
        received.append(peer.recv_frame())
        peer.send_close(received[0].close_code)
        received.extend(peer.expect_eof())

    answering = threading.Thread(target=answer)
    answering.start()
    with pytest.raises(RuntimeError, match="the block failed"), connection:
        raise RuntimeError("the block failed")
    answering.join(5)
    assert [(f.opcode, f.close_code) for f in received] == [(0x8, 1011)]
    assert connection.close_code == 1011


def test_a_close_frame_without_a_code_ends_with_connection_closed_ok(
    socket_pair: PairFactory,
) -> None:
    """A close frame with no status code: ``close_code`` 1005, a normal end, so
    ``incoming`` raises ``ConnectionClosedOK`` (README, Exceptions)."""
    connection, peer = socket_pair(Role.SERVER)
    peer.send_close(None)
    with pytest.raises(ConnectionClosedOK) as info:
        connection.incoming.get(timeout=5)
    assert info.value.code == 1005 and info.value.ok
    assert connection.close_code == 1005
    assert [f.opcode for f in peer.expect_eof()] == [0x8]


def test_peer_eof_without_close_gives_1006(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(idle)
    peer = raw_peer(server)
    connection = server.next_connection()
    peer.close()
    wait_ended(connection)
    assert connection.close_code == 1006
    with pytest.raises(ConnectionClosed) as info:
        connection.incoming.get()
    assert info.value.code == 1006


# ---------------------------------------------------------------------- keepalive


def test_keepalive_ping_then_timeout_closes_with_1011(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(idle, ping_interval=0.2, ping_timeout=0.3, close_give_up_time=5)
    peer = raw_peer(server)
    started = time.monotonic()
    ping_frame = peer.recv_frame(timeout=2)
    assert ping_frame.opcode == 0x9
    assert 0.15 <= time.monotonic() - started < 1.5
    # Never answer: a close frame with 1011, then EOF, about ping_timeout later.
    frames = peer.expect_eof(timeout=3)
    assert [(f.opcode, f.close_code) for f in frames] == [(0x8, 1011)]
    assert frames[0].close_reason == "keepalive ping timeout"
    connection = server.connections[0]
    wait_ended(connection)
    assert connection.close_code == 1011


def test_keepalive_any_traffic_keeps_the_connection(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(echo, ping_interval=0.2, ping_timeout=0.2)
    peer = raw_peer(server)
    # Answer pings for a while: the connection stays open well past ping_timeout.
    deadline = time.monotonic() + 1.0
    pings = 0
    while time.monotonic() < deadline:
        frame = peer.recv_frame(timeout=2)
        assert frame.opcode == 0x9, frame
        pings += 1
        peer.send_frame(0xA, frame.payload)
    assert pings >= 2
    peer.send_text("still here")
    assert peer.recv_message() == "still here"
    peer.send_close()
    peer.expect_eof()


# ---------------------------------------------------------------------- protocol violations

VIOLATIONS = [
    # (description, bytes to send, expected close code, connection options)
    ("unmasked frame", {"opcode": 0x1, "payload": b"hi", "mask": False}, 1002, {}),
    ("invalid UTF-8", {"opcode": 0x1, "payload": b"\xff\xfe"}, 1007, {}),
    ("reserved opcode", {"opcode": 0x3, "payload": b""}, 1002, {}),
    ("rsv bit", {"opcode": 0x2, "payload": b"x", "rsv": 4}, 1002, {}),
    ("fragmented ping", {"opcode": 0x9, "payload": b"", "fin": False}, 1002, {}),
    ("continuation first", {"opcode": 0x0, "payload": b"x"}, 1002, {}),
    ("bad close code", {"opcode": 0x8, "payload": b"\x03\xe7"}, 1002, {}),
    (
        "absurd declared length",
        {"opcode": 0x2, "payload": b"", "length": 1 << 62},
        1009,
        {"max_message_size": 1000},
    ),
]


@pytest.mark.parametrize(
    ("frame", "code", "options"),
    [v[1:] for v in VIOLATIONS],
    ids=[v[0] for v in VIOLATIONS],
)
def test_protocol_violation_closes_with_the_right_code(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    frame: dict[str, object],
    code: int,
    options: dict[str, object],
) -> None:
    server = ws_server(drain, **options)
    peer = raw_peer(server)
    peer.send_frame(**frame)  # type: ignore[arg-type]
    frames = peer.expect_eof(timeout=3)  # the server closes TCP, without waiting for us
    assert [(f.opcode, f.close_code) for f in frames] == [(0x8, code)]
    connection = server.connections[0]
    wait_ended(connection)
    assert connection.close_code == code


def test_flood_of_tiny_fragments_is_cut_off(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(drain, max_fragments=100)
    peer = raw_peer(server)
    flood = b"".join(
        [bytes([0x02, 0x80]) + b"\0\0\0\0"] + [bytes([0x00, 0x80]) + b"\0\0\0\0"] * 200
    )
    peer.sock.sendall(flood)
    frames = peer.expect_eof(timeout=3)
    assert [(f.opcode, f.close_code) for f in frames] == [(0x8, 1009)]


# ---------------------------------------------------------------------- backpressure


def test_backpressure_bounds_buffered_bytes(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    message_size = 1 << 20
    count = 100
    start_reading = threading.Event()
    received: list[int] = []

    def app(connection: Connection) -> None:
        assert start_reading.wait(20)
        for message in connection.incoming:
            assert isinstance(message, bytes) and len(message) == message_size
            assert message[-4:] == message[:4]
            received.append(int.from_bytes(message[:4], "big"))
            if len(received) == count:
                connection.close()

    limit = 2 * message_size
    server = ws_server(app, incoming_size=4, incoming_bytes=limit, ping_interval=None)
    peer = raw_peer(server)
    peer.sock.settimeout(None)
    connection = server.next_connection()
    body = bytes(message_size - 8)
    sent: list[int] = []

    def send_all() -> None:
        for index in range(count):
            tag = index.to_bytes(4, "big")
            peer.send_binary(tag + body + tag)
            sent.append(index)

    sender = threading.Thread(target=send_all, name="backpressure-sender")
    sender.start()
    try:
        # 100 MiB cannot fit in the socket buffers plus the bounded channel: the sender blocks.
        sender.join(2.0)
        assert sender.is_alive(), "the peer could send 100 MiB to an application that never reads"
        assert connection.incoming._paused
        assert len(sent) < count
        assert connection._buffered_bytes <= limit + message_size
        assert len(connection.incoming) <= 4
    finally:
        start_reading.set()
    sender.join(30)
    assert not sender.is_alive()
    assert peer.recv_frame(timeout=20).close_code == 1000
    peer.send_close()
    peer.expect_eof()
    assert received == list(range(count))


# ---------------------------------------------------------------------- concurrency


def test_eight_threads_send_concurrently(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    threads_count, per_thread = 8, 1000
    go = threading.Event()

    def app(connection: Connection) -> None:
        def sender(thread_index: int) -> None:
            go.wait(5)
            for index in range(per_thread):
                if index % 2:
                    send_text(connection, f"{thread_index}:{index}:" + "t" * (index % 300))
                else:
                    send_blob_data(connection, f"{thread_index}:{index}:".encode() + bytes(index))

        senders = [threading.Thread(target=sender, args=(i,)) for i in range(threads_count)]
        for thread in senders:
            thread.start()
        go.set()
        for thread in senders:
            thread.join()
        connection.send("done")
        wait_ended(connection, 20)

    server = ws_server(app)
    peer = raw_peer(server)
    next_index = [0] * threads_count
    while True:
        message = peer.recv_message(timeout=10)
        if message == "done":
            break
        text = message if isinstance(message, str) else message.split(b":", 2)[0:2]
        if isinstance(message, str):
            thread_text, index_text, rest = message.split(":", 2)
            assert rest == "t" * (int(index_text) % 300)
        else:
            thread_bytes, index_bytes, rest_bytes = message.split(b":", 2)
            thread_text, index_text = thread_bytes.decode(), index_bytes.decode()
            assert rest_bytes == bytes(int(index_text))
        assert text
        thread_index, index = int(thread_text), int(index_text)
        assert index == next_index[thread_index], "messages of one thread out of order"
        next_index[thread_index] += 1
    assert next_index == [per_thread] * threads_count
    peer.send_close()
    peer.expect_eof()


# ---------------------------------------------------------------------- slow readers


def test_peer_that_stops_reading_cannot_block_senders(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    send_timeout = 1.0
    outcome: dict[str, float] = {}
    failed = threading.Event()

    def app(connection: Connection) -> None:
        if connection is not server.connections[0]:
            echo(connection)
            return
        chunk = bytes(256 * 1024)
        try:
            while True:
                outcome["last_send_started"] = time.monotonic()
                send_blob_data(connection, chunk)
        except ConnectionClosed as error:
            outcome["raised"] = time.monotonic()
            outcome["code"] = error.code
        failed.set()
        with pytest.raises(ConnectionClosed):
            send_blob_data(connection, b"again")
        wait_ended(connection)

    server = ws_server(app, send_timeout=send_timeout)
    stalled = raw_peer(server)  # never reads
    server.next_connection()
    other = raw_peer(server)
    # While the first connection's sender is stuck, the other connection keeps working.
    round_trips: list[float] = []
    index = 0
    while not failed.is_set():
        other.send_text(f"ping {index}")
        assert other.recv_message(timeout=2) == f"ping {index}"
        round_trips.append(time.monotonic())
        index += 1
        failed.wait(0.02)
    blocked_since = outcome["last_send_started"]
    assert outcome["raised"] - blocked_since < send_timeout + 0.75
    assert outcome["code"] == 1006
    assert any(blocked_since < t < outcome["raised"] for t in round_trips)
    connection = server.connections[0]
    wait_ended(connection)
    assert connection.close_code == 1006
    assert "send timed out" in connection.close_reason
    stalled.close()
    other.send_close()
    other.expect_eof()


def test_abort_helper_ends_connection(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(idle)
    peer = raw_peer(server)
    connection = server.next_connection()
    abort(connection)
    wait_ended(connection)
    assert peer.expect_eof() == []


# ---------------------------------------------------------------------- seed fields, errors


def test_seed_fields(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(idle, close_retry_time=1.5, close_give_up_time=4.0)
    raw_peer(server)
    connection = server.next_connection()
    with connection.lock:  # the seed's lock, usable by the application
        assert connection.connected is True
        assert connection.closing is False
    assert connection.status_changed.acquire(timeout=1)  # a Condition on `lock`
    connection.status_changed.release()
    assert isinstance(connection.conn, socket.socket)
    assert (connection.close_retry_time, connection.close_give_up_time) == (1.5, 4.0)
    assert connection.close_code is None
    assert len(connection.incoming) == 0


def test_internal_error_closes_with_1011_and_no_detail(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_put(self: object, batch: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("tube.websocket.threads.channel.Incoming._put", broken_put)
    server = ws_server(idle)
    peer = raw_peer(server)
    with caplog.at_level(logging.ERROR, logger="tube.websocket"):
        peer.send_text("boom")
        frames = peer.expect_eof()
        wait_ended(server.next_connection())
    assert [(f.close_code, f.close_reason) for f in frames] == [(1011, "")]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


# ---------------------------------------------------------------------- batches


def test_send_many_writes_a_batch_in_order_with_one_write(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    batch: list[str | bytes] = ["one", b"two", "three", b""]

    def app(connection: Connection) -> None:
        connection.send_many(batch)
        connection.incoming.get(timeout=5)

    server = ws_server(app)
    with raw_peer(server) as peer:
        assert [peer.recv_message() for _ in batch] == batch
        peer.send_text("done")
        peer.send_close()
        peer.expect_eof()


def test_send_many_joins_small_frames_into_one_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    left, right = socket.socketpair()
    with right:
        connection = open_connection(left, Role.SERVER, ConnectionOptions(ping_interval=None))
        assert connection._send is not None
        io_class = type(connection._send.io)
        original = io_class.send_nowait
        written: list[int] = []

        def counting_send(self: object, view: memoryview) -> int:
            written.append(len(view))
            return original(self, view)  # type: ignore[arg-type]

        monkeypatch.setattr(io_class, "send_nowait", counting_send)
        connection.send_many([b"a" * 10, "b" * 10, b"c" * 10])
        assert written == [36]  # three 12-byte frames, one system call
        expected = b"\x82\x0a" + b"a" * 10 + b"\x81\x0a" + b"b" * 10 + b"\x82\x0a" + b"c" * 10
        right.settimeout(5)
        assert right.recv(100) == expected
        monkeypatch.undo()
        connection.close(wait=False)
        right.shutdown(socket.SHUT_WR)
        wait_ended(connection)


def test_send_many_checks_every_message_before_sending_any() -> None:
    connection = create_connection()
    with pytest.raises(TypeError, match="send_many"):
        connection.send_many(["fine", 42])  # type: ignore[list-item]
    connection.send_many([])  # nothing to send: no error even when not connected
