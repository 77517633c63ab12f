"""Hostile peers against the real echo server (the benchmark's entry point), end to end.

Each defence is unit-tested at its own layer; these check that the assembled server answers a
misbehaving peer with the right close code and closes TCP, without buffering what it was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from tube.websocket.echo import EchoServer

from ..conftest import RawPeer, build_frame

PeerFactory = Callable[..., RawPeer]


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = EchoServer(("127.0.0.1", 0), max_message_size=1 << 16)
    thread = threading.Thread(target=server.serve_forever, name="test-echo")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def close_frame_then_eof(peer: RawPeer) -> int | None:
    frames = peer.expect_eof()
    closes = [frame for frame in frames if frame.opcode == 0x8]
    assert len(closes) == 1, frames
    return closes[0].close_code


def test_absurd_declared_length_is_refused_at_once(echo_port: int, raw_peer: PeerFactory) -> None:
    peer = raw_peer(echo_port)
    # 2**63 - 1 bytes declared; only the header is ever sent.
    peer.sock.sendall(build_frame(0x2, b"", length=2**63 - 1))
    assert close_frame_then_eof(peer) == 1009


def test_64_bit_length_with_top_bit_is_a_protocol_error(
    echo_port: int, raw_peer: PeerFactory
) -> None:
    peer = raw_peer(echo_port)
    header = bytearray(build_frame(0x2, b"", length=1 << 16))
    header[2] |= 0x80  # the most significant bit of the 64-bit length
    peer.sock.sendall(bytes(header))
    assert close_frame_then_eof(peer) == 1002


def test_flood_of_tiny_fragments_is_cut_off(echo_port: int, raw_peer: PeerFactory) -> None:
    peer = raw_peer(echo_port)
    # The limit is 64 KiB, so at most max(1024, 65536 // 64) = 1024 fragments per message.
    flood = build_frame(0x2, b"x", fin=False) + build_frame(0x0, b"", fin=False) * 5000
    peer.sock.sendall(flood)
    assert close_frame_then_eof(peer) == 1009


def test_oversized_message_across_fragments_is_refused(
    echo_port: int, raw_peer: PeerFactory
) -> None:
    peer = raw_peer(echo_port)
    chunk = b"y" * 40_000
    peer.sock.sendall(build_frame(0x2, chunk, fin=False) + build_frame(0x0, chunk))
    assert close_frame_then_eof(peer) == 1009


def test_ping_flood_from_a_peer_that_never_reads_is_bounded(
    echo_port: int, raw_peer: PeerFactory
) -> None:
    peer = raw_peer(echo_port)
    # Pongs pile up on the server's side only up to the socket buffers: the server stops
    # reading (its reader blocks on the write, bounded by send_timeout) and TCP pushes back.
    ping = build_frame(0x9, b"p" * 125)
    peer.sock.settimeout(5)
    sent = 0
    with pytest.raises(TimeoutError):
        for _ in range(200_000):  # ~26 MB if nothing pushed back
            peer.sock.sendall(ping)
            sent += len(ping)
    assert sent < 20_000_000
