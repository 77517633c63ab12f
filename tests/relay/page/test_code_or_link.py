"""The sender's code and link are two passwords on two nameplates (``static/js/sharing.js``):
whichever the receiver uses works, whatever the person copied, and the other nameplate is
given back to the relay at once (its gauge drops to 0; a claim of it gets 4002, "expired").
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tube.relay.limits import Limits

from .conftest import RelayThread
from .pages import make_file, open_pages, sha256_file, start_sending, type_code, wait_phase

pytestmark = pytest.mark.interop


def nameplates(relay: RelayThread) -> int:
    """The relay's ``tube_relay_nameplates`` gauge (nameplates allocated, not yet paired)."""
    with urllib.request.urlopen(relay.url + "metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("tube_relay_nameplates "):
                return int(line.split()[1])
    raise AssertionError("no tube_relay_nameplates in /metrics")


def wait_nameplates(relay: RelayThread, expected: int, timeout: float = 10.0) -> None:
    """Wait until the gauge reads ``expected`` (the page gives a nameplate back asynchronously)."""
    deadline = time.monotonic() + timeout
    while (count := nameplates(relay)) != expected:
        assert time.monotonic() < deadline, f"{count} nameplates, expected {expected}"
        time.sleep(0.05)


def closes(relay: RelayThread, code: int) -> int:
    """How many connections the relay closed with ``code``."""
    server = relay.server
    assert server is not None
    return int(relay.call(lambda: server.core.closes[code]))


def use(page: Any, url: str, form: str, text: str) -> None:
    """Start receiving on ``page`` with the code (typed) or the link (opened, then Connect)."""
    if form == "code":
        page.goto(url)
        type_code(page, text)
    else:
        page.goto(text)
        wait_phase(page, "link")
        page.click("#connect")


def shared(sender: Any) -> dict[str, str]:
    """The code and the link the sender's page shows."""
    return {
        "code": str(sender.locator("#code-out").text_content()),
        "link": str(sender.locator("#link-out").input_value()),
    }


@pytest.mark.parametrize(("copied", "used"), [("code", "link"), ("link", "code")])
def test_the_form_used_works_whatever_was_copied(
    browser: Any, relay_factory: Any, tmp_path: Path, copied: str, used: str
) -> None:
    relay = relay_factory(metrics=True)
    source = tmp_path / f"sent by {used}.bin"
    digest = make_file(source, 700_000)
    pages = open_pages(browser, relay.url)
    try:
        sender, receiver = pages.sender, pages.receiver
        sender.context.grant_permissions(["clipboard-read", "clipboard-write"])
        start_sending(sender, source)
        forms = shared(sender)
        # Both forms wait on a nameplate of their own.
        assert forms["code"].split("-")[0] != forms["link"].partition("#")[2].split(".")[0]
        assert nameplates(relay) == 2
        # The person copies one form, then passes on the other (reads the code aloud after
        # "Copy link", or copies the link's text by hand after "Copy code").
        sender.click(f"#copy-{copied}")
        sender.wait_for_selector(f"#copy-{copied}:has-text('Copied')")
        assert sender.evaluate("() => navigator.clipboard.readText()") == forms[copied]
        use(receiver, relay.url, used, forms[used])
        receiver.wait_for_selector("#accept:visible")
        # Paired: the other form's nameplate is gone from the relay.
        wait_nameplates(relay, 0)
        with receiver.expect_download() as download_info:
            receiver.click("#accept")
        assert wait_phase(receiver, "done", "failed") == "done", pages.errors
        assert wait_phase(sender, "done", "failed") == "done", pages.errors
        assert sha256_file(download_info.value.path()) == digest
        assert sender.locator("#send").get_attribute("data-via") == used
        # Someone who tries the other form later is told it expired or was used (4002).
        late = browser.new_context()
        try:
            page = late.new_page()
            use(page, relay.url, copied, forms[copied])
            assert wait_phase(page, "failed", "offered") == "failed"
            assert page.locator("#problem").get_attribute("data-kind") == "expired"
        finally:
            late.close()
        assert closes(relay, 4002) == 1
        assert not pages.errors
    finally:
        pages.close()


def test_cancel_while_waiting_gives_both_nameplates_back(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    relay = relay_factory(metrics=True)
    source = tmp_path / "never sent.bin"
    make_file(source, 1000)
    pages = open_pages(browser, relay.url)
    try:
        start_sending(pages.sender, source)
        assert nameplates(relay) == 2
        pages.sender.click("#cancel")
        assert wait_phase(pages.sender, "cancelled") == "cancelled"
        wait_nameplates(relay, 0)
    finally:
        pages.close()


def test_only_the_code_when_the_relay_grants_one_nameplate(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    # One unpaired nameplate per address: the link's allocation is refused (429).
    relay = relay_factory(limits=Limits(outstanding_per_ip=1))
    source = tmp_path / "code only.bin"
    digest = make_file(source, 5000)
    pages = open_pages(browser, relay.url)
    try:
        code = start_sending(pages.sender, source)
        assert pages.sender.locator("#link-line").is_hidden()
        note = str(pages.sender.locator("#share-note").text_content())
        assert "Only the code works now." in note, note
        use(pages.receiver, relay.url, "code", code)
        pages.receiver.wait_for_selector("#accept:visible")
        with pages.receiver.expect_download() as download_info:
            pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "done", pages.errors
        assert wait_phase(pages.sender, "done", "failed") == "done", pages.errors
        assert sha256_file(download_info.value.path()) == digest
    finally:
        pages.close()
