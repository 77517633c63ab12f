"""Drivers for the contract suite: one blocking test body runs against either transport.

A :class:`Driver` opens connections (on a socket pair with a raw peer, or through the
transport's own ``serve()`` and ``connect()``) and runs their operations as blocking calls.
The asyncio driver runs its connections on an event loop in a thread of its own
(:class:`LoopThread`) and waits for each coroutine there, so a rule written once as plain code
judges both transports; what differs between them stays inside the two driver classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import tube.websocket
from tests.aio.conftest import aio_pair
from tests.conftest import PEER_TIMEOUT, RawPeer, abort
from tube.websocket import ConnectionClosed, aio
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Role
from tube.websocket.integrations.server import Server as ThreadsServer
from tube.websocket.integrations.server import serve as threads_serve
from tube.websocket.threads.client import connect as threads_connect
from tube.websocket.threads.connection import Connection as ThreadsConnection
from tube.websocket.threads.connection import open_connection

T = TypeVar("T")

#: Seconds any one blocking call of a driver may take (a bound, never a wait).
CALL_TIMEOUT = 20.0

Message = str | bytes


class Driver:
    """One transport, driven by blocking calls. Subclasses implement every method.

    Attributes:
        name: ``"threads"`` or ``"aio"`` (the test ids).
        accepted: The server side of every connection accepted by :meth:`serve`, in order.
    """

    name = ""

    def __init__(self) -> None:
        self.accepted: list[Any] = []
        self._peers: list[RawPeer] = []

    def pair(self, role: Role, **options: Any) -> tuple[Any, RawPeer]:
        """An open connection in ``role`` on a ``socket.socketpair()`` end, and a raw peer
        (``tests.conftest.RawPeer``, blocking) on the other."""
        raise NotImplementedError

    def serve(self, **options: Any) -> int:
        """Start the transport's server with an echo handler; return its port on 127.0.0.1."""
        raise NotImplementedError

    def connect(self, url: str, **arguments: Any) -> Any:
        """The transport's ``connect()``: an open client connection."""
        raise NotImplementedError

    def send(self, connection: Any, message: Message) -> None:
        """``connection.send(message)``, blocking until it returned or raised."""
        raise NotImplementedError

    def send_many(self, connection: Any, messages: list[Message]) -> None:
        """``connection.send_many(messages)``, blocking until it returned or raised."""
        raise NotImplementedError

    def ping(self, connection: Any, data: bytes = b"") -> None:
        """``connection.ping(data)``: on threads it returns once the ping is queued, on asyncio
        once its pong arrived (a difference on purpose, see ``test_vocabulary.py``)."""
        raise NotImplementedError

    def go(self, function: str, connection: Any, *arguments: Any) -> Any:
        """The transport's function of the Go package's API (README, "Go → Python") named
        ``function`` (``send_blob_data``, ``initiate_close``, ``wait_until_connected``,
        ``is_connected``, ...), called on ``connection``: :mod:`tube.websocket`'s on threads,
        :mod:`tube.websocket.aio`'s on asyncio (awaited where it is a coroutine)."""
        raise NotImplementedError

    def get(self, connection: Any, timeout: float = PEER_TIMEOUT) -> Message:
        """The next message of ``connection.incoming`` (raises the ``ConnectionClosed`` that
        ended it)."""
        raise NotImplementedError

    def close(self, connection: Any, code: int = 1000, reason: str = "") -> None:
        """``connection.close(code, reason)``, waiting for the end."""
        raise NotImplementedError

    def initiate_close(self, connection: Any, code: int = 1000, reason: str = "") -> None:
        """``connection.initiate_close(code, reason)``: returns once the close frame is written."""
        raise NotImplementedError

    def wait_closed(self, connection: Any, timeout: float) -> bool:
        """``connection.wait_closed(timeout)``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Clean up whatever the test left: connections, servers, peers, threads."""
        for peer in self._peers:
            with contextlib.suppress(OSError):
                peer.close()

    def _peer(self, sock: socket.socket, role: Role) -> RawPeer:
        peer = RawPeer.on_socket(sock, mask=role is Role.SERVER)
        self._peers.append(peer)
        return peer


