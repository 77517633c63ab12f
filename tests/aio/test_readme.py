"""The README's asyncio examples, run as written (against local servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import socket
from pathlib import Path
from typing import Any

from tube.websocket import aio

from .conftest import run

README = Path(__file__).resolve().parents[2] / "README.md"


def load_examples() -> dict[str, Any]:
    """Run the ```python blocks of the "asyncio" section in one namespace, not as __main__."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## asyncio\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## asyncio' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    # The server, client, process_request, reuse_port and on_message blocks (the last one runs
    # its echo when executed and asserts the reply itself).
    assert len(blocks) == 5, f"expected 5 ```python blocks in '## asyncio', found {len(blocks)}"
    namespace: dict[str, Any] = {"__name__": "readme"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{README}:asyncio-{number}", "exec"), namespace)
    return namespace


def test_the_server_client_and_process_request_examples() -> None:
    example = load_examples()

    async def main() -> None:
        server = await example["serve_with_health_check"](0)
        async with server:
            reply = await example["hello"](f"ws://127.0.0.1:{server.port}/chat")
            assert reply == "hello"
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), 5)
            assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"ok\n")
            writer.close()
            await writer.wait_closed()
        async with aio.serve(example["handler"], "127.0.0.1", 0) as server:
            assert await example["hello"](f"ws://127.0.0.1:{server.port}/") == "hello"

    run(main)


def test_the_reuse_port_example_serves_from_two_processes() -> None:
    example = load_examples()
    # Reserve a free port with SO_REUSEPORT (the workers bind it too); never listened on.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=example["worker"], args=("127.0.0.1", port)) for _ in "ab"]
    for process in workers:
        process.start()
    try:

        async def main() -> None:
            for _ in range(100):  # the workers take a moment to listen (bounded poll)
                try:
                    replies = [await example["hello"](f"ws://127.0.0.1:{port}/") for _ in range(6)]
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("no worker listened within 5 s")
            assert replies == ["hello"] * 6

        run(main)
    finally:
        for process in workers:
            process.terminate()
            process.join(5)
        holder.close()
