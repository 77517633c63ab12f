"""Helpers for the asyncio transport's tests: a runner, a raw peer, an echo handler.

* :func:`run` runs a coroutine in a fresh event loop (``asyncio.run``) with an overall bound,
  and fails the test if a task is still pending once the coroutine returned (a leak).
* :class:`RawPeer` is a WebSocket client written by hand on asyncio streams, which can
  misbehave on purpose (stop reading, never answer, break the protocol, keep TCP open).
* :func:`aio_pair` builds an open connection on a ``socket.socketpair()`` end, with the
  blocking raw peer of ``tests.conftest`` on the other (no HTTP server).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tests.conftest import GUID, Frame, build_frame, mask_bytes
from tests.conftest import RawPeer as SocketPeer
from tube.websocket import ConnectionClosed, aio
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Role

T = TypeVar("T")

# Seconds a whole test coroutine may take.
TEST_TIMEOUT = 20.0
PEER_TIMEOUT = 5.0


def run(main: Callable[[], Awaitable[T]], timeout: float = TEST_TIMEOUT) -> T:
    """Run ``main()`` in a new loop; fail if it leaves a task pending."""

    async def wrapper() -> T:
        async with asyncio.timeout(timeout):
            result = await main()
        # Give callbacks scheduled by closing transports one turn.
        for _ in range(3):
            await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks still pending after the test: {leftover}"
        return result

    return asyncio.run(wrapper())


async def echo(connection: aio.Connection) -> None:
    """Echo every message back; the text ``close CODE`` makes the server close with CODE."""
    async for message in connection.incoming:
        if isinstance(message, str) and message.startswith("close "):
            await connection.initiate_close(int(message.split()[1]), "asked")
            continue
        await connection.send(message)


class RawPeer:
    """A hand-written WebSocket client on asyncio streams, for hostile or odd behaviour."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response_head = b""

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        handshake: bool = True,
        path: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        after: bytes = b"",
        rcvbuf: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> RawPeer:
        """Connect to 127.0.0.1:``port`` and (by default) do the opening handshake."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            # A small read limit, so that not reading really leaves bytes in the kernel.
            reader, writer = await asyncio.open_connection(
                sock=sock,
                limit=4096,
                ssl=ssl_context,
                server_hostname="localhost" if ssl_context else None,
            )
        except BaseException:
            sock.close()
            raise
        peer = cls(reader, writer)
        if handshake:
            try:
                await peer.handshake(headers, after, path=path)
            except BaseException:
                peer.abort()
                raise
        return peer

    async def handshake(
        self, headers: Sequence[tuple[str, str]] = (), after: bytes = b"", *, path: str = "/"
    ) -> None:
        """Send the request for ``path`` (plus ``after``) and check the 101 response."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + after)
        async with asyncio.timeout(PEER_TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
        self.response_head = head
        assert head.startswith(b"HTTP/1.1 101 "), head
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert f"Sec-WebSocket-Accept: {accept}".encode() in head, head

    def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        """Write one frame (masked unless ``mask=False``); see ``tests.conftest.build_frame``."""
        self.writer.write(build_frame(opcode, payload, **options))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Write a close frame."""
        self.send_frame(0x8, b"" if code is None else struct.pack("!H", code) + reason.encode())

    async def recv_frame(self, timeout: float = PEER_TIMEOUT) -> Frame:
        """Read one frame; ``IncompleteReadError`` at EOF, ``TimeoutError`` after ``timeout``."""
        async with asyncio.timeout(timeout):
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            key = await self.reader.readexactly(4) if second & 0x80 else b""
            payload = await self.reader.readexactly(length)
        if key:
            payload = mask_bytes(payload, key)
        return Frame(bool(first & 0x80), first & 0x0F, payload, bool(key))

    async def recv_data_frame(self, timeout: float = PEER_TIMEOUT) -> Frame:
        """Read frames, skipping pings and pongs, until a data or close frame arrives."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode not in (0x9, 0xA):
                return frame

    async def expect_eof(self, timeout: float = PEER_TIMEOUT) -> bytes:
        """Read until EOF (or a reset); return what arrived before it."""
        data = b""
        async with asyncio.timeout(timeout):
            try:
                while chunk := await self.reader.read(65536):
                    data += chunk
            except ConnectionError:  # reset, or a broken pipe seen by an earlier write
                pass
        return data

    def abort(self) -> None:
        """Close the socket at once."""
        self.writer.transport.abort()

    async def close(self) -> None:
        """Close the socket and wait until it is closed."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def next_message(connection: aio.Connection, timeout: float = PEER_TIMEOUT) -> Any:
    """The next message of ``connection``, or the ConnectionClosed that ended it."""
    try:
        return await connection.incoming.get(timeout=timeout)
    except ConnectionClosed as closed:
        return closed


async def aio_pair(
    role: Role, *, tcp: bool = False, **options: Any
) -> tuple[aio.Connection, SocketPeer]:
    """An open asyncio connection in ``role`` on a socket pair's end; a raw peer on the other.

    ``tcp``: a TCP connection on 127.0.0.1 instead of ``socket.socketpair()`` (Unix sockets
    account their send buffers in whole kernel buffers, not bytes).
    """
    if tcp:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            theirs = socket.socket()
            # Small buffers on both ends (set before connecting, for the window scale), so
            # that a peer that reads little is felt after KiB, not MiB.
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            theirs.connect(listener.getsockname())
            ours, _ = listener.accept()
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    else:
        ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    settings = ConnectionOptions.from_kwargs(**options)
    _, connection = await loop.connect_accepted_socket(lambda: aio.Connection(role, settings), ours)
    connection._open(0, None, None)
    return connection, SocketPeer.on_socket(theirs, mask=role is Role.SERVER)
