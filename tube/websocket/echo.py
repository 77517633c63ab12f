"""An echo server on Tube's threaded or asyncio transport, for the benchmarks (``bench/run.py``).

Run it with::

    python -m tube.websocket.echo --host 127.0.0.1 --port 8765 [--max-message-size BYTES]
        [--compression deflate|none]
    python -m tube.websocket.echo --transport asyncio ...   # tube.websocket.aio.serve instead

It serves every GET with the server of :func:`~tube.websocket.serve` (request head deadlines,
graceful shutdown, back-off at the descriptor limit), which upgrades it, and sends every
message back as it came: text as
text, binary as binary. Keepalive pings are off (a benchmark measures echoes, not timers) and
permessage-deflate is off unless ``--compression deflate`` (then the default options are
accepted when the client offers it). Once the socket listens, it writes one line,
``listening on HOST:PORT``, to standard output and flushes it: the benchmark runner waits for
that line, and ``--port 0`` lets the system pick a free port that the line then names. That
line is the only output; everything else goes through :mod:`logging` (logger
``tube.websocket.echo``, silent below WARNING unless ``--verbose``).

Threads: the server gives each connection a thread, which runs the echo loop (blocked in
``connection.incoming`` while the client is silent); waiting there, that thread reads the
socket itself, so an echo needs no other thread. With
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

from tube.websocket import Connection, ConnectionClosed, Server, aio, keep_freed_memory

__all__ = ["EchoServer", "echo", "echo_each", "echo_handler", "main"]

logger = logging.getLogger("tube.websocket.echo")

#: The largest message echoed by default, in bytes (1 MiB, the library's default limit).
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class EchoServer(Server):
    """A :func:`~tube.websocket.serve` server whose every GET is an echoing WebSocket.

    Args:
        server_address: ``(host, port)`` to listen on; port 0 picks a free one.
        max_message_size: The largest message accepted (and so echoed), in bytes.
        compression: ``"deflate"`` to accept permessage-deflate offers, or None (default).
        per_message: Echo message by message (``for message in incoming: send(message)``)
            instead of batch by batch (``send_many(incoming.get_many())``).

    Concurrency: :meth:`serve_forever` runs in one thread and starts one daemon thread per
    connection; :meth:`shutdown` may be called from another thread.
    """

    def __init__(
        self,
        server_address: tuple[str, int],
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        compression: str | None = None,
        per_message: bool = False,
    ) -> None:
        if not isinstance(max_message_size, int) or max_message_size <= 0:
            raise ValueError(f"max_message_size must be a positive int, got {max_message_size!r}")
        self.max_message_size = max_message_size
        self.compression = compression
        host, port = server_address
        super().__init__(
            echo_each if per_message else echo,
            host,
            port,
            max_message_size=max_message_size,
            ping_interval=None,
            compression="deflate" if compression == "deflate" else None,
        )


def echo_each(connection: Connection) -> None:
    """Echo message by message with the Go package's per-message API (``--api message``)."""
    with contextlib.suppress(ConnectionClosed):
        for message in connection.incoming:
            connection.send(message)


def echo(connection: Connection) -> None:
    """Echo every message back, text as text, binary as binary, until the client closes."""
    # Every message waiting is echoed with one write: under load, several arrive per read.
    # The loop ends when the connection is closed and drained (get_many raises), or when
    # the client went away while an echo was being sent: nothing left to echo to.
    with contextlib.suppress(ConnectionClosed):
        while True:
            connection.send_many(connection.incoming.get_many())


async def echo_handler(connection: aio.Connection) -> None:
    """The asyncio echo: every batch of messages that waits is sent back with one write."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await connection.send_many(await connection.incoming.get_many())


async def echo_each_handler(connection: aio.Connection) -> None:
    """The asyncio echo message by message: the task-per-connection API (``--api message``)."""
    with contextlib.suppress(ConnectionClosed):
        async for message in connection.incoming:
            await connection.send(message)


async def echo_callback_handler(connection: aio.Connection) -> None:
    """The asyncio echo inside the read callback (``--api callback``): ``on_message`` with
    ``send_nowait``, no task switch per message."""
    connection.on_message(connection.send_nowait)
    await connection.wait_closed()


_ASYNCIO_HANDLERS = {
    "batch": echo_handler,
    "message": echo_each_handler,
    "callback": echo_callback_handler,
}


async def _serve_asyncio(
    host: str, port: int, max_message_size: int, compression: str | None, api: str
) -> None:
    server = aio.serve(
        _ASYNCIO_HANDLERS[api],
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
        help="threads: tube.websocket.serve (default); asyncio: tube.websocket.aio.serve",
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
    parser.add_argument(
        "--api",
        choices=("batch", "message", "callback"),
        default="batch",
        help="echo batch by batch (get_many/send_many, default), message by message "
        "(for/async for message in incoming: send), or, on asyncio, inside the read callback "
        "(on_message with send_nowait)",
    )
    parser.add_argument(
        "--allocator",
        choices=("keep", "default"),
        default="keep",
        help="keep: keep freed memory for the next large message "
        "(tube.websocket.keep_freed_memory, the default); default: glibc's own settings",
    )
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level to stderr")
    args = parser.parse_args(argv)
    if args.api == "callback" and args.transport != "asyncio":
        parser.error("--api callback is asyncio's (on_message); threads read on the app's thread")
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
    if args.allocator == "keep":
        keep_freed_memory()
    compression = "deflate" if args.compression == "deflate" else None
    if args.transport == "asyncio":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                _serve_asyncio(
                    args.host,
                    args.port,
                    args.max_message_size,
                    compression,
                    args.api,
                )
            )
        return 0
    with EchoServer(
        (args.host, args.port),
        max_message_size=args.max_message_size,
        compression=compression,
        per_message=args.api == "message",
    ) as server:
        _announce(server.socket)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logger.info("interrupted, stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
