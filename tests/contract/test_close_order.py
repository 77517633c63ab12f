"""The close order, the same on both transports and in both roles (README, "Closing and
timeouts"): each rule is one test body, run once per transport through the ``driver`` fixture.

* The peer closes first: its last messages and its close frame arrive together. ``incoming``
  delivers the messages, then ends with the peer's code and reason (``initiated_by`` "remote");
  the application's replies to those messages reach the peer before our close echo, which
  carries the peer's code; ``close_code``/``close_reason`` are the peer's.
* We close first: ``initiate_close()`` sends our close frame; messages the peer sent before its
  echo are still delivered, then ``incoming`` ends with our code (``initiated_by`` "local").
"""

from __future__ import annotations

import time

import pytest

from tube.websocket import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from tube.websocket.core.protocol import Role

from ..conftest import RawPeer
from .drivers import Driver

ROLES = pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)
# Seconds a loaded machine may take for any one step (a bound, never a wait).
LATE = 2.5


def end_tcp(peer: RawPeer, role: Role) -> None:
    """The TCP end after the closing handshake: a server (we) closes first, so the peer sees EOF
    (RFC 6455 §7.1.1); a client (we) waits for the server's (the peer's) EOF."""
    if role is Role.SERVER:
        with pytest.raises(EOFError):
            peer.recv_frame(timeout=LATE)
    peer.sock.close()


@ROLES
@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [(1001, "going away", ConnectionClosedOK), (4001, "done here", ConnectionClosedError)],
    ids=["1001", "4001"],
)
def test_the_peers_close_ends_incoming_after_its_messages_and_our_replies(
    driver: Driver, role: Role, code: int, reason: str, kind: type[ConnectionClosed]
) -> None:
    connection, peer = driver.pair(role, ping_interval=None)
    close_payload = code.to_bytes(2, "big") + reason.encode()
    peer.sock.sendall(
        peer.frame_bytes(0x1, b"one")
        + peer.frame_bytes(0x2, b"two")
        + peer.frame_bytes(0x8, close_payload)
    )
    assert driver.get(connection, timeout=LATE) == "one"
    driver.send(connection, "reply to one")
    assert driver.get(connection, timeout=LATE) == b"two"
    driver.send(connection, b"reply to two")
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection, timeout=LATE)
    error = info.value
    assert type(error) is kind, repr(error)
    assert (error.code, error.reason, error.initiated_by) == (code, reason, "remote"), error
    # On the wire: both replies, then the echo of the peer's close with its code.
    assert peer.recv_data_frame(timeout=LATE).payload == b"reply to one"
    assert peer.recv_data_frame(timeout=LATE).payload == b"reply to two"
    echo = peer.recv_data_frame(timeout=LATE)
    assert (echo.opcode, echo.close_code) == (0x8, code), echo
    assert echo.masked is (role is Role.CLIENT), echo
    assert (connection.close_code, connection.close_reason) == (code, reason)
    assert not connection.connected
    end_tcp(peer, role)
    assert driver.wait_closed(connection, LATE)
    assert (connection.close_code, connection.close_reason) == (code, reason)


@ROLES
def test_our_close_delivers_the_peers_messages_before_its_echo(driver: Driver, role: Role) -> None:
    connection, peer = driver.pair(role, ping_interval=None)
    driver.initiate_close(connection, 4002, "bye")
    close = peer.recv_data_frame(timeout=LATE)
    assert (close.opcode, close.close_code, close.close_reason) == (0x8, 4002, "bye"), close
    assert close.masked is (role is Role.CLIENT), close
    # The peer still had messages on their way; then it echoes our close.
    peer.sock.sendall(
        peer.frame_bytes(0x1, b"late one")
        + peer.frame_bytes(0x2, b"late two")
        + peer.frame_bytes(0x8, (4002).to_bytes(2, "big") + b"bye")
    )
    assert driver.get(connection, timeout=LATE) == "late one"
    assert driver.get(connection, timeout=LATE) == b"late two"
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection, timeout=LATE)
    error = info.value
    assert type(error) is ConnectionClosedError, repr(error)
    assert (error.code, error.reason, error.initiated_by) == (4002, "bye", "local"), error
    assert (connection.close_code, connection.close_reason) == (4002, "bye")
    assert not connection.connected
    end_tcp(peer, role)
    assert driver.wait_closed(connection, LATE)
    assert (connection.close_code, connection.close_reason) == (4002, "bye")


# The peer's close waits for the application at most close_reply_time: 1 s, or half of
# close_give_up_time if that is shorter (README, "Closing and timeouts").
GIVE_UP = 0.8
REPLY = GIVE_UP / 2
# Timers may fire up to a clock tick early (asyncio's clock resolution): seconds allowed.
EARLY = 0.05


@ROLES
def test_the_peers_close_is_answered_after_close_reply_time_if_the_application_is_away(
    driver: Driver, role: Role
) -> None:
    connection, peer = driver.pair(role, ping_interval=None, close_give_up_time=GIVE_UP)
    assert connection.options.close_reply_time == REPLY
    peer.sock.sendall(
        peer.frame_bytes(0x1, b"one") + peer.frame_bytes(0x8, (1000).to_bytes(2, "big"))
    )
    sent = time.monotonic()
    echo = peer.recv_data_frame(timeout=REPLY + LATE)
    waited = time.monotonic() - sent
    assert (echo.opcode, echo.close_code) == (0x8, 1000), echo
    assert REPLY - EARLY <= waited <= REPLY + LATE, waited
    # The message before the close is still delivered, then incoming ends with the peer's code.
    assert driver.get(connection, timeout=LATE) == "one"
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection, timeout=LATE)
    error = info.value
    assert type(error) is ConnectionClosedOK, repr(error)
    assert (error.code, error.initiated_by) == (1000, "remote"), error
    end_tcp(peer, role)
    assert driver.wait_closed(connection, LATE)
    assert connection.close_code == 1000


def test_both_tube_ends_agree_on_how_a_client_close_ended(driver: Driver) -> None:
    """Through the transport's own ``serve()`` and ``connect()`` (handshakes, TCP): the client
    closes, both ends end with its code (the server's echo carries the code, not the reason, and
    each end keeps what its peer's close frame said), and the client's ``close()`` returns once
    the server closed TCP."""
    port = driver.serve(ping_interval=None)
    client = driver.connect(f"ws://127.0.0.1:{port}/", ping_interval=None)
    driver.send(client, "hello")
    assert driver.get(client, timeout=LATE) == "hello"
    driver.close(client, 4004, "done")
    assert (client.close_code, client.close_reason) == (4004, "")
    assert not client.connected
    with pytest.raises(ConnectionClosed) as info:
        driver.get(client, timeout=LATE)
    assert type(info.value) is ConnectionClosedError, repr(info.value)
    assert (info.value.code, info.value.initiated_by) == (4004, "local"), info.value
    (server,) = driver.accepted
    assert driver.wait_closed(server, LATE)
    assert (server.close_code, server.close_reason) == (4004, "done")
    assert not server.connected
