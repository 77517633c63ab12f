"""serve(): the ready threaded server (tube/websocket/integrations/server.py)."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tube.websocket import (
    Connection,
    ConnectionClosed,
    Request,
    Response,
    Server,
    connect,
    serve,
)

from ..conftest import RawPeer

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


def echo(connection: Connection) -> None:
    for message in connection.incoming:
        connection.send(message)


def test_echo_and_the_handler_return_closes_with_1000(running: Callable[..., Server]) -> None:
    nodelay: list[int] = []

    def handler(connection: Connection) -> None:
        assert connection.conn is not None
        nodelay.append(connection.conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        message = connection.incoming.get(timeout=TIMEOUT)
        connection.send(message)
        # Returning closes the connection with 1000.

    server = running(handler)
    assert server.url == f"ws://127.0.0.1:{server.port}/"
    with connect(server.url) as connection:
        connection.send(b"\x00bytes")
        assert connection.incoming.get(timeout=TIMEOUT) == b"\x00bytes"
        with pytest.raises(ConnectionClosed):
            connection.incoming.get(timeout=TIMEOUT)
    assert connection.close_code == 1000
    assert nodelay == [1]


def test_a_handler_that_raises_closes_with_1011(
    running: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    def handler(connection: Connection) -> None:
        connection.incoming.get(timeout=TIMEOUT)
        raise RuntimeError("handler failed on purpose")

    server = running(handler, expected_errors=(RuntimeError,))
    with connect(server.url) as connection:
        connection.send("go")
        with pytest.raises(ConnectionClosed):
            connection.incoming.get(timeout=TIMEOUT)
    assert (connection.close_code, connection.close_reason) == (1011, "")
    assert any("handler failed on purpose" in (r.exc_text or "") for r in caplog.records)


def test_connection_options_apply_and_are_checked_at_once(running: Callable[..., Server]) -> None:
    with pytest.raises(ValueError):
        serve(echo, "127.0.0.1", 0, max_message_size=0)
    with pytest.raises(TypeError):
        serve(echo, "127.0.0.1", 0, no_such_option=1)
    server = running(echo, max_message_size=10)
    with connect(server.url) as connection:
        connection.send(b"x" * 11)
        with pytest.raises(ConnectionClosed):
            connection.incoming.get(timeout=TIMEOUT)
    assert connection.close_code == 1009
    assert Server.request_queue_size >= 1024


def get(
    server: Server, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        client.request(method, path, headers=headers)
        response = client.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        client.close()


def test_process_request_answers_plain_http(running: Callable[..., Server]) -> None:
    seen: list[Request] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request)
        if request.target == "/health":
            return Response(200, "OK", [("Content-Type", "text/plain")], b"ok\n")
        if request.target == "/boom":
            raise RuntimeError("process_request failed on purpose")
        return None

    server = running(echo, process_request=process_request)
    status, headers, body = get(server, "/health")
    assert (status, body, headers["Content-Length"], headers["Connection"]) == (
        200,
        b"ok\n",
        "3",
        "close",
    )
    status, headers, body = get(server, "/health", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "3")
    assert get(server, "/boom")[0] == 500
    # None: the request goes on to the upgrade (here refused: it is no handshake).
    assert get(server, "/other")[0] == 400
    with connect(server.url + "ws?x=1") as connection:
        connection.send("through")
        assert connection.incoming.get(timeout=TIMEOUT) == "through"
    assert seen[-1].target == "/ws?x=1"
    assert ("Upgrade", "websocket") in seen[-1].headers


def test_shutdown_closes_every_connection_with_1001_and_waits(
    running: Callable[..., Server],
) -> None:
    ended = threading.Event()
    count = 5
    active: list[Connection] = []
    lock = threading.Lock()

    def handler(connection: Connection) -> None:
        with lock:
            active.append(connection)
        try:
            echo(connection)
        finally:
            with lock:
                active.remove(connection)
                if not active:
                    ended.set()

    server = running(handler)
    clients = [connect(server.url) for _ in range(count)]
    try:
        for client in clients:
            client.send("hi")
            assert client.incoming.get(timeout=TIMEOUT) == "hi"
        started = time.monotonic()
        assert server.shutdown() is True
        assert ended.is_set()  # shutdown returned after the handlers
        assert time.monotonic() - started < 5
        for client in clients:
            with pytest.raises(ConnectionClosed):
                client.incoming.get(timeout=TIMEOUT)
            assert (client.close_code, client.close_reason) == (1001, "server shutting down")
        # No more connections are accepted (they wait in the backlog until server_close()).
        with pytest.raises(OSError):
            connect(server.url, open_timeout=0.5)
    finally:
        for client in clients:
            client.close()


def test_shutdown_is_bounded_when_a_handler_ignores_it(running: Callable[..., Server]) -> None:
    release = threading.Event()
    running_handler = threading.Event()

    def handler(connection: Connection) -> None:
        running_handler.set()
        release.wait(TIMEOUT)  # never looks at the connection

    server = running(handler, shutdown_timeout=0.5)
    with connect(server.url):
        assert running_handler.wait(TIMEOUT)
        started = time.monotonic()
        assert server.shutdown() is False
        assert time.monotonic() - started < 3
        release.set()


def test_a_silent_client_does_not_stall_tls_clients(
    running: Callable[..., Server], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    context, client_context = tls_contexts
    server = running(echo, ssl=context)
    server.request_head_timeout = 1.0
    assert server.url.startswith("wss://")
    # A client that connects and never starts TLS: its handshake waits in its own thread.
    silent = socket.create_connection(("127.0.0.1", server.port))
    try:
        with connect(
            f"wss://localhost:{server.port}/", ssl=client_context, open_timeout=5
        ) as connection:
            connection.send("over tls")
            assert connection.incoming.get(timeout=TIMEOUT) == "over tls"
        # The silent one is dropped by the request head deadline.
        silent.settimeout(TIMEOUT)
        assert silent.recv(1) == b""
    finally:
        silent.close()


def test_a_slow_request_head_is_cut_by_the_deadline(running: Callable[..., Server]) -> None:
    server = running(echo)
    server.request_head_timeout = 0.5
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5


# ---------------------------------------------------------------------- in a subprocess

ECHO_SERVER = textwrap.dedent(
    """
    import logging, resource, sys
    from tube.websocket import serve

    limit = int(sys.argv[1])
    if limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    def echo(connection):
        for message in connection.incoming:
            connection.send(message)

    with serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        print(server.port, flush=True)
        server.serve_forever()
    print("stopped", flush=True)
    """
)


class Subprocess:
    def __init__(self, tmp_path: Path, limit: int = 0) -> None:
        script = tmp_path / "echo_server.py"
        script.write_text(ECHO_SERVER)
        self.log = tmp_path / "stderr.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script), str(limit)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip().isdigit(), (line, self.stderr())
        self.port = int(line)
        self.url = f"ws://127.0.0.1:{self.port}/"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, *, signal_it: bool = True) -> tuple[int, str]:
        if signal_it and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, out.decode()


def test_sigterm_closes_connections_with_1001(tmp_path: Path) -> None:
    server = Subprocess(tmp_path)
    try:
        with connect(server.url) as client:
            client.send("hi")
            assert client.incoming.get(timeout=TIMEOUT) == "hi"
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                client.incoming.get(timeout=TIMEOUT)
        assert client.close_code == 1001
    finally:
        # Already signalled: a second SIGTERM could find the default handler back.
        returncode, out = server.stop(signal_it=False)
    assert returncode == 0, server.stderr()
    assert out.endswith("stopped\n")
    assert "Traceback" not in server.stderr()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_at_the_descriptor_limit_it_backs_off_and_open_connections_go_on(tmp_path: Path) -> None:
    limit = 48
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= limit
    server = Subprocess(tmp_path, limit)
    clients: list[RawPeer] = []
    try:
        # Fill the server's descriptor table: a connection whose 101 does not come in time was
        # left in the backlog because accept() failed with EMFILE.
        for _ in range(limit):
            try:
                peer = RawPeer(server.port, handshake=False)
            except OSError:
                break
            peer.sock.settimeout(1.0)
            try:
                peer.handshake()
            except (TimeoutError, OSError):
                peer.close()
                break
            clients.append(peer)
        else:
            raise AssertionError(f"{limit} connections accepted under a limit of {limit}")
        assert len(clients) > 10
        # Wait (bounded) for the warning, logged once.
        deadline = time.monotonic() + TIMEOUT
        while "cannot accept connections" not in server.stderr():
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        # While the backlog holds a connection it cannot accept, the server does not spin.
        before = server.cpu_seconds()
        window = 1.0
        time.sleep(window)  # a measurement window, not a synchronisation
        busy = (server.cpu_seconds() - before) / window
        assert busy < 0.3, f"the server used {busy:.0%} of a core at EMFILE"
        # The connections already open go on.
        for peer in clients[:5]:
            peer.sock.settimeout(TIMEOUT)
            peer.send_text("still here")
            assert peer.recv_message(TIMEOUT) == "still here"
        # Free some descriptors: the server accepts again.
        for peer in clients[:10]:
            peer.send_close(1000)
            peer.expect_eof(TIMEOUT)
        del clients[:10]
        with connect(server.url, open_timeout=TIMEOUT) as late:
            late.send("late")
            assert late.incoming.get(timeout=TIMEOUT) == "late"
        assert server.stderr().count("cannot accept connections") == 1
    finally:
        for peer in clients:
            peer.close()
        returncode, _ = server.stop()
    assert returncode == 0, server.stderr()
