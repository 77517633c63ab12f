"""Tube on asyncio: the same WebSocket connection semantics, for tens of thousands of connections.

::

    from tube.websocket import aio

    async def handler(connection: aio.Connection) -> None:
        async for message in connection.incoming:
            await connection.send(message)

    async with aio.serve(handler, "127.0.0.1", 8765) as server:
        await server.serve_forever()

The same options, defaults, limits, keepalive, close order and exceptions as the threaded
transport (:mod:`tube.websocket`); the Go package's functions are coroutines where they wait.
"""

from __future__ import annotations

from ..core.http import Request, Response
from ..core.options import ConnectionOptions
from .channel import Incoming, Message
from .client import connect
from .connection import Connection
from .functions import (
    initiate_close,
    is_closing,
    is_connected,
    send_blob_data,
    send_text,
    wait_until_connected,
)
from .server import Handler, ProcessRequest, Server, http_response, serve

__all__ = [
    "Connection",
    "ConnectionOptions",
    "Handler",
    "Incoming",
    "Message",
    "ProcessRequest",
    "Request",
    "Response",
    "Server",
    "connect",
    "http_response",
    "initiate_close",
    "is_closing",
    "is_connected",
    "send_blob_data",
    "send_text",
    "serve",
    "wait_until_connected",
]
