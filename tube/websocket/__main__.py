"""Command-line WebSocket client: ``python -m tube.websocket URL``.

Each line read from standard input is sent as a text message (without its line break); each
message received is printed on standard output, text as it is and binary as a hex summary such as
``<binary 5 bytes: 68656c6c6f>``. At the end of standard input the client first waits for the
replies still in flight: it keeps printing until no message has arrived for ``--linger`` seconds
(1 by default), because many servers stop sending as soon as they receive a close frame (RFC 6455
§5.5.1), so closing at once would lose them. Tube's own servers answer the messages received
before a close frame first: against them ``--linger 0`` loses nothing. Then it runs the closing
handshake (code 1000) and prints every message that arrives before the server's close frame.
When the server closes first, the client stops without waiting for more input. The close code
and reason are printed on standard error.

Exit status: 0 after a normal close (1000, 1001, or a close frame without a code), 1 after any
other close, a failed handshake or a connection error (with the reason on standard error), 2 for
invalid command-line arguments.

``python -m tube.websocket --version`` prints the version and which implementation of the core's
hot loops is in use: ``c`` (the optional C accelerator) or ``python``.

Threads: the main thread prints the received messages, so the program ends as soon as the
connection does, even while standard input is a terminal nobody types in. A daemon thread reads
standard input (with ``os.read`` on the raw descriptor, so no buffered-file lock is held when the
interpreter exits) and sends.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import math
import os
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import __version__
from .core.codes import CloseCode
from .core.errors import ConnectionClosed, HandshakeError, InvalidURI, OpenTimeout
from .core.masking import IMPLEMENTATION
from .threads.client import connect
from .threads.connection import Connection

# Close codes that count as a normal end of the session.
_NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})

# How many bytes of a binary message the hex summary shows.
_HEX_PREVIEW = 32


def describe_binary(data: bytes) -> str:
    """Summarise a binary message: ``<binary 5 bytes: 68656c6c6f>`` (long ones are cut)."""
    preview = data[:_HEX_PREVIEW].hex()
    more = "..." if len(data) > _HEX_PREVIEW else ""
    unit = "byte" if len(data) == 1 else "bytes"
    return f"<binary {len(data)} {unit}: {preview}{more}>"


def describe_close(code: int, reason: str) -> str:
    """``closed: 1000 (NORMAL_CLOSURE) 'bye'``: the code, its name when registered, the reason."""
    try:
        name = f" ({CloseCode(code).name})"
    except ValueError:
        name = ""
    text = f"closed: {code}{name}"
    return f"{text} {reason!r}" if reason else text


def _out(line: str) -> None:
    """Write one line on standard output, at once (the reader may be another program)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    """Write one line on standard error, at once."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def version_line() -> str:
    """``tube 0.1.0 (implementation: c)``: the installed version and the core's implementation."""
    # The package's own version: right in a checkout and in any install, whatever the
    # distribution's name (tube-websocket).
    return f"tube {__version__} (implementation: {IMPLEMENTATION})"


class _Arrivals:
    """When the last message arrived: the main thread records it, the input thread waits on it.

    At the end of input the sender waits for a quiet period before it sends the close frame, so
    that the replies to the last lines are not cut off by the close (a server stops sending once
    it has received a close frame).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._last = time.monotonic()
        self._ended = False

    def arrived(self) -> None:
        """A message arrived (main thread)."""
        with self._changed:
            self._last = time.monotonic()
            self._changed.notify_all()

    def ended(self) -> None:
        """No message will arrive any more: the connection ended (main thread)."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_quiet(self, seconds: float) -> None:
        """Return once no message arrived for ``seconds`` (counted from now at the earliest)."""
        with self._changed:
            start = time.monotonic()
            while not self._ended:
                left = max(self._last, start) + seconds - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tube.websocket",
        description=(
            "Connect to a WebSocket server, send each line of standard input as a text message "
            "and print every message received."
        ),
    )
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument(
        "--version",
        action="version",
        version=version_line(),
        help="print the version and the implementation in use (c or python), then exit",
    )
    parser.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="offer this subprotocol (repeat to offer several, in order of preference)",
    )
    parser.add_argument("--origin", help="send this Origin header")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send an extra request header (repeatable)",
    )
    parser.add_argument(
        "--cafile", help="trust the CA certificates in this PEM file (for wss:// test servers)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="wss:// without verifying the server's certificate (testing only)",
    )
    parser.add_argument(
        "--open-timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for connecting and the opening handshake (default: 10)",
    )
    parser.add_argument(
        "--follow-redirects", action="store_true", help="follow HTTP redirects (at most 10)"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help=(
            "at the end of input, keep printing until no message arrived for this long, then "
            "close (default: 1; 0 closes at once, which loses no reply from a Tube server)"
        ),
    )
    parser.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=None,
        metavar="BYTES",
        help="largest message accepted (default: the library's, 1 MiB)",
    )
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    """An argument that must be a positive int: argparse reports anything else (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    """An argument that must be a positive number of seconds (exit 2 otherwise)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _ssl_context(arguments: argparse.Namespace) -> ssl.SSLContext | None:
    if not arguments.url.lower().startswith("wss:"):
        return None
    context = ssl.create_default_context(cafile=arguments.cafile)
    if arguments.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _headers(arguments: argparse.Namespace) -> list[tuple[str, str]]:
    headers = []
    for line in arguments.header:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"expected --header 'Name: value', got {line!r}")
        headers.append((name.strip(), value.strip()))
    return headers


