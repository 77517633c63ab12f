"""The page's throughput and memory: one file between two headless Chromium pages through
``python -m tube``, beside the same file from ``python -m tube send`` to ``receive``.

    python3 bench/relay_browser.py                  # 1 GiB (~3-4 min on 2 shared cores)
    python3 bench/relay_browser.py --size 256M --no-write

Not part of CI. Needs what the page tests need (Debian's chromium, the Python package
playwright, and cryptography for the command line). Each run starts its own relay process
(``python -m tube --host 127.0.0.1 --port P``) and a fresh random file in a temporary folder.

Page to page: the sender's page picks the file and shows a code; the receiver's page types it
and accepts, and the file streams through the service worker into Chromium's download
(``tests/relay/page/pages.py`` drives both as the tests do). Timed from the click on "Accept"
to the receiver's "done" (so key exchange and offer are outside; they take well under a
second). Memory, sampled while the file streams (the heap every 200 ms, the rest every
100 ms): the receiving page's JS heap (CDP ``Performance.getMetrics``, ``JSHeapUsedSize``), the
resident memory of its renderer process (``VmRSS`` from ``/proc``; CDP
``SystemInfo.getProcessInfo`` gives the renderers that appeared with the two pages, and the
receiver's is the one that grew while the file came in) and the relay's ``VmRSS``. The
download's SHA-256 is checked against the source's.

Command line to command line: ``send FILE`` and ``receive CODE --yes -o DIR`` through a fresh
relay, timed from the receiver's start to its exit; the receiver's peak memory is its
``VmHWM``. MB/s counts 10^6 bytes.

Writes ``bench/results/relay_browser.md`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.interop.conftest import CHROMIUM  # noqa: E402
from tests.relay.cli.conftest import child_env  # noqa: E402
from tests.relay.page.conftest import CHROMIUM_ARGS  # noqa: E402
from tests.relay.page.pages import (  # noqa: E402
    make_file,
    open_pages,
    phase,
    sha256_file,
    start_sending,
    type_code,
    wait_phase,
)

MiB = 1 << 20
RESULTS = ROOT / "bench" / "results" / "relay_browser.md"


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``300k`` or a number of bytes (binary units)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure (``VmRSS``, ``VmHWM``) in bytes; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Peak:
    """Calls ``read()`` every ``interval`` seconds in a thread; ``peak`` is the highest value."""

    def __init__(self, read: Callable[[], int], interval: float = 0.1) -> None:
        self._read = read
        self.start = self.peak = read()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._read())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@contextmanager
def relay_process() -> Iterator[tuple[str, int]]:
    """``python -m tube`` on a free port of 127.0.0.1: (page URL, pid)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tube", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Run:
    """One transfer's figures (bytes, seconds)."""

    what: str
    size: int
    seconds: float
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.size / self.seconds / 1e6


def renderer_pids(cdp: Any) -> set[int]:
    """The pids of Chromium's renderer processes (CDP ``SystemInfo.getProcessInfo``)."""
    info = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
    return {int(p["id"]) for p in info if p["type"] == "renderer"}


def js_heap(cdp: Any) -> int:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return int(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))


def page_to_page(source: Path, digest: str, size: int) -> Run:
    from playwright.sync_api import sync_playwright

    timeout = max(600.0, size / MiB)  # seconds: at least 1 MiB/s
    with relay_process() as (url, relay_pid), sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            browser_cdp = browser.new_browser_cdp_session()
            before = renderer_pids(browser_cdp)
            pages = open_pages(browser, url)
            try:
                # The renderers that appeared with the two pages (one per browser context);
                # the receiver's is told apart below as the one that grew while it received.
                new = sorted(renderer_pids(browser_cdp) - before)
                cdp = pages.receiver.context.new_cdp_session(pages.receiver)
                cdp.send("Performance.enable")
                code = start_sending(pages.sender, source)
                type_code(pages.receiver, code)
                pages.receiver.wait_for_selector("#accept:visible")
                heap_start = heap_peak = js_heap(cdp)
                renderers = {pid: Peak(lambda pid=pid: status_kib(pid, "VmRSS")) for pid in new}
                relay = Peak(lambda: status_kib(relay_pid, "VmRSS"))
                started = time.monotonic()
                try:
                    with pages.receiver.expect_download(timeout=timeout * 1000) as download_info:
                        pages.receiver.click("#accept")
                        while phase(pages.receiver) not in ("done", "failed"):
                            heap_peak = max(heap_peak, js_heap(cdp))
                            pages.receiver.wait_for_timeout(200)
                    seconds = time.monotonic() - started
                finally:
                    for sampler in (*renderers.values(), relay):
                        sampler.stop()
                final = wait_phase(pages.receiver, "done", "failed", timeout=timeout)
                if final != "done" or wait_phase(pages.sender, "done", "failed") != "done":
                    raise SystemExit(f"page to page failed: {pages.errors}")
                path = download_info.value.path()
                if sha256_file(path) != digest:
                    raise SystemExit("page to page: the download differs from the source")
                # The receiver's renderer: the one that grew most while the file streamed in.
                receiver = max(renderers.values(), key=lambda s: s.peak - s.start)
                memory = {
                    "receiver JS heap, before": heap_start,
                    "receiver JS heap, peak": heap_peak,
                    "receiver renderer RSS, before": receiver.start,
                    "receiver renderer RSS, peak": receiver.peak,
                    "relay RSS, before": relay.start,
                    "relay RSS, peak": relay.peak,
                }
                download_info.value.delete()
            finally:
                pages.close()
        finally:
            browser.close()
    return Run("page → page (Chromium, service-worker stream)", size, seconds, memory)


