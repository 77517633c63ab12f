"""Shared fixtures: a thread-leak check, a WebSocket server on ``http.server``, a raw-socket peer.

* ``no_thread_leak`` (autouse) fails a test that leaves a thread running once it is over
  (threads get a few seconds to finish: connections end asynchronously).
* ``ws_server`` is a factory: ``ws_server(app, **options)`` starts a
  ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port) whose GET handler creates a
  :class:`~tube.websocket.Connection` with ``options``, upgrades it and runs ``app(connection)``
  in the handler thread. Exceptions raised by ``app`` (other than ``ConnectionClosed``) fail the
  test at teardown; the server and every connection still open are shut down.
* ``running`` is a factory: ``running(handler, **options)`` starts a :func:`~tube.websocket.serve`
  server on 127.0.0.1 (ephemeral port) serving in a thread, shut down and closed at the end.
* ``tls_contexts``: (server context, client context) trusting one self-signed CA (trustme), the
  server's certificate for ``localhost`` and ``127.0.0.1``.
* ``raw_peer`` is a factory: ``raw_peer(server)`` opens a TCP (or TLS) connection, performs the
  client handshake by hand and returns a :class:`RawPeer` that writes and reads frames byte by
  byte -- a peer that can misbehave on purpose (stop reading, never answer, break the protocol).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import os
import queue
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tube.websocket import (
    Connection,
    ConnectionClosed,
    HandshakeError,
    Server,
    create_connection,
    serve,
    upgrade_connection,
)
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Protocol, Role
from tube.websocket.threads.connection import open_connection

# Seconds a test waits for its threads (readers, handlers, timers) to end after it finished.
THREAD_GRACE = 5.0
# Library threads shared by every connection, which outlive a test on purpose.
SHARED = {"tube-timers", "tube-parking"}
# Seconds a RawPeer waits for bytes by default.
PEER_TIMEOUT = 5.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------- thread leaks


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail the test if a thread it started is still alive ``THREAD_GRACE`` s after it ended.

    The shared threads of :mod:`tube.websocket.threads.timers` and ``.parking`` are not
    leaks: they linger a few seconds after their last use, whoever started them.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE
    leaked = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread() or thread.name in SHARED:
            continue
        _join(thread, deadline)
        if thread.is_alive():
            leaked.append(thread.name)
    if leaked:
        pytest.fail(f"threads still running after the test: {leaked}", pytrace=False)


def _join(thread: threading.Thread, deadline: float) -> None:
    """Join ``thread`` until ``deadline``; one caught between ``start()`` and running (which
    ``enumerate()`` lists but ``join()`` refuses) is given until then to begin."""
    while True:
        try:
            thread.join(max(0.0, deadline - time.monotonic()))
            return
        except RuntimeError:  # "cannot join thread before it is started"
            if time.monotonic() >= deadline:
                return
            time.sleep(0.001)  # it is being started on another thread: nothing to wait on


# ---------------------------------------------------------------------- frames


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (RFC 6455 §5.3), fast for large data."""
    if not payload:
        return b""
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """Serialise one frame by hand; ``length`` overrides the declared payload length."""
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + mask_bytes(payload, key)


