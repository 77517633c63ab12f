"""Fixtures for the scale-out tests: a private redis-server (and haproxy) on 127.0.0.1.

A missing binary skips the test with the reason, except under ``CI=true``, where it fails:
CI must run them (``./scripts/test`` installs Debian's ``redis-server`` and ``haproxy``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 15.0


def missing(what: str) -> None:
    """Skip because ``what`` is missing, or fail under ``CI=true``."""
    message = f"{what} is not installed (./scripts/test installs it from Debian)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"missing under CI: {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_command(port: int, *words: str) -> bytes:
    """One command over RESP, its raw reply (enough for PING, INFO and SHUTDOWN)."""
    request = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word.encode())}\r\n{word}\r\n".encode() for word in words
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = sock.recv(65536)
        if reply.startswith(b"$"):  # a bulk string: read all of it
            length = int(reply[1 : reply.index(b"\r\n")])
            while len(reply) < reply.index(b"\r\n") + 2 + length + 2:
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
        return reply


@dataclass
class Redis:
    """A redis-server this test started; :meth:`stop` and :meth:`start` simulate an outage."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if redis_command(self.port, "PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)  # polling a process we cannot be notified by

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        self.process = None

    def stats(self) -> dict[str, int]:
        """``INFO stats`` as numbers (``total_net_input_bytes``, ...)."""
        reply = redis_command(self.port, "INFO", "stats").decode()
        values: dict[str, int] = {}
        for line in reply.splitlines():
            name, _, value = line.partition(":")
            if value.strip().isdigit():
                values[name] = int(value)
        return values


@pytest.fixture
def redis() -> Iterator[Redis]:
    """A fresh redis-server on a free port of 127.0.0.1 (no persistence)."""
    server = Redis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


HAPROXY_CFG = Path(__file__).resolve().parents[3] / "deploy" / "haproxy.cfg"
