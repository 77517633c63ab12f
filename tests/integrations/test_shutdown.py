"""Each threaded host stopped by SIGTERM and Ctrl-C, as a user runs it (issue 23).

The README's own code, run the way the README says: the Quickstart's two ``http.server``
scripts (``python server.py``, their port replaced by a free one), the Flask section's
``app.py`` under ``flask --app app run`` (werkzeug) and ``gunicorn -k gthread`` (gunicorn's
default graceful timeout, 30 s), and uvicorn with Tube's protocol class. A WebSocket client is
open when the signal comes: it must get a close frame (1001, going away; 1012 under uvicorn, as
its own classes send), the process must exit with status 0 (uvicorn: -15 after SIGTERM, which it
raises again on purpose), and print no traceback.

The bound, 5 s from the signal to the process's exit, from the promise (the WebSockets are
closed as soon as the host stops, then it exits): the close frame leaves at once
(``http.server``, werkzeug) or within the gunicorn watcher's 0.1 s, and the host exits once its
request threads end, which takes our client's close reply and a TCP teardown; gunicorn's
arbiter then reaps its worker in 0.1 s steps. Measured (2 cores): the client's 1001 at once
(``http.server``, werkzeug) or after 0.1 s (gunicorn); the exit after 0.07-0.14 s (werkzeug),
0.57 s (``http.server``: ``serve_forever()`` sees the stop at its next 0.5 s poll), 0.4-0.6 s
(gunicorn), 0.2-0.7 s (uvicorn). The rest is margin for a loaded machine; a host that waits
for its WebSockets instead takes gunicorn's 30 s or is killed.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from ..conftest import require
from ..shutdown import (
    Stopped,
    assert_clean,
    free_port,
    open_client,
    port_from_log,
    readme_section,
    started,
    stop_and_watch,
)

BOUND = 5.0
SIGNALS = [signal.SIGTERM, signal.SIGINT]
_MAIN = '\n\nif __name__ == "__main__":'


def quickstart_script(which: str, port: int) -> str:
    """The Quickstart's first script (the seed's example), or its EchoHandler script (the
    second block, after the first one's imports and classes), on ``port``."""
    blocks = readme_section("Quickstart")
    source = blocks[0] if which == "seed" else blocks[0].split(_MAIN)[0] + "\n\n" + blocks[1]
    assert '("127.0.0.1", 8080)' in source and "stop_on_signals(" in source
    return source.replace('("127.0.0.1", 8080)', f'("127.0.0.1", {port})')


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("which", ["seed", "echo"])
def test_the_quickstart_http_server_stops_cleanly(
    which: str, signum: signal.Signals, tmp_path: Path
) -> None:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(quickstart_script(which, port), encoding="utf-8")
    log = tmp_path / "server.log"
    with started([sys.executable, str(script)], tmp_path, log) as process:
        greeting = b"Hello Client" if which == "seed" else None
        client = open_client(process, log, f"ws://127.0.0.1:{port}/", greeting)
        stopped = stop_and_watch(process, log, client, signum)
    assert_clean(stopped, BOUND)
    assert stopped.close_reason == "server shutting down"


def run_flask_app(host: str, signum: signal.Signals, tmp_path: Path) -> Stopped:
    """The README's Flask app.py under ``host``, stopped by ``signum`` with a client open."""
    require("flask", "gunicorn")
    blocks = readme_section("Flask, gunicorn and other WSGI servers")
    assert blocks[0].startswith("# app.py\n")
    (tmp_path / "app.py").write_text("".join(blocks), encoding="utf-8")
    if host == "werkzeug":
        command = [sys.executable, "-m", "flask", "--app", "app", "run", "--port", "0"]
        listening = rb"Running on http://127\.0\.0\.1:(\d+)"
    else:
        command = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "10"]
        command += ["-b", "127.0.0.1:0", "--no-control-socket", "app:app"]
        listening = rb"Listening at: http://127\.0\.0\.1:(\d+)"
    log = tmp_path / "server.log"
    with started(command, tmp_path, log) as process:
        port = port_from_log(process, log, listening)
        client = open_client(process, log, f"ws://127.0.0.1:{port}/ws")
        return stop_and_watch(process, log, client, signum)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_werkzeug_flask_run_stops_cleanly(signum: signal.Signals, tmp_path: Path) -> None:
    stopped = run_flask_app("werkzeug", signum, tmp_path)
    assert_clean(stopped, BOUND)
    assert stopped.close_reason == "server shutting down"


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_gunicorn_gthread_stops_cleanly(signum: signal.Signals, tmp_path: Path) -> None:
    stopped = run_flask_app("gunicorn", signum, tmp_path)
    assert_clean(stopped, BOUND)
    assert stopped.close_reason == "server shutting down"
    assert "SIGKILL" not in stopped.output


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_uvicorn_stops_cleanly(signum: signal.Signals, tmp_path: Path) -> None:
    """uvicorn closes its WebSockets itself (1012, Service Restart, as its own classes do)."""
    require("uvicorn", "starlette")
    command = [sys.executable, "-m", "uvicorn", "tests.integrations.asgi_starlette_app:app"]
    command += ["--ws", "tube.websocket.asgi:UvicornProtocol", "--host", "127.0.0.1"]
    command += ["--port", "0"]
    log = tmp_path / "uvicorn.log"
    with started(command, tmp_path, log) as process:
        port = port_from_log(process, log, rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        client = open_client(process, log, f"ws://127.0.0.1:{port}/echo")
        stopped = stop_and_watch(process, log, client, signum)
    assert stopped.close_code == 1012, stopped
    # uvicorn raises a SIGTERM again once it has shut down, so that its parent sees how it
    # ended (its own choice, whatever the protocol class): status -15 there, 0 after Ctrl-C.
    assert stopped.status == (-signum if signum == signal.SIGTERM else 0), stopped.output
    assert "Traceback" not in stopped.output, stopped.output
    assert stopped.exit_seconds < BOUND, stopped
