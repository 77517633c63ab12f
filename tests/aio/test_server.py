"""The asyncio server: process_request, shutdown, handler endings, TLS, many sockets, fd limit."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import build_frame
from tube.websocket import ConnectionClosed, HandshakeRejected, aio
from tube.websocket.aio import server as server_module
from tube.websocket.aio.opening import HeadBuffer
from tube.websocket.core.http import parse_request_head

from .conftest import RawPeer, echo, next_message, run


async def _get(port: int, target: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    async with asyncio.timeout(5):
        response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


def test_process_request_answers_instead_of_upgrading() -> None:
    def process(request: aio.Request) -> aio.Response | None:
        if request.target == "/health":
            return aio.http_response(200, "ok\n")
        if request.target == "/secret":
            return aio.http_response(401, "token needed", headers=[("WWW-Authenticate", "Bearer")])
        if request.target == "/old":
            return aio.http_response(302, "", headers=[("Location", "/")])
        if request.target == "/boom":
            raise RuntimeError("bug")
        return None

    async def process_async(request: aio.Request) -> aio.Response | None:
        await asyncio.sleep(0)
        return process(request)

    async def main() -> None:
        for hook in (process, process_async):
            async with aio.serve(echo, "127.0.0.1", 0, process_request=hook) as server:
                health = await _get(server.port, "/health")
                assert health.startswith(b"HTTP/1.1 200 OK\r\n") and health.endswith(b"\r\nok\n")
                assert (await _get(server.port, "/boom")).startswith(b"HTTP/1.1 500 ")
                url = f"ws://127.0.0.1:{server.port}"
                with pytest.raises(HandshakeRejected) as refused:
                    await aio.connect(url + "/secret")
                assert refused.value.status == 401 and refused.value.body == b"token needed"
                assert "token needed" in str(refused.value)
                with pytest.raises(HandshakeRejected, match="redirected to /"):
                    await aio.connect(url + "/old")
                async with aio.connect(url + "/old", follow_redirects=True) as client:
                    await client.send("via redirect")
                    assert await client.incoming.get(timeout=5) == "via redirect"
                async with aio.connect(url + "/chat?room=1") as client:
                    await client.send("x")
                    await client.incoming.get(timeout=5)

    run(main)


def test_origin_policy_and_subprotocols() -> None:
    async def main() -> None:
        async with aio.serve(
            echo,
            "127.0.0.1",
            0,
            subprotocols=["chat.v2", "chat.v1"],
            origins=["https://ok.example"],
        ) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            with pytest.raises(HandshakeRejected) as refused:
                await aio.connect(url, origin="https://evil.example")
            assert refused.value.status == 403
            async with aio.connect(
                url, origin="https://ok.example", subprotocols=["chat.v1", "chat.v2"]
            ) as client:
                assert client.subprotocol == "chat.v2"

    run(main)


def test_server_close_closes_with_1001_and_cancels_stuck_handlers() -> None:
    async def main() -> None:
        forever = asyncio.Event()
        cancelled: list[int | None] = []

        async def stuck(connection: aio.Connection) -> None:
            try:
                await forever.wait()
            except asyncio.CancelledError:
                cancelled.append(connection.close_code)
                raise

        async with aio.serve(echo, "127.0.0.1", 0) as server:
            clients = [await aio.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(3)]
            await server.close()
            for client in clients:
                closed = await next_message(client)
                assert isinstance(closed, ConnectionClosed) and closed.code == 1001
                await client.wait_closed()
        async with aio.serve(stuck, "127.0.0.1", 0, close_give_up_time=0.3) as server:
            client = await aio.connect(f"ws://127.0.0.1:{server.port}/")
            started = asyncio.get_running_loop().time()
            await server.close()
            assert asyncio.get_running_loop().time() - started < 3
            assert (await next_message(client)).code == 1001
            assert len(cancelled) == 1
            await client.wait_closed()

    run(main)


def test_handler_cancelled_or_raising_closes_with_1011_and_returning_with_1000() -> None:
    async def cancelled(connection: aio.Connection) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    async def raising(connection: aio.Connection) -> None:
        raise RuntimeError("a bug in the application")

    async def returning(connection: aio.Connection) -> None:
        return

    async def main() -> None:
        for handler, code in ((cancelled, 1011), (raising, 1011), (returning, 1000)):
            async with aio.serve(handler, "127.0.0.1", 0) as server:
                client = await aio.connect(f"ws://127.0.0.1:{server.port}/")
                closed = await next_message(client)
                assert isinstance(closed, ConnectionClosed) and closed.code == code, handler
                assert closed.reason == ""  # internal errors tell the peer nothing more
                await client.wait_closed()

    run(main)


async def readme_echo(connection: aio.Connection) -> None:
    """The README's echo handler, as written there."""
    async for message in connection.incoming:
        await connection.send(message)


