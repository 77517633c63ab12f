"""Receive backpressure, the same on both transports and in both roles (README, options
``incoming_size`` and ``incoming_bytes``): one test body, run once per transport through the
``driver`` fixture.

A peer floods messages while the application reads none: the connection stops reading the
socket once ``incoming`` holds its bound (in messages or in bytes), so the kernel buffers fill
and the peer's sends block, instead of Tube buffering without bound. What the peer got written
is at most the bound of ``incoming`` plus what the kernel buffers and one read of the transport
hold. When the application reads, reading resumes, and every message arrives once, in order.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from tube.websocket.core.protocol import Role

from .drivers import CALL_TIMEOUT, Driver

SIZE = 16 * 1024  # bytes per message
COUNT = 1024  # messages the peer sends in all: 16 MiB, far beyond every bound below
# A peer whose socket stayed unwritable this long is blocked (Tube reads within microseconds
# when it reads at all; a loaded machine may pause it for a while).
STALL = 1.0
# What besides incoming may hold the peer's bytes: the kernel's buffers of the socket pair
# (Unix sockets count each write's whole buffer, so fewer payload bytes fit than SO_SNDBUF
# says, never more) and one read of the transport, whose messages all go into incoming (at most
# 64 KiB on threads, reader.py's _RECV_SIZE_MAX; 256 KiB on asyncio, reading.py's
# _RECEIVE_BUFFER_SIZE). Measured on Linux: 228-520 KiB written against a bound of 752-816 KiB.
READ_SLACK = 256 * 1024

BOUNDS = pytest.mark.parametrize(
    ("options", "held"),
    [
        ({"incoming_size": 4}, 4 * SIZE),
        ({"incoming_size": 10_000, "incoming_bytes": 8 * SIZE}, 8 * SIZE),
    ],
    ids=["incoming_size", "incoming_bytes"],
)
ROLES = pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.value)


def payload(index: int) -> bytes:
    return index.to_bytes(4, "big") * (SIZE // 4)


def kernel_capacity(sock: socket.socket, other_end_rcvbuf: int) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + other_end_rcvbuf


@ROLES
@BOUNDS
def test_a_flooding_peer_is_stopped_then_read_in_order(
    driver: Driver, role: Role, options: dict[str, int], held: int
) -> None:
    connection, peer = driver.pair(role, ping_interval=None, **options)
    frames = [peer.frame_bytes(0x2, payload(index)) for index in range(COUNT)]
    wire = b"".join(frames)
    sock = peer.sock
    sock.setblocking(False)
    written = 0
    while written < len(wire):
        try:
            written += sock.send(wire[written : written + 65536])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], STALL)
            if not writable:
                break
    assert written < len(wire), "the peer wrote 16 MiB: Tube kept reading"
    # The bound: incoming's limit, one message past it, the kernel's buffers, one read.
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    bound = held + SIZE + kernel_capacity(sock, rcvbuf) + READ_SLACK
    assert written <= bound, (written, bound)

    # The application reads: Tube reads again, the peer's rest goes through, nothing is lost.
    sock.setblocking(True)
    sock.settimeout(CALL_TIMEOUT)
    failures: list[BaseException] = []

    def send_rest() -> None:
        try:
            sock.sendall(wire[written:])
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    sender = threading.Thread(target=send_rest, name="flooding-peer")
    sender.start()
    try:
        start = time.monotonic()
        for index in range(COUNT):
            message = driver.get(connection, timeout=CALL_TIMEOUT)
            assert message == payload(index), (index, message[:8])
        assert time.monotonic() - start < CALL_TIMEOUT
    finally:
        sender.join(CALL_TIMEOUT)
    assert not sender.is_alive() and not failures, failures
