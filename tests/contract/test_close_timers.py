"""Close retry and give-up, the same on both transports and in both roles (README, "Closing and
timeouts"; the options ``close_retry_time`` and ``close_give_up_time``): each rule is one test
body, run once per transport through the ``driver`` fixture.

After ``initiate_close()`` a peer that never answers gets the close frame once more
``close_retry_time`` seconds later (never with ``close_retry_time=None``), and the TCP
connection is closed ``close_give_up_time`` seconds after the close began: not before, and
within a margin for a loaded machine. ``close_code`` is then 1006 and ``incoming`` ends with
``ConnectionClosedError`` (1006). ``close()`` returns at that same moment (it waits at most
``close_give_up_time`` plus a second).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tube.websocket import ConnectionClosed, ConnectionClosedError
from tube.websocket.core.protocol import Role

from ..conftest import RawPeer
from .drivers import Driver

RETRY = 0.3
GIVE_UP = 0.8
# Timers may fire up to a clock tick early (asyncio's clock resolution): seconds allowed.
EARLY = 0.05
# Seconds a loaded 2-core machine may add to a deadline before it is a failure.
LATE = 2.5

ROLES = pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)
RETRIES = pytest.mark.parametrize("retry", [RETRY, None], ids=["retry", "no-retry"])


def check_close(peer: RawPeer, role: Role) -> None:
    frame = peer.recv_data_frame(timeout=LATE)
    assert (frame.opcode, frame.close_code, frame.close_reason) == (0x8, 4003, "go"), frame
    assert frame.masked is (role is Role.CLIENT), frame


def check_gave_up(driver: Driver, connection: Any) -> None:
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection, timeout=LATE)
    assert type(info.value) is ConnectionClosedError, repr(info.value)
    assert info.value.code == 1006, info.value
    assert driver.wait_closed(connection, LATE)
    assert connection.close_code == 1006
    assert not connection.connected


@ROLES
@RETRIES
def test_initiate_close_retries_then_gives_up_on_a_silent_peer(
    driver: Driver, role: Role, retry: float | None
) -> None:
    connection, peer = driver.pair(
        role, ping_interval=None, close_retry_time=retry, close_give_up_time=GIVE_UP
    )
    start = time.monotonic()
    driver.initiate_close(connection, 4003, "go")
    check_close(peer, role)
    if retry is not None:
        check_close(peer, role)
        retried = time.monotonic() - start
        assert retry - EARLY <= retried <= retry + LATE, retried
    with pytest.raises(EOFError):  # nothing more (no retry without close_retry_time), then EOF
        peer.recv_frame(timeout=GIVE_UP + LATE)
    ended = time.monotonic() - start
    assert GIVE_UP - EARLY <= ended <= GIVE_UP + LATE, ended
    check_gave_up(driver, connection)


@ROLES
def test_close_returns_when_it_gave_up_on_a_silent_peer(driver: Driver, role: Role) -> None:
    connection, peer = driver.pair(
        role, ping_interval=None, close_retry_time=RETRY, close_give_up_time=GIVE_UP
    )
    start = time.monotonic()
    driver.close(connection, 4003, "go")
    returned = time.monotonic() - start
    assert GIVE_UP - EARLY <= returned <= GIVE_UP + LATE, returned
    # Meanwhile the peer was sent the close frame, once more after close_retry_time, then EOF.
    check_close(peer, role)
    check_close(peer, role)
    with pytest.raises(EOFError):
        peer.recv_frame(timeout=LATE)
    check_gave_up(driver, connection)