async def slow_echo(connection: aio.Connection) -> None:
    """An echo that works a little on each message: the peer's EOF arrives before the reply."""
    async for message in connection.incoming:
        await asyncio.sleep(0.05)
        await connection.send(message)


@pytest.mark.parametrize("handler", [readme_echo, slow_echo], ids=lambda h: h.__name__)
@pytest.mark.parametrize("ending", ["waits", "half-closes", "closes", "resets"])
def test_a_peer_closing_while_the_handler_replies_is_no_server_error(
    caplog: pytest.LogCaptureFixture,
    handler: Callable[[aio.Connection], Awaitable[None]],
    ending: str,
) -> None:
    """Issue 22 §4: a client sends a message and its close frame in one write, then waits for
    the end, shuts its side, closes its socket (a reset once the reply hits it) or resets at
    once. The handler's connection closes under it: no ERROR (five per five clients on main:
    "error in the WebSocket handler; closing with 1011"), and the close code is the peer's."""
    ended: list[aio.Connection] = []

    async def recorded(connection: aio.Connection) -> None:
        try:
            await handler(connection)
        finally:
            ended.append(connection)

    async def main() -> None:
        async with aio.serve(recorded, "127.0.0.1", 0) as server:
            for _ in range(5):
                peer = await RawPeer.connect(server.port)
                peer.writer.write(build_frame(0x1, b"hello") + build_frame(0x8, b"\x0f\xa0bye"))
                if ending == "half-closes":
                    peer.writer.write_eof()
                elif ending == "closes":
                    peer.writer.close()
                elif ending == "resets":
                    await peer.writer.drain()
                    peer.abort()
                if ending in ("waits", "half-closes"):
                    await peer.expect_eof()
                await peer.close()
            async with asyncio.timeout(5):
                while len(ended) < 5:
                    await asyncio.sleep(0.01)
                for connection in ended:
                    await connection.wait_closed()
        assert [connection.close_code for connection in ended] == [4000] * 5

    with caplog.at_level(logging.DEBUG, logger="tube"):
        run(main)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [(r.levelname, r.getMessage(), r.exc_text) for r in loud]


def test_tls_echo_and_a_stalled_hello(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts

    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0, ssl=server_context, open_timeout=1.0) as server:
            stalled = await RawPeer.connect(server.port, handshake=False)  # never says hello
            async with aio.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context) as client:
                await client.send(b"x" * 200_000)
                assert await client.incoming.get(timeout=5) == b"x" * 200_000
            assert client.close_code == 1000
            with pytest.raises(ssl.SSLCertVerificationError):
                await aio.connect(f"wss://127.0.0.1:{server.port}/")
            await stalled.expect_eof(timeout=3)
            stalled.abort()

    run(main)


