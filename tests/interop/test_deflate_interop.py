"""Interop with permessage-deflate on (RFC 7692): the Python ``websockets`` library and Node's
``ws`` in both roles, and headless Chromium (which always offers it) against Tube's server.

Each exchange sends text and binary messages, small and 1 MiB (compressible and random), with
and without context takeover, and checks that the extension was really negotiated.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tube.websocket import (
    Connection,
    ConnectionClosed,
    DeflateOptions,
    HandshakeError,
    connect,
    create_connection,
    upgrade_connection,
)

from .conftest import NodeWs

pytestmark = pytest.mark.interop

TIMEOUT = 20.0
MIB = 1024 * 1024
# The server's options: takeover on (the defaults), or off in both directions.
TAKEOVER = {
    "takeover": DeflateOptions(),
    "no-takeover": DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
}


def messages() -> list[str | bytes]:
    """Small and 1 MiB messages, text and binary, compressible and not."""
    words = "the quick brown fox jumps over the lazy dog ✓ "
    return [
        "hello",
        b"\x01\x02\x03",
        "a message long enough to be compressed by default: " + words * 4,
        words * (MIB // len(words.encode())),
        os.urandom(MIB),
        bytes(MIB),
        os.urandom(200).hex(),
        words * 3,  # with takeover, this one refers back to earlier messages
    ]


def deflate_of(connection: Connection) -> Any:
    protocol = connection._protocol
    assert protocol is not None
    return protocol._deflate


# ---------------------------------------------------------------- a Tube echo server


class TubeServer:
    """Tube's echo server on ``http.server``; GET without Upgrade serves an empty HTML page."""

    def __init__(self, compression: DeflateOptions) -> None:
        self.connections: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if "upgrade" not in self.headers.get("Connection", "").lower():
                    body = b"<!doctype html><title>tube</title>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                connection = create_connection(
                    compression=compression, max_message_size=4 * MIB, ping_interval=None
                )
                try:
                    upgrade_connection(self, connection)
                except HandshakeError as error:
                    owner.errors.append(error)
                    return
                owner.connections.put(connection)
                try:
                    for message in connection.incoming:
                        connection.send(message)
                except ConnectionClosed:
                    pass
                except BaseException as error:
                    owner.errors.append(error)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="tube-deflate-server"
        )
        self.thread.start()

    def next_connection(self) -> Connection:
        return self.connections.get(timeout=TIMEOUT)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join()
        self.httpd.server_close()
        while not self.connections.empty():
            connection = self.connections.get()
            with contextlib.suppress(ConnectionClosed):
                connection.close(1001)
        if self.errors:
            raise self.errors[0]


@pytest.fixture(params=sorted(TAKEOVER))
def tube_server(request: pytest.FixtureRequest) -> Iterator[TubeServer]:
    server = TubeServer(TAKEOVER[request.param])
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- websockets


def test_websockets_client_against_tube_server(
    websockets_client: Any, tube_server: TubeServer
) -> None:
    with websockets_client.connect(
        f"ws://127.0.0.1:{tube_server.port}/",
        max_size=None,
        open_timeout=TIMEOUT,
        proxy=None,
        ping_interval=None,
    ) as ws:
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer.startswith("permessage-deflate")
        assert ws.protocol.extensions, "websockets did not activate the extension"
        assert deflate_of(tube_server.next_connection()) is not None
        for message in messages():
            ws.send(message)
            assert ws.recv(timeout=TIMEOUT) == message


@pytest.fixture(params=sorted(TAKEOVER))
def websockets_deflate_server(
    request: pytest.FixtureRequest, websockets_client: Any
) -> Iterator[str]:
    """A websockets echo server that accepts permessage-deflate, with or without takeover."""
    # websockets_client: present so that a missing websockets fails loudly under CI=true.
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
    from websockets.sync.server import ServerConnection, serve

    no_takeover = request.param == "no-takeover"
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=no_takeover,
        client_no_context_takeover=no_takeover,
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )

    def echo(ws: ServerConnection) -> None:
        assert ws.protocol.extensions, "the websockets server did not accept the offer"
        with contextlib.suppress(Exception):
            for message in ws:
                ws.send(message)

    with serve(
        echo,
        "127.0.0.1",
        0,
        compression=None,
        extensions=[factory],
        max_size=None,
        ping_interval=None,
    ) as server:
        thread = threading.Thread(target=server.serve_forever, name="websockets-deflate")
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


@pytest.mark.parametrize("client_options", ["deflate", "no-takeover"])
def test_tube_client_against_websockets_server(
    websockets_deflate_server: str, client_options: str
) -> None:
    compression = "deflate" if client_options == "deflate" else TAKEOVER["no-takeover"]
    with connect(
        websockets_deflate_server,
        compression=compression,  # type: ignore[arg-type]
        max_message_size=4 * MIB,
        open_timeout=TIMEOUT,
        ping_interval=None,
    ) as client:
        assert deflate_of(client) is not None
        for message in messages():
            client.send(message)
            assert client.incoming.get(timeout=TIMEOUT) == message


# ---------------------------------------------------------------- Node ws

NODE_SIZES = "0,125,1048576"


