"""A peer's protocol violation never overtakes the messages before it (README, "Closing and
timeouts"), the same on both transports: each rule is one test body, run once per transport
through the ``driver`` fixture.

* Valid messages, then a violation (an unmasked frame to a server, a masked frame to a client:
  1002; invalid UTF-8: 1007; a message over ``max_message_size``: 1009): the messages reach
  the application first, its replies reach the peer before the close frame, then ``incoming``
  ends with ``ConnectionClosedError`` carrying the code, which the peer receives and which is
  the final ``close_code``.
* The violation bound: if the application does not come back for the next message, the close
  frame is sent ``close_give_up_time`` after the violation (not before; within a margin); the
  messages before it are still delivered afterwards, then ``incoming`` ends with the code.
"""

from __future__ import annotations

import time

import pytest

from tube.websocket import ConnectionClosed, ConnectionClosedError
from tube.websocket.core.protocol import Role

from ..conftest import RawPeer, build_frame
from .drivers import Driver

# Seconds a loaded machine may take for any one step, or add to a deadline (a bound, never a
# wait).
LATE = 2.5
# Timers may fire up to a clock tick early (asyncio's clock resolution): seconds allowed.
EARLY = 0.05
GIVE_UP = 0.5
MAX_SIZE = 1024


def violation(peer: RawPeer, kind: str) -> bytes:
    """The bytes of one frame that breaks the protocol, as ``peer`` would send them."""
    if kind == "mask":  # a client's frame unmasked, a server's masked (RFC 6455 §5.1)
        return build_frame(0x1, b"wrong mask", mask=not peer.mask)
    if kind == "size":  # a message over max_message_size
        return peer.frame_bytes(0x2, b"x" * (MAX_SIZE + 1))
    return peer.frame_bytes(0x1, b"bad \xff utf-8")


CASES = pytest.mark.parametrize(
    ("role", "kind", "code"),
    [
        (Role.SERVER, "mask", 1002),
        (Role.CLIENT, "mask", 1002),
        (Role.SERVER, "utf8", 1007),
        (Role.CLIENT, "utf8", 1007),
        (Role.SERVER, "size", 1009),
        (Role.CLIENT, "size", 1009),
    ],
    ids=[
        "server-unmasked-1002",
        "client-masked-1002",
        "server-utf8-1007",
        "client-utf8-1007",
        "server-too-big-1009",
        "client-too-big-1009",
    ],
)


def check_end(driver: Driver, connection: object, code: int) -> None:
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection, timeout=LATE)
    error = info.value
    assert type(error) is ConnectionClosedError, repr(error)
    assert (error.code, error.initiated_by) == (code, "local"), error


@CASES
def test_the_messages_before_a_violation_and_their_replies_come_first(
    driver: Driver, role: Role, kind: str, code: int
) -> None:
    connection, peer = driver.pair(role, ping_interval=None, max_message_size=MAX_SIZE)
    peer.sock.sendall(
        peer.frame_bytes(0x1, b"one") + peer.frame_bytes(0x2, b"two") + violation(peer, kind)
    )
    assert driver.get(connection, timeout=LATE) == "one"
    driver.send(connection, "reply to one")
    assert driver.get(connection, timeout=LATE) == b"two"
    driver.send(connection, b"reply to two")
    check_end(driver, connection, code)
    assert peer.recv_data_frame(timeout=LATE).payload == b"reply to one"
    assert peer.recv_data_frame(timeout=LATE).payload == b"reply to two"
    close = peer.recv_data_frame(timeout=LATE)
    assert (close.opcode, close.close_code) == (0x8, code), close
    assert connection.close_code == code and not connection.connected
    peer.sock.close()
    assert driver.wait_closed(connection, LATE)
    assert connection.close_code == code


@CASES
def test_a_violation_the_application_does_not_reach_is_committed_after_give_up_time(
    driver: Driver, role: Role, kind: str, code: int
) -> None:
    connection, peer = driver.pair(
        role, ping_interval=None, close_give_up_time=GIVE_UP, max_message_size=MAX_SIZE
    )
    peer.sock.sendall(peer.frame_bytes(0x1, b"one") + violation(peer, kind))
    sent = time.monotonic()
    close = peer.recv_data_frame(timeout=GIVE_UP + LATE)
    waited = time.monotonic() - sent
    assert (close.opcode, close.close_code) == (0x8, code), close
    assert GIVE_UP - EARLY <= waited <= GIVE_UP + LATE, waited
    # The message before the violation is still delivered, then incoming ends with the code.
    assert driver.get(connection, timeout=LATE) == "one"
    check_end(driver, connection, code)
    assert connection.close_code == code and not connection.connected
    peer.sock.close()
    assert driver.wait_closed(connection, GIVE_UP + LATE)
    assert connection.close_code == code
