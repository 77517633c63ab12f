"""Helpers for the transfer and CLI tests: files with known hashes, an in-process relay, and
subprocesses (``python -m tube``) whose output lines can be awaited."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tube

ROOT = Path(tube.__file__).resolve().parent.parent
CHUNK = 262_144


def write_random_file(path: Path, size: int, *, block: int = 1 << 20) -> str:
    """Write ``size`` random bytes to ``path`` a block at a time; return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        left = size
        while left:
            data = os.urandom(min(block, left))
            digest.update(data)
            file.write(data)
            left -= len(data)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while data := file.read(1 << 20):
            digest.update(data)
    return digest.hexdigest()


def child_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m tube`` child: this checkout, a private salt folder."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    env.pop("TUBE_RELAY", None)
    env["TUBE_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


class Proc:
    """A child process whose stdout and stderr lines are collected by two reader threads."""

    def __init__(self, args: list[str], env: dict[str, str], *, stdin: bytes | None = None):
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(name,), name=f"proc-{name}", daemon=True)
            for name in ("stdout", "stderr")
        ]
        for reader in self._readers:
            reader.start()
        assert self.popen.stdin is not None
        if stdin is not None:
            self.popen.stdin.write(stdin)
            self.popen.stdin.flush()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, name: str) -> None:
        stream = getattr(self.popen, name)
        for raw in iter(stream.readline, b""):
            with self._changed:
                self.lines[name].append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        stream.close()

    def wait_for(self, name: str, pattern: str, timeout: float = 30.0) -> str:
        """The first line of ``name`` matching the regex ``pattern`` (waiting for it)."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.lines[name] if regex.search(line)), None)

        with self._changed:
            if not self._changed.wait_for(
                lambda: found() is not None or self.popen.poll() is not None, timeout
            ):
                raise AssertionError(f"no {pattern!r} on {name} in {timeout} s: {self.lines}")
            line = found()
        if line is None:  # the process ended without it; let the readers finish first
            self.finish(timeout)
            line = found()
        assert line is not None, f"no {pattern!r} on {name}: {self.lines}"
        return line

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Wait for the end; ``(exit status, stdout, stderr)``."""
        assert self.popen.stdin is not None
        if not self.popen.stdin.closed:
            self.popen.stdin.close()
        status = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return status, "\n".join(self.lines["stdout"]), "\n".join(self.lines["stderr"])

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.finish(10)


class RelayProcess:
    """``python -m tube`` started as a user starts it."""

    def __init__(self, proc: Proc, url: str) -> None:
        self.proc = proc
        self.url = url

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``spawn(*args, stdin=b"...")`` runs ``python -m tube *args``; killed at the end."""
    started: list[Proc] = []
    state = tmp_path / "state"

    def start(*args: str, stdin: bytes | None = None, **env: str) -> Proc:
        proc = Proc([sys.executable, "-m", "tube", *args], child_env(state, **env), stdin=stdin)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def relay_process(spawn: Callable[..., Proc]) -> Iterator[RelayProcess]:
    """A relay on 127.0.0.1 (a free port), with /metrics; stopped with SIGTERM at the end."""
    proc = spawn("--host", "127.0.0.1", "--port", "0", "--metrics")
    first = proc.wait_for("stdout", r"^Tube relay on ", timeout=30)
    match = re.fullmatch(r"Tube relay on (http://127\.0\.0\.1:\d+)/", first)
    assert match, first
    yield RelayProcess(proc, match.group(1))
    if proc.popen.poll() is None:
        proc.signal(signal.SIGTERM)
        status, _, _ = proc.finish(15)
        assert status == 0


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
