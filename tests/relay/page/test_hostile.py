"""The page's side of the malicious-relay suite (design §9.4 b, d, e): the page shows the right
error, never "done", and leaves no partial file.

The hostile relays are :class:`~tube.relay.server.RelayServer` subclasses overriding the
``forward`` test hook; production code paths are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from tube.relay.server import RelayServer
from tube.websocket import aio

from .conftest import RelayThread
from .pages import make_file, open_pages, start_sending, type_code, wait_phase

pytestmark = pytest.mark.interop

MiB = 1 << 20
DATA = 0x10
CHUNK = 262_144


def data_index(frame: bytes) -> int | None:
    """The index of a DATA frame (type 0x10, u64 index), or None for any other frame."""
    if len(frame) >= 9 and frame[0] == DATA:
        return int.from_bytes(frame[1:9], "big")
    return None


class FlipBit(RelayServer):
    """Flips one bit in the ciphertext of DATA chunk 2."""

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if data_index(frame) == 2:
            tampered = bytearray(frame)
            tampered[100] ^= 0x01
            frame = bytes(tampered)
        await destination.send(frame)


class DropFinal(RelayServer):
    """Drops the final DATA chunk, then closes the receiver as if its peer had gone (4006)."""

    final_index: ClassVar[int] = 0

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if data_index(frame) == self.final_index:
            await destination.close(4006, "peer gone")
            return
        await destination.send(frame)


def test_wrong_code_shows_wrong_code_or_interference(
    browser: Any, relay: RelayThread, tmp_path: Path
) -> None:
    source = tmp_path / "secret.txt"
    make_file(source, 5000)
    pages = open_pages(browser, relay.url)
    try:
        code = start_sending(pages.sender, source)
        nameplate, first, _ = code.split("-", 2)
        # The right nameplate, other words: CPace fails on both sides, nothing is offered.
        wrong = f"{nameplate}-{'acid' if first != 'acid' else 'acorn'}-yo-yo"
        type_code(pages.receiver, wrong)
        for page in (pages.receiver, pages.sender):
            assert wait_phase(page, "done", "failed", "offered") == "failed"
            problem = page.locator("#problem")
            assert problem.get_attribute("data-kind") == "wrong-code"
            assert "Wrong code or interference" in str(problem.text_content())
        assert pages.receiver.locator("#offer").is_hidden()
    finally:
        pages.close()


def run_to_failure(browser: Any, relay: RelayThread, source: Path) -> tuple[Any, Any]:
    """Send ``source`` through ``relay``; return (the receiver's page, its download)."""
    pages = open_pages(browser, relay.url)
    code = start_sending(pages.sender, source)
    type_code(pages.receiver, code)
    pages.receiver.wait_for_selector("#accept:visible")
    with pages.receiver.expect_download() as download_info:
        pages.receiver.click("#accept")
        final = wait_phase(pages.receiver, "done", "failed")
    assert final == "failed"
    assert pages.sender.locator("#app").get_attribute("data-phase") != "done"
    download = download_info.value
    # The stream was errored: the browser failed the download and kept no partial file.
    assert download.failure() is not None
    return pages, download


def test_flipped_bit_is_an_integrity_error(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    source = tmp_path / "tampered.bin"
    make_file(source, 2 * MiB)
    relay = relay_factory(FlipBit)
    pages, _ = run_to_failure(browser, relay, source)
    try:
        problem = pages.receiver.locator("#problem")
        assert problem.get_attribute("data-kind") == "integrity"
        assert "Integrity error" in str(problem.text_content())
        assert "partial file deleted" in str(problem.text_content())
        # The receiver said why before leaving (a sealed cancel "integrity"): the sender's page
        # names the receiver's failure, not only that it left.
        assert wait_phase(pages.sender, "done", "failed") == "failed"
        told = pages.sender.locator("#problem")
        assert told.get_attribute("data-kind") == "peer-integrity"
        assert "The receiver stopped: the data was damaged in transit" in str(told.text_content())
    finally:
        pages.close()


def test_dropped_final_chunk_is_never_done(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    size = 2 * MiB + 100
    source = tmp_path / "truncated.bin"
    make_file(source, size)
    DropFinal.final_index = size // CHUNK  # the last chunk holds the 100 extra bytes
    relay = relay_factory(DropFinal)
    pages, _ = run_to_failure(browser, relay, source)
    try:
        problem = pages.receiver.locator("#problem")
        assert problem.get_attribute("data-kind") == "peer-left"
        assert "left before the transfer finished" in str(problem.text_content())
    finally:
        pages.close()
