"""What a new user reads when something goes wrong (issue 23): errors that say what happened.

- ``wss://`` to a server that does not speak TLS says so (both transports), where OpenSSL
  alone says ``WRONG_VERSION_NUMBER``;
- a plain HTTP server's refusal shows its status line and a short excerpt, not its HTML;
- a server on a port in use names the address (both transports);
- the command-line client refuses a bad ``--max-message-size`` as a bad argument (exit 2);
- ``tube.websocket.__version__`` exists.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import tube
import tube.websocket
from tube.websocket import HandshakeRejected, Server, aio, connect, serve
from tube.websocket.core.errors import EXCERPT_LENGTH, body_excerpt

TIMEOUT = 10.0
PAGE = (
    b"<!DOCTYPE HTML>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
    b"<title>Directory listing for /</title>\n</head>\n<body>\n<h1>Directory listing</h1>\n"
    + b"<li><a href='file.txt'>file.txt</a></li>\n" * 50
    + b"</body>\n</html>\n"
)


class PageHandler(BaseHTTPRequestHandler):
    """A plain HTTP server's page, whatever the request (no WebSocket here)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def plain_http() -> Iterator[int]:
    """The port of a plain HTTP server on 127.0.0.1."""
    import threading

    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


# ------------------------------------------------------------------- wss:// to plain


def test_wss_to_a_plain_server_says_it_does_not_speak_tls(
    running: Callable[..., Server],
) -> None:
    server = running(lambda connection: None)
    where = f"127.0.0.1:{server.port}"
    with pytest.raises(ssl.SSLError, match=f"server at {where} does not speak TLS") as raised:
        connect(f"wss://{where}/", ssl=ssl.create_default_context(), open_timeout=TIMEOUT)
    assert raised.value.reason == "WRONG_VERSION_NUMBER"  # still OpenSSL's reason


def test_aio_wss_to_a_plain_server_says_it_does_not_speak_tls(plain_http: int) -> None:
    where = f"127.0.0.1:{plain_http}"

    async def main() -> None:
        with pytest.raises(ssl.SSLError, match=f"server at {where} does not speak TLS"):
            await aio.connect(f"wss://{where}/", open_timeout=TIMEOUT)

    asyncio.run(main())


# ------------------------------------------------------------- a plain HTTP refusal


def test_a_plain_http_refusal_shows_its_status_and_a_short_excerpt(plain_http: int) -> None:
    with pytest.raises(HandshakeRejected) as raised:
        connect(f"ws://127.0.0.1:{plain_http}/", open_timeout=TIMEOUT)
    text = str(raised.value)
    assert text == "200 OK: the server refused the WebSocket upgrade (Directory listing for /)"
    assert raised.value.body.startswith(b"<!DOCTYPE HTML>")  # the body itself is kept


def test_body_excerpt() -> None:
    assert body_excerpt(PAGE) == "Directory listing for /"
    # HTML without a title: its text, tags dropped, white space collapsed, cut short.
    untitled = b"<html><body>\n<h1>Not   here</h1>\n" + b"<p>word</p>" * 100 + b"</body></html>"
    excerpt = body_excerpt(untitled)
    assert excerpt.startswith("Not here word word")
    assert len(excerpt) == EXCERPT_LENGTH and excerpt.endswith("...")
    assert "<" not in excerpt and "\n" not in excerpt
    assert body_excerpt(b"plain text\nsecond line") == "plain text second line"


# ------------------------------------------------------------------- port in use


@pytest.fixture
def port_in_use() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def test_serve_on_a_port_in_use_names_the_address(port_in_use: int) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port_in_use}: ") as raised:
        serve(lambda connection: None, "127.0.0.1", port_in_use)
    assert raised.value.errno == 98 or "in use" in str(raised.value)


def test_aio_serve_on_a_port_in_use_names_the_address(port_in_use: int) -> None:
    async def main() -> None:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port_in_use}: "):
            await aio.serve(lambda connection: asyncio.sleep(0), "127.0.0.1", port_in_use)

    asyncio.run(main())


# --------------------------------------------------------------- command line, version


@pytest.mark.parametrize(
    "arguments",
    [["--max-message-size", "-1"], ["--max-message-size", "64k"], ["--open-timeout", "0"]],
)
def test_the_cli_refuses_bad_arguments_with_exit_2(arguments: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tube.websocket", *arguments, "ws://127.0.0.1:1/"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert f"argument {arguments[0]}: expected a positive number" in result.stderr
    assert "None" not in result.stderr  # the library's "or None" is no choice on the CLI


def test_tube_websocket_has_the_version() -> None:
    assert tube.websocket.__version__ == tube.__version__
    assert "__version__" not in tube.websocket.__all__
