"""Continue with a new code (design §5.9, "Across a relay restart or page reload"; issue 19):
a transfer broken beyond resume leaves the receiving page's staged part in OPFS, keyed by the
file id; the same file sent again with a new code is accepted with ``resume_from`` = the chunks
kept, and only the rest crosses the relay.

The break is a real relay restart (the first relay stopped mid-transfer, a new one on the same
port: the rid is unknown there, 4010), and the receiving page is reloaded before it continues,
so what it continues from is what OPFS kept, not anything in the page's memory. The part is
never shown as the file: no download before the second transfer's last chunk.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tube.relay.server import RelayServer
from tube.websocket import aio

from .conftest import RelayThread
from .pages import make_file, open_pages, sha256_file, start_sending, type_code, wait_phase

pytestmark = pytest.mark.interop

MiB = 1 << 20
CHUNK = 262_144
SEGMENT = 32  # staging.js's SEGMENT_CHUNKS: what a break may lose


class StopsAt(RelayServer):
    """Records every DATA chunk's index; holds chunk ``at`` (never forwards it) and says so."""

    at: ClassVar[int | None] = None
    frames: ClassVar[list[int]] = []
    reached: ClassVar[threading.Event] = threading.Event()

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if frame[0] == 0x10:
            index = int.from_bytes(frame[1:9], "big")
            type(self).frames.append(index)
            if index == self.at:
                type(self).reached.set()
                await asyncio.Event().wait()  # until the relay is stopped
        await destination.send(frame)


