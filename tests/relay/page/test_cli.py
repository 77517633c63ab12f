"""Browser ↔ command line, both ways: the page and ``python -m tube send/receive`` speak the
same end-to-end protocol byte for byte (design §9.3).

The command-line peer runs as a person runs it (``tests/relay/cli``'s ``Proc`` collects its
output); the relay is the in-process one of the page tests.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.interop.conftest import missing_peer
from tests.relay.cli.conftest import Proc, child_env
from tube.relay.server import RelayServer
from tube.websocket import aio

from .conftest import RelayThread
from .pages import (
    make_file,
    open_pages,
    receive,
    sha256_file,
    start_sending,
    type_code,
    wait_phase,
)
from .test_hostile import FlipBit

pytestmark = pytest.mark.interop

MiB = 1 << 20
CHUNK = 262_144
CODE = re.compile(r"[1-9][0-9]{2,7}(-[a-z]+(-[a-z]+)?){2,8}")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``cli(*args)`` runs ``python -m tube *args``; killed at the end if still running."""
    if importlib.util.find_spec("cryptography") is None:
        missing_peer("the Python package cryptography", "pip install -e '.[relay-cli]'")
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc([sys.executable, "-m", "tube", *args], child_env(tmp_path / "state"))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def test_page_sends_cli_receives(
    browser: Any, relay: RelayThread, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    source = tmp_path / "from the page.bin"
    digest = make_file(source, 5 * MiB + 17)
    out = tmp_path / "out"
    out.mkdir()
    pages = open_pages(browser, relay.url)
    try:
        code = start_sending(pages.sender, source)
        receiver = cli("receive", code, "--relay", relay.url.rstrip("/"), "--yes", "-o", str(out))
        status, stdout, stderr = receiver.finish(60)
        assert status == 0, stderr
        saved = Path(stdout.strip())
        assert saved.name == "from the page.bin" and saved.parent == out
        assert sha256_file(saved) == digest
        assert wait_phase(pages.sender, "done", "failed") == "done"
    finally:
        pages.close()


def test_cli_sends_page_receives(
    browser: Any, relay: RelayThread, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    source = tmp_path / "from the terminal.bin"
    digest = make_file(source, 5 * MiB + 17)
    sender = cli("send", str(source), "--relay", relay.url.rstrip("/"))
    code = sender.wait_for("stdout", r".", timeout=30)
    assert CODE.fullmatch(code), code
    pages = open_pages(browser, relay.url)
    try:
        download, final = receive(pages.receiver, code)
        assert final == "done", pages.errors
        assert download.suggested_filename == "from the terminal.bin"
        assert sha256_file(download.path()) == digest
        status, _, stderr = sender.finish(60)
        assert status == 0, stderr
    finally:
        pages.close()


def test_cli_link_page_receives(
    browser: Any, relay: RelayThread, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    source = tmp_path / "linked.bin"
    digest = make_file(source, 300_000)
    sender = cli("send", str(source), "--relay", relay.url.rstrip("/"), "--link")
    sender.wait_for("stdout", r".", timeout=30)
    link = sender.wait_for("stdout", r"#", timeout=30)
    pages = open_pages(browser, relay.url)
    try:
        pages.receiver.goto("about:blank")
        pages.receiver.goto(link)
        wait_phase(pages.receiver, "link")
        pages.receiver.click("#connect")
        pages.receiver.wait_for_selector("#accept:visible")
        with pages.receiver.expect_download() as download_info:
            pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "done"
        assert sha256_file(download_info.value.path()) == digest
        assert sender.finish(60)[0] == 0
    finally:
        pages.close()


class CutReceiverOnce(RelayServer):
    """Closes the receiver with 4006 ("peer gone") when DATA chunk ``at`` first reaches it."""

    at: ClassVar[int] = 20
    cut: ClassVar[bool] = False

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        index = int.from_bytes(frame[1:9], "big") if frame[:1] == b"\x10" else None
        if index == self.at and not type(self).cut:
            type(self).cut = True
            await destination.close(4006, "peer gone")
            return
        await destination.send(frame)


def test_page_sends_again_after_a_reload_and_the_cli_continues(
    browser: Any, relay_factory: Any, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    # The page keeps its file-id salt in localStorage: the same file sent after a reload has
    # the same id, so the command line's partial download is continued, not started over.
    CutReceiverOnce.cut = False
    relay = relay_factory(CutReceiverOnce)
    source = tmp_path / "sent twice.bin"
    digest = make_file(source, 32 * CHUNK + 5)
    out = tmp_path / "out"
    out.mkdir()
    args = ("--relay", relay.url.rstrip("/"), "--yes", "-o", str(out))
    pages = open_pages(browser, relay.url)
    try:
        code = start_sending(pages.sender, source)
        status, _, stderr = cli("receive", code, *args).finish(60)
        assert status != 0 and CutReceiverOnce.cut, stderr
        kept = json.loads((out / ".sent twice.bin.tube-part.json").read_text())["chunks"]
        assert 0 < kept <= CutReceiverOnce.at, kept
        pages.sender.reload()  # the person reloads the page and sends the same file again
        code = start_sending(pages.sender, source)
        status, stdout, stderr = cli("receive", code, *args).finish(60)
        assert status == 0, stderr
        assert "continues a partial download" in stderr, stderr
        assert sha256_file(stdout.strip()) == digest
        assert wait_phase(pages.sender, "done", "failed") == "done"
    finally:
        pages.close()


def test_page_receiver_integrity_error_reaches_the_cli_sender(
    browser: Any, relay_factory: Any, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    # The relay flips a bit of chunk 2: the page fails, and its sealed cancel "integrity"
    # (peer.js) is authentic and in order for the Python peer, which words it.
    relay = relay_factory(FlipBit)
    source = tmp_path / "damaged.bin"
    make_file(source, 2 * MiB)
    sender = cli("send", str(source), "--relay", relay.url.rstrip("/"))
    code = sender.wait_for("stdout", r".", timeout=30)
    pages = open_pages(browser, relay.url)
    try:
        _, final = receive(pages.receiver, code)
        assert final == "failed"
        assert pages.receiver.locator("#problem").get_attribute("data-kind") == "integrity"
        status, _, stderr = sender.finish(60)
        assert status != 0
        assert "the receiver stopped: integrity error" in stderr, stderr
    finally:
        pages.close()


def test_cli_receiver_integrity_error_reaches_the_page_sender(
    browser: Any, relay_factory: Any, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    relay = relay_factory(FlipBit)
    source = tmp_path / "damaged.bin"
    make_file(source, 2 * MiB)
    out = tmp_path / "out"
    out.mkdir()
    pages = open_pages(browser, relay.url)
    try:
        code = start_sending(pages.sender, source)
        receiver = cli("receive", code, "--relay", relay.url.rstrip("/"), "--yes", "-o", str(out))
        status, _, stderr = receiver.finish(60)
        assert status != 0 and "integrity" in stderr, stderr
        assert wait_phase(pages.sender, "done", "failed") == "failed"
        problem = pages.sender.locator("#problem")
        assert problem.get_attribute("data-kind") == "peer-integrity"
        assert "The receiver stopped: the data was damaged in transit" in str(
            problem.text_content()
        )
        assert not list(out.iterdir())  # the partial file and its sidecar deleted
    finally:
        pages.close()


class CutAndCount(CutReceiverOnce):
    """CutReceiverOnce at chunk 40, recording the index of every DATA chunk after the cut."""

    at: ClassVar[int] = 40
    after: ClassVar[list[int]] = []

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if type(self).cut and frame[:1] == b"\x10":
            type(self).after.append(int.from_bytes(frame[1:9], "big"))
        await super().forward(source, destination, frame)


def test_cli_sends_again_and_the_page_continues(
    browser: Any, relay_factory: Any, cli: Callable[..., Proc], tmp_path: Path
) -> None:
    # The receiving page stages into OPFS by file id; the command line keeps its salt in its
    # state folder, so the same file sent again has the same id and only the rest is sent.
    CutAndCount.cut, CutAndCount.after = False, []
    relay = relay_factory(CutAndCount)
    source = tmp_path / "sent by the terminal twice.bin"
    digest = make_file(source, 64 * CHUNK + 5)
    args = (str(source), "--relay", relay.url.rstrip("/"))
    pages = open_pages(browser, relay.url + "?sink=opfs")
    try:
        sender = cli("send", *args)
        code = sender.wait_for("stdout", r".", timeout=30)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#accept:visible")
        pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "failed", pages.errors
        assert CutAndCount.cut
        sender.kill()  # its side waits out the relay's grace: the person stops it
        kept = int(pages.receiver.locator("#again").get_attribute("data-kept") or 0)
        # Chunks 0..39 written: the first 8 MiB segment kept.
        assert kept == 32, pages.receiver.locator("#problem").inner_text()

        pages.receiver.click("#again")  # "Continue with a new code"
        sender = cli("send", *args)
        code = sender.wait_for("stdout", r".", timeout=30)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#offer-sink[data-kept]")
        with pages.receiver.expect_download(timeout=60_000) as download_info:
            pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "done", pages.errors
        assert sha256_file(download_info.value.path()) == digest
        assert sender.finish(60)[0] == 0
        assert sorted(set(CutAndCount.after)) == list(range(32, 65))
    finally:
        pages.close()
