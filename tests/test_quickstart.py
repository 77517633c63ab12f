"""The README's quickstart, run as written, against a real client (the websockets library)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import SHARED

README = Path(__file__).resolve().parent.parent / "README.md"
TIMEOUT = 10.0


def quickstart_blocks() -> list[str]:
    """The ```python blocks under the README's "Quickstart" heading, in order."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Quickstart' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert blocks, "the Quickstart section has no ```python block"
    return blocks


def quickstart_source() -> str:
    """The quickstart proper: the seed's example (the first block)."""
    return quickstart_blocks()[0]


def load_quickstart() -> dict[str, Any]:
    """Run every Quickstart block, in order, in one namespace (later blocks use the imports
    of the first), as a module that is not ``__main__`` (so nothing serves forever)."""
    namespace: dict[str, Any] = {"__name__": "quickstart"}
    for number, block in enumerate(quickstart_blocks(), 1):
        exec(compile(block, f"{README}:quickstart-{number}", "exec"), namespace)
    return namespace


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (ephemeral port); yield the ``ws://`` URL.

    At exit, wait (bounded) for every thread started meanwhile: the quickstart's and the
    connection's threads end by themselves once the connection is closed.
    """
    before = set(threading.enumerate())
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    for leftover in set(threading.enumerate()) - before:
        if leftover.name in SHARED:
            continue  # the library's shared timer/parking threads outlive a test on purpose
        leftover.join(TIMEOUT)
        assert not leftover.is_alive(), f"{leftover.name} still running"


def test_the_quickstart_block_serves_forever_when_run_as_a_script() -> None:
    source = quickstart_source()
    assert 'if __name__ == "__main__":' in source
    assert "serve_forever()" in source


@pytest.mark.interop
def test_quickstart_end_to_end() -> None:
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    namespace = load_quickstart()
    with (
        serving(namespace["WebSocketHandler"]) as url,
        connect(url, proxy=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws,
    ):
        # The server greets first, as a binary message (send_blob_data).
        assert ws.recv(timeout=TIMEOUT) == b"Hello Client"
        ws.send(b"Hello Server")
        # ... and then closes the connection itself (initiate_close, code 1000).
        with pytest.raises(ConnectionClosedOK) as raised:
            ws.recv(timeout=TIMEOUT)
    assert raised.value.rcvd is not None
    assert raised.value.rcvd.code == 1000
    assert raised.value.rcvd_then_sent is True  # the server closed first


@pytest.mark.interop
def test_method_style_echo_end_to_end() -> None:
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    namespace = load_quickstart()
    with (
        serving(namespace["EchoHandler"]) as url,
        connect(url, proxy=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws,
    ):
        ws.send("héllo")
        assert ws.recv(timeout=TIMEOUT) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xff"
        ws.close(1000, "bye")
        # The server's `with connection:` block ended with the loop, cleanly.
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
