"""Every ```python block of the README's library part runs as written (issue 23).

The relay's sections come first in the README and are tested by tests/relay/test_readme.py;
from "## The library" on, each section holding Python blocks is either run here, against local
servers on 127.0.0.1, or named in ``COVERED_ELSEWHERE`` with the test module that runs it. A
new block in a section nobody runs fails ``test_every_library_block_is_run``.

Blocks that talk to ``ws://example.com/chat`` or ``wss://example.com/chat`` are run with that
URL replaced by a local server's ``ws://127.0.0.1:<port>/chat``; nothing else is changed.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tube.websocket import Connection, Server, connect

from .conftest import require
from .integrations.test_wsgi import flask_command, gunicorn_command, start_server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 10.0
EXAMPLE_URL = re.compile(r"wss?://example\.com/chat")

#: Sections whose blocks another test module runs (it must name the section's heading).
COVERED_ELSEWHERE = {
    "Quickstart": "tests/test_quickstart.py",
    "asyncio": "tests/aio/test_readme.py",
    "ASGI: FastAPI, Starlette, Django Channels through uvicorn": "tests/integrations/test_asgi.py",
}
#: Sections run here, with the number of Python blocks each holds.
RUN_HERE = {
    "A ready server: `serve()`": 1,
    "Flask, gunicorn and other WSGI servers": 2,
    "Compression": 1,
    "Client": 1,
}


def library_part() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## The library\n")
    return text[start:]


def python_blocks() -> dict[str, list[str]]:
    """``{section heading: [its ```python blocks]}`` for the library part, sections in order."""
    blocks: dict[str, list[str]] = {}
    for section in re.split(r"^(?=## )", library_part(), flags=re.MULTILINE):
        heading = re.match(r"## (.*)", section)
        if heading is None:
            continue
        found = re.findall(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
        if found:
            blocks[heading.group(1)] = found
    return blocks


def section_blocks(heading: str) -> list[str]:
    found = python_blocks()[heading]
    assert len(found) == RUN_HERE[heading], f"{heading}: {len(found)} blocks"
    return found


def execute(blocks: list[str], heading: str, url: str | None = None) -> dict[str, Any]:
    """Run ``blocks`` in order in one namespace, not as ``__main__``; ``url`` replaces the
    example's ``example.com`` URL (which must be there)."""
    namespace: dict[str, Any] = {"__name__": "readme"}
    for number, block in enumerate(blocks, 1):
        if url is not None:
            assert EXAMPLE_URL.search(block), f"{heading} block {number} names no example URL"
            block = EXAMPLE_URL.sub(url, block)
        exec(compile(block, f"{README}:{heading}-{number}", "exec"), namespace)
    return namespace


def test_no_python_block_hides_in_an_indented_fence() -> None:
    # The blocks are found by fences at the start of a line: one indented inside a list item
    # would never run.
    indented = re.findall(r"^[ \t]+```python", README.read_text(encoding="utf-8"), re.MULTILINE)
    assert not indented, "an indented ```python block in README.md (move it out of the list)"


def test_every_library_block_is_run() -> None:
    blocks = python_blocks()
    assert blocks, "no ```python block after '## The library'"
    for heading, found in blocks.items():
        if heading in COVERED_ELSEWHERE:
            module = (ROOT / COVERED_ELSEWHERE[heading]).read_text(encoding="utf-8")
            assert f"## {heading.split(':')[0]}" in module, (heading, COVERED_ELSEWHERE[heading])
        else:
            assert heading in RUN_HERE, f"nothing runs the Python blocks of README '## {heading}'"
            assert len(found) == RUN_HERE[heading], f"{heading}: {len(found)} blocks"


def test_every_handler_block_can_be_started() -> None:
    """A block that defines a server's handler says how to start it (a ``__main__`` guard)."""
    for heading, found in python_blocks().items():
        for block in found:
            if re.search(r"^class \w+\(\w*(?:Handler)\):", block, re.MULTILINE):
                assert 'if __name__ == "__main__":' in block, (heading, block[:200])
                assert "serve_forever()" in block, (heading, block[:200])


# --------------------------------------------------------------------- serve()


def test_the_serve_example(running: Callable[..., Server]) -> None:
    example = execute(section_blocks("A ready server: `serve()`"), "serve")
    server = running(example["echo"], process_request=example["health"], max_message_size=65536)
    with connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TIMEOUT) as connection:
        connection.send("hello")
        assert connection.incoming.get(timeout=TIMEOUT) == "hello"
        connection.send(b"\x00\xff")
        assert connection.incoming.get(timeout=TIMEOUT) == b"\x00\xff"
    client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        client.request("GET", "/health")
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
    finally:
        client.close()


# ----------------------------------------------------------------------- Flask


@pytest.mark.parametrize("host", ["werkzeug", "gunicorn"])
def test_the_flask_example(host: str, tmp_path: Path) -> None:
    """The section's app.py (both blocks: the plain view continues the first one's app) under
    the section's two commands."""
    require("flask", "gunicorn")
    blocks = section_blocks("Flask, gunicorn and other WSGI servers")
    assert blocks[0].startswith("# app.py\n")
    (tmp_path / "app.py").write_text("".join(blocks), encoding="utf-8")
    if host == "werkzeug":
        command = [*flask_command()[:3], "--app", str(tmp_path / "app.py"), "run", "--port", "0"]
    else:
        command = gunicorn_command(
            "gthread", "app:app", "--threads", "10", "--chdir", str(tmp_path)
        )
    server = start_server(host, command, tmp_path / "server.log")
    try:
        for path in ("/ws", "/chat"):
            with connect(server.url(path), open_timeout=TIMEOUT) as connection:
                connection.send(f"to {path}")
                assert connection.incoming.get(timeout=TIMEOUT) == f"to {path}"
                connection.send(b"\x01")
                assert connection.incoming.get(timeout=TIMEOUT) == b"\x01"
            assert connection.close_code == 1000
    finally:
        server.stop()


# ----------------------------------------------------------------- Compression


def test_the_compression_example(running: Callable[..., Server]) -> None:
    received: list[tuple[bool, str | bytes]] = []

    def record(connection: Connection) -> None:
        protocol = connection._protocol  # was permessage-deflate negotiated?
        compressed = protocol is not None and protocol._deflate is not None
        for message in connection.incoming:
            received.append((compressed, message))

    server = running(record, compression="deflate")
    execute(section_blocks("Compression"), "compression", f"ws://127.0.0.1:{server.port}/chat")
    server.shutdown()  # waits for the handlers, so every message is recorded
    chatty = '{"text": "' + "chat " * 40 + '"}'
    assert received == [
        (True, chatty),
        (True, "a session token"),
        (False, "uncompressed too"),
    ]


# ---------------------------------------------------------------------- Client


def test_the_client_example(
    running: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    def echo(connection: Connection) -> None:
        assert connection.subprotocol == "chat.v1"
        for message in connection.incoming:
            connection.send(message)

    server = running(echo, subprotocols=["chat.v1"])
    example = execute(section_blocks("Client"), "client", f"ws://127.0.0.1:{server.port}/chat")
    assert example["reply"] == "hello"
    assert capsys.readouterr().out == "bye\n"  # the loop ended with the server's close frame
    assert example["connection"].close_code == 1000
