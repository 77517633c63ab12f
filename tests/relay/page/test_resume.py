"""Resume (design §5.9, §9.6): the receiver's connection breaks mid-transfer; both pages finish
and the file is whole.

Two breaks: the issue's CDP network emulation (offline for 5 s) and a relay that aborts the
receiver's TCP connection mid-transfer. Chromium's offline emulation does not close a WebSocket
that is already open (it stalls the page's other traffic, the service worker's download
included, so the credit window runs dry and the sender waits); the aborted connection is the
real drop: the page shows "reconnecting", resumes with ``resume{rid}`` within the grace period,
and the sender re-sends at most a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from tube.relay.server import RelayServer
from tube.websocket import aio

from .conftest import RelayThread
from .pages import make_file, open_pages, sha256_file, start_sending, type_code, wait_phase

pytestmark = pytest.mark.interop

MiB = 1 << 20

# Records every phase the page shows (an init script: the page's CSP does not apply to it).
RECORD_PHASES = """
window.__phases = [];
new MutationObserver(() => {
  const phase = document.getElementById("app")?.dataset.phase;
  if (phase && window.__phases[window.__phases.length - 1] !== phase) window.__phases.push(phase);
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-phase"]});
"""


def phases(page: Any) -> list[str]:
    return list(page.evaluate("() => window.__phases"))


class CutReceiver(RelayServer):
    """Aborts the receiver's TCP connection once, when DATA chunk ``at`` reaches the relay."""

    at: ClassVar[int] = 40
    frames: ClassVar[list[int]] = []

    async def forward(self, source: int, destination: aio.Connection, frame: bytes) -> None:
        if frame[0] == 0x10:
            index = int.from_bytes(frame[1:9], "big")
            type(self).frames.append(index)
            if index == self.at and self.frames.count(index) == 1:
                assert destination.transport is not None
                destination.transport.abort()
                return
        await destination.send(frame)


def transfer_with_break(
    browser: Any, relay: RelayThread, tmp_path: Path, size: int, cut: Any
) -> tuple[Any, list[str], list[str]]:
    source = tmp_path / "resumed.bin"
    digest = make_file(source, size)
    pages = open_pages(browser, relay.url)
    try:
        for page in (pages.sender, pages.receiver):
            page.add_init_script(RECORD_PHASES)
            page.reload()
        code = start_sending(pages.sender, source)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#accept:visible")
        with pages.receiver.expect_download(timeout=120_000) as download_info:
            pages.receiver.click("#accept")
            cut(pages.receiver)
            assert wait_phase(pages.receiver, "done", "failed") == "done", pages.errors
        assert wait_phase(pages.sender, "done", "failed") == "done", pages.errors
        assert sha256_file(download_info.value.path()) == digest
        return pages, phases(pages.receiver), phases(pages.sender)
    finally:
        pages.close()


def test_network_offline_for_5_s(browser: Any, relay: RelayThread, tmp_path: Path) -> None:
    def cut(page: Any) -> None:
        page.wait_for_selector("#app[data-phase=transfer]")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", {"offline": True, **conditions})
        page.wait_for_timeout(5000)
        cdp.send("Network.emulateNetworkConditions", {"offline": False, **conditions})

    transfer_with_break(browser, relay, tmp_path, 64 * MiB, cut)


def test_receiver_connection_dropped(browser: Any, relay_factory: Any, tmp_path: Path) -> None:
    CutReceiver.frames = []
    relay = relay_factory(CutReceiver)
    _, receiver, sender = transfer_with_break(browser, relay, tmp_path, 32 * MiB, lambda page: None)
    assert "reconnecting" in receiver, receiver
    assert receiver[-1] == "done" and sender[-1] == "done"
    # Chunks sent twice: at most one credit window (16) plus the one cut.
    frames = CutReceiver.frames
    assert len(frames) - len(set(frames)) <= 17
    assert sorted(set(frames)) == list(range(128))
