"""Large messages read in place on threads (issue 25): the reader (a reader thread, or the
application thread waiting on ``incoming``) reads a large binary frame's payload straight into
the bytes the application receives (Protocol.receive_buffer).

Both ends are Tube's threaded connections (serve() and connect()), so both read that way:
messages of many sizes around the 64 KiB threshold, with small ones and text between them,
over TCP and TLS, arrive intact and in order, and the in-place path is taken (counted)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

from tests.conftest import LARGE_SIZES
from tube.websocket import Connection, Server, connect

LIMIT = 4 << 20


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def exchange(url: str, client_context: ssl.SSLContext | None) -> None:
    messages: list[bytes | str] = []
    for size in LARGE_SIZES:
        messages.append(os.urandom(size))
        messages.append("between")
    with connect(url, ssl=client_context, max_message_size=LIMIT) as client:
        # One at a time, then all at once: a read may hold the end of one large message and
        # the start of the next.
        for message in messages[:4]:
            client.send(message)
            assert client.incoming.get(timeout=10) == message
        client.send_many(messages)
        for message in messages:
            got = client.incoming.get(timeout=10)
            assert type(got) is type(message)
            assert got == message


def test_large_messages_over_tcp(running: Callable[..., Server], in_place_reads: list[int]) -> None:
    server = running(echo, max_message_size=LIMIT)
    exchange(f"ws://127.0.0.1:{server.port}/", None)
    assert in_place_reads[0] > 0


def test_large_messages_over_tls(
    running: Callable[..., Server],
    in_place_reads: list[int],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts
    server = running(echo, ssl=server_context, max_message_size=LIMIT)
    exchange(f"wss://localhost:{server.port}/", client_context)
    assert in_place_reads[0] > 0
