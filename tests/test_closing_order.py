"""Issue 8 §1, §2: the order of events at the end of a connection, in both roles.

``incoming`` ends as soon as the closing handshake is complete (not when TCP ends), and a peer's
protocol violation never overtakes the messages before it: the application's replies to them
reach the peer before the close frame. Each test runs on a socket pair, our connection in the
server or the client role and a raw peer in the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tube.websocket import Connection, ConnectionClosed, is_closing, is_connected
from tube.websocket.core.protocol import Role

from .conftest import RawPeer

Pair = Callable[..., tuple[Connection, RawPeer]]
ROLES = [Role.SERVER, Role.CLIENT]


def collect(connection: Connection) -> tuple[list[object], threading.Event]:
    """Iterate ``incoming`` in a thread; the event is set when the iteration ends."""
    received: list[object] = []
    ended = threading.Event()

    def run() -> None:
        for message in connection.incoming:
            received.append(message)
        ended.set()

    threading.Thread(target=run, daemon=True).start()
    return received, ended


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_incoming_ends_when_our_close_is_answered_while_tcp_stays_open(
    socket_pair: Pair, role: Role
) -> None:
    # A long give-up time: iteration must not wait for it (it did, for up to 10 s by default).
    connection, peer = socket_pair(role, close_give_up_time=30.0, ping_interval=None)
    received, ended = collect(connection)
    peer.send_text("before")
    connection.initiate_close(1000, "bye")
    frame = peer.recv_data_frame()
    while frame.opcode != 0x8:
        frame = peer.recv_data_frame()
    assert frame.close_code == 1000
    peer.send_close(1000, "ok")  # and the peer keeps its socket open
    assert ended.wait(5), "incoming did not end after the closing handshake"
    assert received == ["before"]
    assert (connection.close_code, connection.close_reason) == (1000, "ok")
    assert not connection.connected and is_closing(connection) and not is_connected(connection)
    # The TCP teardown goes on in the background, bounded by close_give_up_time.
    assert not connection.wait_closed(0.05)
    peer.close()
    assert connection.wait_closed(5)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_incoming_ends_when_the_peer_closes_first(socket_pair: Pair, role: Role) -> None:
    connection, peer = socket_pair(role, close_give_up_time=30.0, ping_interval=None)
    received, ended = collect(connection)
    peer.send_binary(b"one")
    peer.send_close(1001, "going")  # no EOF from the peer
    echo = peer.recv_data_frame()
    assert (echo.opcode, echo.close_code) == (0x8, 1001)
    assert ended.wait(5)
    assert received == [b"one"]
    assert connection.close_code == 1001
    with pytest.raises(ConnectionClosed) as info:
        connection.incoming.get(timeout=1)
    assert (info.value.code, info.value.ok) == (1001, True)


VIOLATIONS = {
    "rsv bits": ({"opcode": 0x1, "payload": b"x", "rsv": 4}, 1002, {}),
    "reserved opcode": ({"opcode": 0x3, "payload": b"x"}, 1002, {}),
    "lone continuation": ({"opcode": 0x0, "payload": b"x"}, 1002, {}),
    "invalid UTF-8": ({"opcode": 0x1, "payload": b"\xff\xfe"}, 1007, {}),
    "too big": ({"opcode": 0x2, "payload": bytes(200)}, 1009, {"max_message_size": 100}),
}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("violation", list(VIOLATIONS), ids=str)
def test_a_violation_never_overtakes_the_reply_to_the_message_before_it(
    socket_pair: Pair, role: Role, violation: str
) -> None:
    frame, code, options = VIOLATIONS[violation]
    connection, peer = socket_pair(role, ping_interval=None, **options)

    def reply() -> None:
        for message in connection.incoming:
            assert isinstance(message, str)
            connection.send(message.upper())

    thread = threading.Thread(target=reply, daemon=True)
    thread.start()
    # The good message and the violation in one segment, so they are parsed together.
    good = peer.frame_bytes(0x1, b"hello")
    bad = peer.frame_bytes(**frame)  # type: ignore[arg-type]
    peer.sock.sendall(good + bad)
    assert peer.recv_message() == "HELLO"
    close = peer.recv_data_frame()
    assert (close.opcode, close.close_code) == (0x8, code)
    thread.join(5)
    assert not thread.is_alive()
    assert connection.close_code == code


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_a_violation_is_answered_after_the_bound_if_the_application_never_reads(
    socket_pair: Pair, role: Role
) -> None:
    connection, peer = socket_pair(role, ping_interval=None, close_give_up_time=0.5)
    peer.send_text("unread")
    start = time.monotonic()
    peer.send_frame(0x3, b"x")  # reserved opcode
    close = peer.recv_data_frame(timeout=5)
    elapsed = time.monotonic() - start
    assert (close.opcode, close.close_code) == (0x8, 1002)
    assert 0.4 <= elapsed < 4, elapsed
    # The message that came before is still delivered, then the end.
    assert connection.incoming.get(timeout=1) == "unread"
    with pytest.raises(ConnectionClosed) as info:
        connection.incoming.get(timeout=1)
    assert info.value.code == 1002 and not info.value.ok


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_closing_while_a_violation_waits_sends_the_violation_code(
    socket_pair: Pair, role: Role
) -> None:
    connection, peer = socket_pair(role, ping_interval=None, close_give_up_time=30.0)
    peer.send_text("unread")
    peer.send_frame(0x1, b"\xff")  # invalid UTF-8
    # The application closes before taking the message: the reader has stopped at the
    # violation, so the close frame carries the violation's code and nothing waits for 30 s.
    with connection.status_changed:
        assert connection.status_changed.wait_for(lambda: connection._failure is not None, 5)
    connection.close(1000, wait=False)
    close = peer.recv_data_frame()
    assert (close.opcode, close.close_code) == (0x8, 1007)
    assert connection.incoming.get(timeout=1) == "unread"
    with pytest.raises(ConnectionClosed):
        connection.incoming.get(timeout=1)
    assert connection.close_code == 1007