def test_more_than_1024_sockets_at_once() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2600
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))

    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            clients: list[aio.Connection] = []
            for _ in range(12):
                clients += await asyncio.gather(*(aio.connect(url) for _ in range(50)))
            assert len(clients) == 600  # 1,200 sockets in this process, plus the listener
            assert max(c.transport.get_extra_info("socket").fileno() for c in clients) > 1024  # type: ignore[union-attr]
            await asyncio.gather(*(c.send(str(i)) for i, c in enumerate(clients)))
            answers = await asyncio.gather(*(c.incoming.get(timeout=10) for c in clients))
            assert answers == [str(i) for i in range(len(clients))]
            await asyncio.gather(*(c.close() for c in clients))

    try:
        run(main, timeout=60)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_at_the_fd_limit_the_server_backs_off_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The clients run in another process, so that only the server meets the limit.
    script = textwrap.dedent(
        """
        import socket, sys
        sys.stdin.readline()
        socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(20)]
        sys.stdout.write("connected\\n"); sys.stdout.flush()
        sys.stdin.read()
        """
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main() -> None:
        server = await aio.serve(echo, "127.0.0.1", 0)
        async with server, aio.connect(f"ws://127.0.0.1:{server.port}/") as client:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                script,
                str(server.port),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert process.stdout is not None and process.stdin is not None
            # Leave this process two descriptors to spare, then let 20 clients come.
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 2, hard))
            try:
                process.stdin.write(b"go\n")
                assert await process.stdout.readline() == b"connected\n"
                # Observe the back-off: the server's one warning that it cannot accept.
                async with asyncio.timeout(5):
                    while not any("cannot accept" in r.getMessage() for r in caplog.records):
                        await asyncio.sleep(0.01)
                await client.send("still served")
                assert await client.incoming.get(timeout=5) == "still served"
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            process.stdin.close()
            await process.wait()

    with caplog.at_level(logging.WARNING, logger="tube.websocket.aio"):
        run(main)
    warnings = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(warnings) == 1


def test_a_dribbled_request_head_is_parsed_in_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 22 §2: the server re-parsed the whole head after every read, work in the square of
    # the head's size. Count the bytes handed to the parser while a 100 KB head (within the
    # limits) arrives one read per 1,000 bytes: each write waits until the server took it in.
    scanned: list[int] = []

    def counting_parse(data: bytes | bytearray) -> object:
        scanned.append(len(data))
        return parse_request_head(data)

    monkeypatch.setattr(server_module, "parse_request_head", counting_parse)
    fed = asyncio.Event()
    feed = HeadBuffer.feed

    def feed_and_tell(self: HeadBuffer, chunk: memoryview) -> None:
        feed(self, chunk)
        fed.set()

    monkeypatch.setattr(HeadBuffer, "feed", feed_and_tell)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    head = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"X-{n}: {'v' * 1000}\r\n" for n in range(100))
        + "\r\n"
    ).encode()

    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for start in range(0, len(head), 1000):
                fed.clear()
                writer.write(head[start : start + 1000])
                await fed.wait()
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
            writer.close()
            await writer.wait_closed()

    run(main)
    # Parsing after each of the 102 reads scanned about 5 MB; linear work scans the head a
    # few times at most (the first line, then the whole head at its blank line).
    assert len(scanned) <= 3 and sum(scanned) <= 2 * len(head), scanned