def _send_stdin(connection: Connection, fd: int, arrivals: _Arrivals, linger: float) -> None:
    """Send each line of ``fd`` as a text message; at its end, wait for quiet and close (1000)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    try:
        while True:
            chunk = os.read(fd, 65536)
            text = decoder.decode(chunk, final=not chunk)
            pending += text
            *lines, pending = pending.split("\n")
            for line in lines:
                connection.send(line.removesuffix("\r"))
            if not chunk:
                break
        if pending:
            connection.send(pending.removesuffix("\r"))
        if linger > 0:
            arrivals.wait_quiet(linger)
        connection.close(1000)
    except ConnectionClosed:
        pass  # the server closed first; the main thread reports it
    except OSError as exc:
        _err(f"error: cannot read standard input: {exc}")
        with contextlib.suppress(ConnectionClosed):
            connection.close(1001, "input error")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command-line client; return the exit status."""
    arguments = _parse_arguments(argv)
    if not arguments.linger >= 0:
        _err(f"error: --linger must be 0 or more seconds, got {arguments.linger}")
        return 2
    # A message may hold characters the terminal's encoding lacks: show them escaped rather
    # than dying on UnicodeEncodeError in the middle of a session.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    options: dict[str, Any] = {}  # Any: **options could otherwise fill a typed parameter
    if arguments.max_message_size is not None:
        options["max_message_size"] = arguments.max_message_size
    try:
        connection = connect(
            arguments.url,
            subprotocols=arguments.subprotocol or None,
            origin=arguments.origin,
            headers=_headers(arguments),
            ssl=_ssl_context(arguments),
            open_timeout=arguments.open_timeout,
            follow_redirects=arguments.follow_redirects,
            compression="deflate",
            **options,
        )
    except HandshakeError as exc:
        _err(f"error: handshake failed: {exc}")
        return 1
    except OpenTimeout as exc:
        _err(f"error: {exc}")
        return 1
    except OSError as exc:
        # DNS failures, refused connections, TLS errors: the message without "[Errno N]".
        text = exc.strerror if isinstance(exc.strerror, str) and exc.strerror else str(exc)
        _err(f"error: {text}")
        return 1
    except (InvalidURI, ValueError) as exc:
        _err(f"error: {exc}")
        return 1
    if connection.subprotocol:
        _err(f"connected, subprotocol {connection.subprotocol}")

    arrivals = _Arrivals()
    sender = threading.Thread(
        target=_send_stdin,
        args=(connection, sys.stdin.fileno(), arrivals, arguments.linger),
        name="tube-stdin",
        daemon=True,
    )
    sender.start()
    try:
        for message in connection.incoming:
            if isinstance(message, str):
                _out(message)
            else:
                _out(describe_binary(bytes(message)))
            arrivals.arrived()
    except KeyboardInterrupt:
        connection.close(1001, "interrupted")
    finally:
        arrivals.ended()
        # The incoming channel ends once the connection is closed; wait for the TCP close too.
        connection.close()
    code = connection.close_code if connection.close_code is not None else 1006
    reason = connection.close_reason
    _err(describe_close(code, reason))
    return 0 if code in _NORMAL_CLOSE_CODES else 1


if __name__ == "__main__":
    sys.exit(main())
