"""The chat demo server: one :func:`tube.websocket.serve` server for the page and the endpoint.

Wire protocol of the demo (the page in ``index.html`` speaks it):

* the browser sends each chat line as one **text** message (binary messages are refused
  with close code 1003);
* the server sends JSON text messages: ``{"type": "welcome", "name": ..., "online": n}`` to a
  newcomer, ``{"type": "presence", "name": ..., "event": "joined"|"left", "online": n}`` and
  ``{"type": "message", "from": ..., "text": ...}`` to everybody.

Concurrency: each member (one WebSocket connection) has two threads. Its *reader* iterates
``connection.incoming`` and hands every chat line to :meth:`ChatRoom.broadcast`, which only
puts the encoded message into each member's bounded *outbox* and never touches a socket. Its
*writer* drains its outbox onto its own connection. So a slow tab only ever blocks its own
writer (for at most the library's ``send_timeout``, after which the library aborts that
connection); if its outbox fills up the server closes it with 1008, and the other tabs never
wait for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import queue
import signal
import threading
import time
import types
from collections.abc import Sequence
from importlib import resources
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tube.websocket import (
    Connection,
    ConnectionClosed,
    Request,
    Response,
    Server,
    initiate_close,
    send_text,
)

logger = logging.getLogger("tube.demo")

#: Largest chat line accepted from a browser, in bytes; a larger one closes with 1009.
MAX_MESSAGE_SIZE = 64 * 1024
#: Messages waiting for one member before it counts as too slow and is disconnected.
OUTBOX_SIZE = 256
#: Seconds a send to one browser may take before the library aborts that connection.
SEND_TIMEOUT = 10.0
#: Seconds to wait for the closing handshakes when the server stops.
SHUTDOWN_TIMEOUT = 5.0

_PAGE_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    # The page only talks to its own origin; inline script and style are the page itself.
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
    ),
)


def _load_page() -> bytes:
    """Return the bytes of the demo page shipped beside this module."""
    return resources.files("tube.demo").joinpath("index.html").read_bytes()


class Member:
    """One chat participant: a connected WebSocket with its reader and writer threads.

    Thread contract: :meth:`offer` may be called from any thread and never blocks; the
    connection is only sent to by the writer thread (and :meth:`close`).
    """

    def __init__(self, room: ChatRoom, connection: Connection, name: str) -> None:
        """Bind a connected ``connection`` to ``room`` under ``name`` (threads not started)."""
        self.room = room
        self.connection = connection
        self.name = name
        self._outbox: queue.Queue[str | None] = queue.Queue(maxsize=OUTBOX_SIZE)
        self._overflowed = threading.Event()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"tube-demo-reader-{name}", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"tube-demo-writer-{name}", daemon=True
        )

    def start(self) -> None:
        """Start the reader and writer threads."""
        self._writer.start()
        self._reader.start()

    def offer(self, text: str) -> None:
        """Queue ``text`` for this member without blocking; a full outbox disconnects it."""
        try:
            self._outbox.put_nowait(text)
        except queue.Full:
            # Never wait for a slow tab: its writer closes the connection instead.
            self._overflowed.set()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the threads end once the connection is closed."""
        with contextlib.suppress(ConnectionClosed):
            initiate_close(self.connection, code, reason)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for both threads; return True if they ended."""
        self._reader.join(timeout)
        self._writer.join(timeout)
        return not (self._reader.is_alive() or self._writer.is_alive())

    def wait(self) -> None:
        """Wait until both threads ended (they end once the connection is closed)."""
        self._reader.join()
        self._writer.join()

    def _read_loop(self) -> None:
        try:
            for message in self.connection.incoming:
                if not isinstance(message, str):
                    self.close(1003, "the chat only accepts text messages")
                    continue
                self.room.broadcast({"type": "message", "from": self.name, "text": message})
        finally:
            self.room.leave(self)
            # If the outbox is full the writer is busy: its next send raises ConnectionClosed
            # and it stops anyway.
            with contextlib.suppress(queue.Full):
                self._outbox.put_nowait(None)

    def _write_loop(self) -> None:
        while True:
            text = self._outbox.get()
            if text is None:
                return
            if self._overflowed.is_set():
                logger.warning("%s reads too slowly; disconnecting it", self.name)
                self.close(1008, "too slow: messages were dropped")
                return
            try:
                send_text(self.connection, text)
            except ConnectionClosed:
                return


class ChatRoom:
    """The set of connected members; broadcasts every message to all of them.

    Thread-safe: every method may be called from any thread.
    """

    def __init__(self) -> None:
        """Create an empty, open room."""
        self._lock = threading.Lock()
        self._members: list[Member] = []
        self._counter = 0
        self._closed = False

    def join(self, connection: Connection) -> Member | None:
        """Add a connected ``connection`` as a new member and start serving it.

        Returns the member, or None if the room is closed (the connection is then closed
        with 1001).
        """
        with self._lock:
            if self._closed:
                member = None
            else:
                self._counter += 1
                member = Member(self, connection, f"guest-{self._counter}")
                self._members.append(member)
                online = len(self._members)
                # Queued under the lock, before the member's reader starts: no broadcast (a
                # chat line from another member, or its own first line) can reach the new
                # member before its welcome and the "joined" (without this, one
                # test run in seven saw a broadcast arrive first).
                # offer() never blocks, so holding the lock here costs nothing.
                member.offer(_encode({"type": "welcome", "name": member.name, "online": online}))
                joined = _encode(
                    {"type": "presence", "name": member.name, "event": "joined", "online": online}
                )
                for other in self._members:
                    other.offer(joined)
        if member is None:
            with contextlib.suppress(ConnectionClosed):
                initiate_close(connection, 1001, "server shutting down")
            return None
        member.start()
        logger.info("%s joined (%d online)", member.name, online)
        return member

    def leave(self, member: Member) -> None:
        """Remove ``member`` (idempotent) and tell the others."""
        with self._lock:
            if member not in self._members:
                return
            self._members.remove(member)
            online = len(self._members)
        logger.info("%s left (%d online)", member.name, online)
        self.broadcast({"type": "presence", "name": member.name, "event": "left", "online": online})

    def broadcast(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` (JSON-encoded once) for every member; never blocks on a socket."""
        text = _encode(payload)
        with self._lock:
            members = list(self._members)
        for member in members:
            member.offer(text)

    def close(self, timeout: float = SHUTDOWN_TIMEOUT) -> bool:
        """Close every connection with 1001 and wait up to ``timeout`` seconds in all.

        Later connections are refused (closed with 1001 as soon as they join). Returns True
        if the threads of every member ended in time.
        """
        with self._lock:
            self._closed = True
            members = list(self._members)
        for member in members:
            member.close(1001, "server shutting down")
        deadline = time.monotonic() + timeout
        ended = [member.join(max(0.0, deadline - time.monotonic())) for member in members]
        return all(ended)


