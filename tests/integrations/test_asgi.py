"""ASGI: a real Starlette and a real FastAPI application under uvicorn, with Tube's protocol class.

uvicorn runs as a subprocess on 127.0.0.1, started as a user starts it (``python -m uvicorn
tests.integrations.asgi_starlette_app:app --ws tube.websocket.asgi:UvicornProtocol --port 0``).
The same contract tests run against uvicorn's own protocol classes (``websockets``, the
deprecated legacy one; ``websockets-sansio``, uvicorn's default; ``wsproto``), so that they
check the ASGI contract and not our reading of it. The deliberate differences: a handler that
raises (or returns a value) after ``accept`` gets a close frame 1011 from Tube, where uvicorn's
classes drop TCP (1006); an HTTP/1.0 upgrade gets 505; a client that closes while the
application replies leaves no traceback in uvicorn's log (issue 22).

uvicorn, Starlette and FastAPI are test extras: missing, they skip these tests, or fail them
under CI=true.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tube.websocket import ConnectionClosed, HandshakeRejected, aio

from ..aio.conftest import RawPeer, run
from ..conftest import build_frame, require

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
TIMEOUT = 10.0
_LISTENING = re.compile(rb"Uvicorn running on https?://127\.0\.0\.1:(\d+)")

TUBE = "tube.websocket.asgi:UvicornProtocol"
#: The protocol classes under test: Tube's and uvicorn's own three.
IMPLEMENTATIONS = {
    "tube": TUBE,
    "websockets": "websockets",
    "websockets-sansio": "websockets-sansio",
    "wsproto": "wsproto",
}
APPS = {
    "starlette": "tests.integrations.asgi_starlette_app:app",
    "fastapi": "tests.integrations.asgi_fastapi_app:app",
}


@dataclass
class Server:
    """uvicorn serving one of the test applications, in a subprocess."""

    implementation: str
    framework: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_uvicorn(implementation: str, framework: str, log: Path, *extra: str) -> Server:
    """``python -m uvicorn APP --ws WS --port 0``; wait (bounded) until it answers."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        APPS[framework],
        "--ws",
        IMPLEMENTATIONS[implementation],
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *extra,
    ]
    return launch(implementation, framework, command, ROOT, log)


