"""Interop of the asyncio transport with real peers: Python ``websockets`` and Node's ``ws``.

A missing peer skips, except under ``CI=true``, where it fails loudly (see tests/interop).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from typing import Any

import pytest

from tests.interop.conftest import NODE_DIR, missing_peer
from tube.websocket import ConnectionClosed, aio

from .conftest import run

pytestmark = pytest.mark.interop

SIZES = [0, 125, 126, 65535, 65536, 4 * 1024 * 1024]
BIG = 8 * 1024 * 1024


async def interop_echo(connection: aio.Connection) -> None:
    """Echo; ``tube-test:close CODE REASON`` makes the server close (the Node script's protocol)."""
    async for message in connection.incoming:
        if isinstance(message, str) and message.startswith("tube-test:close "):
            code, _, reason = message[len("tube-test:close ") :].partition(" ")
            await aio.initiate_close(connection, int(code), reason)
            continue
        await connection.send(message)


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "ws" / "package.json").is_file():
        missing_peer("node with the npm package ws", f"run npm ci in {NODE_DIR}")
        raise AssertionError("unreachable")
    return node


def _websockets() -> Any:
    if importlib.util.find_spec("websockets") is None:
        missing_peer("the Python package websockets", "pip install -e '.[test]'")
    import websockets.asyncio.client
    import websockets.asyncio.server

    return websockets


@pytest.mark.parametrize("scenario", ["client-close", "server-close"])
def test_node_ws_client_against_the_aio_server(scenario: str) -> None:
    node = _node()

    async def main() -> None:
        async with aio.serve(interop_echo, "127.0.0.1", 0, max_message_size=BIG) as server:
            process = await asyncio.create_subprocess_exec(
                node,
                str(NODE_DIR / "ws_client.mjs"),
                f"ws://127.0.0.1:{server.port}/",
                scenario,
                ",".join(map(str, SIZES)),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        reports = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
        assert process.returncode == 0, (reports, stderr.decode())
        assert reports[-1] == {"event": "done"}
        echoes = [r for r in reports if r["event"] == "echo"]
        assert len(echoes) == 2 * len(SIZES) + 1 and all(r["ok"] for r in echoes)
        close = [r for r in reports if r["event"] == "close"]
        expected = "server bye" if scenario == "server-close" else ""
        assert close == [{"event": "close", "code": 1000, "reason": expected}]

    run(main, timeout=40)


def test_websockets_client_against_the_aio_server() -> None:
    websockets = _websockets()

    async def main() -> None:
        async with aio.serve(interop_echo, "127.0.0.1", 0, max_message_size=BIG) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with websockets.asyncio.client.connect(url, max_size=BIG) as client:
                for size in SIZES:
                    await client.send("t" * size)
                    assert await client.recv() == "t" * size
                    await client.send(bytes(size))
                    assert await client.recv() == bytes(size)
                await (await client.ping(b"hi"))
                await client.send("tube-test:close 4000 bye")
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await client.recv()
                assert closed.value.rcvd.code == 4000 and closed.value.rcvd.reason == "bye"

    run(main)


def test_aio_client_against_the_websockets_server() -> None:
    websockets = _websockets()

    async def main() -> None:
        async def handler(peer: Any) -> None:
            async for message in peer:
                if message == "close please":
                    await peer.close(4001, "as asked")
                    return
                await peer.send(message)

        async with websockets.asyncio.server.serve(handler, "127.0.0.1", 0, max_size=BIG) as server:
            port = server.sockets[0].getsockname()[1]
            client = await aio.connect(f"ws://127.0.0.1:{port}/", max_message_size=BIG)
            for size in SIZES:
                await client.send("é" * (size // 2))
                assert await client.incoming.get(timeout=10) == "é" * (size // 2)
                await client.send(bytes(size))
                assert await client.incoming.get(timeout=10) == bytes(size)
            await client.ping(b"abc", timeout=5)
            await client.send("close please")
            with pytest.raises(ConnectionClosed):
                await client.incoming.get(timeout=5)
            assert (client.close_code, client.close_reason) == (4001, "as asked")
            await client.wait_closed()

    run(main)


def test_aio_client_against_the_node_ws_server() -> None:
    node = _node()

    async def main() -> None:
        process = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / "ws_echo_server.mjs"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            port = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))["port"]
            client = await aio.connect(f"ws://127.0.0.1:{port}/", max_message_size=BIG)
            for size in SIZES:
                await client.send(bytes(size))
                assert await client.incoming.get(timeout=10) == bytes(size)
            await client.send("tube-test:close 1001 node bye")
            with pytest.raises(ConnectionClosed):
                await client.incoming.get(timeout=5)
            assert (client.close_code, client.close_reason) == (1001, "node bye")
            await client.wait_closed()
        finally:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    run(main)