def cli_to_cli(source: Path, digest: str, size: int, work: Path) -> Run:
    out = work / "cli-out"
    out.mkdir()
    env = child_env(work / "cli-state")
    with relay_process() as (url, relay_pid):
        relay_url = url.rstrip("/")
        sender = subprocess.Popen(
            [sys.executable, "-m", "tube", "send", str(source), "--relay", relay_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert sender.stdout is not None
            code = sender.stdout.readline().strip()
            relay = Peak(lambda: status_kib(relay_pid, "VmRSS"))
            started = time.monotonic()
            args = ["receive", code, "--relay", relay_url, "--yes", "-o", str(out)]
            receiver = subprocess.Popen(
                [sys.executable, "-m", "tube", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            hwm = Peak(lambda: status_kib(receiver.pid, "VmHWM"))
            stdout, stderr = receiver.communicate()
            seconds = time.monotonic() - started
            hwm.stop()
            relay.stop()
            if receiver.returncode != 0 or sender.wait(60) != 0:
                raise SystemExit(f"command line failed: {stderr}")
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        saved = Path(stdout.strip())
        if sha256_file(saved) != digest:
            raise SystemExit("command line: the received file differs from the source")
        saved.unlink()
    memory = {
        "receiver peak RSS (VmHWM)": hwm.peak,
        "relay RSS, before": relay.start,
        "relay RSS, peak": relay.peak,
    }
    return Run("CLI → CLI (python -m tube send / receive)", size, seconds, memory)


def report(runs: list[Run], size: int, command: str) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# The page's throughput and memory (bench/relay_browser.py)",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}: one run of {size / MiB:,.0f} MiB each, "
        f"relay, both peers and Chromium on the same machine ({cpu}, {_cores()} cores shared "
        "with other work, so the figures are indicative; MB = 10^6 bytes). How they are taken: "
        "the module docstring of `bench/relay_browser.py`.",
        "",
        "| transfer | seconds | MB/s |",
        "|---|---:|---:|",
    ]
    lines += [f"| {run.what} | {run.seconds:.1f} | {run.mb_s:.1f} |" for run in runs]
    lines += ["", "| memory | MiB |", "|---|---:|"]
    for run in runs:
        for name, value in run.memory.items():
            lines.append(f"| {run.what.split(' (')[0]}: {name} | {value / MiB:.1f} |")
    lines.append("")
    return "\n".join(lines)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="file size, e.g. 1G, 256M (default 1G)")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI-to-CLI run")
    parser.add_argument(
        "--no-write", action="store_true", help=f"print only, do not write {RESULTS}"
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="tube-bench-browser-"))
    try:
        source = work / "bench file.bin"
        print(f"writing {size:,} random bytes to {source} ...", flush=True)
        digest = make_file(source, size)
        runs = [page_to_page(source, digest, size)]
        print(f"{runs[-1].what}: {runs[-1].seconds:.1f} s, {runs[-1].mb_s:.1f} MB/s", flush=True)
        if not args.no_cli:
            runs.append(cli_to_cli(source, digest, size, work))
            print(f"{runs[-1].what}: {runs[-1].seconds:.1f} s, {runs[-1].mb_s:.1f} MB/s")
        command = "python3 bench/relay_browser.py" + (
            f" --size {args.size}" if args.size != "1G" else ""
        )
        text = report(runs, size, command)
        print(text)
        if not args.no_write:
            RESULTS.write_text(text, encoding="utf-8")
            print(f"wrote {RESULTS.relative_to(ROOT)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
