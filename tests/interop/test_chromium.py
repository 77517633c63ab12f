"""Interop: headless Chromium loads the demo page, which chats over Tube's server.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands
on fd 3, replies on fd 4, each JSON message ended by a NUL byte), so the test needs no
WebSocket client of its own to talk to the browser and can wait for the page's outcome
instead of guessing a delay (``--dump-dom`` dumps as soon as the page is idle, which may be
before a WebSocket message arrives).
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
]
TIMEOUT = 15.0


class Browser:
    """A headless Chromium process and a DevTools-protocol session over its pipe."""

    def __init__(self, chromium: Path, profile: Path, log: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # Chromium wants exactly fds 3 and 4; move ours out of the way (>= 10) so that placing
        # one cannot clobber the other.
        child_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
        os.close(commands_read)
        os.close(replies_write)
        # A tiny Python trampoline places them (dash's redirections take one-digit fds only)
        # and execs Chromium, so the PID we hold is Chromium's.
        trampoline = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        command = [str(chromium), *FLAGS, f"--user-data-dir={profile}"]
        self._log = log.open("wb")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", trampoline, str(child_in), str(child_out), *command],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
        finally:
            os.close(child_in)
            os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.log_path = log

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        """Send one command and return its result (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def _read_message(self, deadline: float) -> dict[str, Any]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._replies, selectors.EVENT_READ)
            while b"\0" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise AssertionError(f"Chromium did not answer in time; log: {self.log_tail()}")
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise AssertionError(f"Chromium closed its pipe; log: {self.log_tail()}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    def log_tail(self) -> str:
        """The last lines Chromium wrote to stderr, for failure messages."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])

    def open(self, url: str) -> str:
        """Open ``url`` in a new tab and return a session attached to it."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session: str = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        # Page.navigate answers once the new document is committed, so later evaluations
        # run in it (they still poll for the elements, which may not be parsed yet).
        navigation = self.call("Page.navigate", {"url": url}, session=session)
        assert "errorText" not in navigation, f"cannot load {url}: {navigation}"
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """Evaluate ``expression`` in the page, awaiting it if it is a promise."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=TIMEOUT + 5,
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        """Ask Chromium to exit; kill it (by PID) if it does not within a bound."""
        try:
            if self.process.poll() is None:
                self.call("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            os.close(self._commands)
            os.close(self._replies)
            self._log.close()


# Resolves with a snapshot of the page once `ready(snapshot)` holds, or after the deadline.
SNAPSHOT_JS = """
new Promise((resolve) => {
  const deadline = Date.now() + %(timeout)d;
  const snapshot = () => ({
    state: document.getElementById("status")?.dataset.state ?? null,
    status: document.getElementById("status")?.textContent ?? null,
    online: document.getElementById("online")?.dataset.online ?? null,
    name: document.body?.dataset.name ?? null,
    messages: [...document.querySelectorAll("#log li.message")].map((li) => ({
      from: li.querySelector(".from").textContent,
      text: li.querySelector(".text").textContent,
    })),
    system: [...document.querySelectorAll("#log li.system")].map((li) => li.textContent),
    markup: document.querySelectorAll("#log b, #log i, #log script").length,
  });
  const ready = %(ready)s;
  const poll = () => {
    const now = snapshot();
    if (ready(now) || Date.now() > deadline) resolve(now); else setTimeout(poll, 25);
  };
  poll();
})
"""


def wait_for(browser: Browser, session: str, ready_js: str) -> dict[str, Any]:
    """Wait (in the page, bounded) until ``ready_js`` holds; return the page's snapshot."""
    expression = SNAPSHOT_JS % {"timeout": TIMEOUT * 1000, "ready": ready_js}
    snapshot: dict[str, Any] = browser.evaluate(session, expression)
    return snapshot


@pytest.fixture
def demo_server() -> Iterator[Any]:
    """The demo's server, in this process, on an ephemeral port."""
    from tube.demo.server import DemoServer

    server = DemoServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="demo-http")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        assert server.room.close(timeout=10), "demo connections did not close"
        server.server_close()


@pytest.fixture
def browser(chromium: Path, tmp_path: Path) -> Iterator[Browser]:
    (tmp_path / "profile").mkdir()
    browser = Browser(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield browser
    finally:
        browser.close()


def receive_json(ws: Any, wanted: str) -> dict[str, Any]:
    """Next message of type ``wanted`` from a websockets client (others are skipped)."""
    for _ in range(20):
        message: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        if message["type"] == wanted:
            return message
    raise AssertionError(f"no {wanted!r} message")


def test_demo_page_chats_with_another_client(
    demo_server: Any, browser: Browser, websockets_client: Any
) -> None:
    base = demo_server.url
    ws_url = base.replace("http://", "ws://") + "ws"
    from_browser = "hello from <b>Chromium</b> & co ✓"
    from_python = "hello from <i>Python</i> 🚀 </li><script>alert(1)</script>"

    with websockets_client.connect(ws_url, proxy=None, open_timeout=TIMEOUT) as other:
        assert receive_json(other, "welcome")["name"] == "guest-1"
        from urllib.parse import quote

        session = browser.open(f"{base}?say={quote(from_browser)}")
        # The page's message reaches the other client through the server's broadcast.
        message = receive_json(other, "message")
        assert message == {"type": "message", "from": "guest-2", "text": from_browser}
        other.send(from_python)

        page = wait_for(
            browser, session, f"(s) => s.messages.some((m) => m.text === {json.dumps(from_python)})"
        )
        assert page["state"] == "open", page
        assert page["name"] == "guest-2"
        assert page["online"] == "2"
        assert page["messages"] == [
            {"from": "guest-2", "text": from_browser},
            {"from": "guest-1", "text": from_python},
        ]
        # User text was displayed as text, never parsed as markup.
        assert page["markup"] == 0

    # The other client left: the page hears about it.
    page = wait_for(browser, session, '(s) => s.online === "1"')
    assert page["online"] == "1"
    assert "guest-1 left." in page["system"]

    # The server stops: the page sees a clean close with 1001 (going away).
    assert demo_server.room.close(timeout=10)
    page = wait_for(browser, session, '(s) => s.state === "closed"')
    assert page["state"] == "closed"
    assert page["status"] == "disconnected (1001: server shutting down)"
