"""One error policy on both transports: the same event raises the same ConnectionClosed class
with the same code, built by the core's one constructor (issue 21). Each rule is written once
and run on both transports through the ``driver`` fixture.

* A send that makes no progress for ``send_timeout`` raises ``ConnectionClosedError`` (1006,
  "send timed out"), on threads and on asyncio (asyncio used to raise a bare
  ``ConnectionClosed``, which ``except ConnectionClosedError`` missed), and so do later sends.
* A send after ``initiate_close()`` raises ``ConnectionClosedOK`` saying what happened: the
  connection is closing, at our request, with 1000 (both used to say 1006, as if TCP had been
  lost, although the connection then closes normally with 1000); in both roles, every way to
  send is refused the same way: ``send`` (its small-message path and the general one),
  ``send_many``, ``ping`` and the Go package's ``send_blob_data``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tube.websocket import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from tube.websocket.core.protocol import Role

from .drivers import Driver

SEND_TIMEOUT = 0.3
BOUND = 5.0  # seconds: send_timeout (once or twice) plus a margin for a loaded machine
BIG = b"x" * (1 << 20)


def check_send_timeout(error: ConnectionClosed) -> None:
    assert type(error) is ConnectionClosedError, repr(error)
    assert error.code == 1006 and "send timed out" in error.reason, error


def check_closing(error: ConnectionClosed, operation: str) -> None:
    assert type(error) is ConnectionClosedOK, (operation, repr(error))
    assert (error.code, error.initiated_by, error.closing) == (1000, "local", True), operation
    assert str(error) == "connection closing at our request: code 1000", operation


def test_a_send_without_progress_for_send_timeout_raises_connection_closed_error(
    driver: Driver,
) -> None:
    connection, _peer = driver.pair(Role.SERVER, send_timeout=SEND_TIMEOUT, ping_interval=None)
    start = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        while time.monotonic() - start < BOUND:
            driver.send(connection, BIG)  # the peer reads nothing
    check_send_timeout(info.value)
    # Later sends say the same.
    with pytest.raises(ConnectionClosed) as info:
        driver.send(connection, b"later")
    check_send_timeout(info.value)


ROLES = pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)


@ROLES
def test_a_send_after_initiate_close_says_closing_at_our_request_with_1000(
    driver: Driver, role: Role
) -> None:
    connection, peer = driver.pair(role, ping_interval=None)
    driver.initiate_close(connection)
    close = peer.recv_data_frame()
    assert (close.opcode, close.close_code) == (0x8, 1000), close
    operations: dict[str, Callable[[], object]] = {
        "send, a small message": lambda: driver.send(connection, "late"),
        "send, the general path": lambda: driver.send(connection, b"x" * 200),
        "send_many": lambda: driver.send_many(connection, ["late", b"late"]),
        "ping": lambda: driver.ping(connection),
        "send_blob_data": lambda: driver.go("send_blob_data", connection, b"late"),
    }
    for name, operation in operations.items():
        with pytest.raises(ConnectionClosed) as info:
            operation()
        check_closing(info.value, name)
    # And so it is: once the peer echoes the close, the connection ends normally with 1000.
    peer.send_close(1000)
    with pytest.raises(ConnectionClosed) as info:
        driver.get(connection)
    error = info.value
    assert type(error) is ConnectionClosedOK, repr(error)
    assert (error.code, error.initiated_by) == (1000, "local"), error
    if role is Role.SERVER:
        # The server closes TCP first; none of the refused operations put a byte on the wire.
        assert peer.expect_eof() == []
    else:
        peer.close()  # the server's (the peer's) EOF, which the client waits for
    assert driver.wait_closed(connection, BOUND)
    assert connection.close_code == 1000
