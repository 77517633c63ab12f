"""An echo server on Tube's threaded or asyncio transport, for the benchmarks (``bench/run.py``).

Run it with::

    python -m tube.websocket.echo --host 127.0.0.1 --port 8765 [--max-message-size BYTES]
        [--compression deflate|none]
    python -m tube.websocket.echo --transport asyncio ...   # tube.websocket.aio.serve instead

It serves every GET on :class:`http.server.ThreadingHTTPServer` with a
:class:`~tube.websocket.WebSocketRequestHandler`, upgrades it with
:func:`~tube.websocket.upgrade_connection` and sends every message back as it came: text as
text, binary as binary. Keepalive pings are off (a benchmark measures echoes, not timers) and
permessage-deflate is off unless ``--compression deflate`` (then the default options are
accepted when the client offers it). Once the socket listens, it writes one line,
``listening on HOST:PORT``, to standard output and flushes it: the benchmark runner waits for
that line, and ``--port 0`` lets the system pick a free port that the line then names. That
line is the only output; everything else goes through :mod:`logging` (logger
``tube.websocket.echo``, silent below WARNING unless ``--verbose``).

Threads: the HTTP server gives each connection a thread, which runs the echo loop (blocked in
``connection.incoming`` while the client is silent); the connection's own reader thread feeds
that channel, and is parked by the transport while the connection is idle. With
``--transport asyncio``: one event loop, one handler task per connection (:func:`echo_handler`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from typing import Any

from tube.websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketRequestHandler,
    aio,
    create_connection,
    upgrade_connection,
)

__all__ = ["EchoHandler", "EchoServer", "echo_handler", "main"]

logger = logging.getLogger("tube.websocket.echo")

#: The largest message echoed by default, in bytes (1 MiB, the library's default limit).
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class EchoServer(ThreadingHTTPServer):
    """A :class:`~http.server.ThreadingHTTPServer` whose every GET is an echoing WebSocket.

    Args:
        server_address: ``(host, port)`` to listen on; port 0 picks a free one.
        max_message_size: The largest message accepted (and so echoed), in bytes.
        compression: ``"deflate"`` to accept permessage-deflate offers, or None (default).

    Concurrency: :meth:`serve_forever` runs in one thread and starts one daemon thread per
    connection; :meth:`shutdown` may be called from another thread.
    """

    # http.server listens with a backlog of 5: a burst of clients connecting at once (the
    # benchmark opens 2,000) would see SYNs dropped and retried a second later. 128 is what
    # socket.listen() and werkzeug use.
    request_queue_size = 128
    # Connection threads must not keep the process alive once the server is asked to stop.
    daemon_threads = True

    def __init__(
        self,
        server_address: tuple[str, int],
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        compression: str | None = None,
    ) -> None:
        if not isinstance(max_message_size, int) or max_message_size <= 0:
            raise ValueError(f"max_message_size must be a positive int, got {max_message_size!r}")
        self.max_message_size = max_message_size
        self.compression = compression
        super().__init__(server_address, EchoHandler)


class EchoHandler(WebSocketRequestHandler):
    """Upgrades each GET to a WebSocket and echoes its messages until the client closes.

    Built on :class:`~tube.websocket.WebSocketRequestHandler` (deadlines on request heads), as
    an application serving untrusted clients would be. Must be served by an :class:`EchoServer`
    (it reads the message limit from it).
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Upgrade the request and echo every message back, text as text, binary as binary."""
        server = self.server
        if not isinstance(server, EchoServer):
            raise TypeError("EchoHandler must be served by an EchoServer")
        connection = create_connection(
            max_message_size=server.max_message_size,
            ping_interval=None,
            compression="deflate" if server.compression == "deflate" else None,
        )
        try:
            upgrade_connection(self, connection)
        except HandshakeError as error:
            # upgrade_connection already answered the client with the status and the reason.
            logger.info("refused an upgrade from %s: %s", self.client_address[0], error)
            return
        except OSError as error:
            # The client went away before the 101 response could be written.
            logger.info("lost %s during the upgrade: %s", self.client_address[0], error)
            return
        # Every message waiting is echoed with one write: under load, several arrive per read.
        # The loop ends when the connection is closed and drained (get_many raises), or when
        # the client went away while an echo was being sent: nothing left to echo to.
        with contextlib.suppress(ConnectionClosed):
            while True:
                connection.send_many(connection.incoming.get_many())

    def log_message(self, format: str, *args: Any) -> None:
        """Send http.server's per-request line to the logger (debug) instead of stderr."""
        logger.debug("%s - %s", self.address_string(), format % args)


async def echo_handler(connection: aio.Connection) -> None:
    """The asyncio echo: every batch of messages that waits is sent back with one write."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await connection.send_many(await connection.incoming.get_many())


async def _serve_asyncio(
    host: str, port: int, max_message_size: int, compression: str | None
) -> None:
    server = aio.serve(
        echo_handler,
        host,
        port,
        max_message_size=max_message_size,
        ping_interval=None,
        compression=compression,
    )
    async with server:
        _announce(server.sockets[0])
        await server.serve_forever()


def _announce(sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    # The documented readiness line (the runner waits for it): stdout, not logging.
    sys.stdout.write(f"listening on {host}:{port}\n")
    sys.stdout.flush()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tube.websocket.echo",
        description="WebSocket echo server on Tube's threaded or asyncio transport (benchmarks).",
    )
    parser.add_argument(
        "--transport",
        choices=("threads", "asyncio"),
        default="threads",
        help="threads: http.server + upgrade_connection (default); asyncio: tube.websocket.aio",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks one")
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help=f"largest message echoed, in bytes (default {DEFAULT_MAX_MESSAGE_SIZE})",
    )
    parser.add_argument(
        "--compression",
        choices=["deflate", "none"],
        default="none",
        help="accept permessage-deflate offers (default none)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level to stderr")
    args = parser.parse_args(argv)
    if args.max_message_size <= 0:
        parser.error("--max-message-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the echo server until interrupted.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after Ctrl-C.
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    compression = "deflate" if args.compression == "deflate" else None
    if args.transport == "asyncio":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_asyncio(args.host, args.port, args.max_message_size, compression))
        return 0
    with EchoServer(
        (args.host, args.port), max_message_size=args.max_message_size, compression=compression
    ) as server:
        _announce(server.socket)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logger.info("interrupted, stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