class ThreadsDriver(Driver):
    """The threaded transport: its calls block already."""

    name = "threads"

    def __init__(self) -> None:
        super().__init__()
        self._connections: list[ThreadsConnection] = []
        self._servers: list[tuple[ThreadsServer, threading.Thread]] = []

    def pair(self, role: Role, **options: Any) -> tuple[Any, RawPeer]:
        ours, theirs = socket.socketpair()
        connection = open_connection(ours, role, ConnectionOptions.from_kwargs(**options))
        self._connections.append(connection)
        return connection, self._peer(theirs, role)

    def serve(self, **options: Any) -> int:
        def echo(connection: ThreadsConnection) -> None:
            self.accepted.append(connection)
            for message in connection.incoming:
                connection.send(message)

        server = threads_serve(echo, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="contract")
        thread.start()
        self._servers.append((server, thread))
        return server.port

    def connect(self, url: str, **arguments: Any) -> Any:
        connection = threads_connect(url, **arguments)
        self._connections.append(connection)
        return connection

    def send(self, connection: Any, message: Message) -> None:
        connection.send(message)

    def send_many(self, connection: Any, messages: list[Message]) -> None:
        connection.send_many(messages)

    def ping(self, connection: Any, data: bytes = b"") -> None:
        connection.ping(data)

    def go(self, function: str, connection: Any, *arguments: Any) -> Any:
        return getattr(tube.websocket, function)(connection, *arguments)

    def get(self, connection: Any, timeout: float = PEER_TIMEOUT) -> Message:
        message: Message = connection.incoming.get(timeout=timeout)
        return message

    def close(self, connection: Any, code: int = 1000, reason: str = "") -> None:
        connection.close(code, reason)

    def initiate_close(self, connection: Any, code: int = 1000, reason: str = "") -> None:
        connection.initiate_close(code, reason)

    def wait_closed(self, connection: Any, timeout: float) -> bool:
        closed: bool = connection.wait_closed(timeout)
        return closed

    def stop(self) -> None:
        super().stop()
        for connection in self._connections:
            abort(connection)
            connection.wait_closed(PEER_TIMEOUT)
        for server, thread in self._servers:
            server.shutdown()
            thread.join(CALL_TIMEOUT)
            server.server_close()


class LoopThread:
    """An asyncio event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="contract-loop")
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coroutine`` on the loop; block until it is done and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop once its pending callbacks ran; close it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self.loop.close()


class AioDriver(Driver):
    """The asyncio transport, on a :class:`LoopThread`."""

    name = "aio"

    def __init__(self) -> None:
        super().__init__()
        self._loop = LoopThread()
        self._connections: list[aio.Connection] = []
        self._servers: list[aio.Server] = []

    def pair(self, role: Role, **options: Any) -> tuple[Any, RawPeer]:
        async def make() -> tuple[aio.Connection, socket.socket]:
            connection, peer = await aio_pair(role, **options)
            return connection, peer.sock

        connection, theirs = self._loop.call(make())
        self._connections.append(connection)
        return connection, self._peer(theirs, role)

    def serve(self, **options: Any) -> int:
        async def echo(connection: aio.Connection) -> None:
            self.accepted.append(connection)
            async for message in connection.incoming:
                await connection.send(message)

        async def start() -> aio.Server:
            server: aio.Server = await aio.serve(echo, "127.0.0.1", 0, **options)
            return server

        server = self._loop.call(start())
        self._servers.append(server)
        return server.port

    def connect(self, url: str, **arguments: Any) -> Any:
        async def open_client() -> aio.Connection:
            return await aio.connect(url, **arguments)

        connection = self._loop.call(open_client())
        self._connections.append(connection)
        return connection

    def send(self, connection: Any, message: Message) -> None:
        self._loop.call(connection.send(message))

    def send_many(self, connection: Any, messages: list[Message]) -> None:
        self._loop.call(connection.send_many(messages))

    def ping(self, connection: Any, data: bytes = b"") -> None:
        self._loop.call(connection.ping(data))

    def go(self, function: str, connection: Any, *arguments: Any) -> Any:
        async def call() -> Any:
            result = getattr(aio, function)(connection, *arguments)
            return await result if inspect.isawaitable(result) else result

        return self._loop.call(call())

    def get(self, connection: Any, timeout: float = PEER_TIMEOUT) -> Message:
        message: Message = self._loop.call(connection.incoming.get(timeout=timeout))
        return message

    def close(self, connection: Any, code: int = 1000, reason: str = "") -> None:
        self._loop.call(connection.close(code, reason))

    def initiate_close(self, connection: Any, code: int = 1000, reason: str = "") -> None:
        self._loop.call(connection.initiate_close(code, reason))

    def wait_closed(self, connection: Any, timeout: float) -> bool:
        closed: bool = self._loop.call(connection.wait_closed(timeout))
        return closed

    def stop(self) -> None:
        super().stop()

        async def end() -> None:
            for server in self._servers:
                await server.close()
            for connection in self._connections:
                connection._abort("end of test")
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await connection.wait_closed(PEER_TIMEOUT)

        try:
            self._loop.call(end())
        finally:
            self._loop.stop()


DRIVERS: dict[str, type[Driver]] = {"threads": ThreadsDriver, "aio": AioDriver}
