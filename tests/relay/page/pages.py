"""Helpers of the page tests: drive the sender's and the receiver's page like a person would.

Every wait is on the page's own state (``#app[data-phase=…]``, elements becoming visible),
never a fixed delay. The page's CSP forbids ``eval``, so no helper uses Playwright's string
predicates (``wait_for_function``); selectors and ``evaluate`` with functions work.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Marker bytes at the start of every generated file (design §9.4a looks for it in the relay's
# traffic; here it makes a mixed-up file easy to spot).
MARKER = b"TUBE-PAGE-TEST-MARKER\n"
#: Seconds allowed for a page to reach a phase (a transfer of 256 MiB included).
TIMEOUT = 120.0


def make_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes (starting with the marker) to ``path``; return its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        head = MARKER[:size]
        file.write(head)
        digest.update(head)
        left = size - len(head)
        while left:
            block = os.urandom(min(left, 1 << 20))
            file.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def wait_phase(page: Any, *phases: str, timeout: float = TIMEOUT) -> str:
    """Wait until the page shows one of ``phases``; return it."""
    selector = ", ".join(f"#app[data-phase={phase}]" for phase in phases)
    page.wait_for_selector(selector, state="attached", timeout=timeout * 1000)
    return str(page.locator("#app").get_attribute("data-phase"))


def phase(page: Any) -> str:
    """The phase the page shows now."""
    return str(page.locator("#app").get_attribute("data-phase"))


@dataclass
class Pages:
    """A sender's page and a receiver's page, each in a browser context of its own."""

    sender: Any
    receiver: Any
    contexts: tuple[Any, Any]
    errors: list[str]

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def open_pages(browser: Any, url: str, **receiver_options: Any) -> Pages:
    """Open the relay's page twice (separate contexts: separate service workers and storage)."""
    errors: list[str] = []
    sender_context = browser.new_context()
    receiver_context = browser.new_context(accept_downloads=True, **receiver_options)
    sender = sender_context.new_page()
    receiver = receiver_context.new_page()
    for name, page in (("sender", sender), ("receiver", receiver)):
        page.on("pageerror", lambda error, name=name: errors.append(f"{name}: {error}"))
        page.goto(url)
    return Pages(sender, receiver, (sender_context, receiver_context), errors)


def start_sending(page: Any, path: Path, *, link: bool = False) -> str:
    """Pick ``path`` on the sender's page; return the code it shows (or its link)."""
    wait_phase(page, "start")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#code-out:not(:empty)")
    wait_phase(page, "waiting")
    if link:
        page.click("#copy-link")  # as a person would; the link works whatever was copied
        return str(page.locator("#link-out").input_value())
    return str(page.locator("#code-out").text_content())


def type_code(page: Any, code: str) -> None:
    """Type ``code`` into the receiver's page and submit it."""
    wait_phase(page, "start")
    page.fill("#code", code)
    page.click("#receive")


def receive(page: Any, code: str, *, timeout: float = TIMEOUT) -> tuple[Any, str]:
    """Receive with ``code`` through the UI; return (the download, its final phase)."""
    type_code(page, code)
    page.wait_for_selector("#accept:visible", timeout=timeout * 1000)
    with page.expect_download(timeout=timeout * 1000) as download:
        page.click("#accept")
    return download.value, wait_phase(page, "done", "failed", timeout=timeout)
