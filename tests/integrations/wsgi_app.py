"""The applications tests/integrations/test_wsgi.py runs under werkzeug and gunicorn (as
subprocesses).

* ``app``: a Flask application.
  - ``/echo`` (``Sock``): echoes every message; ``"close CODE REASON"`` makes the server close
    with that code; ``"flood COUNT SIZE"`` sends COUNT binary messages of SIZE bytes (byte i of
    message n is ``(n + i) % 251``) before echoing again. With ``?id=KEY`` the close code and
    reason the server saw are kept under KEY, served by ``/closed/KEY``.
  - ``/raw``: the same echo written by hand with ``upgrade_connection(request.environ, None,
    connection)`` in a plain view, as the README shows it.
  - ``/deflate``: the echo with permessage-deflate accepted.
  - ``/boom``: a view that raises after the upgrade (the peer gets 1011).
  - ``/``: a small page for the browser test; ``/health``: plain HTTP.
* ``raw_app``: a WSGI application without Flask, echoing on every path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from flask import Flask, request

from tube.websocket import (
    Connection,
    HandshakeError,
    create_connection,
    initiate_close,
    upgrade_connection,
)
from tube.websocket.integrations.flask import Sock

app = Flask(__name__)
sock = Sock(app, max_message_size=16 * 1024 * 1024)
deflate_sock = Sock(app, compression="deflate")

_closed: dict[str, tuple[int | None, str]] = {}
_closed_changed = threading.Condition()


def flood_payload(number: int, size: int) -> bytes:
    """Message ``number`` of a flood: deterministic, different for every message."""
    pattern = bytes((number + i) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


def serve_echo(connection: Connection) -> None:
    """Echo messages, obeying the ``close`` and ``flood`` commands."""
    for message in connection.incoming:
        if isinstance(message, str) and message.startswith("close "):
            code, _, reason = message[6:].partition(" ")
            initiate_close(connection, int(code), reason)
        elif isinstance(message, str) and message.startswith("flood "):
            count, size = (int(part) for part in message.split()[1:3])
            for number in range(count):
                connection.send(flood_payload(number, size))
        else:
            connection.send(message)


@sock.route("/echo")
def echo(connection: Connection) -> None:
    serve_echo(connection)
    key = request.args.get("id")
    if key:
        with _closed_changed:
            _closed[key] = (connection.close_code, connection.close_reason)
            _closed_changed.notify_all()


@deflate_sock.route("/deflate")
def deflate_echo(connection: Connection) -> None:
    serve_echo(connection)


@app.route("/raw", websocket=True)
def raw() -> Any:
    connection = create_connection()
    try:
        response = upgrade_connection(request.environ, None, connection)
    except HandshakeError as error:
        return error.reason, error.status, error.headers
    with connection:
        serve_echo(connection)
    return response


@sock.route("/boom")
def boom(connection: Connection) -> None:
    connection.incoming.get(timeout=10)
    raise RuntimeError("the view failed on purpose")


@app.route("/closed/<key>")
def closed(key: str) -> Any:
    # Waits (bounded) for the view of that connection to record how it ended.
    with _closed_changed:
        if not _closed_changed.wait_for(lambda: key in _closed, timeout=10):
            return "unknown\n", 404
        code, reason = _closed[key]
    return {"code": code, "reason": reason}


@app.route("/health")
def health() -> str:
    return "ok\n"


PAGE = """<!doctype html><meta charset="utf-8"><title>tube flask test</title>
<p id="status">loading</p>"""


@app.route("/")
def page() -> str:
    return PAGE


def raw_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A WSGI application without any framework: an echo WebSocket on every path."""
    connection = create_connection()
    try:
        response = upgrade_connection(environ, start_response, connection)
    except HandshakeError as error:
        start_response(
            f"{error.status} {error.status_phrase}",
            [*error.headers, ("Content-Type", "text/plain; charset=utf-8")],
        )
        return [error.reason.encode()]
    with connection:
        serve_echo(connection)
    return response
