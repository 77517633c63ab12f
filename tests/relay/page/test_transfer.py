"""Two pages, one relay: the file goes from page A to page B through the UI, byte for byte.

The big run (256 MiB) uses ``python -m tube`` in a subprocess, so that the relay's resident
memory can be read from ``/proc/<pid>/status`` alone; the receiving renderer's JS heap is read
over CDP (``Performance.getMetrics``) while the file streams through the service worker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import RelayThread
from .pages import (
    make_file,
    open_pages,
    phase,
    receive,
    sha256_file,
    start_sending,
    type_code,
    wait_phase,
)

pytestmark = pytest.mark.interop

MiB = 1 << 20
#: The big transfer's size: 256 MiB (design §9.3) takes about 15 s here.
BIG = 256 * MiB


def rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def relay_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m tube`` on a free port of 127.0.0.1: (page URL, process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tube", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sampler:
    """Reads the relay's RSS every 100 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def js_heap(cdp: Any) -> int:
    """The page's JSHeapUsedSize in bytes."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return int(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))


def test_two_pages_256_mib_by_typed_code(
    browser: Any, relay_process: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, process = relay_process
    source = tmp_path / "big file.bin"
    digest = make_file(source, BIG)
    pages = open_pages(browser, url)
    try:
        cdp = pages.receiver.context.new_cdp_session(pages.receiver)
        cdp.send("Performance.enable")
        code = start_sending(pages.sender, source)
        type_code(pages.receiver, code)
        pages.receiver.wait_for_selector("#accept:visible")
        assert pages.receiver.locator("#offer-name").text_content() == "big file.bin"
        assert "268,435,456 bytes" in str(pages.receiver.locator("#offer-size").text_content())
        baseline_heap = js_heap(cdp)
        sampler = Sampler(process.pid)
        baseline_rss = sampler.peak
        peak_heap = baseline_heap
        started = time.monotonic()
        try:
            with pages.receiver.expect_download(timeout=180_000) as download_info:
                pages.receiver.click("#accept")
                # Sample the receiving renderer's heap while the file streams through.
                while phase(pages.receiver) not in ("done", "failed"):
                    peak_heap = max(peak_heap, js_heap(cdp))
                    pages.receiver.wait_for_timeout(200)
        finally:
            sampler.stop()
        elapsed = time.monotonic() - started
        assert wait_phase(pages.receiver, "done", "failed") == "done", pages.errors
        assert wait_phase(pages.sender, "done", "failed") == "done", pages.errors
        download = download_info.value
        assert download.suggested_filename == "big file.bin"
        assert sha256_file(download.path()) == digest
        growth = sampler.peak - baseline_rss
        # The figures of the run, shown with -s.
        print(
            f"\n256 MiB in {elapsed:.1f} s ({BIG / elapsed / MiB:.1f} MiB/s); relay RSS "
            f"+{growth / MiB:.1f} MiB; receiver JS heap peak {peak_heap / MiB:.1f} MiB "
            f"(baseline {baseline_heap / MiB:.1f} MiB)"
        )
        assert growth < 20 * MiB
        # Far below the file: the credit window bounds what the page holds (16 x 256 KiB).
        assert peak_heap < 32 * MiB
        assert not pages.errors
    finally:
        pages.close()


def test_link_mode(browser: Any, relay: RelayThread, tmp_path: Path) -> None:
    source = tmp_path / "notes: café.txt"
    digest = make_file(source, 3 * MiB + 123)
    pages = open_pages(browser, relay.url)
    try:
        link = start_sending(pages.sender, source, link=True)
        nameplate, _, secret = link.partition("#")[2].partition(".")
        assert len(secret) == 22 and nameplate.isdigit()
        pages.receiver.goto(link)
        wait_phase(pages.receiver, "link")
        # The secret leaves the address bar at once; claiming waits for a click.
        assert "#" not in pages.receiver.url
        assert phase(pages.sender) == "waiting"
        pages.receiver.click("#connect")
        pages.receiver.wait_for_selector("#accept:visible")
        with pages.receiver.expect_download() as download_info:
            pages.receiver.click("#accept")
        assert wait_phase(pages.receiver, "done", "failed") == "done"
        assert wait_phase(pages.sender, "done", "failed") == "done"
        download = download_info.value
        # The name is sanitised for saving (no ":"), the content unchanged.
        assert download.suggested_filename == "notes_ café.txt"
        assert sha256_file(download.path()) == digest
        assert not pages.errors
    finally:
        pages.close()


def test_small_and_empty_files(browser: Any, relay: RelayThread, tmp_path: Path) -> None:
    for size in (0, 100):
        source = tmp_path / f"file-{size}.bin"
        digest = make_file(source, size)
        pages = open_pages(browser, relay.url)
        try:
            code = start_sending(pages.sender, source)
            download, final = receive(pages.receiver, code)
            assert final == "done"
            assert wait_phase(pages.sender, "done", "failed") == "done"
            assert sha256_file(download.path()) == digest
        finally:
            pages.close()


def test_decline(browser: Any, relay: RelayThread, tmp_path: Path) -> None:
    source = tmp_path / "unwanted.bin"
    make_file(source, 1000)
    pages = open_pages(browser, relay.url)
    try:
        type_code(pages.receiver, start_sending(pages.sender, source))
        pages.receiver.wait_for_selector("#decline:visible")
        pages.receiver.click("#decline")
        assert wait_phase(pages.receiver, "cancelled") == "cancelled"
        assert wait_phase(pages.sender, "failed") == "failed"
        assert pages.sender.locator("#problem").get_attribute("data-kind") == "declined"
        assert "declined" in str(pages.sender.locator("#problem").text_content())
    finally:
        pages.close()


def test_typo_in_the_code_is_caught_before_connecting(browser: Any, relay: RelayThread) -> None:
    pages = open_pages(browser, relay.url)
    try:
        wait_phase(pages.receiver, "start")
        pages.receiver.fill("#code", "4821-ahead-zebar")
        pages.receiver.click("#receive")
        error = pages.receiver.locator("#code-error")
        error.wait_for(state="visible")
        assert "zebar" in str(error.text_content())
        assert phase(pages.receiver) == "start"
        assert pages.receiver.locator("#code").get_attribute("aria-invalid") == "true"
    finally:
        pages.close()


def test_word_completion(browser: Any, relay: RelayThread) -> None:
    pages = open_pages(browser, relay.url)
    try:
        page = pages.receiver
        wait_phase(page, "start")
        page.locator("#code").press_sequentially("4821 Ahead zeb")
        options = page.locator("#code-words option")
        options.first.wait_for(state="attached")
        values = [options.nth(i).get_attribute("value") for i in range(options.count())]
        assert "4821 Ahead zebra" in values
    finally:
        pages.close()


def test_no_x25519_says_the_browser_is_too_old(browser: Any, relay: RelayThread) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        # A browser without X25519 in WebCrypto: generateKey refuses the algorithm.
        page.add_init_script(
            "const g = crypto.subtle.generateKey.bind(crypto.subtle);"
            "crypto.subtle.generateKey = (a, ...r) => (a && a.name === 'X25519')"
            " ? Promise.reject(new DOMException('no', 'NotSupportedError')) : g(a, ...r);"
        )
        page.goto(relay.url)
        wait_phase(page, "unsupported")
        text = str(page.locator("#problem").text_content())
        assert "Chrome 133" in text and "Firefox 130" in text and "Safari 17" in text
        assert page.locator("#start").is_hidden()
    finally:
        context.close()


def test_the_worker_answers_only_downloads_the_page_registered(
    browser: Any, relay: RelayThread
) -> None:
    # The service worker answers /dl/<id> only for a download the page registered; others 404.
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(relay.url)
        wait_phase(page, "start")
        status = page.evaluate(
            "async () => { await navigator.serviceWorker.ready;"
            " return (await fetch('/dl/nothing')).status; }"
        )
        assert status == 404
    finally:
        context.close()
