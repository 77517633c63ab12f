"""Issue 8 §5, §6: the send path and input checks of the threaded connection.

``send_many`` is all or nothing; any bytes-like buffer can be sent (non-contiguous and wide
formats included); ``send_timeout`` means "no progress for this long", so a slow reader that
keeps reading is never aborted while a reader that stops is; parking never costs a healthy
connection; TCP keepalive is set from the ping options.
"""

from __future__ import annotations

import array
import errno
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tube.websocket import Connection, ConnectionClosed
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Role
from tube.websocket.threads import parking
from tube.websocket.threads.channel import Incoming
from tube.websocket.threads.connection import open_connection

from ..conftest import RawPeer, abort

Pair = Callable[..., tuple[Connection, RawPeer]]
ROLES = [Role.SERVER, Role.CLIENT]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_send_many_sends_nothing_when_one_message_is_invalid(socket_pair: Pair, role: Role) -> None:
    connection, peer = socket_pair(role, ping_interval=None)
    with pytest.raises(UnicodeEncodeError):
        connection.send_many([b"first", "second", "\ud800"])
    with pytest.raises(TypeError):
        connection.send_many([b"first", 42])  # type: ignore[list-item]
    connection.send(b"later")  # the connection stays usable, nothing was queued
    assert peer.recv_message() == b"later"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_any_bytes_like_buffer_is_sent_whole(socket_pair: Pair, role: Role) -> None:
    connection, peer = socket_pair(role, ping_interval=None)
    data = bytes(range(256)) * 800
    connection.send(memoryview(data)[::2])  # not contiguous
    assert peer.recv_message(timeout=10) == data[::2]
    numbers = array.array("i", range(1000))
    connection.send(memoryview(numbers))  # items of 4 bytes: the length counts bytes
    assert peer.recv_message() == numbers.tobytes()
    connection.send_many([memoryview(data)[1::3], "after"])
    assert peer.recv_message(timeout=10) == data[1::3]
    assert peer.recv_message() == "after"
    with pytest.raises(TypeError, match="ping"):
        connection.ping(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="125"):
        connection.ping(memoryview(array.array("d", range(20))))  # 160 bytes, 20 items


def test_incoming_counts_text_in_utf8_bytes() -> None:
    incoming = Incoming(100, 1 << 20)
    incoming._put(["é" * 4, "ascii", b"\x00\x01", "😀"])
    assert incoming.buffered_bytes == 8 + 5 + 2 + 4
    assert incoming.get() == "é" * 4
    assert incoming.buffered_bytes == 11


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on 127.0.0.1 with small buffers: (server end, client end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    with client:
        yield server, client


def test_a_slow_reader_that_keeps_reading_is_never_aborted(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server_sock, client = tcp_pair
    options = ConnectionOptions(send_timeout=0.6, ping_interval=None)
    connection = open_connection(server_sock, Role.SERVER, options)
    message = bytes(64 * 1024)
    count = 6  # 384 KiB at ~100 KB/s: several times send_timeout
    total = count * (len(message) + 10)
    received = 0
    done = threading.Event()

    def throttled_reader() -> None:
        nonlocal received
        client.settimeout(5)
        while received < total:
            chunk = client.recv(4096)
            if not chunk:
                break
            received += len(chunk)
            done.wait(0.04)  # ~100 KB/s: the throttle under test, not a synchronisation
        done.set()

    reader = threading.Thread(target=throttled_reader)
    reader.start()
    try:
        for _ in range(count):
            connection.send(message)  # would raise ConnectionClosed on a whole-send deadline
    finally:
        reader.join(30)
    assert received == total
    connection.close(wait=False)
    abort(connection)
    assert connection.wait_closed(5)


def test_a_reader_that_stops_is_aborted_after_send_timeout(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server_sock, _client = tcp_pair
    options = ConnectionOptions(send_timeout=0.5, ping_interval=None)
    connection = open_connection(server_sock, Role.SERVER, options)
    start = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(1000):  # the buffers hold far less than 64 MiB
            connection.send(bytes(64 * 1024))
    assert time.monotonic() - start < 5
    assert info.value.code == 1006
    assert "no byte could be written for 0.5 s" in info.value.reason
    assert connection.wait_closed(5)
    assert connection.close_code == 1006


@pytest.mark.parametrize("message", [b"b" * 100, "t" * 100], ids=["binary", "text"])
def test_small_messages_to_a_reader_that_stops_abort_after_send_timeout(
    tcp_pair: tuple[socket.socket, socket.socket], message: bytes | str
) -> None:
    # Small messages take the framed-and-written-at-once path: once the socket's buffers are
    # full, it must queue, wait and abort like the general path, and then refuse more sends.
    server_sock, client = tcp_pair
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    options = ConnectionOptions(send_timeout=0.5, ping_interval=None)
    connection = open_connection(server_sock, Role.SERVER, options)
    sent = 0
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(1_000_000):  # a few thousand fill the buffers
            connection.send(message)
            sent += 1
    assert info.value.code == 1006
    assert "no byte could be written for 0.5 s" in info.value.reason
    assert sent > 10
    with pytest.raises(ConnectionClosed):
        connection.send(message)
    assert connection.wait_closed(5)
    assert connection.close_code == 1006


def test_parking_failure_keeps_the_connection_open(
    socket_pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempted = threading.Event()

    def out_of_descriptors(sock: socket.socket, on_ready: Callable[[], None]) -> None:
        attempted.set()
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(parking, "PARK_AFTER", 0.1)
    monkeypatch.setattr(parking, "park", out_of_descriptors)
    connection, peer = socket_pair(Role.SERVER, ping_interval=None)
    assert attempted.wait(5)
    peer.send_text("still here")
    assert connection.incoming.get(timeout=5) == "still here"
    connection.send("yes")
    assert peer.recv_message() == "yes"
    assert connection.connected
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_parking_watcher_fails_to_start_without_leaving_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watcher = parking._Watcher()

    def no_socketpair() -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    left, right = socket.socketpair()
    monkeypatch.setattr(socket, "socketpair", no_socketpair)
    with left, right, pytest.raises(OSError):
        watcher.park(left, lambda: None)
    assert watcher._thread is None and watcher._pending == []


def test_tcp_keepalive_follows_the_ping_options(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server_sock, _client = tcp_pair
    options = ConnectionOptions(ping_interval=7.5, ping_timeout=9.0)
    connection = open_connection(server_sock, Role.SERVER, options)
    try:
        assert server_sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert server_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 8
            interval = server_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
            count = server_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
            assert interval * count >= 9 and interval == math.ceil(9.0 / count)
    finally:
        abort(connection)
        assert connection.wait_closed(5)
