"""The demo, ``python -m tube.demo``, run as a user would: a subprocess on a free port."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT/

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "ws"

    def stop(self, signum: int | None) -> tuple[int, str]:
        """Send ``signum`` (if any); return the exit status and stderr (bounded wait)."""
        if signum is not None:
            self.process.send_signal(signum)
        try:
            _, stderr = self.process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
            pytest.fail(f"demo did not stop within {TIMEOUT} s after {signum}: {stderr!r}")
        return self.process.returncode, stderr.decode(errors="replace")


def read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first line of the process's stdout, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"no line on stdout within {timeout} s (got {line!r})")
            chunk = os.read(fd, 1)  # one byte at a time: never read past the line
            if not chunk:
                raise AssertionError(f"stdout closed after {line!r}")
            line += chunk
    return line


@pytest.fixture
def demo() -> Iterator[Demo]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tube.demo", "--port", "0"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = read_line(process, TIMEOUT).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, f"no URL in {line!r}"
        assert match.group(1) != "0", "the printed URL must show the real port"
        yield Demo(process, match.group(0))
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


def receive_json(ws: Any, wanted: str) -> dict[str, Any]:
    """The next message of type ``wanted`` (presence updates and others are skipped)."""
    for _ in range(20):
        message: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        if message["type"] == wanted:
            return message
    raise AssertionError(f"no {wanted!r} message")


def http_get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def test_serves_the_page(demo: Demo) -> None:
    status, content_type, body = http_get(demo.url, "/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert b"new WebSocket(" in body
    assert b"innerHTML" not in body  # user text goes through textContent only
    status, _, _ = http_get(demo.url, "/nothing-here")
    assert status == 404
    returncode, _ = demo.stop(signal.SIGTERM)
    assert returncode == 0


def test_a_plain_get_on_the_websocket_endpoint_is_refused(demo: Demo) -> None:
    status, content_type, body = http_get(demo.url, "/ws")
    # upgrade_connection answers a request that is no WebSocket handshake itself.
    assert 400 <= status < 500
    assert content_type.startswith("text/plain")
    assert body.strip()
    returncode, _ = demo.stop(signal.SIGINT)
    assert returncode == 0


@pytest.mark.interop
def test_broadcast_between_two_connections_then_ctrl_c(demo: Demo) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(demo.ws_url, proxy=None, open_timeout=TIMEOUT) as alice:
        # The server adds a connection to the room just after its handshake: wait for the
        # welcome before connecting the second one, so that the order is known.
        alice_name = receive_json(alice, "welcome")["name"]
        with connect(demo.ws_url, proxy=None, open_timeout=TIMEOUT) as bob:
            bob_welcome = receive_json(bob, "welcome")
            assert bob_welcome["online"] == 2
            assert alice_name != bob_welcome["name"]

            alice.send("hello <b>everyone</b> ✓")
            expected = {"type": "message", "from": alice_name, "text": "hello <b>everyone</b> ✓"}
            assert receive_json(bob, "message") == expected
            assert receive_json(alice, "message") == expected  # the sender gets it too

            bob.send("hi alice")
            assert receive_json(alice, "message")["text"] == "hi alice"

            # Ctrl-C: the server closes every WebSocket with 1001 and exits 0.
            demo.process.send_signal(signal.SIGINT)
            for ws in (alice, bob):
                with pytest.raises(ConnectionClosed) as raised:
                    for _ in range(20):
                        ws.recv(timeout=TIMEOUT)
                assert raised.value.rcvd is not None
                assert raised.value.rcvd.code == 1001
    returncode, stderr = demo.stop(None)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.fixture
def demo_in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The demo's server in this process on a free port (no signal handling involved)."""
    import threading

    from tube.demo import server as demo_server

    # Long enough that a broadcast waiting for the slow tab would make the test time out.
    monkeypatch.setattr(demo_server, "SEND_TIMEOUT", 60.0)
    server = demo_server.DemoServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.room.close(timeout=TIMEOUT)
        server.server_close()


def raw_handshake(host: str, port: int) -> socket.socket:
    """A WebSocket client made of a bare socket with a tiny receive buffer; never reads frames."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


@pytest.mark.interop
def test_a_tab_that_stops_reading_does_not_block_the_others_and_is_closed_with_1008(
    demo_in_process: Any,
) -> None:
    """A slow tab never holds the others up; once its outbox overflowed, the server closes it
    with 1008 (policy violation), as the demo's docstring says."""
    from websockets.sync.client import connect

    from ..conftest import RawPeer

    host, port = demo_in_process.server_address[:2]
    with connect(f"ws://{host}:{port}/ws", proxy=None, open_timeout=TIMEOUT) as fast:
        name = receive_json(fast, "welcome")["name"]
        slow = raw_handshake(host, port)
        try:
            # The slow tab is in the room once the fast one hears that it joined.
            joined = receive_json(fast, "presence")
            while joined["name"] == name:
                joined = receive_json(fast, "presence")
            assert joined["event"] == "joined"
            assert joined["online"] == 2
            # Far more than the slow tab's socket buffers and outbox (256 messages) can hold.
            for index in range(400):
                text = f"{index:04d} " + "x" * 60_000
                fast.send(text)
                # Each broadcast reaches the fast tab at once, whatever the slow one does.
                assert receive_json(fast, "message") == {
                    "type": "message",
                    "from": name,
                    "text": text,
                }
            # The slow tab reads at last: the messages that fitted, then the close frame.
            peer = RawPeer.on_socket(slow)
            frame = peer.recv_frame(TIMEOUT)
            while frame.opcode == 0x1:
                frame = peer.recv_frame(TIMEOUT)
            assert (frame.opcode, frame.close_code) == (0x8, 1008), frame
        finally:
            slow.close()


@pytest.mark.interop
def test_a_new_tab_gets_welcome_and_joined_before_any_chat_line(
    demo_in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: a chat line could reach a new tab before its welcome (1 run in 7), because
    the member's reader started before the welcome was queued. Here a chat line is broadcast
    the moment the member's threads start, the earliest any line can come."""
    from websockets.sync.client import connect

    from tube.demo import server as demo_server

    start = demo_server.Member.start

    def start_then_chat(member: Any) -> None:
        start(member)
        member.room.broadcast({"type": "message", "from": "guest-0", "text": "early"})

    monkeypatch.setattr(demo_server.Member, "start", start_then_chat)
    host, port = demo_in_process.server_address[:2]
    with connect(f"ws://{host}:{port}/ws", proxy=None, open_timeout=TIMEOUT) as tab:
        types = [json.loads(tab.recv(timeout=TIMEOUT))["type"] for _ in range(3)]
    assert types == ["welcome", "presence", "message"]