@dataclass
class Frame:
    """A frame read by :class:`RawPeer` (payload already unmasked)."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (None if it carries none)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        """The reason of a close frame."""
        return self.payload[2:].decode()


# ---------------------------------------------------------------------- the raw peer


class RawPeer:
    """A WebSocket client written by hand on a socket, for tests.

    Args:
        port: The server's port on 127.0.0.1.
        path: The request target.
        headers: Extra request headers.
        after_request: Bytes sent in the same ``sendall`` as the request head (for example a
            first frame right behind the handshake).
        ssl_context: Wrap the socket in TLS with this client context.
        handshake: False leaves the socket just connected (send your own request).

    Attributes:
        sock: The socket (``ssl.SSLSocket`` with TLS).
        response_head: The server's response head (``b""`` without handshake).
    """

    def __init__(
        self,
        port: int,
        *,
        path: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        after_request: bytes = b"",
        ssl_context: ssl.SSLContext | None = None,
        handshake: bool = True,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=PEER_TIMEOUT)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buffer = bytearray()
        self.response_head = b""
        self.closed = False
        self.mask = True
        if handshake:
            try:
                self.handshake(path, headers, after_request)
            except BaseException:
                self.close()
                raise

    def handshake(
        self, path: str = "/", headers: Sequence[tuple[str, str]] = (), after: bytes = b""
    ) -> None:
        """Send the opening handshake (plus ``after``) and check the 101 response."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.sock.getpeername()[1]}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + after)
        head = self._read_until(b"\r\n\r\n")
        self.response_head = head
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 101 "), head
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert f"Sec-WebSocket-Accept: {expected}".encode() in head, head

    @classmethod
    def on_socket(cls, sock: socket.socket, *, mask: bool = True) -> RawPeer:
        """A raw peer on a socket already connected (a ``socketpair`` end), no handshake.

        Args:
            sock: The socket.
            mask: Mask the frames it sends (a client does); False to play a server.
        """
        peer = cls.__new__(cls)
        peer.sock = sock
        sock.settimeout(PEER_TIMEOUT)
        peer.buffer = bytearray()
        peer.response_head = b""
        peer.closed = False
        peer.mask = mask
        return peer

    def _read_until(self, marker: bytes) -> bytes:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                head = bytes(self.buffer[: index + len(marker)])
                del self.buffer[: index + len(marker)]
                return head
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed before {marker!r}: {bytes(self.buffer)!r}")
            self.buffer += chunk

    # -- writing

    def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        """Send one frame (masked unless ``mask=False``); see :func:`build_frame`."""
        options.setdefault("mask", self.mask)
        self.sock.sendall(build_frame(opcode, payload, **options))

    def frame_bytes(self, opcode: int, payload: bytes = b"", **options: Any) -> bytes:
        """The bytes of one frame as :meth:`send_frame` would send it (to send several at once)."""
        options.setdefault("mask", self.mask)
        return build_frame(opcode, payload, **options)

    def send_text(self, text: str) -> None:
        """Send a text message in one frame."""
        self.send_frame(0x1, text.encode())

    def send_binary(self, data: bytes) -> None:
        """Send a binary message in one frame."""
        self.send_frame(0x2, data)

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Send a close frame."""
        payload = b"" if code is None else struct.pack("!H", code) + reason.encode()
        self.send_frame(0x8, payload)

    # -- reading

    def _fill(self, size: int, deadline: float) -> None:
        while len(self.buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame within the timeout ({len(self.buffer)} bytes)")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(max(65536, size - len(self.buffer)))
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buffer += chunk

    def recv_frame(self, timeout: float = PEER_TIMEOUT) -> Frame:
        """Read one frame; raise ``EOFError`` at EOF and ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        first, second = self.buffer[0], self.buffer[1]
        length = second & 0x7F
        header = 2
        if length == 126:
            self._fill(4, deadline)
            length = struct.unpack_from("!H", self.buffer, 2)[0]
            header = 4
        elif length == 127:
            self._fill(10, deadline)
            length = struct.unpack_from("!Q", self.buffer, 2)[0]
            header = 10
        masked = bool(second & 0x80)
        key = b""
        if masked:
            self._fill(header + 4, deadline)
            key = bytes(self.buffer[header : header + 4])
            header += 4
        self._fill(header + length, deadline)
        payload = bytes(self.buffer[header : header + length])
        del self.buffer[: header + length]
        if masked:
            payload = mask_bytes(payload, key)
        return Frame(bool(first & 0x80), first & 0x0F, payload, masked)

    def recv_data_frame(self, timeout: float = PEER_TIMEOUT) -> Frame:
        """Read frames, skipping pings and pongs, until a data or close frame arrives."""
        while True:
            frame = self.recv_frame(timeout)
            if frame.opcode not in (0x9, 0xA):
                return frame

    def recv_message(self, timeout: float = PEER_TIMEOUT) -> str | bytes:
        """Read one complete (possibly fragmented) data message, skipping control frames."""
        frame = self.recv_data_frame(timeout)
        assert frame.opcode in (0x1, 0x2), frame
        opcode = frame.opcode
        parts = [frame.payload]
        while not frame.fin:
            frame = self.recv_data_frame(timeout)
            assert frame.opcode == 0x0, frame
            parts.append(frame.payload)
        data = b"".join(parts)
        return data.decode() if opcode == 0x1 else data

    def expect_eof(self, timeout: float = PEER_TIMEOUT, *, close: bool = True) -> list[Frame]:
        """Read until the server closes TCP; return the frames read on the way.

        Then close the socket too (as a well-behaved client does), unless ``close`` is False.

        Raises:
            TimeoutError: The server did not close the connection within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            try:
                frames.append(self.recv_frame(max(0.0, deadline - time.monotonic())))
            except EOFError:
                if close:
                    self.close()
                return frames

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------- the server


App = Callable[[Connection], None]


class WsServer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 whose GET handler runs a WebSocket ``app``.

    Attributes:
        port: The listening port.
        errors: Exceptions raised by ``app`` (they fail the test at teardown).
        rejected: ``HandshakeError``\\ s raised by ``upgrade_connection``.
    """

    def __init__(
        self,
        app: App,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handler_timeout: float | None = 5.0,
        **options: Any,
    ) -> None:
        self.app = app
        self.options = options
        self.errors: list[BaseException] = []
        self.rejected: list[HandshakeError] = []
        self.connections: list[Connection] = []
        self._new: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._rejections: queue.SimpleQueue[HandshakeError] = queue.SimpleQueue()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = handler_timeout

            def do_GET(self) -> None:
                connection = create_connection(**owner.options)
                try:
                    upgrade_connection(self, connection)
                except HandshakeError as error:
                    owner.rejected.append(error)
                    owner._rejections.put(error)
                    return
                owner.connections.append(connection)
                owner._new.put(connection)
                try:
                    owner.app(connection)
                except ConnectionClosed:
                    pass
                except BaseException as error:
                    owner.errors.append(error)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A peer that hangs up mid-request (an OSError) is expected in these tests;
                # anything else raised while handling fails the test at teardown.
                error = sys.exc_info()[1]
                if error is not None and not isinstance(error, OSError):
                    owner.errors.append(error)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="ws-server"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``ws://`` URL of the server."""
        return f"ws://127.0.0.1:{self.port}/"

    def next_connection(self, timeout: float = PEER_TIMEOUT) -> Connection:
        """Return the server-side connection of the next upgrade, in order."""
        return self._new.get(timeout=timeout)

    def next_rejection(self, timeout: float = PEER_TIMEOUT) -> HandshakeError:
        """Return the ``HandshakeError`` of the next refused upgrade, in order."""
        return self._rejections.get(timeout=timeout)

    def stop(self) -> None:
        """Stop serving and abort every connection still open."""
        self.httpd.shutdown()
        self._thread.join()
        self.httpd.server_close()
        for connection in self.connections:
            abort(connection)


