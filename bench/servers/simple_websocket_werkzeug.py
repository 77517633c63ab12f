"""Echo server: simple-websocket on werkzeug's threaded WSGI server, the way Flask-Sock runs it.

A WSGI app builds ``simple_websocket.Server(environ)`` (which takes over the socket that werkzeug
exposes as ``environ["werkzeug.socket"]`` and reads it in a thread of its own), echoes until the
client closes, then raises ConnectionError so werkzeug drops the connection without writing an
HTTP response (Flask-Sock does the same on werkzeug).
"""

import logging

import simple_websocket
from _common import parse_args, ready
from werkzeug.serving import make_server


def make_app(max_message_size):
    def app(environ, start_response):
        ws = simple_websocket.Server(environ, max_message_size=max_message_size)
        try:
            while True:
                message = ws.receive()  # str for text, bytes for binary
                ws.send(message)
        except simple_websocket.ConnectionClosed:
            pass
        raise ConnectionError  # tells werkzeug the socket is gone, as Flask-Sock does

    return app


def main():
    args = parse_args(__doc__)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    server = make_server(args.host, args.port, make_app(args.max_message_size), threaded=True)
    ready(args.host, server.socket.getsockname()[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