def launch(implementation: str, framework: str, command: list[str], cwd: Path, log: Path) -> Server:
    """Start uvicorn's ``command`` in ``cwd``; wait (bounded) for the line naming its port."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        match = _LISTENING.search(log.read_bytes())
        if match:
            return Server(implementation, framework, process, log, int(match.group(1)))
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(f"uvicorn did not start: {log.read_text(errors='replace')}")
        # Polling a subprocess's log until it listens, bounded by START_TIMEOUT.
        time.sleep(0.05)


def raise_nofile(needed: int) -> None:
    """Raise this process's open-file limit (inherited by the servers it starts) if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.fixture(
    scope="module",
    params=[(i, f) for f in APPS for i in IMPLEMENTATIONS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """uvicorn with each protocol class, serving the Starlette and the FastAPI application."""
    require("uvicorn", "starlette", "fastapi", "wsproto", "websockets")
    implementation, framework = request.param
    raise_nofile(4096)  # 1,000 connections on each side, plus the test's own files
    log = tmp_path_factory.mktemp(f"{implementation}-{framework}") / "uvicorn.log"
    server = start_uvicorn(implementation, framework, log)
    try:
        yield server
    finally:
        server.stop()
    # uvicorn logs the errors of the application: none is expected but /raise's.
    text = server.output()
    expected = text.count("RuntimeError: the handler failed on purpose")
    assert text.count("Traceback") == expected, f"unexpected errors in uvicorn's log:\n{text}"


def http_exchange(
    server: Server, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP GET (a handshake request when ``headers`` make it one)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def upgrade_headers(**extra: str) -> dict[str, str]:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    headers.update(extra)
    return headers


# ---------------------------------------------------------------------- messages


def test_echo_text_and_binary_with_a_subprotocol(server: Server) -> None:
    async def main() -> None:
        url = server.url("/echo")
        async with aio.connect(url, subprotocols=["chat.v1", "chat.v2"]) as connection:
            assert connection.subprotocol == "chat.v2"
            await connection.send("héllo")
            assert await connection.incoming.get(timeout=TIMEOUT) == "héllo"
            payload = bytes(range(256)) * 300  # 75 KiB: several reads
            await connection.send(payload)
            assert await connection.incoming.get(timeout=TIMEOUT) == payload
            await connection.send_many(["a", b"b", "c"])
            assert [await connection.incoming.get(timeout=TIMEOUT) for _ in range(3)] == [
                "a",
                b"b",
                "c",
            ]
        assert connection.close_code == 1000
        async with aio.connect(url) as connection:
            assert connection.subprotocol is None

    run(main)


def test_accept_sends_the_applications_headers(server: Server) -> None:
    from websockets.sync.client import connect as websockets_connect

    with websockets_connect(server.url("/echo"), open_timeout=TIMEOUT) as websocket:
        assert websocket.response is not None
        headers = websocket.response.headers
        assert headers["x-tube-test"] == "accepted"
        assert headers["server"] == "uvicorn"  # uvicorn's default headers
        websocket.send("ping")
        assert websocket.recv(timeout=TIMEOUT) == "ping"


def test_per_message_deflate_is_negotiated_by_default(server: Server) -> None:
    """uvicorn's ``--ws-per-message-deflate`` is on by default: a client offering
    permessage-deflate gets it, and compressed messages go both ways."""
    from websockets.sync.client import connect as websockets_connect

    with websockets_connect(server.url("/echo"), open_timeout=TIMEOUT) as websocket:
        assert websocket.response is not None
        extensions = websocket.response.headers.get("sec-websocket-extensions", "")
        assert extensions.startswith("permessage-deflate"), websocket.response.headers
        text = "compressible " * 1000
        websocket.send(text)
        assert websocket.recv(timeout=TIMEOUT) == text


def test_receive_json_and_send_json(server: Server) -> None:
    async def main() -> None:
        async with aio.connect(server.url("/json")) as connection:
            for value in ({"a": [1, 2.5, None]}, "text", [True, {"é": "ü"}]):
                await connection.send(json.dumps(value))
                reply = await connection.incoming.get(timeout=TIMEOUT)
                assert isinstance(reply, str)
                assert json.loads(reply) == {"echo": value}

    run(main)


# ---------------------------------------------------------------------- closing


def test_the_application_closes_with_a_code_and_reason(server: Server) -> None:
    async def main() -> None:
        async with aio.connect(server.url("/echo")) as connection:
            await connection.send("one")
            await connection.send("close 4002 the app is done")
            assert await connection.incoming.get(timeout=TIMEOUT) == "one"
            with pytest.raises(ConnectionClosed):
                await connection.incoming.get(timeout=TIMEOUT)
            assert (connection.close_code, connection.close_reason) == (4002, "the app is done")

    run(main)


def test_the_client_closes_with_a_code_and_reason(server: Server) -> None:
    key = uuid.uuid4().hex

    async def main() -> None:
        async with aio.connect(server.url(f"/echo?id={key}")) as connection:
            await connection.send("hello")
            assert await connection.incoming.get(timeout=TIMEOUT) == "hello"
            await connection.close(4010, "client leaving")
            assert connection.close_code == 4010

    run(main)
    status, _, body = http_exchange(server, f"/closed/{key}")
    assert status == 200, body
    assert json.loads(body) == {"code": 4010, "reason": "client leaving"}


def test_a_handler_that_raises_after_accept(server: Server) -> None:
    """Tube closes with 1011; uvicorn's own classes drop TCP without a close frame (1006)."""

    async def main() -> None:
        async with aio.connect(server.url("/raise")) as connection:
            await connection.send("go")
            with pytest.raises(ConnectionClosed):
                await connection.incoming.get(timeout=TIMEOUT)
            expected = 1011 if server.implementation == "tube" else 1006
            assert connection.close_code == expected

    run(main)


# ---------------------------------------------------------------------- refusing


def test_closing_before_accept_answers_403(server: Server) -> None:
    async def main() -> None:
        with pytest.raises(HandshakeRejected) as caught:
            await aio.connect(server.url("/reject"), open_timeout=TIMEOUT)
        assert caught.value.status == 403

    run(main)
    status, _, _ = http_exchange(server, "/reject", upgrade_headers())
    assert status == 403


def test_the_denial_response(server: Server) -> None:
    status, headers, body = http_exchange(server, "/deny", upgrade_headers())
    assert (status, body) == (401, b"not allowed\n")
    assert headers["www-authenticate"] == "Bearer"

    async def main() -> None:
        with pytest.raises(HandshakeRejected) as caught:
            await aio.connect(server.url("/deny"), open_timeout=TIMEOUT)
        assert caught.value.status == 401

    run(main)


def test_an_invalid_handshake_is_refused_before_the_application(server: Server) -> None:
    headers = upgrade_headers()
    del headers["Sec-WebSocket-Key"]
    status, _, _ = http_exchange(server, "/echo", headers)
    assert status == 400


def raw_status(server: Server, head: bytes) -> bytes:
    """Send ``head`` as it is; the status code of the answer (b"" if none came)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b""


def raw_upgrade(
    version: bytes = b"HTTP/1.1", line_end: bytes = b"\r\n", extra: bytes = b""
) -> bytes:
    lines = [b"GET /echo " + version, b"Host: 127.0.0.1", *extra.splitlines()]
    lines += [f"{name}: {value}".encode() for name, value in upgrade_headers().items()]
    return line_end.join(lines) + line_end + line_end


def test_with_options_check_origin_refuses_other_origins(tmp_path: Path) -> None:
    """``ws=UvicornProtocol.with_options(check_origin=True, origins=[...])`` (README): a browser
    request from another origin gets 403; the listed origin and the server's own host are
    accepted, and so is a request without ``Origin``."""
    require("uvicorn", "starlette")
    from .asgi_origin_protocol import ALLOWED

    command = [sys.executable, "-m", "uvicorn", APPS["starlette"]]
    command += ["--ws", "tests.integrations.asgi_origin_protocol:OriginChecking"]
    command += ["--host", "127.0.0.1", "--port", "0"]
    server = launch("tube", "starlette", command, ROOT, tmp_path / "uvicorn.log")
    try:
        refused = upgrade_headers(Origin="https://evil.example")
        status, _, body = http_exchange(server, "/echo", refused)
        assert (status, body) == (403, b"origin not allowed: https://evil.example\n"), body

        async def main() -> None:
            own = "http://127.0.0.1"  # the server's own host: RawPeer sends Host: 127.0.0.1
            for headers in ([("Origin", ALLOWED)], [("Origin", own)], []):
                peer = await RawPeer.connect(server.port, path="/echo", headers=headers)
                try:
                    peer.send_frame(0x1, b"allowed")
                    frame = await peer.recv_data_frame()
                    assert (frame.opcode, frame.payload) == (0x1, b"allowed")
                finally:
                    peer.abort()

        run(main)
    finally:
        server.stop()


def test_http_1_0_is_refused_with_505(server: Server) -> None:
    """Issue 22 §5: uvicorn hands every head over written as HTTP/1.1; Tube reads the version
    back from uvicorn's parser and answers 505 as its own servers do (uvicorn's classes: 101)."""
    if server.implementation != "tube":
        pytest.skip("uvicorn's own classes upgrade HTTP/1.0")
    assert raw_status(server, raw_upgrade(b"HTTP/1.0")) == b"505"
    assert raw_status(server, raw_upgrade()) == b"101"


def test_what_uvicorns_parser_rewrote_cannot_be_seen(server: Server) -> None:
    """The documented limit: bare LF line ends and obs-folded header lines, which Tube's own
    servers refuse with 400, arrive rewritten as a clean head when uvicorn parses with h11;
    with httptools (uvicorn[standard]) uvicorn refuses them with 400 itself."""
    if server.implementation != "tube":
        pytest.skip("the same for every protocol class: uvicorn's parser decides")
    expected = b"400" if importlib.util.find_spec("httptools") is not None else b"101"
    assert raw_status(server, raw_upgrade(line_end=b"\n")) == expected
    assert raw_status(server, raw_upgrade(extra=b"X-Folded: one\r\n two")) == expected


def test_a_client_closing_while_the_application_replies(server: Server) -> None:
    """Issue 22 §4 under uvicorn: a message and a close frame in one write, then the socket
    closed at once. No error in uvicorn's log (the fixture checks it), and the application's
    websocket.disconnect carries the client's code."""
    if server.implementation != "tube":
        pytest.skip("uvicorn's own classes log the application's failed send (a traceback)")
    key = uuid.uuid4().hex

    async def main() -> None:
        for index in range(5):
            peer = await RawPeer.connect(server.port, path=f"/?id={key}-{index}")
            peer.writer.write(build_frame(0x1, b"hello") + build_frame(0x8, b"\x0f\xa0bye"))
            await peer.close()

    run(main)
    for index in range(5):
        status, _, body = http_exchange(server, f"/closed/{key}-{index}")
        assert status == 200, body
        assert json.loads(body) == {"code": 4000, "reason": "bye"}


# ---------------------------------------------------------------------- the scope


def test_the_scope(server: Server) -> None:
    async def main() -> dict[str, Any]:
        url = server.url("/scope?x=1&y=%C3%A9")
        headers = [("X-Custom", "value")]
        async with aio.connect(url, subprotocols=["one", "two"], headers=headers) as connection:
            reply = await connection.incoming.get(timeout=TIMEOUT)
        assert isinstance(reply, str)
        result: dict[str, Any] = json.loads(reply)
        return result

    scope = run(main)
    assert scope["type"] == "websocket"
    assert scope["http_version"] == "1.1"
    assert scope["spec_version"] == "2.4"
    assert scope["scheme"] == "ws"
    assert (scope["path"], scope["raw_path"]) == ("/scope", "/scope")
    assert scope["query_string"] == "x=1&y=%C3%A9"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert "websocket.http.response" in scope["extensions"]
    names = [name for name, _ in scope["headers"]]
    assert names == [name.lower() for name in names]  # ASGI: lower-case names
    assert ["x-custom", "value"] in scope["headers"]
    assert ["host", f"127.0.0.1:{server.port}"] in scope["headers"]


def test_a_fastapi_route_with_parameters(server: Server) -> None:
    if server.framework != "fastapi":
        pytest.skip("FastAPI's own parameter injection")

    async def main() -> None:
        async with aio.connect(server.url("/rooms/lobby?prefix=%3E%3E")) as connection:
            await connection.send("hi")
            assert await connection.incoming.get(timeout=TIMEOUT) == ">>lobby:hi"

    run(main)


# ---------------------------------------------------------------------- load


def test_1000_concurrent_connections(server: Server) -> None:
    count = 1000

    async def main() -> None:
        opening = asyncio.Semaphore(50)  # handshakes in flight at a time
        connections: list[aio.Connection] = []

        async def open_one(index: int) -> None:
            async with opening:
                connection = await aio.connect(server.url("/echo"), open_timeout=30)
            connections.append(connection)

        await asyncio.gather(*(open_one(i) for i in range(count)))
        assert len(connections) == count  # all open at once

        async def echo_one(index: int, connection: aio.Connection) -> None:
            await connection.send(f"message {index}")
            assert await connection.incoming.get(timeout=30) == f"message {index}"

        await asyncio.gather(*(echo_one(i, c) for i, c in enumerate(connections)))
        await asyncio.gather(*(c.close() for c in connections))
        assert all(c.close_code == 1000 for c in connections)

    run(main, timeout=120)


# ---------------------------------------------------------------------- TLS, event loops


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_and_both_event_loops(loop: str, tmp_path: Path) -> None:
    """wss:// (uvicorn's --ssl-*) on the plain asyncio loop and on uvloop (uvicorn's default
    when installed): the transport is handed over to Tube's connection on both."""
    require("uvicorn", "starlette", "trustme", loop)
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    pem = str(tmp_path / "server.pem")
    options = ["--ssl-keyfile", pem, "--ssl-certfile", pem, "--loop", loop]
    server = start_uvicorn("tube", "starlette", tmp_path / "uvicorn.log", *options)
    try:

        async def main() -> None:
            url = f"wss://127.0.0.1:{server.port}/scope"
            async with aio.connect(url, ssl=client_context) as connection:
                reply = await connection.incoming.get(timeout=TIMEOUT)
                assert isinstance(reply, str)
                assert json.loads(reply)["scheme"] == "wss"
            url = f"wss://127.0.0.1:{server.port}/echo"
            async with aio.connect(url, ssl=client_context) as connection:
                payload = os.urandom(200_000)
                await connection.send(payload)
                assert await connection.incoming.get(timeout=TIMEOUT) == payload
            url = f"wss://127.0.0.1:{server.port}/raise"
            async with aio.connect(url, ssl=client_context) as connection:
                await connection.send("go")
                with pytest.raises(ConnectionClosed):
                    await connection.incoming.get(timeout=TIMEOUT)
                assert connection.close_code == 1011

        run(main)
    finally:
        server.stop()


# ---------------------------------------------------------------------- limits and keepalive


@pytest.fixture(scope="module", params=list(IMPLEMENTATIONS))
def tight_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """uvicorn with a 1,000-byte message limit and fast keepalive, for each protocol class."""
    require("uvicorn", "starlette", "wsproto", "websockets")
    log = tmp_path_factory.mktemp(f"tight-{request.param}") / "uvicorn.log"
    limits = ("--ws-max-size", "1000", "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.6")
    server = start_uvicorn(request.param, "starlette", log, *limits)
    try:
        yield server
    finally:
        server.stop()


def test_ws_max_size_closes_with_1009(tight_server: Server) -> None:
    async def main() -> None:
        async with aio.connect(tight_server.url("/echo"), compression=None) as connection:
            await connection.send("x" * 1000)  # at the limit: fine
            assert await connection.incoming.get(timeout=TIMEOUT) == "x" * 1000
            await connection.send(b"y" * 1001)
            with pytest.raises(ConnectionClosed):
                await connection.incoming.get(timeout=TIMEOUT)
            assert connection.close_code == 1009

    run(main)


def test_ws_ping_timeout_closes_with_1011(tight_server: Server) -> None:
    """A peer that never answers pings is closed with 1011 once ws_ping_timeout passed."""

    async def main() -> None:
        peer = await RawPeer.connect(tight_server.port)
        try:
            frame = await peer.recv_frame(timeout=TIMEOUT)
            assert frame.opcode == 0x9  # a keepalive ping, which we never answer
            while frame.opcode == 0x9:
                frame = await peer.recv_frame(timeout=TIMEOUT)
            assert (frame.opcode, frame.close_code) == (0x8, 1011)
        finally:
            await peer.close()

    run(main)


def test_a_violation_never_overtakes_earlier_replies(tmp_path: Path) -> None:
    """Issue 8's close order, which uvicorn's own classes do not keep: the replies to the
    messages before a protocol violation reach the peer before the close frame 1002."""
    require("uvicorn", "starlette")
    server = start_uvicorn("tube", "starlette", tmp_path / "uvicorn.log")
    try:

        async def main() -> None:
            peer = await RawPeer.connect(server.port)
            try:
                # Two messages and a reserved opcode in one write: one read on the server.
                peer.writer.write(
                    build_frame(0x1, b"first")
                    + build_frame(0x2, b"second")
                    + build_frame(0x3, b"reserved")
                )
                frames = [await peer.recv_data_frame() for _ in range(3)]
                assert [(f.opcode, f.payload) for f in frames[:2]] == [
                    (0x1, b"first"),
                    (0x2, b"second"),
                ]
                assert (frames[2].opcode, frames[2].close_code) == (0x8, 1002)
            finally:
                await peer.close()

        run(main)
    finally:
        server.stop()


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_an_application_that_returns_a_value(implementation: str, tmp_path: Path) -> None:
    """The ASGI contract says an application returns None; one that returns something else
    failed. Tube closes with 1011, as for one that raised (it closed with 1000); uvicorn's
    classes drop TCP (1006). All log uvicorn's error line."""
    require("uvicorn", "wsproto", "websockets")
    command = [sys.executable, "-m", "uvicorn", "tests.integrations.asgi_raw_app:app"]
    command += ["--ws", IMPLEMENTATIONS[implementation], "--host", "127.0.0.1", "--port", "0"]
    server = launch(implementation, "raw", command, ROOT, tmp_path / "uvicorn.log")
    try:

        async def main() -> None:
            async with aio.connect(server.url("/returns-a-value")) as connection:
                await connection.send("go")
                with pytest.raises(ConnectionClosed):
                    await connection.incoming.get(timeout=TIMEOUT)
                assert connection.close_code == (1011 if implementation == "tube" else 1006)
                assert connection.close_reason == ""  # nothing leaks to the peer

        run(main)
    finally:
        server.stop()
    assert "ASGI callable should return None, but returned" in server.output()


def test_the_log_lines_of_an_accepted_websocket(server: Server) -> None:
    """uvicorn's log shows the lines uvicorn's own classes print for a WebSocket (issue 23):
    '"WebSocket /path" [accepted]' with each, 'connection open' with the websockets classes and
    Tube's (which also says 'connection closed', as the legacy websockets class does)."""
    path = f"/echo?log={uuid.uuid4().hex}"

    async def main() -> None:
        async with aio.connect(server.url(path)) as connection:
            await connection.send("logged")
            assert await connection.incoming.get(timeout=TIMEOUT) == "logged"

    run(main)
    accepted = f'"WebSocket {path}" [accepted]'
    deadline = time.monotonic() + TIMEOUT
    while accepted not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling uvicorn's log for the line, bounded by TIMEOUT
    lines = server.output().splitlines()
    (line,) = [number for number, text in enumerate(lines) if accepted in text]
    assert lines[line].startswith("INFO:")
    if server.implementation != "wsproto":  # uvicorn's wsproto class says no more
        assert "INFO:     connection open" in lines[line + 1 :], lines[line:]


# ---------------------------------------------------------------------- shutdown, packaging


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_graceful_shutdown_closes_with_1012(implementation: str, tmp_path: Path) -> None:
    require("uvicorn", "starlette", "wsproto", "websockets")
    server = start_uvicorn(implementation, "starlette", tmp_path / "uvicorn.log")
    try:

        async def main() -> None:
            async with aio.connect(server.url("/echo")) as connection:
                await connection.send("before")
                assert await connection.incoming.get(timeout=TIMEOUT) == "before"
                server.process.send_signal(signal.SIGINT)
                with pytest.raises(ConnectionClosed):
                    await connection.incoming.get(timeout=TIMEOUT)
                assert connection.close_code == 1012

        run(main)
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()


def test_gunicorn_uvicorn_worker_with_config_kwargs(tmp_path: Path) -> None:
    """gunicorn -k (a UvicornWorker whose CONFIG_KWARGS name Tube's class)."""
    require("gunicorn", "uvicorn", "starlette")
    log = tmp_path / "gunicorn.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "tests.integrations.asgi_gunicorn_worker.TubeUvicornWorker",
        "-b",
        "127.0.0.1:0",
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        APPS["starlette"],
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    server = Server("tube", "starlette", process, log, 0)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        listening = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")
        # gunicorn logs "Listening" before its worker is ready: poll until /health answers.
        while True:
            match = listening.search(log.read_bytes())
            if match:
                server.port = int(match.group(1))
                try:
                    if http_exchange(server, "/health")[0] == 200:
                        break
                except OSError:
                    pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start: {server.output()}")
            time.sleep(0.05)

        async def main() -> None:
            async with aio.connect(server.url("/echo")) as connection:
                await connection.send("through gunicorn")
                assert await connection.incoming.get(timeout=TIMEOUT) == "through gunicorn"
            # 1011, not 1006: the worker runs Tube's protocol class.
            async with aio.connect(server.url("/raise")) as connection:
                await connection.send("go")
                with pytest.raises(ConnectionClosed):
                    await connection.incoming.get(timeout=TIMEOUT)
                assert connection.close_code == 1011

        run(main)
    finally:
        if process.poll() is None:
            process.terminate()  # gunicorn's graceful stop
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_the_readme_example(tmp_path: Path) -> None:
    """The README's ASGI section, run as written: its app.py and its uvicorn command."""
    require("uvicorn", "fastapi")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## ASGI: .*?$(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## ASGI: ...' section"
    (tmp_path / "app.py").write_text(
        re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)[0]
    )
    shell = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)[0]
    assert shell.split() == ["uvicorn", "app:app", "--ws", TUBE]
    command = [sys.executable, "-m", *shell.split(), "--host", "127.0.0.1", "--port", "0"]
    server = launch("tube", "fastapi", command, tmp_path, tmp_path / "uvicorn.log")
    try:

        async def main() -> None:
            async with aio.connect(server.url("/ws")) as connection:
                await connection.send("from the README")
                assert await connection.incoming.get(timeout=TIMEOUT) == "from the README"

        run(main)
    finally:
        server.stop()


def test_importing_tube_websocket_never_imports_uvicorn() -> None:
    code = "import sys, tube.websocket, tube.websocket.aio; assert 'uvicorn' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_with_options_checks_at_once() -> None:
    require("uvicorn")
    from tube.websocket.asgi import UvicornProtocol

    strict = UvicornProtocol.with_options(check_origin=True, send_timeout=30)
    assert issubclass(strict, UvicornProtocol)
    assert dict(strict.tube_options) == {"check_origin": True, "send_timeout": 30}
    with pytest.raises(TypeError):
        UvicornProtocol.with_options(no_such_option=1)
    with pytest.raises(ValueError):
        UvicornProtocol.with_options(send_timeout=-1)
