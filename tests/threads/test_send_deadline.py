"""Issue 22 §3: a write side without progress for ``send_timeout`` ends the connection, on every
transport and in both roles, whoever filled it: here the protocol's own pongs, for a peer that
floods pings and reads nothing. Nobody sends then, and reading is paused while the write side
is full (which is what bounds the pongs), so neither a waiting sender nor keepalive can notice.
On the asyncio transport the connection stayed open for ever (20 s with every timeout at 1 s).

Each test runs on a socket pair: our connection on one end, a raw peer on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tube.websocket import Connection, ConnectionClosed
from tube.websocket.core.protocol import Role

from ..aio.conftest import aio_pair, run
from ..conftest import RawPeer

Pair = Callable[..., tuple[Connection, RawPeer]]
ROLES = [Role.SERVER, Role.CLIENT]

SEND_TIMEOUT = 0.3
# No keepalive: the send deadline alone must end the connection. The give-up time is long, so
# that nothing but the deadline can be what ended it within the test's bound.
OPTIONS: dict[str, Any] = {
    "send_timeout": SEND_TIMEOUT,
    "ping_interval": None,
    "close_give_up_time": 30.0,
}
# From the first ping to the end: filling the buffers takes a few ms; then one send_timeout on
# threads, one or two on asyncio (its watchdog looks every send_timeout); the rest is margin
# for a loaded machine.
BOUND = 3.0


def flood_pings(peer: RawPeer, stop: threading.Event, *, read_slowly: bool = False) -> None:
    """Send pings, whole frames only, until ``stop`` or the connection ends; read nothing, or
    (``read_slowly``) 1 KiB of the pongs every 20 ms, far slower than the pings go out."""
    burst = peer.frame_bytes(0x9, b"p" * 125) * 100
    pending = b""
    peer.sock.settimeout(0.02)
    next_read = time.monotonic()
    while not stop.is_set():
        if not pending:
            pending = burst
        try:
            if read_slowly and time.monotonic() >= next_read:
                next_read += 0.02
                # (With a timeout set, Python waits for readability even with MSG_DONTWAIT.)
                with contextlib.suppress(BlockingIOError, TimeoutError):
                    peer.sock.recv(1024, socket.MSG_DONTWAIT)
            pending = pending[peer.sock.send(pending) :]
        except TimeoutError:
            continue  # the other side stopped reading: keep pushing
        except OSError:
            return  # reset or broken pipe: the connection was dropped


def check_dropped(closed: ConnectionClosed, elapsed: float) -> None:
    assert closed.code == 1006, closed
    assert "send timed out" in closed.reason, closed
    assert elapsed < BOUND, elapsed


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_threads_drop_a_ping_flooder_that_reads_nothing(socket_pair: Pair, role: Role) -> None:
    connection, peer = socket_pair(role, **OPTIONS)
    stop = threading.Event()
    flooder = threading.Thread(target=flood_pings, args=(peer, stop), daemon=True)
    start = time.monotonic()
    flooder.start()
    try:
        with pytest.raises(ConnectionClosed) as info:
            connection.incoming.get(timeout=BOUND + 2)
        check_dropped(info.value, time.monotonic() - start)
    finally:
        stop.set()
        flooder.join(5)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_aio_drops_a_ping_flooder_that_reads_nothing(role: Role) -> None:
    async def main() -> None:
        connection, peer = await aio_pair(role, **OPTIONS)
        stop = threading.Event()
        try:
            start = time.monotonic()
            flooding = asyncio.create_task(asyncio.to_thread(flood_pings, peer, stop))
            with pytest.raises(ConnectionClosed) as info:
                await connection.incoming.get(timeout=BOUND + 2)
            check_dropped(info.value, time.monotonic() - start)
            assert connection.close_code == 1006 and not connection.connected
            stop.set()
            await flooding
            async with asyncio.timeout(5):
                await connection.wait_closed()
        finally:
            stop.set()
            peer.close()
            connection._abort("end of test")

    run(main)


def test_aio_a_slow_reader_of_pongs_is_kept() -> None:
    """Progress restarts the deadline: a peer that floods pings but reads the pongs, slowly,
    for several send_timeouts, is not dropped (nor is a slow reader of messages: tests/aio)."""

    async def main() -> None:
        connection, peer = await aio_pair(Role.SERVER, tcp=True, **OPTIONS)
        stop = threading.Event()
        try:
            # How long the write side stayed full at a stretch (the deadline's watch).
            paused_since: list[float] = []
            longest = 0.0
            pause, resume = connection.pause_writing, connection.resume_writing

            def pause_writing() -> None:
                paused_since.append(time.monotonic())
                pause()

            def resume_writing() -> None:
                nonlocal longest
                longest = max(longest, time.monotonic() - paused_since.pop())
                resume()

            connection.pause_writing = pause_writing  # type: ignore[method-assign]
            connection.resume_writing = resume_writing  # type: ignore[method-assign]
            flood = functools.partial(flood_pings, peer, stop, read_slowly=True)
            flooding = asyncio.create_task(asyncio.to_thread(flood))
            await asyncio.sleep(8 * SEND_TIMEOUT)
            if paused_since:
                longest = max(longest, time.monotonic() - paused_since[0])
            assert connection.connected, (connection.close_code, connection.close_reason)
            # Full for longer than the deadline, yet moving: the deadline was restarted.
            assert longest > 2 * SEND_TIMEOUT, longest
            stop.set()
            await flooding
        finally:
            stop.set()
            peer.close()
            connection._abort("end of test")

    run(main)


@pytest.mark.slow
def test_threads_default_send_timeout_is_ten_seconds(socket_pair: Pair) -> None:
    """The README's default ``send_timeout`` (10 s), observed: a send to a peer that reads
    nothing raises ``ConnectionClosed`` 10 s after its last byte could be written (the send
    retries every quarter second), within a stated margin of 1.5 s for a loaded 2-core machine.
    The peer's receive buffer is small, so the kernel's buffers fill within milliseconds."""
    connection, peer = socket_pair(Role.SERVER, ping_interval=None, close_give_up_time=30.0)
    assert connection.options.send_timeout == 10.0
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        connection.send(bytes(1 << 20))  # far more than the socket pair's buffers
    elapsed = time.monotonic() - started
    assert 10.0 <= elapsed <= 10.0 + 1.5, elapsed
    assert info.value.code == 1006
    assert connection.wait_closed(5)
    assert connection.close_code == 1006
