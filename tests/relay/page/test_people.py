"""The page for people: a keyboard-only receiver, and every step at a phone's width (375 px)
and a laptop's without horizontal overflow, the step's elements visible.

With ``TUBE_SCREENSHOTS=DIR`` the steps are also saved as ``DIR/<width>-<n>-<step>.png``
(``docs/screenshots/`` holds the committed ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import RelayThread, screenshot_dir
from .pages import make_file, open_pages, sha256_file, start_sending, type_code, wait_phase

pytestmark = pytest.mark.interop

MiB = 1 << 20


def test_keyboard_only_receiver(browser: Any, relay: RelayThread, tmp_path: Path) -> None:
    source = tmp_path / "by keyboard.txt"
    digest = make_file(source, 700_000)
    pages = open_pages(browser, relay.url)
    try:
        code = start_sending(pages.sender, source)
        page = pages.receiver
        wait_phase(page, "start")
        # Tab from the top of the page reaches the code field within a few stops.
        for _ in range(8):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.id") == "code":
                break
        else:
            pytest.fail("Tab never reached the code field")
        page.keyboard.type(code.upper().replace("-", " "))  # forgiving of case and spaces
        page.keyboard.press("Enter")
        page.wait_for_selector("#accept:visible")
        # The offer takes the focus to its first choice: Enter accepts.
        assert page.evaluate("() => document.activeElement.id") == "accept"
        with page.expect_download() as download_info:
            page.keyboard.press("Enter")
        assert wait_phase(page, "done", "failed") == "done"
        assert sha256_file(download_info.value.path()) == digest
        assert page.evaluate("() => document.activeElement.id") == "again"
    finally:
        pages.close()


def check(page: Any, name: str, width: int, visible: list[str], shots: list[str]) -> None:
    """No horizontal overflow, the step's elements visible; save the screenshot if asked."""
    overflow = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert overflow[0] <= overflow[1], (name, overflow)
    for selector in visible:
        assert page.locator(selector).is_visible(), (name, selector)
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (
            name,
            selector,
            box,
        )
    shots.append(name)
    folder = screenshot_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        # Written here, not with path=: Playwright writes files from a thread pool of its own
        # loop, whose threads outlive the test (the thread-leak check fails it).
        image = page.screenshot(full_page=True)
        (folder / f"{width}-{len(shots)}-{name}.png").write_bytes(image)


@pytest.mark.parametrize("width", [375, 1024])
def test_every_step_fits(browser: Any, relay: RelayThread, tmp_path: Path, width: int) -> None:
    name = "Quarterly report with a rather long file name, final version (2).pdf"
    source = tmp_path / name
    make_file(source, 32 * MiB)
    viewport = {"width": width, "height": 760 if width < 500 else 700}
    pages = open_pages(browser, relay.url, viewport=viewport)
    pages.sender.set_viewport_size(viewport)
    shots: list[str] = []
    try:
        sender, receiver = pages.sender, pages.receiver
        wait_phase(sender, "start")
        check(sender, "start", width, ["#drop", "#code", "#receive"], shots)
        code = start_sending(sender, source)
        check(sender, "send-code", width, ["#code-out", "#copy-code", "#link-out"], shots)
        receiver.fill("#code", code[:-2])
        receiver.locator("#code").focus()
        check(receiver, "receive-code", width, ["#code", "#receive"], shots)
        receiver.fill("#code", code)
        receiver.click("#receive")
        receiver.wait_for_selector("#accept:visible")
        check(receiver, "offer", width, ["#offer-name", "#accept", "#decline"], shots)
        # Slow both renderers down so that the progress can be looked at mid-transfer.
        throttles = [page.context.new_cdp_session(page) for page in (sender, receiver)]
        for cdp in throttles:
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": 20})
        with receiver.expect_download(timeout=120_000):
            receiver.click("#accept")
            receiver.wait_for_selector("#progress-box:visible")
            receiver.wait_for_selector("#progress-text:has-text('left')")
            sender.wait_for_selector("#progress-text:has-text('%')")
            check(receiver, "receiving", width, ["#progress", "#progress-text", "#cancel"], shots)
            check(sender, "sending", width, ["#progress", "#progress-text", "#cancel"], shots)
            for cdp in throttles:
                cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
            wait_phase(receiver, "done")
        wait_phase(sender, "done")
        sender.click("#show-verifier")
        check(sender, "delivered", width, ["#status-title", "#verifier-digits", "#again"], shots)
        check(receiver, "saved", width, ["#status-title", "#again"], shots)
    finally:
        pages.close()


@pytest.mark.parametrize("width", [375])
def test_error_fits(browser: Any, relay: RelayThread, tmp_path: Path, width: int) -> None:
    source = tmp_path / "x.txt"
    make_file(source, 10)
    viewport = {"width": width, "height": 760}
    pages = open_pages(browser, relay.url, viewport=viewport)
    try:
        code = start_sending(pages.sender, source)
        nameplate = code.split("-")[0]
        type_code(pages.receiver, f"{nameplate}-acid-acorn")
        assert wait_phase(pages.receiver, "failed") == "failed"
        shots = ["start", "send-code", "receive-code", "offer", "receiving", "sending", "delivered"]
        shots += ["saved"]  # numbered after the steps of test_every_step_fits
        check(pages.receiver, "wrong-code", width, ["#problem", "#again"], shots)
    finally:
        pages.close()
