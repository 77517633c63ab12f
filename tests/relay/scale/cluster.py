"""A relay cluster as an operator starts it: redis-server, N ``python -m tube`` processes and
haproxy with ``deploy/haproxy.cfg``, all on 127.0.0.1, each process started and stopped by PID."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.integrations.test_demo import read_line

from .conftest import HAPROXY_CFG, STARTUP_TIMEOUT, Redis, free_port, missing

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Instance:
    """One relay process."""

    port: int
    redis_url: str
    process: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tube",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--redis",
                self.redis_url,
                "--instance-url",
                self.url,
                "--trust-proxy",
                "127.0.0.1",
                "--metrics",
                "--pairs-per-ip",
                "512",
                *self.extra,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        line = read_line(self.process, STARTUP_TIMEOUT).decode()
        assert re.fullmatch(rf"Tube relay on http://127\.0\.0\.1:{self.port}/\n", line), line

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop it (SIGTERM drains; SIGKILL is a crash); its standard error."""
        process = self.process
        self.process = None
        if process is None:
            return ""
        if process.poll() is None:
            process.send_signal(sig)
        try:
            _, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate(timeout=10)
        return stderr.decode(errors="replace")

    def rss_kib(self) -> int:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert match
        return int(match.group(1))


@dataclass
class Cluster:
    """Redis, the relay instances and haproxy in front of them."""

    redis: Redis
    instances: list[Instance]
    port: int  # haproxy's
    haproxy: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, port: int, path: str) -> tuple[int, bytes]:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            client.request("GET", path)
            response = client.getresponse()
            return response.status, response.read()
        finally:
            client.close()

    def start_haproxy(self) -> None:
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if binary is None:
            missing("haproxy")
        assert binary is not None
        env = dict(os.environ, TUBE_LISTEN=f"127.0.0.1:{self.port}")
        for number, instance in enumerate(self.instances, 1):
            env[f"TUBE_RELAY_{number}"] = f"127.0.0.1:{instance.port}"
        self.haproxy = subprocess.Popen(
            [binary, "-f", str(HAPROXY_CFG), "-db"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Up once it answers /healthz through its round-robin backend for every instance.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        answered = 0
        while answered < len(self.instances):
            assert self.haproxy.poll() is None, "haproxy exited"
            assert time.monotonic() < deadline, "haproxy did not answer"
            try:
                status, _ = self.get(self.port, "/healthz")
            except OSError:
                status = 0
            if status == 200:
                answered += 1
            else:
                time.sleep(0.05)  # haproxy is still binding: nothing to wait on but time

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.communicate(timeout=10)
        self.haproxy = None
        for instance in self.instances:
            self.log.append(instance.stop())


@contextmanager
def cluster(redis: Redis, count: int = 2, extra: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """Start ``count`` relays behind haproxy sharing ``redis``; stop them all on exit."""
    assert count == 2, "deploy/haproxy.cfg names two servers"
    instances = [Instance(free_port(), redis.url, extra=extra) for _ in range(count)]
    running = Cluster(redis, instances, free_port())
    try:
        for instance in instances:
            instance.start()
        running.start_haproxy()
        yield running
    finally:
        running.stop()