@pytest.mark.parametrize("mode", ["on", "no-takeover"])
def test_node_client_against_tube_server(
    node_ws: NodeWs, tube_server: TubeServer, mode: str
) -> None:
    with subprocess.Popen(
        [
            node_ws.node,
            str(node_ws.script),
            f"ws://127.0.0.1:{tube_server.port}/",
            "client-close",
            NODE_SIZES,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TUBE_DEFLATE": mode},
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"node client hung; stdout:\n{stdout}\nstderr:\n{stderr}")
    reports = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert process.returncode == 0, f"{reports}\nstderr:\n{stderr}"
    assert reports[-1] == {"event": "done"}
    assert reports[0]["event"] == "open"
    assert reports[0]["extensions"].startswith("permessage-deflate")
    echoes = [report for report in reports if report["event"] == "echo"]
    assert len(echoes) == 7 and all(report["ok"] for report in echoes)
    assert deflate_of(tube_server.next_connection()) is not None


@contextlib.contextmanager
def node_server(node_ws: NodeWs, mode: str) -> Iterator[tuple[int, queue.SimpleQueue[Any]]]:
    """Node's echo server; yields its port and a queue of its reports (``None`` at the end)."""
    script = Path(node_ws.script).parent / "ws_echo_server.mjs"
    process = subprocess.Popen(
        [node_ws.node, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TUBE_DEFLATE": mode},
    )
    assert process.stdin is not None and process.stdout is not None
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            reports.put(json.loads(line))
        reports.put(None)

    reader = threading.Thread(target=read_stdout, name="node-deflate-stdout")
    reader.start()
    try:
        ready = reports.get(timeout=TIMEOUT)
        assert ready is not None and "port" in ready, f"node server did not start: {ready}"
        yield ready["port"], reports
    finally:
        process.stdin.close()  # the server stops at the end of its input
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=TIMEOUT)
        reader.join(TIMEOUT)
        process.stdout.close()


@pytest.mark.parametrize("mode", ["on", "no-takeover"])
@pytest.mark.parametrize("client_options", ["deflate", "no-takeover"])
def test_tube_client_against_node_server(node_ws: NodeWs, mode: str, client_options: str) -> None:
    compression = "deflate" if client_options == "deflate" else TAKEOVER["no-takeover"]
    with node_server(node_ws, mode) as (port, reports):
        with connect(
            f"ws://127.0.0.1:{port}/",
            compression=compression,  # type: ignore[arg-type]
            max_message_size=4 * MIB,
            open_timeout=TIMEOUT,
            ping_interval=None,
        ) as client:
            assert deflate_of(client) is not None
            for message in messages():
                client.send(message)
                assert client.incoming.get(timeout=TIMEOUT) == message
        # Node reports the end of the connection, with the extension it saw offered.
        closed = reports.get(timeout=TIMEOUT)
    assert closed["event"] == "closed" and closed["code"] == 1000, closed
    assert closed["extensions"].startswith("permessage-deflate")


# ---------------------------------------------------------------- Chromium

CHROMIUM_EXCHANGE = """
(async () => {
  const ws = new WebSocket("ws://127.0.0.1:%(port)d/ws");
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const inbox = [];
  let wake = null;
  ws.onmessage = (event) => { inbox.push(event.data); if (wake) { wake(); wake = null; } };
  const next = async () => {
    while (!inbox.length) await new Promise((resolve) => { wake = resolve; });
    return inbox.shift();
  };
  const words = "the quick brown fox jumps over the lazy dog \u2713 ";
  const random = (size) => crypto.getRandomValues(new Uint8Array(size));
  const bigRandom = new Uint8Array(1 << 20);
  for (let i = 0; i < bigRandom.length; i += 65536) bigRandom.set(random(65536), i);
  const cases = [
    "hello",
    words.repeat(5),
    words.repeat(Math.ceil((1 << 20) / words.length)),
    random(3),
    random(300),
    bigRandom,
    new Uint8Array(1 << 20),
  ];
  const results = [];
  for (const message of cases) {
    ws.send(message);
    const echo = await next();
    let ok;
    if (typeof message === "string") {
      ok = echo === message;
    } else {
      const got = new Uint8Array(echo);
      ok = got.length === message.length && got.every((byte, i) => byte === message[i]);
    }
    results.push({ kind: typeof message === "string" ? "text" : "binary", ok });
  }
  const extensions = ws.extensions;
  ws.close(1000, "done");
  await new Promise((resolve) => { ws.onclose = resolve; });
  return { extensions, results };
})()
"""


def test_chromium_against_tube_server(
    chromium: Path, tube_server: TubeServer, tmp_path: Path
) -> None:
    from .test_chromium import Browser

    (tmp_path / "profile").mkdir()
    browser = Browser(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        session = browser.open(f"http://127.0.0.1:{tube_server.port}/")
        outcome = browser.evaluate(session, CHROMIUM_EXCHANGE % {"port": tube_server.port})
    finally:
        browser.close()
    assert outcome["extensions"].startswith("permessage-deflate"), outcome
    assert [result["ok"] for result in outcome["results"]] == [True] * 7, outcome
    connection = tube_server.next_connection()
    assert deflate_of(connection) is not None
