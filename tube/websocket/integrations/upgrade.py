"""The public ``upgrade_connection``: one name for both host servers it upgrades requests of.

``upgrade_connection(handler, connection)`` upgrades a request of the standard library's
``http.server`` (:mod:`.http_server`); ``upgrade_connection(environ, start_response,
connection)`` a WSGI request, from werkzeug's server (Flask) or gunicorn (:mod:`.wsgi`). The
first argument decides: a ``BaseHTTPRequestHandler``, or a WSGI environ (a mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, overload

from ..threads.connection import Connection
from . import http_server, wsgi

__all__ = ["upgrade_connection"]


@overload
def upgrade_connection(handler: BaseHTTPRequestHandler, connection: Connection, /) -> None: ...


@overload
def upgrade_connection(
    environ: Mapping[str, Any],
    start_response: wsgi.StartResponse | None,
    connection: Connection,
    /,
) -> wsgi.WebSocketResponse: ...


def upgrade_connection(*args: Any) -> wsgi.WebSocketResponse | None:
    """Answer a WebSocket opening handshake and hand the connection over to ``connection``.

    The Go package's ``UpgradeConnection``, for two kinds of host server:

    * ``upgrade_connection(handler, connection)`` from an ``http.server`` request handler's
      ``do_GET``: returns None once the connection is attached; the handler may return at once
      (the connection's own thread serves it). See
      :func:`tube.websocket.integrations.http_server.upgrade_connection`.
    * ``upgrade_connection(environ, start_response, connection)`` from a WSGI application or a
      Flask view (``start_response`` may be None): returns a
      :class:`~tube.websocket.integrations.wsgi.WebSocketResponse`; serve the WebSocket on the
      calling thread, then return that response. See
      :func:`tube.websocket.integrations.wsgi.upgrade_connection`.

    Raises:
        HandshakeError: The handshake was refused. With ``http.server`` the client has already
            been answered; with WSGI nothing was written: answer with the error's ``status``,
            ``headers`` and ``reason``.
        InvalidState: ``connection`` was already used.
        OSError: The socket failed while writing the 101 response.
        TypeError: The arguments match neither form.
    """
    if len(args) == 2 and isinstance(args[0], BaseHTTPRequestHandler):
        handler, connection = args
        _check_connection(connection)
        http_server.upgrade_connection(handler, connection)
        return None
    if len(args) == 3 and isinstance(args[0], Mapping):
        environ, start_response, connection = args
        if start_response is not None and not callable(start_response):
            raise TypeError(f"start_response must be callable or None, got {start_response!r}")
        _check_connection(connection)
        return wsgi.upgrade_connection(environ, start_response, connection)
    kinds = ", ".join(type(arg).__name__ for arg in args)
    raise TypeError(
        "expected upgrade_connection(handler, connection) with an http.server request handler, "
        f"or upgrade_connection(environ, start_response, connection) with a WSGI environ; got "
        f"({kinds})"
    )


def _check_connection(connection: object) -> None:
    if not isinstance(connection, Connection):
        raise TypeError(
            f"expected a Connection from create_connection(), got {type(connection).__name__}"
        )
