"""Tube: a WebSocket library (RFC 6455) for Python, standard library only.

The Go package's API in snake_case (README, "Go → Python"): :func:`create_connection`,
:func:`upgrade_connection`, :func:`is_connected`, :func:`is_closing`, :func:`send_blob_data`,
:func:`initiate_close`, :func:`wait_until_connected`, and the :class:`Connection` with its
``incoming`` channel;
:func:`upgrade_connection` takes an ``http.server`` handler or a WSGI environ (Flask, gunicorn),
and :func:`serve` runs a ready threaded server.
Everything public is listed in ``__all__``; other modules are internal. ``__version__`` is the
distribution's (``tube.__version__``).
"""

from __future__ import annotations

from .. import __version__ as __version__  # re-exported, not in __all__
from .core.codes import CloseCode, Opcode
from .core.deflate import DeflateOptions
from .core.errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    HandshakeRejected,
    InvalidHandshake,
    InvalidState,
    InvalidURI,
    MessageTooBig,
    OpenTimeout,
    ProtocolError,
    WebSocketError,
)
from .core.http import Request, Response
from .core.options import ConnectionOptions
from .integrations.http_server import WebSocketRequestHandler
from .integrations.server import Server, serve
from .integrations.shutdown import close_websockets, stop_on_signals
from .integrations.upgrade import upgrade_connection
from .integrations.wsgi import WebSocketResponse
from .memory import keep_freed_memory
from .threads.channel import Incoming
from .threads.client import connect
from .threads.connection import Connection
from .threads.functions import (
    create_connection,
    initiate_close,
    is_closing,
    is_connected,
    ping,
    send_blob_data,
    send_text,
    wait_until_connected,
)

__all__ = [
    "CloseCode",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionOptions",
    "DeflateOptions",
    "HandshakeError",
    "HandshakeRejected",
    "Incoming",
    "InvalidHandshake",
    "InvalidState",
    "InvalidURI",
    "MessageTooBig",
    "Opcode",
    "OpenTimeout",
    "ProtocolError",
    "Request",
    "Response",
    "Server",
    "WebSocketError",
    "WebSocketRequestHandler",
    "WebSocketResponse",
    "close_websockets",
    "connect",
    "create_connection",
    "initiate_close",
    "is_closing",
    "is_connected",
    "keep_freed_memory",
    "ping",
    "send_blob_data",
    "send_text",
    "serve",
    "stop_on_signals",
    "upgrade_connection",
    "wait_until_connected",
]
