"""WebSocket routes for Flask, in the style of Flask-Sock: ``@sock.route("/ws")``.

Optional: this module imports Flask, which Tube never requires (``pip install
'tube-websocket[flask]'``); ``import tube.websocket`` does not import it. ::

    from flask import Flask
    from tube.websocket.integrations.flask import Sock

    app = Flask(__name__)
    sock = Sock(app, max_message_size=64 * 1024)

    @sock.route("/ws")
    def echo(connection):
        for message in connection.incoming:
            connection.send(message)

The view receives the upgraded :class:`~tube.websocket.Connection` (plus the rule's variables as
keyword arguments) and serves it on the request's thread; when it returns, the connection is
closed with 1000 if it is still open. A view that raises is logged like any Flask view error
and the connection is closed with 1011 (no detail for the peer). A refused handshake (for
example 403 for a browser page of another origin) is answered with its status and a plain-text
reason, without calling the view. Run it with ``flask --app module run`` (werkzeug, threaded)
or ``gunicorn -k gthread --threads 100 module:app``; see :mod:`tube.websocket.integrations.wsgi`.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import flask

from ..core.errors import ConnectionClosed, HandshakeError
from ..core.options import ConnectionOptions
from ..threads.connection import Connection
from . import shutdown
from .wsgi import upgrade_connection

__all__ = ["Sock", "WebSocketView"]

logger = logging.getLogger("tube.websocket")

#: A WebSocket view: called with the connection and the rule's variables.
WebSocketView = Callable[..., object]


class Sock:
    """Adds WebSocket routes to a Flask application (or to blueprints).

    Args:
        app: The application; or call :meth:`init_app` later (routes declared before are
            registered then).
        **connection_options: Options of every connection (those of
            :func:`~tube.websocket.create_connection`), validated at once.

    Raises:
        ValueError, TypeError: An invalid connection option.
    """

    def __init__(self, app: flask.Flask | None = None, **connection_options: Any) -> None:
        self.options = ConnectionOptions.from_kwargs(**connection_options)
        self.app: flask.Flask | None = None
        self._pending: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Bind to ``app`` and register the routes declared so far.

        In the main thread, when SIGTERM still has its default action (which kills the process
        without running any Python code: werkzeug's server, ``flask run``, has no handler of
        its own), it is made to exit as ``sys.exit(0)`` does, so that the WebSockets are closed
        with 1001 on the way out, as at Ctrl-C. gunicorn's workers have their own handler,
        which is left alone.
        """
        self.app = app
        shutdown.exit_on_sigterm()
        for rule, endpoint, route_options in self._pending:
            app.route(rule, **route_options)(endpoint)
        self._pending.clear()

    def route(
        self, rule: str, *, bp: flask.Blueprint | None = None, **route_options: Any
    ) -> Callable[[WebSocketView], WebSocketView]:
        """Decorator: serve WebSocket upgrades on ``rule`` with the decorated view.

        Args:
            rule: The URL rule, as for ``app.route`` (variables are passed to the view).
            bp: Register on this blueprint instead of the application.
            **route_options: More options for ``app.route`` (``endpoint``, ...). The rule is
                declared with ``websocket=True`` (werkzeug routes upgrade requests only to
                such rules) and ``methods=["GET"]``.

        Returns:
            The decorator; it returns the view unchanged.
        """
        route_options = {"websocket": True, "methods": ["GET"], **route_options}

        def decorator(view: WebSocketView) -> WebSocketView:
            @functools.wraps(view)
            def endpoint(**values: Any) -> Any:
                return self._serve(view, values)

            if bp is not None:
                bp.route(rule, **route_options)(endpoint)
            elif self.app is not None:
                self.app.route(rule, **route_options)(endpoint)
            else:
                self._pending.append((rule, endpoint, route_options))
            return view

        return decorator

    def _serve(self, view: WebSocketView, values: dict[str, Any]) -> Any:
        """Upgrade the current request and run ``view`` on it (the Flask endpoint)."""
        connection = Connection(self.options)
        try:
            response = upgrade_connection(flask.request.environ, None, connection)
        except HandshakeError as error:
            assert error.status is not None
            return error.reason, error.status, error.headers
        try:
            view(connection, **values)
        except ConnectionClosed:
            pass  # the peer went away while the view was sending: nothing left to serve
        except Exception:
            # As Flask does for any view (app.logger, "Exception on /ws [GET]"); the peer gets
            # 1011 and no detail (RFC 6455 §7.4.1: an unexpected condition on the server).
            flask.current_app.log_exception(sys.exc_info())
            try:
                connection.close(1011, wait=False)
            except Exception:
                logger.exception("error while closing a WebSocket after its view failed")
        return response
