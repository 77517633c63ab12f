"""The README's relay section, run as written: its ``sh`` blocks, line by line, from a folder
of their own (``python3`` is this interpreter; the example code ``4821-ahead-zebra`` is replaced
by the code the sender printed, the one thing a reader must type differently)."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.integrations.test_demo import read_line

from .scale.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE_CODE = "4821-ahead-zebra"
TIMEOUT = 60
# A reader's environment, minus what would point the commands elsewhere.
ENV = {k: v for k, v in os.environ.items() if k not in ("TUBE_RELAY", "TUBE_REDIS")}


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README.md has no {title!r} section"
    return match.group(1)


def sh_blocks(text: str) -> list[list[str]]:
    """The command lines of each ```sh block (comments dropped)."""
    blocks = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S):
        lines = [line.split(" #")[0].strip() for line in block.splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def shell(line: str) -> list[str]:
    """``line`` for bash, with ``python3`` meaning this interpreter (a venv's, CI's)."""
    line = re.sub(r"^python3 ", f"{shlex.quote(sys.executable)} ", line)
    line = re.sub(r"^pip ", f"{shlex.quote(sys.executable)} -m pip ", line)
    # exec: the PID is the command's, so stopping it stops the server; env takes the
    # NAME=value prefixes that exec does not.
    return ["bash", "-c", f"exec env {line}"]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers bind: a port whose last connections are in TIME_WAIT is free for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def background(line: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``line`` (a server) until the block is done; stopped by its PID, as Ctrl-C would."""
    process = subprocess.Popen(
        shell(line), cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=TIMEOUT)


def run_line(line: str, cwd: Path, answer: bytes = b"") -> str:
    result = subprocess.run(
        shell(line), cwd=cwd, env=ENV, input=answer, capture_output=True, timeout=300, check=False
    )
    assert result.returncode == 0, (line, result.stderr.decode(errors="replace"))
    return result.stdout.decode()


def test_the_relay_sections_commands_run_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(section("The relay: send a file, end to end encrypted"))
    (start_relay, run_tests), (install, send, receive) = blocks[0], blocks[1]
    assert start_relay.startswith("python3 -m tube") and run_tests == "./scripts/test"
    if not port_free(8080):
        pytest.fail("port 8080 is taken: the README's relay runs there", pytrace=False)
    ENV["TUBE_STATE_DIR"] = str(tmp_path / "state")  # the sender's salt, not in $HOME
    data = os.urandom(300_000)
    (tmp_path / "report.pdf").write_bytes(data)
    with background(start_relay, ROOT) as relay:  # "from a clone of this repository"
        assert read_line(relay, TIMEOUT) == b"Tube relay on http://127.0.0.1:8080/\n"
        run_line(install, ROOT)  # "from the clone"
        with background(send, tmp_path) as sender:
            code = read_line(sender, TIMEOUT).decode().strip()
            assert re.fullmatch(r"[1-9][0-9]{2,7}(-[a-z-]+){2}", code), code
            # The receiver answers the Accept? [y/N] question as a person would.
            saved = run_line(receive.replace(EXAMPLE_CODE, code), tmp_path, answer=b"y\n")
            assert sender.wait(timeout=TIMEOUT) == 0
    assert Path(tmp_path, saved.strip()).resolve() == (tmp_path / "Downloads" / "report.pdf")
    got = (tmp_path / "Downloads" / "report.pdf").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_the_operations_block_runs_as_written(tmp_path: Path) -> None:
    # The block is a shell session: `&` lines are servers in the background, the last line
    # (haproxy in the foreground) too; the test then asks for /healthz through it.
    (block,) = sh_blocks(section("Several relay processes: HAProxy and Redis"))
    install, *servers = block
    for binary in ("redis-server", "haproxy"):
        if not any(Path(folder, binary).exists() for folder in (*os.get_exec_path(), "/usr/sbin")):
            missing(binary)
    for port in (6379, 8080, 8081, 8082):
        if not port_free(port):
            pytest.fail(f"port {port} is taken: the README's cluster uses it", pytrace=False)
    run_line(install, ROOT)
    with _all_in_background([line.rstrip("& ").strip() for line in servers], ROOT):
        import http.client

        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                client = http.client.HTTPConnection("127.0.0.1", 8080, timeout=5)
                client.request("POST", "/v1/nameplates")
                response = client.getresponse()
                body = response.read()
                client.close()
                if response.status == 201:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the cluster did not answer on :8080"
            time.sleep(0.1)  # the processes are starting: nothing to wait on but time
        assert b'"nameplate"' in body


@contextmanager
def _all_in_background(lines: list[str], cwd: Path) -> Iterator[None]:
    with ExitStack() as stack:
        for line in lines:
            stack.enter_context(background(line, cwd))
        yield
