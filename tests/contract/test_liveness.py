"""Keepalive and backpressure, the same on both transports (issue 21): each rule is one test
body, run once per transport through the ``driver`` fixture.

* Keepalive: a peer that stays silent (answers no ping) gets a ping after ``ping_interval``
  seconds of silence, then a close frame with 1011 once ``ping_timeout`` more passed without
  a byte from it; ``incoming`` ends with ``ConnectionClosedError`` (1011) and the connection
  ends with 1011. Bounded: it does not come early, nor much later than the two times.
* Backpressure: a peer that stops reading makes ``send`` block (await) once the buffers are
  full, and after ``send_timeout`` seconds without progress that send fails with
  ``ConnectionClosedError`` (1006, "send timed out"), as does every send after it; the
  connection ends with 1006.
"""

from __future__ import annotations

import time

import pytest

from tube.websocket import ConnectionClosed, ConnectionClosedError
from tube.websocket.core.protocol import Role

from .drivers import Driver

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.4
SEND_TIMEOUT = 0.3
# Timers may fire up to a clock tick early (asyncio's clock resolution): seconds allowed.
EARLY = 0.05
# Seconds a loaded machine may add to a deadline before it is a failure.
LATE = 2.5
BIG = b"x" * (1 << 20)


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)
def test_a_silent_peer_is_closed_with_1011_after_ping_interval_and_ping_timeout(
    driver: Driver, role: Role
) -> None:
    start = time.monotonic()
    connection, peer = driver.pair(role, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)
    ping = peer.recv_frame(timeout=PING_INTERVAL + LATE)
    pinged = time.monotonic() - start
    assert ping.opcode == 0x9, ping
    close = peer.recv_frame(timeout=PING_TIMEOUT + LATE)
    closed = time.monotonic() - start
    assert (close.opcode, close.close_code) == (0x8, 1011), close
    assert PING_INTERVAL - EARLY <= pinged <= PING_INTERVAL + LATE, pinged
    deadline = PING_INTERVAL + PING_TIMEOUT
    assert deadline - EARLY <= closed <= deadline + LATE, closed
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection, timeout=LATE)
    assert type(info.value) is ConnectionClosedError, repr(info.value)
    assert info.value.code == 1011, info.value
    assert driver.wait_closed(connection, LATE)
    assert connection.close_code == 1011 and not connection.connected


def test_a_peer_that_stops_reading_blocks_send_then_fails_it_with_1006(driver: Driver) -> None:
    connection, _peer = driver.pair(Role.SERVER, send_timeout=SEND_TIMEOUT, ping_interval=None)
    start = began = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        while time.monotonic() - start < 2 * SEND_TIMEOUT + LATE:
            began = time.monotonic()
            driver.send(connection, BIG)
    failed = time.monotonic()
    error = info.value
    assert type(error) is ConnectionClosedError, repr(error)
    assert error.code == 1006 and "send timed out" in error.reason, error
    # The send that failed had blocked (awaited) for send_timeout without progress first; the
    # no-progress watch looks at most every send_timeout, so it fails within twice that.
    assert SEND_TIMEOUT - EARLY <= failed - began <= 2 * SEND_TIMEOUT + LATE, failed - began
    with pytest.raises(ConnectionClosed) as info:
        driver.send(connection, b"later")
    assert type(info.value) is ConnectionClosedError and info.value.code == 1006, info.value
    assert driver.wait_closed(connection, LATE)
    assert connection.close_code == 1006 and not connection.connected