def test_without_process_request_the_head_is_answered_in_the_read_that_completes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 101 (or a refusal) leaves from the read callback that completed the request head,
    not in the handshake task's next turn: here the task is not woken until the client has
    its answer, and the connection then goes on as usual."""
    task_may_go_on = asyncio.Event()
    more = HeadBuffer.more

    async def more_after_the_answer(self: HeadBuffer) -> bool:
        # The server's handshake task (a client reads its 101 with a HeadBuffer too).
        servers = sys._getframe(1).f_code.co_filename == server_module.__file__
        result = await more(self)
        if servers:
            await task_may_go_on.wait()
        return result

    monkeypatch.setattr(HeadBuffer, "more", more_after_the_answer)

    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with aio.connect(url, open_timeout=5) as client:
                await client.send("first")  # taken in by the open connection, kept in order
                task_may_go_on.set()  # the handler starts
                assert await client.incoming.get(timeout=5) == "first"
            task_may_go_on.clear()
            # A refusal too: a request without a Sec-WebSocket-Key, answered 400 at once.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            async with asyncio.timeout(5):
                answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 400 ") and b"Sec-WebSocket-Key" in answer
            writer.close()
            await writer.wait_closed()
            task_may_go_on.set()

    run(main)


def test_an_error_while_answering_in_the_read_callback_is_a_500_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without process_request the head is answered inside the transport's read callback: an
    application error there (its subprotocol selector raising) is answered 500 and logged
    with its traceback, never raised into the transport."""

    def select(offered: list[str]) -> str | None:
        raise RuntimeError("selector bug")

    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0, subprotocols=select) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            with pytest.raises(HandshakeRejected) as refused:
                await aio.connect(url, subprotocols=["chat"])
            assert refused.value.status == 500
            async with aio.connect(url) as client:  # no offer: the selector is not called
                await client.send("still served")
                assert await client.incoming.get(timeout=5) == "still served"

    with caplog.at_level(logging.ERROR, logger="tube.websocket.aio"):
        run(main)
    errors = [r for r in caplog.records if "answering 500" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "error in the opening handshake" in errors[0].getMessage()


def test_tcp_keepalive_and_nodelay_follow_the_ping_options_on_both_ends() -> None:
    """The server sets the options once on its listening socket (Linux gives each accepted
    socket its listener's); every accepted socket and the client's have them all the same."""
    import socket

    def options_of(connection: aio.Connection) -> tuple[int, ...]:
        sock = connection.transport.get_extra_info("socket") if connection.transport else None
        assert sock is not None
        names = [(socket.IPPROTO_TCP, socket.TCP_NODELAY), (socket.SOL_SOCKET, socket.SO_KEEPALIVE)]
        if hasattr(socket, "TCP_KEEPIDLE"):
            names += [
                (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            ]
        return tuple(sock.getsockopt(*name) for name in names)

    expected = (1, 1, 8, 3, 3) if hasattr(socket, "TCP_KEEPIDLE") else (1, 1)
    seen: list[tuple[int, ...]] = []

    async def handler(connection: aio.Connection) -> None:
        seen.append(options_of(connection))
        await connection.send("ok")

    async def main() -> None:
        async with aio.serve(
            handler, "127.0.0.1", 0, ping_interval=7.5, ping_timeout=9.0
        ) as server:
            for _ in range(2):
                client = await aio.connect(
                    f"ws://127.0.0.1:{server.port}", ping_interval=7.5, ping_timeout=9.0
                )
                assert await next_message(client) == "ok"
                assert options_of(client) == expected
                await client.close()
        assert seen == [expected, expected]

    run(main)


def test_a_refused_client_is_closed_after_its_eof_or_after_the_linger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a refusal the server sends the response and its FIN, then waits for the client's
    EOF (closing at once could reset the connection before the client read the response); a
    client that neither closes nor sends is closed REFUSAL_LINGER seconds later."""
    from tube.websocket.aio.connection import REFUSAL_LINGER

    async def refused(server: aio.Server, close_at_once: bool) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # no upgrade: 400
        async with asyncio.timeout(5):
            response = await reader.read()  # up to the server's FIN
        assert response.startswith(b"HTTP/1.1 400 ")
        (closed,) = server._connections  # the connection's closed future
        start = asyncio.get_running_loop().time()
        if close_at_once:
            writer.close()
        async with asyncio.timeout(5):
            await asyncio.shield(closed)
        writer.close()
        return asyncio.get_running_loop().time() - start

    async def main() -> None:
        async with aio.serve(echo, "127.0.0.1", 0) as server:
            with caplog.at_level(logging.DEBUG, logger="tube.websocket"):
                await refused(server, close_at_once=True)
                assert "no EOF" not in caplog.text
                assert await refused(server, close_at_once=False) >= REFUSAL_LINGER * 0.95
                assert "closing the refused connection to 127.0.0.1" in caplog.text
                assert "no EOF" in caplog.text

    run(main)


def test_an_awaiting_process_request_leaves_what_the_client_sends_in_the_kernel() -> None:
    """While process_request awaits, the server stops reading that connection: a client that
    sends megabytes behind its request fills the kernel's buffers, not the server's memory.
    (Without process_request nothing runs between the head and the 101, and reading is never
    paused there.)"""
    import socket

    request = (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    limit = 32 << 20

    async def main() -> None:
        release = asyncio.Event()
        asked = asyncio.Event()

        async def process_request(_: object) -> None:
            asked.set()
            await release.wait()

        def flood(port: int) -> int:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request)
                sock.settimeout(2.0)  # the kernel's buffers are full: the server holds them
                sent = 0
                chunk = bytes(64 * 1024)
                try:
                    while sent < limit:
                        sent += sock.send(chunk)
                except TimeoutError:
                    pass
                return sent

        async with aio.serve(echo, "127.0.0.1", 0, process_request=process_request) as server:
            sent = await asyncio.to_thread(flood, server.port)
            assert asked.is_set()
            assert sent < limit
            (connection,) = server._connections.values()
            head = connection.handshake.head
            assert head is not None and len(head.data) < 1 << 20
            release.set()

    run(main)
