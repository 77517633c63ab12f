"""The threaded Connection's behaviours its mutation run left untested (issue 24): send_text's
error message, an empty ping, close(wait=False), send_many's compress, keepalive while the
application leaves incoming full, the peer named in the log lines, an idle reader thread
parking, and initiate_close reading the peer's answer while the consumer is away."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tube.websocket import Connection
from tube.websocket.core.deflate import DeflateOptions, DeflateParameters
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Role
from tube.websocket.threads import parking
from tube.websocket.threads.connection import open_connection

from ..conftest import PEER_TIMEOUT, RawPeer, abort

Pair = tuple[Connection, RawPeer, int]


@pytest.fixture
def tcp_pair() -> Iterator[Callable[..., Pair]]:
    """Factory: ``tcp_pair(**options)`` -> (a server-side connection attached to one end of a
    TCP connection on 127.0.0.1, a raw client on the other end, the client's port)."""
    made: list[tuple[Connection, RawPeer]] = []

    def make(deflate: DeflateParameters | None = None, **options: Any) -> Pair:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname(), timeout=PEER_TIMEOUT)
            ours, _ = listener.accept()
        connection = open_connection(
            ours, Role.SERVER, ConnectionOptions.from_kwargs(**options), deflate=deflate
        )
        peer = RawPeer.on_socket(client, mask=True)
        made.append((connection, peer))
        return connection, peer, client.getsockname()[1]

    yield make
    for connection, peer in made:
        peer.close()
        abort(connection)
        connection.wait_closed(PEER_TIMEOUT)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "EOF before the frame's header"
        data += chunk
    return data


def test_send_text_refuses_other_types_naming_the_type() -> None:
    with pytest.raises(TypeError, match=r"^send_text takes a str, got bytes$"):
        Connection().send_text(b"text")  # type: ignore[arg-type]


def test_ping_without_data_sends_an_empty_ping(tcp_pair: Callable[..., Pair]) -> None:
    connection, peer, _ = tcp_pair()
    connection.ping()
    frame = peer.recv_frame()
    assert (frame.opcode, frame.payload) == (0x9, b"")


def test_close_without_wait_returns_once_the_close_frame_is_written(
    tcp_pair: Callable[..., Pair],
) -> None:
    """The peer does not answer: close(wait=False) returns before the give-up (2 s) closes TCP;
    close(wait=True) would wait for it."""
    connection, peer, _ = tcp_pair(close_give_up_time=2.0, close_retry_time=None)
    start = time.monotonic()
    connection.close(4000, "bye", wait=False)
    assert time.monotonic() - start < 1.0
    assert not connection.wait_closed(0)
    frame = peer.recv_frame()
    assert (frame.opcode, frame.close_code, frame.close_reason) == (0x8, 4000, "bye")
    peer.send_close(4000)
    assert connection.wait_closed(PEER_TIMEOUT)
    assert connection.close_code == 4000


def test_send_many_compress_applies_to_each_message(tcp_pair: Callable[..., Pair]) -> None:
    """With permessage-deflate: compress=False sends a large message plain (RSV1 clear),
    compress=True a small one compressed (RSV1 set); the header's first byte tells."""
    parameters = DeflateParameters(False, False, 12, 12, DeflateOptions())
    connection, peer, _ = tcp_pair(deflate=parameters)
    connection.send_many([b"a" * 1000], compress=False)
    header = recv_exactly(peer.sock, 4)  # 0x82, 126, then the 16-bit length 1000
    assert header == b"\x82\x7e\x03\xe8"
    recv_exactly(peer.sock, 1000)
    connection.send_many([b"b"], compress=True)
    assert recv_exactly(peer.sock, 1)[0] == 0xC2  # FIN, RSV1, binary


def test_keepalive_spares_a_peer_while_the_application_leaves_incoming_full(
    tcp_pair: Callable[..., Pair],
) -> None:
    """incoming holds 1 message and the application reads none: the reader thread waits, so
    the peer's pongs are not read; the silence is ours, and the connection lives on (1 s,
    five times ping_interval + ping_timeout). Every message is then there, in order."""
    connection, peer, _ = tcp_pair(incoming_size=1, ping_interval=0.1, ping_timeout=0.1)
    peer.sock.sendall(b"".join(peer.frame_bytes(0x2, bytes([n])) for n in range(4)))
    assert not connection.wait_closed(1.0)
    assert not connection.closing
    assert [connection.incoming.get(PEER_TIMEOUT) for _ in range(4)] == [
        b"\x00",
        b"\x01",
        b"\x02",
        b"\x03",
    ]


def test_log_lines_name_the_peer_as_host_and_port(
    tcp_pair: Callable[..., Pair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tube.websocket")
    connection, peer, port = tcp_pair()
    peer.send_close(1000)
    assert list(connection.incoming) == []  # ends at the peer's close frame
    assert f"close frame from 127.0.0.1:{port}: 1000 ''" in caplog.messages


def test_log_lines_name_a_peer_without_address_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A socket pair (AF_UNIX) has no host and port to show."""
    caplog.set_level(logging.DEBUG, logger="tube.websocket")
    ours, theirs = socket.socketpair()
    connection = open_connection(ours, Role.SERVER)
    with RawPeer.on_socket(theirs, mask=True) as peer:
        try:
            peer.send_close(1000)
            assert list(connection.incoming) == []
            assert "close frame from (unknown peer): 1000 ''" in caplog.messages
        finally:
            abort(connection)
            assert connection.wait_closed(PEER_TIMEOUT)


def test_an_idle_reader_thread_parks_after_park_after(
    tcp_pair: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No consumer: the reader thread the watcher starts when the peer speaks ends again once
    nothing arrived for PARK_AFTER (0.1 s here; 5 s allowed)."""
    monkeypatch.setattr(parking, "PARK_AFTER", 0.1)
    connection, peer, _ = tcp_pair()
    reader = connection._reader
    assert reader is not None
    with connection.status_changed:
        assert connection.status_changed.wait_for(lambda: reader.thread is None, 5)
    for round_ in range(2):
        # The watcher starts a reader thread, which answers (no consumer takes the turn).
        peer.send_frame(0x9, bytes([round_]))
        assert peer.recv_frame().payload == bytes([round_])
        with connection.status_changed:
            assert connection.status_changed.wait_for(lambda: reader.thread is None, 5)


def test_initiate_close_has_the_peers_answer_read_while_the_consumer_is_away(
    tcp_pair: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer took a message and went away: initiate_close parks the socket at once, so
    the peer's close frame is read and TCP closed (within 5 s), without waiting for the sweep
    (which would take parking.LINGER, 60 s here)."""
    monkeypatch.setattr(parking, "LINGER", 60.0)
    connection, peer, _ = tcp_pair()
    peer.send_binary(b"one")
    assert connection.incoming.get(PEER_TIMEOUT) == b"one"  # this thread read it, then left
    connection.initiate_close(1001)
    assert peer.recv_frame().close_code == 1001
    peer.send_close(1001)
    assert peer.expect_eof() == []  # the server closes TCP first; the peer then closes
    assert connection.wait_closed(PEER_TIMEOUT)
    assert connection.close_code == 1001
