"""Fixtures of the page's browser tests: Debian's Chromium driven by Playwright, and a relay.

Chromium is ``/usr/bin/chromium`` (``./scripts/test`` installs it with apt) launched through
the Python ``playwright`` package with ``executable_path``: nothing here downloads a browser.
A missing Chromium or Playwright skips the tests with the reason, except under ``CI=true``,
where it fails them (as ``tests/interop`` does).

``relay`` starts a :class:`~tube.relay.server.RelayServer` (or a subclass, for the hostile
relays) on 127.0.0.1 in a thread of its own with its own event loop, so that Playwright's
synchronous API keeps the test's thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import CHROMIUM, missing_peer
from tube.relay.server import RelayConfig, RelayServer

# Chromium's switches for tests (relay-design §9): no sandbox (containers), no GPU, nothing
# that talks to the network by itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class RelayThread:
    """A relay served by an event loop in a background thread; ``url`` is its page."""

    def __init__(self, factory: Callable[[RelayConfig], RelayServer], **config: Any) -> None:
        self._factory = factory
        # port=0 (any free port) unless given: a relay "restarted" takes its predecessor's.
        self._config = RelayConfig(**{"host": "127.0.0.1", "port": 0, **config})
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.server: RelayServer | None = None
        self._thread = threading.Thread(target=self._run, name="page-relay", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as error:  # reported by start() or stop()
            self._error = error
            self._ready.set()
        finally:
            # The loop's default executor (address lookups) has threads of its own: join them.
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.server = self._factory(self._config)
        await self.server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()

    def start(self) -> RelayThread:
        """Start serving; returns once the port is bound."""
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the relay did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Close the relay and join its thread."""
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        if self._error is not None:
            raise self._error

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the relay's loop and return its result (for reading state)."""
        result: list[Any] = []
        done = threading.Event()

        def run() -> None:
            result.append(function())
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        return result[0]

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}/"


@pytest.fixture
def relay_factory() -> Iterator[Callable[..., RelayThread]]:
    """``relay_factory(server_class=RelayServer, **config)`` → a started :class:`RelayThread`."""
    started: list[RelayThread] = []

    def start(server_class: type[RelayServer] = RelayServer, **config: Any) -> RelayThread:
        relay = RelayThread(server_class, **config).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(relay_factory: Callable[..., RelayThread]) -> RelayThread:
    """An honest relay on 127.0.0.1."""
    return relay_factory()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium (one per test module; each test opens its own contexts)."""
    if importlib.util.find_spec("playwright") is None:
        missing_peer("the Python package playwright", "pip install -e '.[test]'")
    if not os.access(CHROMIUM, os.X_OK):
        missing_peer(str(CHROMIUM), "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot_dir() -> Path | None:
    """Where tests write screenshots when ``TUBE_SCREENSHOTS`` names a folder (docs), or None."""
    folder = os.environ.get("TUBE_SCREENSHOTS")
    return Path(folder) if folder else None
