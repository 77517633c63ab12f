"""Issue 8 §1, §2 and issue 22 §6: the order of events at the end of a connection, in both roles.

``incoming`` ends as soon as the closing handshake is complete (not when TCP ends), and a peer's
protocol violation never overtakes the messages before it: the application's replies to them
reach the peer before the close frame. Each test runs on a socket pair, our connection in the
server or the client role and a raw peer in the other.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Callable

import pytest

from tube.websocket import Connection, ConnectionClosed, is_closing, is_connected
from tube.websocket.core.protocol import Role

from ..aio.conftest import aio_pair, run
from ..conftest import RawPeer

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
        assert connection.status_changed.wait_for(lambda: connection._session.end_deferred, 5)
    connection.close(1000, wait=False)
    close = peer.recv_data_frame()
    assert (close.opcode, close.close_code) == (0x8, 1007)
    assert connection.incoming.get(timeout=1) == "unread"
    with pytest.raises(ConnectionClosed):
        connection.incoming.get(timeout=1)
    assert connection.close_code == 1007


# ---------------------------------------------------------------- issue 22 §6: the peer's close
#
# A peer that sends its last messages and its close frame in one write must get the replies to
# those messages before our answer to its close: the close is answered when the application asks
# `incoming` for the item after the last message (or after close_reply_time). Both transports,
# both roles.

# The messages and the close frame of one write, and what a replying application answers.
LAST_WORDS = ["one", "two"]
CLOSE_REPLY_BOUND = 0.5  # close_reply_time with close_give_up_time=1.0 (half of it)


def send_last_words(peer: RawPeer) -> None:
    frames = [peer.frame_bytes(0x1, word.encode()) for word in LAST_WORDS]
    peer.sock.sendall(b"".join(frames) + peer.frame_bytes(0x8, struct.pack("!H", 4000) + b"bye"))


def expect_replies_then_close(peer: RawPeer) -> None:
    assert [peer.recv_message() for _ in LAST_WORDS] == [w.upper() for w in LAST_WORDS]
    close = peer.recv_data_frame()
    assert (close.opcode, close.close_code) == (0x8, 4000)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_replies_to_messages_before_the_peer_close_go_out_first(
    socket_pair: Pair, role: Role
) -> None:
    connection, peer = socket_pair(role, ping_interval=None, close_give_up_time=30.0)

    def reply() -> None:
        for message in connection.incoming:
            assert isinstance(message, str)
            connection.send(message.upper())

    thread = threading.Thread(target=reply, daemon=True)
    thread.start()
    send_last_words(peer)
    expect_replies_then_close(peer)
    thread.join(5)
    assert not thread.is_alive()
    assert (connection.close_code, connection.close_reason) == (4000, "bye")


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_the_peer_close_is_answered_after_the_bound_if_the_application_never_reads(
    socket_pair: Pair, role: Role
) -> None:
    connection, peer = socket_pair(
        role, ping_interval=None, close_give_up_time=2 * CLOSE_REPLY_BOUND
    )
    start = time.monotonic()
    send_last_words(peer)
    close = peer.recv_data_frame(timeout=5)
    elapsed = time.monotonic() - start
    assert (close.opcode, close.close_code) == (0x8, 4000)
    # The bound, with 1.5 s of margin for a loaded machine (timer thread, scheduling).
    assert CLOSE_REPLY_BOUND - 0.05 <= elapsed < CLOSE_REPLY_BOUND + 1.5, elapsed
    assert [connection.incoming.get(timeout=1) for _ in LAST_WORDS] == LAST_WORDS
    with pytest.raises(ConnectionClosed) as info:
        connection.incoming.get(timeout=1)
    assert info.value.code == 4000


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_aio_replies_to_messages_before_the_peer_close_go_out_first(role: Role) -> None:
    async def main() -> None:
        connection, peer = await aio_pair(role, ping_interval=None, close_give_up_time=30.0)
        try:

            async def reply() -> None:
                async for message in connection.incoming:
                    assert isinstance(message, str)
                    await connection.send(message.upper())

            replying = asyncio.create_task(reply())
            send_last_words(peer)
            await asyncio.to_thread(expect_replies_then_close, peer)
            async with asyncio.timeout(5):
                await replying
            assert (connection.close_code, connection.close_reason) == (4000, "bye")
        finally:
            peer.close()
            await connection.close()

    run(main)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_aio_the_peer_close_is_answered_after_the_bound_if_the_application_never_reads(
    role: Role,
) -> None:
    async def main() -> None:
        connection, peer = await aio_pair(
            role, ping_interval=None, close_give_up_time=2 * CLOSE_REPLY_BOUND
        )
        try:
            start = time.monotonic()
            send_last_words(peer)
            close = await asyncio.to_thread(peer.recv_data_frame, 5)
            elapsed = time.monotonic() - start
            assert (close.opcode, close.close_code) == (0x8, 4000)
            # The bound, with 1.5 s of margin for a loaded machine.
            assert CLOSE_REPLY_BOUND - 0.05 <= elapsed < CLOSE_REPLY_BOUND + 1.5, elapsed
            assert [await connection.incoming.get(timeout=1) for _ in LAST_WORDS] == LAST_WORDS
            with pytest.raises(ConnectionClosed) as info:
                await connection.incoming.get(timeout=1)
            assert info.value.code == 4000
        finally:
            peer.close()
            await connection.close()

    run(main)
