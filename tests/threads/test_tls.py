"""wss://: the server's socket wrapped with an ssl.SSLContext and a certificate from trustme;
concurrent senders while the reader thread receives, over one ssl.SSLSocket."""

from __future__ import annotations

import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

import pytest

from tube.websocket import Connection, ConnectionClosed, send_blob_data, send_text

from ..conftest import RawPeer, WsServer, build_frame, wait_ended

ServerFactory = Callable[..., WsServer]
PeerFactory = Callable[..., RawPeer]


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def test_wss_echo_with_a_frame_behind_the_handshake(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts
    server = ws_server(echo, ssl_context=server_context)
    peer = raw_peer(server, ssl_context=client_context, after_request=build_frame(0x1, b"early"))
    assert isinstance(peer.sock, ssl.SSLSocket)
    assert peer.recv_message() == "early"
    for size in (0, 125, 126, 65535, 65536, 1 << 20):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        peer.send_binary(payload)
        assert peer.recv_message(timeout=10) == payload
    peer.send_frame(0x9, b"tls ping")
    assert peer.recv_frame().payload == b"tls ping"
    peer.send_close(1000, "tls bye")
    assert [f.close_code for f in peer.expect_eof()] == [1000]
    connection = server.connections[0]
    wait_ended(connection)
    assert (connection.close_code, connection.close_reason) == (1000, "tls bye")


def parse_server_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove the complete unmasked frames at the start of ``buffer``; return (opcode, payload)."""
    frames = []
    while len(buffer) >= 2:
        length = buffer[1] & 0x7F
        header = 2
        if length == 126:
            if len(buffer) < 4:
                break
            length = struct.unpack_from("!H", buffer, 2)[0]
            header = 4
        elif length == 127:
            if len(buffer) < 10:
                break
            length = struct.unpack_from("!Q", buffer, 2)[0]
            header = 10
        if len(buffer) < header + length:
            break
        assert buffer[0] & 0x80, "the server fragmented a message"
        frames.append((buffer[0] & 0x0F, bytes(buffer[header : header + length])))
        del buffer[: header + length]
    return frames


def test_eight_threads_send_while_the_reader_receives_over_tls(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    threads_count, per_thread, incoming_count = 8, 500, 2000
    server_got: list[int] = []

    def app(connection: Connection) -> None:
        def sender(thread_index: int) -> None:
            for index in range(per_thread):
                body = f"{thread_index}:{index}:".encode() + bytes(index * 7 % 3000)
                if index % 3:
                    send_blob_data(connection, body)
                else:
                    send_text(connection, body.decode())

        senders = [threading.Thread(target=sender, args=(i,)) for i in range(threads_count)]
        for thread in senders:
            thread.start()
        # Meanwhile the reader thread receives the peer's messages.
        for _ in range(incoming_count):
            message = connection.incoming.get(timeout=20)
            assert isinstance(message, bytes)
            server_got.append(int.from_bytes(message[:4], "big"))
        for thread in senders:
            thread.join()
        connection.send("done")
        wait_ended(connection, 20)

    server_context, client_context = tls_contexts
    server = ws_server(app, ssl_context=server_context)
    peer = raw_peer(server, ssl_context=client_context)
    sock = peer.sock
    sock.setblocking(False)
    outgoing = bytearray(
        b"".join(
            build_frame(0x2, i.to_bytes(4, "big") + bytes(i % 2000)) for i in range(incoming_count)
        )
    )
    incoming = bytearray(peer.buffer)
    next_index = [0] * threads_count
    done = False
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.monotonic() + 30
    try:
        while not done:
            assert time.monotonic() < deadline, "the exchange did not finish"
            progressed = False
            if outgoing:
                try:
                    sent = sock.send(outgoing[:16384])
                    del outgoing[:sent]
                    progressed = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
            try:
                data = sock.recv(65536)
                assert data, "the server closed the connection early"
                incoming += data
                progressed = True
            except ssl.SSLWantReadError:
                pass
            for opcode, payload in parse_server_frames(incoming):
                if payload == b"done":
                    done = True
                    continue
                assert opcode in (0x1, 0x2)
                thread_text, index_text, rest = payload.split(b":", 2)
                thread_index, index = int(thread_text), int(index_text)
                assert index == next_index[thread_index]
                assert rest == bytes(index * 7 % 3000)
                assert opcode == (0x2 if index % 3 else 0x1)
                next_index[thread_index] += 1
            if not progressed:
                selector.modify(
                    sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if outgoing else 0)
                )
                selector.select(0.1)
    finally:
        selector.close()
    assert next_index == [per_thread] * threads_count
    assert server_got == list(range(incoming_count))
    sock.setblocking(True)
    peer.send_close()
    assert [f.close_code for f in peer.expect_eof()] == [1000]


def test_tls_peer_that_stops_reading_times_out(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    outcome: list[float] = []

    def app(connection: Connection) -> None:
        chunk = bytes(256 * 1024)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                started = time.monotonic()
                send_blob_data(connection, chunk)
        outcome.append(time.monotonic() - started)
        assert info.value.code == 1006
        wait_ended(connection)

    server_context, client_context = tls_contexts
    server = ws_server(app, ssl_context=server_context, send_timeout=0.5)
    raw_peer(server, ssl_context=client_context)  # never reads
    connection = server.next_connection()
    wait_ended(connection, 10)
    server.stop()
    assert connection.close_code == 1006
    assert len(outcome) == 1 and outcome[0] < 0.5 + 0.75


def test_tls_close_sends_close_notify_before_tcp_ends(
    ws_server: ServerFactory,
    raw_peer: PeerFactory,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    # Issue 8 §4: a TLS peer still reading sees the TLS stream end cleanly (close_notify),
    # not truncated: with ragged EOFs reported, reading to the end raises nothing.
    server_context, client_context = tls_contexts
    server = ws_server(echo, ssl_context=server_context)
    peer = raw_peer(server, ssl_context=client_context)
    assert isinstance(peer.sock, ssl.SSLSocket)
    peer.sock.suppress_ragged_eofs = False  # type: ignore[attr-defined]
    peer.send_close(1000, "bye")
    frames = peer.expect_eof()  # an SSLEOFError here would be a truncated TLS stream
    assert [f.close_code for f in frames] == [1000]
    wait_ended(server.connections[0])


class _BioClient:
    """A TLS client over a plain socket through memory BIOs: it decides how much of each TLS
    record goes on the wire, which an ``ssl.SSLSocket`` never lets its caller do."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self._out.read())
                self._in.write(self.sock.recv(65536))
        self.sock.sendall(self._out.read())

    def encrypt(self, data: bytes) -> bytes:
        self.tls.write(data)
        return self._out.read()

    def read_until(self, marker: bytes) -> bytes:
        received = b""
        while marker not in received:
            try:
                received += self.tls.read(65536)
            except ssl.SSLWantReadError:
                chunk = self.sock.recv(65536)
                assert chunk, "the server closed the connection"
                self._in.write(chunk)
        return received


def test_get_timeout_holds_while_a_tls_record_is_incomplete(
    ws_server: ServerFactory, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    # A peer that sends half a TLS record makes the socket readable while OpenSSL still waits
    # for the rest: get(timeout) must end at its timeout all the same (not after the 2-second
    # idle timeout), and the message must arrive whole once the record is complete.
    waited: list[float] = []
    received: list[str] = []
    gave_up, done = threading.Event(), threading.Event()

    def app(connection: Connection) -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.incoming.get(timeout=0.3)
        waited.append(time.monotonic() - started)
        gave_up.set()
        received.append(connection.incoming.get(timeout=10))  # type: ignore[arg-type]
        done.set()
        wait_ended(connection)

    server_context, client_context = tls_contexts
    server = ws_server(app, ssl_context=server_context)
    client = _BioClient(server.port, client_context)
    try:
        client.sock.sendall(
            client.encrypt(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
        )
        assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        record = client.encrypt(build_frame(0x1, b"whole at last"))
        client.sock.sendall(record[: len(record) // 2])
        connection = server.next_connection()
        assert gave_up.wait(5)
        client.sock.sendall(record[len(record) // 2 :])
        assert done.wait(10)
        assert received == ["whole at last"]
        assert waited[0] < 1.0, f"get(timeout=0.3) took {waited[0]:.2f} s"
        client.sock.sendall(client.encrypt(build_frame(0x8, b"\x03\xe8")))
        client.read_until(b"\x88\x02\x03\xe8")  # the server's close frame echoes ours
    finally:
        client.sock.close()
    wait_ended(connection)
