"""permessage-deflate in the opening handshake (core) and over the threaded transport."""

from __future__ import annotations

import contextlib
import os
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Literal

import pytest

from tube.websocket import (
    Connection,
    ConnectionClosed,
    DeflateOptions,
    HandshakeError,
    connect,
    create_connection,
)
from tube.websocket.core.client_handshake import build_request, validate_response
from tube.websocket.core.deflate import DeflateParameters
from tube.websocket.core.handshake import Negotiated, accept_key, accept_request
from tube.websocket.core.http import Request, Response, get_header

from ..conftest import RawPeer, WsServer, build_frame

ServerFactory = Callable[..., WsServer]
PeerFactory = Callable[..., RawPeer]

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TAIL = b"\x00\x00\xff\xff"
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"


def request(*extensions: str) -> Request:
    headers = [
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    headers += [("Sec-WebSocket-Extensions", value) for value in extensions]
    return Request("GET", "/", "HTTP/1.1", headers)


def response(*extensions: str) -> Response:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(KEY)),
    ]
    headers += [("Sec-WebSocket-Extensions", value) for value in extensions]
    return Response(101, "Switching Protocols", headers)


# ---------------------------------------------------------------- server side (core)


def test_server_accepts_the_browser_offer() -> None:
    negotiated = Negotiated()
    answer, _ = accept_request(
        request(BROWSER_OFFER), compression=DeflateOptions(), negotiated=negotiated
    )
    assert get_header(answer.headers, "Sec-WebSocket-Extensions") == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    assert negotiated.deflate == DeflateParameters(False, False, 12, 12, DeflateOptions())


def test_server_without_compression_ignores_offers() -> None:
    answer, _ = accept_request(request(BROWSER_OFFER))
    assert get_header(answer.headers, "Sec-WebSocket-Extensions") is None


@pytest.mark.parametrize(
    "offers",
    [
        (),
        ("x-webkit-deflate-frame",),
        ("permessage-deflate; server_max_window_bits=16",),
        ("permessage-deflate; bogus", "x-other"),
        ('permessage-deflate; a="unterminated',),  # malformed: declined, not refused
    ],
)
def test_server_declines(offers: tuple[str, ...]) -> None:
    negotiated = Negotiated(deflate=DeflateParameters(True, True, 9, 9, DeflateOptions()))
    answer, _ = accept_request(
        request(*offers), compression=DeflateOptions(), negotiated=negotiated
    )
    assert answer.status == 101
    assert get_header(answer.headers, "Sec-WebSocket-Extensions") is None
    assert negotiated.deflate is None


def test_server_reads_several_headers() -> None:
    negotiated = Negotiated()
    answer, _ = accept_request(
        request("permessage-deflate; bogus", "permessage-deflate; server_no_context_takeover"),
        compression=DeflateOptions(),
        negotiated=negotiated,
    )
    assert negotiated.deflate is not None
    assert negotiated.deflate.server_no_context_takeover
    assert "server_no_context_takeover" in (
        get_header(answer.headers, "Sec-WebSocket-Extensions") or ""
    )


def test_compression_needs_the_out_parameter() -> None:
    with pytest.raises(ValueError, match="negotiated"):
        accept_request(request(BROWSER_OFFER), compression=DeflateOptions())
    with pytest.raises(ValueError, match="negotiated"):
        validate_response(response(), KEY, compression=DeflateOptions())
    with pytest.raises(TypeError):
        accept_request(request(), compression="deflate", negotiated=Negotiated())  # type: ignore[arg-type]


def test_extra_headers_cannot_set_extensions() -> None:
    with pytest.raises(ValueError, match="Sec-WebSocket-Extensions"):
        accept_request(request(), extra_headers=[("Sec-WebSocket-Extensions", "x")])


# ---------------------------------------------------------------- client side (core)


