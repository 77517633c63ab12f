"""Idle connections park: their reader thread ends and a shared watcher starts a new one when
the peer speaks again (plain TCP and TLS), including for closes and aborts while parked."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

from tube.websocket import Connection, initiate_close
from tube.websocket.threads import parking

from ..conftest import RawPeer, WsServer, wait_ended

ServerFactory = Callable[..., WsServer]
PeerFactory = Callable[..., RawPeer]


@pytest.fixture(autouse=True)
def quick_parking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parking, "PARK_AFTER", 0.1)


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def wait_parked(connection: Connection) -> None:
    reader = connection._reader
    assert reader is not None
    with connection.status_changed:
        assert connection.status_changed.wait_for(lambda: reader.thread is None, 5)


def test_parked_connection_wakes_up_for_messages_and_pings(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(echo)
    peer = raw_peer(server)
    connection = server.next_connection()
    for round_ in range(3):
        wait_parked(connection)
        peer.send_text(f"wake up {round_}")
        assert peer.recv_message() == f"wake up {round_}"
    wait_parked(connection)
    peer.send_frame(0x9, b"still there?")
    assert peer.recv_frame().payload == b"still there?"
    wait_parked(connection)
    peer.send_close(1000)
    assert [f.close_code for f in peer.expect_eof()] == [1000]
    wait_ended(connection)
    assert connection.close_code == 1000


def test_close_started_while_parked(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(lambda c: wait_ended(c, 10), close_give_up_time=5)
    peer = raw_peer(server)
    connection = server.next_connection()
    wait_parked(connection)
    initiate_close(connection, 1001)
    assert peer.recv_frame().close_code == 1001
    peer.send_close(1001)  # wakes the reader, which completes the handshake
    started = time.monotonic()
    assert peer.expect_eof() == []
    assert time.monotonic() - started < 2
    wait_ended(connection)
    assert connection.close_code == 1001


def test_give_up_while_parked(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(lambda c: wait_ended(c, 10), close_retry_time=None, close_give_up_time=0.5)
    peer = raw_peer(server)
    connection = server.next_connection()
    wait_parked(connection)
    initiate_close(connection)
    assert peer.recv_frame().close_code == 1000
    # The peer never answers: the give-up timer shuts the socket down, the watcher sees it
    # and a reader thread ends the connection.
    assert peer.expect_eof(timeout=3) == []
    wait_ended(connection)
    assert connection.close_code == 1006


def test_peer_leaves_while_parked(ws_server: ServerFactory, raw_peer: PeerFactory) -> None:
    server = ws_server(echo)
    peer = raw_peer(server)
    connection = server.next_connection()
    wait_parked(connection)
    peer.close()
    wait_ended(connection)
    assert connection.close_code == 1006


@pytest.fixture(scope="module")
def contexts() -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    yield server_context, client_context


def test_parking_over_tls(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts
    server = ws_server(echo, ssl_context=server_context)
    peer = raw_peer(server, ssl_context=client_context)
    connection = server.next_connection()
    for round_ in range(2):
        wait_parked(connection)
        payload = bytes([round_]) * 100_000
        peer.send_binary(payload)
        assert peer.recv_message() == payload
    wait_parked(connection)
    peer.send_close()
    assert [f.close_code for f in peer.expect_eof()] == [1000]
    wait_ended(connection)