def under_ci() -> bool:
    """True when ``CI`` is set to a true-ish value (``true``, ``1``, ``yes``, ...: anything but
    empty, ``0``, ``false``, ``no`` or ``off``): pinned test dependencies must be there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def require(*modules: str) -> None:
    """Skip when a module is not installed; fail under CI (the test extra pins them all)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            message = f"{module} is not installed (pip install -e '.[test]')"
            if under_ci():
                pytest.fail(f"test dependency missing under CI: {message}", pytrace=False)
            pytest.skip(message)


def abort(connection: Connection) -> None:
    """Shut a connection's socket down at once (test clean-up): its reader thread ends."""
    send = connection._send
    if send is not None:
        send.io.shutdown(socket.SHUT_RDWR)
    connection.incoming._release()


def wait_ended(connection: Connection, timeout: float = PEER_TIMEOUT) -> None:
    """Wait until ``connection`` has closed its TCP connection (after ``connected`` False)."""
    assert connection.wait_closed(timeout), f"{connection!r} did not end within {timeout} s"
    assert connection.close_code is not None and not connection.connected


@pytest.fixture
def ws_server() -> Iterator[Callable[..., WsServer]]:
    """Factory: ``ws_server(app, ssl_context=None, handler_timeout=5.0, **options)``."""
    servers: list[WsServer] = []

    def start(app: App, **kwargs: Any) -> WsServer:
        server = WsServer(app, **kwargs)
        servers.append(server)
        return server

    yield start
    errors = []
    for server in servers:
        server.stop()
        errors += server.errors
    if errors:
        raise errors[0]


