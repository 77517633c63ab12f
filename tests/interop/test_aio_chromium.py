"""Interop: headless Chromium against the asyncio transport's server (``tube.websocket.aio``).

The page is served by the same ``aio.serve()`` through ``process_request``; the browser opens
a WebSocket to it, exchanges text and binary messages (small and 1 MiB; Chromium offers
permessage-deflate, which the server accepts here) and closes with 1000.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tube.websocket import aio
from tube.websocket.core.http import Request, Response

from .test_chromium import Browser
from .test_deflate_interop import CHROMIUM_EXCHANGE

pytestmark = pytest.mark.interop

PAGE = b"<!doctype html><title>tube aio</title>"


class AioServer:
    """An ``aio.serve()`` echo server running on its own event loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.closes: list[tuple[int | None, str]] = []
        self.closed = threading.Event()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self._thread.start()
        assert self.started.wait(10), "the aio server did not start"

    async def _echo(self, connection: aio.Connection) -> None:
        async for message in connection.incoming:
            await connection.send(message)
        self.closes.append((connection.close_code, connection.close_reason))
        self.closed.set()

    @staticmethod
    def _page(request: Request) -> Response | None:
        if request.target == "/":
            return aio.http_response(200, PAGE, content_type="text/html")
        return None

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        server = aio.serve(
            self._echo,
            "127.0.0.1",
            0,
            process_request=self._page,
            max_message_size=4 << 20,
            ping_interval=None,
            compression="deflate",
        )
        async with server:
            self.port = server.port
            self.started.set()
            await self._stop.wait()

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self.loop.close()


@pytest.fixture
def aio_server() -> Iterator[AioServer]:
    server = AioServer()
    try:
        yield server
    finally:
        server.stop()


def test_chromium_against_aio_server(chromium: Path, aio_server: AioServer, tmp_path: Path) -> None:
    (tmp_path / "profile").mkdir()
    browser = Browser(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        session = browser.open(f"http://127.0.0.1:{aio_server.port}/")
        outcome: dict[str, Any] = browser.evaluate(
            session, CHROMIUM_EXCHANGE % {"port": aio_server.port}
        )
    finally:
        browser.close()
    assert outcome["extensions"].startswith("permessage-deflate"), outcome
    assert [result["ok"] for result in outcome["results"]] == [True] * 7, outcome
    assert aio_server.closed.wait(10), "the handler did not see the end of the connection"
    assert aio_server.closes == [(1000, "done")]