def test_client_offer_header() -> None:
    built, _ = build_request("example.com", "/", compression=DeflateOptions())
    assert get_header(built.headers, "Sec-WebSocket-Extensions") == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    built, _ = build_request("example.com", "/")
    assert get_header(built.headers, "Sec-WebSocket-Extensions") is None


def test_client_validates_the_answer() -> None:
    negotiated = Negotiated()
    validate_response(
        response("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"),
        KEY,
        compression=DeflateOptions(),
        negotiated=negotiated,
    )
    assert negotiated.deflate == DeflateParameters(False, False, 10, 9, DeflateOptions())
    # The server may decline: no header, no compression.
    validate_response(response(), KEY, compression=DeflateOptions(), negotiated=negotiated)
    assert negotiated.deflate is None


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("permessage-deflate; server_max_window_bits=13", "larger than the 12 offered"),
        ("permessage-deflate; server_max_window_bits=12; x=1", "unknown parameter"),
        ("x-webkit-deflate-frame", "expected only permessage-deflate"),
        ("permessage-deflate; server_max_window_bits=12, permessage-deflate", "expected only"),
        ("permessage-deflate; server_max_window_bits=", "expected a parameter value"),
    ],
)
def test_client_fails_on_a_bad_answer(answer: str, reason: str) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_response(
            response(answer), KEY, compression=DeflateOptions(), negotiated=Negotiated()
        )
    assert reason in info.value.reason
    assert info.value.status == 101


def test_client_without_offer_refuses_any_extension() -> None:
    with pytest.raises(HandshakeError, match="none was offered"):
        validate_response(response("permessage-deflate"), KEY)


# ---------------------------------------------------------------- the threaded transport


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def read_compressed(peer: RawPeer, bits: int = 12) -> bytes:
    """Read one single-frame compressed message from the server and inflate it."""
    frame = peer.recv_frame()
    assert frame.fin
    return zlib.decompressobj(-bits).decompress(frame.payload + TAIL)


def test_server_compresses_only_when_enabled(
    ws_server: ServerFactory, raw_peer: PeerFactory
) -> None:
    server = ws_server(echo, compression="deflate")
    peer = raw_peer(server, headers=[("Sec-WebSocket-Extensions", BROWSER_OFFER)])
    assert (
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; "
        b"client_max_window_bits=12\r\n" in peer.response_head
    )
    text = "compress me " * 100
    codec = zlib.compressobj(6, zlib.DEFLATED, -12)
    payload = (codec.compress(text.encode()) + codec.flush(zlib.Z_SYNC_FLUSH))[:-4]
    peer.sock.sendall(build_frame(0x1, payload, rsv=4))
    first_byte = _peek_first_byte(peer)
    assert first_byte == 0xC1  # FIN, RSV1, TEXT
    assert read_compressed(peer) == text.encode()
    peer.send_close()
    peer.expect_eof()

    default = ws_server(echo)  # compression is off by default on a server
    peer = raw_peer(default, headers=[("Sec-WebSocket-Extensions", BROWSER_OFFER)])
    assert b"Sec-WebSocket-Extensions" not in peer.response_head
    peer.send_close()
    peer.expect_eof()


def _peek_first_byte(peer: RawPeer) -> int:
    while not peer.buffer:
        chunk = peer.sock.recv(65536)
        assert chunk
        peer.buffer += chunk
    return peer.buffer[0]