@pytest.fixture
def socket_pair() -> Iterator[Callable[..., tuple[Connection, RawPeer]]]:
    """Factory: ``socket_pair(role, **options)`` -> (our connection in ``role``, a raw peer).

    The connection is built attached on one end of a ``socket.socketpair()`` (no HTTP server);
    the raw peer plays the other role on the other end. Both are closed at the end.
    """
    made: list[tuple[Connection, RawPeer]] = []

    def make(role: Role, **options: Any) -> tuple[Connection, RawPeer]:
        ours, theirs = socket.socketpair()
        connection = open_connection(ours, role, ConnectionOptions.from_kwargs(**options))
        peer = RawPeer.on_socket(theirs, mask=role is Role.SERVER)
        made.append((connection, peer))
        return connection, peer

    yield make
    for connection, peer in made:
        peer.close()
        abort(connection)
        connection.wait_closed(PEER_TIMEOUT)


@pytest.fixture
def raw_peer() -> Iterator[Callable[..., RawPeer]]:
    """Factory: ``raw_peer(server_or_port, **kwargs)`` -> a :class:`RawPeer`, closed at the end."""
    peers: list[RawPeer] = []

    def connect(server: WsServer | int, **kwargs: Any) -> RawPeer:
        port = server.port if isinstance(server, WsServer) else server
        peer = RawPeer(port, **kwargs)
        peers.append(peer)
        return peer

    yield connect
    for peer in peers:
        with contextlib.suppress(OSError):
            peer.close()


# ---------------------------------------------------------------------- serve()

# Seconds a fixture waits for a server's thread to end.
SERVER_JOIN_TIMEOUT = 10.0


@pytest.fixture
def running() -> Iterator[Callable[..., Server]]:
    """Factory: ``running(handler, expected_errors=(), **options)`` -> a Server serving in a
    thread, shut down after.

    Exceptions raised by ``handler`` (other than ``ConnectionClosed`` and the
    ``expected_errors`` a test raises on purpose) fail the test at teardown; serve() itself
    only logs them and closes the connection with 1011.
    """
    started: list[tuple[Server, threading.Thread]] = []
    errors: list[BaseException] = []

    def start(
        handler: Callable[[Connection], object],
        *,
        expected_errors: tuple[type[BaseException], ...] = (),
        **options: Any,
    ) -> Server:
        def recording(connection: Connection) -> object:
            try:
                return handler(connection)
            except ConnectionClosed:
                raise  # the peer left: serve() ends the handler quietly, as documented
            except BaseException as error:
                if not isinstance(error, expected_errors):
                    errors.append(error)
                raise

        server = serve(recording, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-serve")
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(SERVER_JOIN_TIMEOUT)
        server.server_close()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for a self-signed CA made by trustme."""
    import trustme  # a test dependency, needed only by the TLS tests

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


# Message sizes around the 64 KiB above which a large binary frame is read in place
# (Protocol.receive_buffer), up to 3 MiB + 7, with small ones among them.
LARGE_SIZES = [65535, 65536, 65537, 100_000, 262_144, 1 << 20, (3 << 20) + 7, 5, 70_000]


@pytest.fixture
def in_place_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the reads that went into a payload buffer (receive_buffer() gave a view)."""
    counts = [0]
    original = Protocol.receive_buffer

    def counting(self: Protocol) -> memoryview | None:
        view = original(self)
        if view is not None:
            counts[0] += 1
        return view

    monkeypatch.setattr(Protocol, "receive_buffer", counting)
    yield counts
