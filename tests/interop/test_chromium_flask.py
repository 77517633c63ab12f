"""Interop: headless Chromium talks to the Flask application of tests/integrations/wsgi_app.py.

The application runs under werkzeug (``flask --app tests.integrations.wsgi_app run``) and under
gunicorn ``-k gthread`` as subprocesses; the browser loads its page and, from the page, opens a
WebSocket to ``/echo`` (same origin, so the default origin check lets it in).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import require
from ..integrations.test_wsgi import Server, flask_command, gunicorn_command, start_server
from .test_chromium import Browser

pytestmark = pytest.mark.interop

ECHO_JS = """
new Promise((resolve) => {
  const received = [];
  const ws = new WebSocket(`ws://${location.host}/echo`);
  ws.binaryType = "arraybuffer";
  const timer = setTimeout(() => resolve({ error: "timeout", received }), 10000);
  ws.onopen = () => {
    ws.send("héllo from Chromium ✓");
    ws.send(new Uint8Array([0, 1, 127, 128, 255]));
    ws.send("x".repeat(100000));
  };
  ws.onmessage = (event) => {
    received.push(
      typeof event.data === "string"
        ? (event.data.length > 100 ? `text of ${event.data.length}` : event.data)
        : Array.from(new Uint8Array(event.data))
    );
    if (received.length === 3) ws.send("close 4000 done in the browser");
  };
  ws.onclose = (event) => {
    clearTimeout(timer);
    resolve({ received, code: event.code, reason: event.reason, clean: event.wasClean });
  };
})
"""


@pytest.fixture(params=["werkzeug", "gunicorn"])
def flask_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    require("flask")
    if request.param == "werkzeug":
        command = flask_command()
    else:
        require("gunicorn")
        command = gunicorn_command("gthread", "tests.integrations.wsgi_app:app", "--threads", "8")
    server = start_server(request.param, command, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(chromium: Path, tmp_path: Path) -> Iterator[Browser]:
    (tmp_path / "profile").mkdir()
    browser = Browser(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield browser
    finally:
        browser.close()


def test_chromium_echoes_through_the_flask_app(flask_server: Server, browser: Browser) -> None:
    session = browser.open(flask_server.url("/", scheme="http"))
    result: dict[str, Any] = browser.evaluate(session, ECHO_JS)
    assert result == {
        "received": ["héllo from Chromium ✓", [0, 1, 127, 128, 255], "text of 100000"],
        "code": 4000,
        "reason": "done in the browser",
        "clean": True,
    }, (result, flask_server.output())
