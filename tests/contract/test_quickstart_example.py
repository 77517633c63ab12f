"""The README's first example (Quickstart: the Go package's example, in Python) as a rule that
both transports keep, written once and run on each through the ``driver`` fixture with that
transport's functions of the Go package's API (README, "Go → Python"; coroutines on asyncio).

The example's server, once ``wait_until_connected`` says so, sends the binary message
"Hello Client" with ``send_blob_data``, reads ``incoming``, and calls ``initiate_close`` when
"Hello Server" arrives. Here the client is a raw peer on the other end of a socket pair, so the
wire is checked too: the greeting arrives as one binary message, every message before
"Hello Server" is delivered in order, the close frame carries 1000, ``is_closing`` is true and
``is_connected`` false from then on, and once the client echoes the close, ``incoming`` ends
normally (``ConnectionClosedOK``, 1000, initiated here) and the server closes TCP first.
"""

from __future__ import annotations

import pytest

from tube.websocket import ConnectionClosed, ConnectionClosedOK
from tube.websocket.core.protocol import Role

from .drivers import Driver

# Seconds any one step may take on a loaded machine (a bound, never a wait).
LATE = 5.0


def test_the_quickstart_example(driver: Driver) -> None:
    connection, client = driver.pair(Role.SERVER, ping_interval=None)
    # talk(): wait until connected, greet the client.
    assert driver.go("wait_until_connected", connection, LATE)
    assert driver.go("is_connected", connection)
    driver.go("send_blob_data", connection, b"Hello Client")
    assert client.recv_message(timeout=LATE) == b"Hello Client"

    client.send_binary(b"Hello")
    client.send_binary(b"Hello Server")
    received: list[str | bytes] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:  # for message in connection.incoming: ...
            message = driver.get(connection, timeout=LATE)
            received.append(message)
            if message == b"Hello Server":
                driver.go("initiate_close", connection)
                close = client.recv_data_frame(timeout=LATE)
                assert (close.opcode, close.close_code) == (0x8, 1000), close
                assert driver.go("is_closing", connection)
                assert not driver.go("is_connected", connection)
                client.send_close(1000)
    assert received == [b"Hello", b"Hello Server"]
    error = info.value
    assert type(error) is ConnectionClosedOK, repr(error)
    assert (error.code, error.initiated_by) == (1000, "local"), error

    # The server closes TCP first (RFC 6455 §7.1.1), with nothing after its close frame.
    assert client.expect_eof(timeout=LATE) == []
    assert driver.wait_closed(connection, LATE)
    assert (connection.close_code, connection.connected) == (1000, False)
