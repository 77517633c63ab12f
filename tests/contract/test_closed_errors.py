"""One error policy on both transports: the same event raises the same ConnectionClosed class
with the same code, built by the core's one constructor (issue 21).

* A send that makes no progress for ``send_timeout`` raises ``ConnectionClosedError`` (1006,
  "send timed out"), on threads and on asyncio (asyncio used to raise a bare
  ``ConnectionClosed``, which ``except ConnectionClosedError`` missed).
* A send after ``initiate_close()`` raises ``ConnectionClosedOK`` saying what happened: the
  connection is closing, at our request, with 1000 (both used to say 1006, as if TCP had been
  lost, although the connection then closes normally with 1000).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tube.websocket import Connection, ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from tube.websocket.core.protocol import Role

from ..aio.conftest import aio_pair, run
from ..conftest import RawPeer

Pair = Callable[..., tuple[Connection, RawPeer]]

SEND_TIMEOUT = 0.3
BOUND = 5.0  # seconds: send_timeout (once or twice) plus a margin for a loaded machine
BIG = b"x" * (1 << 20)


def check_send_timeout(error: ConnectionClosed) -> None:
    assert type(error) is ConnectionClosedError, repr(error)
    assert error.code == 1006 and "send timed out" in error.reason, error


def check_closing(error: ConnectionClosed) -> None:
    assert type(error) is ConnectionClosedOK, repr(error)
    assert (error.code, error.initiated_by, error.closing) == (1000, "local", True)
    assert str(error) == "connection closing at our request: code 1000"


def test_threads_send_timeout_raises_connection_closed_error(socket_pair: Pair) -> None:
    connection, _peer = socket_pair(Role.SERVER, send_timeout=SEND_TIMEOUT, ping_interval=None)
    start = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        while time.monotonic() - start < BOUND:
            connection.send(BIG)
    check_send_timeout(info.value)
    with pytest.raises(ConnectionClosed) as info:
        connection.send(b"later")
    check_send_timeout(info.value)


def test_aio_send_timeout_raises_connection_closed_error() -> None:
    async def main() -> None:
        connection, peer = await aio_pair(
            Role.SERVER, send_timeout=SEND_TIMEOUT, ping_interval=None
        )
        try:
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(BOUND):
                    while True:
                        await connection.send(BIG)
            check_send_timeout(info.value)
        finally:
            peer.close()
            connection._abort("end of test")
            async with asyncio.timeout(5):
                await connection.wait_closed()

    run(main)


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)
def test_threads_send_after_initiate_close_says_closing_with_1000(
    socket_pair: Pair, role: Role
) -> None:
    connection, peer = socket_pair(role, ping_interval=None)
    connection.initiate_close()
    assert peer.recv_frame().close_code == 1000
    for message in ("late", b"x" * 200):  # the small-message path and the general one
        with pytest.raises(ConnectionClosed) as info:
            connection.send(message)
        check_closing(info.value)
    with pytest.raises(ConnectionClosed) as info:
        connection.ping()
    check_closing(info.value)


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)
def test_aio_send_after_initiate_close_says_closing_with_1000(role: Role) -> None:
    async def main() -> None:
        connection, peer = await aio_pair(role, ping_interval=None)
        try:
            await connection.initiate_close()
            with pytest.raises(ConnectionClosed) as info:
                await connection.send("late")
            check_closing(info.value)
        finally:
            peer.close()
            connection._abort("end of test")
            async with asyncio.timeout(5):
                await connection.wait_closed()

    run(main)