def _encode(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _plain(status: int, reason: str, text: str) -> Response:
    return Response(status, reason, [("Content-Type", "text/plain; charset=utf-8")], text.encode())


class DemoServer(Server):
    """The demo on :func:`tube.websocket.serve`'s server: the page, the endpoint, the room.

    ``GET /`` (and ``HEAD /``) answer the page through ``process_request``; ``GET /ws`` is
    upgraded and joins the chat room; anything else gets 404. The server brings the request
    head deadlines, the graceful shutdown and the back-off at the descriptor limit.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        """Bind to ``address`` (``(host, port)``; port 0 picks a free port) and listen."""
        self.page = _load_page()
        self.room = ChatRoom()
        super().__init__(
            self._serve_member,
            address[0],
            address[1],
            process_request=self._route,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            max_message_size=MAX_MESSAGE_SIZE,
            send_timeout=SEND_TIMEOUT,
        )

    @property
    def url(self) -> str:
        """The address the server listens on, as an ``http://`` URL with the real port."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    def _route(self, request: Request) -> Response | None:
        """The page on ``/``, the upgrade on ``/ws`` (None), 404 elsewhere."""
        path = urlsplit(request.target).path
        if path in ("/", "/index.html"):
            return Response(200, "OK", list(_PAGE_HEADERS), self.page)
        if path == "/ws":
            return None
        return _plain(404, "Not Found", "not found\n")

    def _serve_member(self, connection: Connection) -> None:
        """Serve one tab for as long as it is connected (the connection's thread)."""
        member = self.room.join(connection)
        if member is not None:
            member.wait()


class _Stop:
    """Turns SIGINT and SIGTERM into an event the main thread waits on."""

    signals: ClassVar[tuple[signal.Signals, ...]] = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _Stop:
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        self.event.set()


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the demo on ``host``:``port`` until SIGINT (Ctrl-C) or SIGTERM.

    Prints the URL to open on stdout. Must be called from the main thread (it installs
    signal handlers). On stop, closes every WebSocket with 1001 and waits for the closing
    handshakes (bounded by ``SHUTDOWN_TIMEOUT`` per connection).
    """
    with _Stop() as stop, DemoServer((host, port)) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="tube-demo-http")
        thread.start()
        print(f"Tube chat demo on {server.url} (Ctrl-C to stop)", flush=True)  # noqa: T201
        try:
            stop.event.wait()
        finally:
            server.shutdown()
            thread.join()
            if not server.room.close():
                logger.warning("some connections did not close in time")
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tube.demo``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tube.demo",
        description="Tube chat demo: open the printed URL in several browser tabs and chat.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: warning)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        serve(args.host, args.port)
    except OSError as error:
        # The server's error names the address ("cannot listen on 127.0.0.1:8080: ...").
        parser.exit(1, f"python -m tube.demo: {error}\n")
    return 0
