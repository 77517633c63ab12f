"""Stopping a real server process the way a user does, seen from a WebSocket client (issue 23).

A test starts the server as a user would (``python script.py``, ``flask --app app run``,
``gunicorn -k gthread ...``), opens a WebSocket, checks an echo (the handler runs), sends
SIGTERM or SIGINT to the process (SIGINT as Ctrl-C in a terminal: to the whole process group,
which is how gunicorn's and werkzeug's children see it too), and :func:`stop_and_watch` reports
the client's close code, the time from the signal to the end of the client's ``incoming``
and to the process's exit, its exit status and what it wrote on stderr.

The process is started with SIGINT at its default action: a shell's background job (CI, a
``&`` in a script) inherits SIGINT ignored, and a server must keep ignoring what it is told to
ignore; a terminal's foreground process, which gets Ctrl-C, has it at its default.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tube.websocket import Connection, connect

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START_TIMEOUT = 30.0
TIMEOUT = 10.0

# Exec the command with SIGINT at its default action, as a terminal's foreground job has it.
_FOREGROUND = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


@dataclass
class Stopped:
    """What a client and the process saw when the process was told to stop."""

    close_code: int | None
    close_reason: str
    client_seconds: float  # signal -> the client's incoming ended
    exit_seconds: float  # signal -> the process exited
    status: int
    output: str


def readme_section(heading: str) -> list[str]:
    """The ```python blocks of the README section ``## heading``."""
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, f"README.md has no '## {heading}' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)


def free_port() -> int:
    """A port free on 127.0.0.1 now (for examples that name their port in the code)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def started(command: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group (SIGINT at its default); kill it (by its
    process group, which only it and its children are in) if the test left it running."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", _FOREGROUND, *command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            process_group=0,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=TIMEOUT)


def port_from_log(process: subprocess.Popen[bytes], log: Path, pattern: bytes) -> int:
    """Wait (bounded) for the line of the server's log naming its port."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        match = re.search(pattern, log.read_bytes())
        if match:
            return int(match.group(1))
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the server did not start: {log.read_text(errors='replace')}")
        # Polling a subprocess's log until it listens, bounded by START_TIMEOUT.
        time.sleep(0.05)


def open_client(
    process: subprocess.Popen[bytes], log: Path, url: str, greeting: bytes | None = None
) -> Connection:
    """Connect (retrying, bounded, until the server answers) and check one echo (or, for a
    server that greets instead of echoing, its ``greeting``)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            connection = connect(url, open_timeout=TIMEOUT)
            break
        except OSError:  # not listening yet (gunicorn's worker starts after "Listening at")
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no WebSocket: {log.read_text(errors='replace')}") from None
            # Polling the port until the server accepts, bounded by START_TIMEOUT.
            time.sleep(0.05)
    if greeting is not None:
        assert connection.incoming.get(timeout=TIMEOUT) == greeting
        return connection
    connection.send("before the signal")
    assert connection.incoming.get(timeout=TIMEOUT) == "before the signal"
    return connection


def stop_and_watch(
    process: subprocess.Popen[bytes], log: Path, connection: Connection, signum: signal.Signals
) -> Stopped:
    """Send ``signum`` (SIGINT to the process group, as Ctrl-C does); watch both ends."""
    start = time.monotonic()
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    with connection:
        for _ in connection.incoming:
            pass  # a message the server sent before its close frame
        client_seconds = time.monotonic() - start
    status = process.wait(timeout=60)
    exit_seconds = time.monotonic() - start
    return Stopped(
        connection.close_code,
        connection.close_reason,
        client_seconds,
        exit_seconds,
        status,
        log.read_text(errors="replace"),
    )


def assert_clean(stopped: Stopped, bound: float) -> None:
    """1001 for the client, exit status 0, no traceback, stopped within ``bound`` seconds."""
    assert stopped.close_code == 1001, (stopped, stopped.output)
    assert stopped.status == 0, stopped.output
    assert "Traceback" not in stopped.output, stopped.output
    assert stopped.exit_seconds < bound, stopped
