"""The page served by one origin sends through a relay on another (``?relay=``): the relay
answers the allocation's CORS only for the origins in its ``--allow-origin`` (the same list its
WebSocket upgrade checks), and the page's CSP lets it ask.

Two relays on 127.0.0.1, two ports, so two origins: the page comes from ``home`` and uses
``away`` for everything else; the receiver uses ``away``'s own page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import RelayThread
from .pages import make_file, open_pages, receive, sha256_file, start_sending, wait_phase

pytestmark = pytest.mark.interop


def allocated(relay: RelayThread) -> int:
    """Nameplates ``relay`` allocated so far."""
    server = relay.server
    assert server is not None
    return int(relay.call(lambda: server.core.stats()["allocated"]))


def test_a_page_from_an_allowed_origin_sends_through_another_relay(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    home = relay_factory()
    origin = home.url.rstrip("/")
    away = relay_factory(allowed_origins=(origin,))
    relay_ws = away.url.replace("http:", "ws:").rstrip("/")
    source = tmp_path / "across origins.bin"
    digest = make_file(source, 700_000)
    pages = open_pages(browser, away.url)
    try:
        pages.sender.goto(f"{home.url}?relay={relay_ws}")
        code = start_sending(pages.sender, source)
        # The code's nameplates are away's: home allocated nothing.
        assert allocated(home) == 0 and allocated(away) == 2
        download, final = receive(pages.receiver, code)
        assert final == "done", pages.errors
        assert sha256_file(download.path()) == digest
        assert wait_phase(pages.sender, "done", "failed") == "done"
    finally:
        pages.close()


def test_a_page_from_an_origin_not_allowed_cannot_allocate(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    home = relay_factory()
    away = relay_factory()  # no --allow-origin: only its own page may read an allocation
    relay_ws = away.url.replace("http:", "ws:").rstrip("/")
    source = tmp_path / "refused.bin"
    make_file(source, 1000)
    pages = open_pages(browser, f"{home.url}?relay={relay_ws}")
    try:
        wait_phase(pages.sender, "start")
        pages.sender.set_input_files("#file", str(source))
        problem = pages.sender.locator("#problem")
        problem.wait_for()
        assert problem.get_attribute("data-kind") == "connection", problem.inner_text()
    finally:
        pages.close()