def test_relay_restart_and_reload_then_continue_with_a_new_code(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    source = tmp_path / "continued.bin"
    size = 64 * MiB + 5
    total = -(-size // CHUNK)  # 257 chunks
    digest = make_file(source, size)
    StopsAt.at, StopsAt.frames, StopsAt.reached = 150, [], threading.Event()
    first: RelayThread = relay_factory(StopsAt)
    url = first.url + "?sink=opfs"
    pages = open_pages(browser, url)
    downloads: list[Any] = []
    pages.receiver.on("download", lambda download: downloads.append(download))
    try:
        code = start_sending(pages.sender, source)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#accept:visible")
        pages.receiver.click("#accept")
        assert StopsAt.reached.wait(120), "the transfer never reached chunk 150"
        port = first.server.port if first.server else 0
        first.stop()  # the relay restarts: a new process knows no pair and no rid
        StopsAt.at, StopsAt.frames = None, []
        relay_factory(StopsAt, port=port)

        for page in (pages.receiver, pages.sender):
            assert wait_phase(page, "done", "failed", timeout=60) == "failed", pages.errors
        kind = pages.receiver.locator("#problem").get_attribute("data-kind")
        assert kind == "resume-failed", kind
        assert "is kept in this browser" in pages.receiver.locator("#problem").inner_text()
        again = pages.receiver.locator("#again")
        assert again.inner_text() == "Continue with a new code"
        kept = int(again.get_attribute("data-kept") or 0)
        # Chunks 0..149 arrived; whole segments of them were kept (at most one segment lost).
        assert kept % SEGMENT == 0 and 150 - SEGMENT <= kept <= 150, kept
        assert not downloads  # the part is not the file

        # The person reloads the receiving page: the kept part is what OPFS holds.
        pages.receiver.reload()
        wait_phase(pages.receiver, "start")
        line = pages.receiver.locator("#kept .kept")
        line.wait_for()
        assert "continued.bin" in line.inner_text()

        # The sender sends the same file again (its salt survived in localStorage): a new code.
        pages.sender.click("#again")
        code = start_sending(pages.sender, source)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#accept:visible")
        note = pages.receiver.locator("#offer-sink[data-kept]")
        note.wait_for()
        assert note.get_attribute("data-kept") == str(kept), note.inner_text()
        with pages.receiver.expect_download(timeout=120_000) as download_info:
            pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "done", pages.errors
        assert wait_phase(pages.sender, "done", "failed") == "done", pages.errors
        assert sha256_file(download_info.value.path()) == digest
        # Only the missing chunks crossed the new relay (a credit window at most twice).
        frames = StopsAt.frames
        assert sorted(set(frames)) == list(range(kept, total)), frames[:5]
        assert len(frames) == total - kept
        # Finished: the page no longer lists it as a part to continue.
        pages.receiver.goto(url)
        wait_phase(pages.receiver, "start")
        assert pages.receiver.locator("#kept .kept").count() == 0
    finally:
        pages.close()


def test_a_download_held_open_continues_after_a_relay_restart(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    # The stream sink (the default here): the download cannot outlive the page, but while the
    # page stays open it is held open and the same file sent again with a new code goes on
    # into it (design §5.9: "a service-worker download survives a relay restart while the page
    # stays open").
    source = tmp_path / "held open.bin"
    size = 64 * MiB + 5
    total = -(-size // CHUNK)
    digest = make_file(source, size)
    StopsAt.at, StopsAt.frames, StopsAt.reached = 150, [], threading.Event()
    first: RelayThread = relay_factory(StopsAt)
    pages = open_pages(browser, first.url)
    downloads: list[Any] = []
    pages.receiver.on("download", lambda download: downloads.append(download))
    try:
        code = start_sending(pages.sender, source)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#accept:visible")
        pages.receiver.click("#accept")
        assert StopsAt.reached.wait(120), "the transfer never reached chunk 150"
        port = first.server.port if first.server else 0
        first.stop()
        StopsAt.at, StopsAt.frames = None, []
        relay_factory(StopsAt, port=port)
        for page in (pages.receiver, pages.sender):
            assert wait_phase(page, "done", "failed", timeout=60) == "failed", pages.errors
        problem = pages.receiver.locator("#problem").inner_text()
        assert "The download stays open" in problem, problem
        again = pages.receiver.locator("#again")
        kept = int(again.get_attribute("data-kept") or 0)
        assert 0 < kept <= 150, kept

        again.click()  # "Continue with a new code": back to the form, not a reload
        pages.sender.click("#again")
        code = start_sending(pages.sender, source)
        type_code(pages.receiver, code)
        note = pages.receiver.locator("#offer-sink[data-kept]")
        note.wait_for()
        assert note.get_attribute("data-kept") == str(kept)
        pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "done", pages.errors
        assert wait_phase(pages.sender, "done", "failed") == "done", pages.errors
        assert len(downloads) == 1  # one download, continued
        assert sha256_file(downloads[0].path()) == digest
        assert sorted(StopsAt.frames) == list(range(kept, total))
    finally:
        pages.close()


# Every file in the page's OPFS, as paths (an evaluated function: the CSP forbids only eval).
OPFS_FILES = """async () => {
  const out = [];
  const walk = async (dir, prefix) => {
    for await (const [name, handle] of dir.entries()) {
      if (handle.kind === "directory") await walk(handle, `${prefix}${name}/`);
      else out.push(`${prefix}${name}`);
    }
  };
  await walk(await navigator.storage.getDirectory(), "");
  return out.sort();
}"""


class FlipBitAt40(RelayServer):
    """Flips one bit in DATA chunk 40: after the first segment (32 chunks) was committed."""

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if frame[0] == 0x10 and int.from_bytes(frame[1:9], "big") == 40:
            tampered = bytearray(frame)
            tampered[100] ^= 0x01
            frame = bytes(tampered)
        await destination.send(frame)


class DropFinalChunk(RelayServer):
    """Drops DATA chunk ``final`` and closes the receiver as if its peer had gone (4006)."""

    final: ClassVar[int] = 0

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if frame[0] == 0x10 and int.from_bytes(frame[1:9], "big") == self.final:
            await destination.close(4006, "peer gone")
            return
        await destination.send(frame)


def fail_with_opfs(browser: Any, relay: RelayThread, source: Path) -> tuple[Any, list[Any]]:
    """Send ``source`` to a page saving to OPFS until the receiver fails; return (the pages,
    the receiver's downloads)."""
    pages = open_pages(browser, relay.url + "?sink=opfs")
    downloads: list[Any] = []
    pages.receiver.on("download", lambda download: downloads.append(download))
    code = start_sending(pages.sender, source)
    type_code(pages.receiver, code)
    pages.receiver.wait_for_selector("#accept:visible")
    pages.receiver.click("#accept")
    assert wait_phase(pages.receiver, "done", "failed") == "failed", pages.errors
    return pages, downloads


def test_an_integrity_error_keeps_nothing(browser: Any, relay_factory: Any, tmp_path: Path) -> None:
    source = tmp_path / "tampered.bin"
    make_file(source, 48 * CHUNK)
    pages, downloads = fail_with_opfs(browser, relay_factory(FlipBitAt40), source)
    try:
        problem = pages.receiver.locator("#problem")
        assert problem.get_attribute("data-kind") == "integrity"
        assert "kept" not in problem.inner_text()
        assert pages.receiver.locator("#again").get_attribute("data-kept") is None
        assert not downloads
        for _ in range(50):  # the abort removes the folder after the page says "failed"
            if pages.receiver.evaluate(OPFS_FILES) == []:
                break
            pages.receiver.wait_for_timeout(100)
        assert pages.receiver.evaluate(OPFS_FILES) == []
    finally:
        pages.close()


def test_a_dropped_final_chunk_is_kept_as_a_part_never_as_the_file(
    browser: Any, relay_factory: Any, tmp_path: Path
) -> None:
    source = tmp_path / "truncated.bin"
    make_file(source, 40 * CHUNK + 100)
    DropFinalChunk.final = 40
    pages, downloads = fail_with_opfs(browser, relay_factory(DropFinalChunk), source)
    try:
        assert pages.receiver.locator("#problem").get_attribute("data-kind") == "peer-left"
        assert pages.receiver.locator("#again").get_attribute("data-kept") == "32"
        assert not downloads
        files = pages.receiver.evaluate(OPFS_FILES)
        # One whole segment and the record; the 8 chunks after it were dropped with their
        # uncommitted segment, and nothing is the file.
        assert [name.rsplit("/", 1)[1] for name in files] == ["meta.json", "seg-000000"], files
    finally:
        pages.close()