@pytest.mark.parametrize(
    "server_options, client_options",
    [
        ("deflate", "deflate"),
        (DeflateOptions(server_no_context_takeover=True), "deflate"),
        ("deflate", DeflateOptions(client_no_context_takeover=True, min_size=0)),
        (
            DeflateOptions(server_max_window_bits=9, client_max_window_bits=15, min_size=0),
            DeflateOptions(server_max_window_bits=15, client_max_window_bits=15),
        ),
    ],
)
def test_tube_client_and_server_round_trip(
    ws_server: ServerFactory,
    server_options: Literal["deflate"] | DeflateOptions,
    client_options: Literal["deflate"] | DeflateOptions,
) -> None:
    server = ws_server(echo, compression=server_options, max_message_size=4 << 20)
    messages: list[str | bytes] = [
        "",
        "small",
        "text ✓ " * 1000,
        os.urandom(1 << 20),
        b"\x00" * (3 << 20),
        "again " * 1000,
    ]
    with connect(
        server.url, compression=client_options, max_message_size=4 << 20, ping_interval=None
    ) as client:
        server_side = server.next_connection()
        assert server_side._protocol is not None and server_side._protocol._deflate is not None
        assert client._protocol is not None and client._protocol._deflate is not None
        for message in messages:
            client.send(message)
            assert client.incoming.get(timeout=10) == message
        client.send("not compressed " * 100, compress=False)
        assert client.incoming.get(timeout=10) == "not compressed " * 100


def test_client_default_offer_against_server_without_compression(ws_server: ServerFactory) -> None:
    server = ws_server(echo)
    with connect(server.url, ping_interval=None) as client:
        assert client._protocol is not None and client._protocol._deflate is None
        client.send("x" * 1000)
        assert client.incoming.get(timeout=10) == "x" * 1000


def test_invalid_compression_option() -> None:
    with pytest.raises(ValueError, match="compression"):
        create_connection(compression="gzip")


# ---------------------------------------------------------------- bombs over the network


def bomb_frames(tiny: bool) -> list[bytes]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12, 9)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(200)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)[:-4]
    if not tiny:
        return [build_frame(0x2, payload, rsv=4)]
    size = len(payload) // 10_000 + 1
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    frames = [build_frame(0x2, pieces[0], fin=False, rsv=4)]
    frames += [build_frame(0x0, piece, fin=False) for piece in pieces[1:-1]]
    frames.append(build_frame(0x0, pieces[-1]))
    return frames


@pytest.mark.parametrize("tiny", [False, True], ids=["one frame", "10,000 frames"])
def test_bomb_closes_with_1009_in_flat_memory(
    ws_server: ServerFactory, raw_peer: PeerFactory, tiny: bool
) -> None:
    """200 MiB of zeros, a few hundred KB compressed: 1009, and the server's memory stays flat."""
    ended = threading.Event()
    codes: list[int | None] = []

    def app(connection: Connection) -> None:
        try:
            for _ in connection.incoming:
                pass
        except ConnectionClosed:
            pass
        codes.append(connection.close_code)
        ended.set()

    server = ws_server(app, compression="deflate")
    data = b"".join(bomb_frames(tiny))
    peer = raw_peer(server, headers=[("Sec-WebSocket-Extensions", BROWSER_OFFER)])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        # The server may close before reading everything.
        with contextlib.suppress(OSError):
            peer.sock.sendall(data)
        frames = peer.expect_eof()
        assert ended.wait(10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [frame.close_code for frame in frames if frame.opcode == 0x8] == [1009]
    assert codes == [1009]
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- the echo server


@pytest.mark.parametrize("flag", ["deflate", "none"])
def test_echo_server_compression_flag(flag: str) -> None:
    from tube.websocket.echo import EchoServer, _parse_args

    args = _parse_args(["--port", "0", "--compression", flag])
    server = EchoServer(
        ("127.0.0.1", 0), compression="deflate" if args.compression == "deflate" else None
    )
    thread = threading.Thread(target=server.serve_forever, name="test-echo-deflate")
    thread.start()
    try:
        with connect(f"ws://127.0.0.1:{server.server_address[1]}/", ping_interval=None) as client:
            assert (client._protocol is not None and client._protocol._deflate is not None) == (
                flag == "deflate"
            )
            client.send_many(["x" * 1000, b"\x00" * 1000])
            assert [client.incoming.get(timeout=5) for _ in range(2)] == [
                "x" * 1000,
                b"\x00" * 1000,
            ]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
