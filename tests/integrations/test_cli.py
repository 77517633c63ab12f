"""The command-line client, ``python -m tube.websocket URL``, driven through pipes."""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tube.websocket.__main__ import describe_binary, describe_close

from ..threads.test_client import TubeServer, server_tls_context

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20


class Cli:
    """``python -m tube.websocket ARGS`` with its three standard streams on pipes.

    Each line of its standard output lands in a queue, so that a test can converse with it:
    write a line, wait for the answer.
    """

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tube.websocket", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.stderr = ""
        self._readers = [
            threading.Thread(target=self._read_stdout),
            threading.Thread(target=self._read_stderr),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.removesuffix("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def receive(self) -> str | None:
        """The next line of output (None at its end)."""
        return self.lines.get(timeout=TIMEOUT)

    def end_input(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self) -> int:
        """Wait for the exit (killing it if it hangs); return the exit status."""
        try:
            return self.process.wait(timeout=TIMEOUT)
        finally:
            self.close()

    def rest(self) -> list[str]:
        """The remaining lines of output, once the program ended."""
        lines = []
        while (line := self.receive()) is not None:
            lines.append(line)
        return lines

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        for reader in self._readers:
            reader.join(timeout=TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def run_cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run to the end with ``stdin`` as input (for runs whose output does not race the close)."""
    cli = Cli(*args)
    try:
        cli.send(stdin)
        cli.end_input()
        code = cli.wait()
        return code, "".join(line + "\n" for line in cli.rest()), cli.stderr
    finally:
        cli.close()


def converse(cli: Cli, lines: list[str]) -> list[str | None]:
    """Send each line and wait for one line of answer."""
    answers = []
    for line in lines:
        cli.send(line + "\n")
        answers.append(cli.receive())
    return answers


@pytest.fixture
def server() -> Iterator[TubeServer]:
    with TubeServer(ping_interval=None) as server:
        yield server


def test_lines_in_echoes_out(server: TubeServer) -> None:
    cli = Cli(server.url("/echo"))
    try:
        assert converse(cli, ["hello", "wörld", "", "  spaces  "]) == [
            "hello",
            "wörld",
            "",
            "  spaces  ",
        ]
        cli.end_input()
        assert cli.wait() == 0, cli.stderr
        assert cli.rest() == []
        assert cli.stderr.strip().endswith("closed: 1000 (NORMAL_CLOSURE)")
    finally:
        cli.close()
    assert server.next_close() == (1000, "")


def test_crlf_line_ends(server: TubeServer) -> None:
    cli = Cli(server.url())
    try:
        cli.send("one\r\n")
        assert cli.receive() == "one"
        cli.end_input()
        assert cli.wait() == 0
    finally:
        cli.close()


def test_binary_messages_are_summarised(server: TubeServer) -> None:
    cli = Cli(server.url())
    try:
        assert converse(cli, ["tube-test:binary 68656c6c6f", "tube-test:binary "]) == [
            "<binary 5 bytes: 68656c6c6f>",
            "<binary 0 bytes: >",
        ]
        cli.end_input()
        assert cli.wait() == 0
    finally:
        cli.close()


def test_server_close_ends_the_program_without_end_of_input(server: TubeServer) -> None:
    # Standard input stays open: the program must still end when the server closes.
    cli = Cli(server.url())
    try:
        cli.send("before\ntube-test:close 1001 maintenance\n")
        assert cli.wait() == 0
        assert cli.rest() == ["before"]
        assert "closed: 1001 (GOING_AWAY) 'maintenance'" in cli.stderr
    finally:
        cli.close()


def test_abnormal_close_code_exits_non_zero(server: TubeServer) -> None:
    cli = Cli(server.url())
    try:
        cli.send("tube-test:close 4003 go away\n")
        assert cli.wait() == 1
        assert "closed: 4003 'go away'" in cli.stderr
    finally:
        cli.close()


def test_failed_handshake_exits_non_zero_with_the_reason(server: TubeServer) -> None:
    code, stdout, stderr = run_cli(server.url(), "--origin", "https://evil.example", stdin="x\n")
    assert code == 1
    assert stdout == ""
    assert (
        "error: handshake failed: 403 Forbidden: origin not allowed: https://evil.example" in stderr
    )


def test_subprotocol_is_offered_and_reported() -> None:
    with TubeServer(ping_interval=None, subprotocols=["chat"]) as server:
        cli = Cli(server.url(), "--subprotocol", "other", "--subprotocol", "chat")
        try:
            assert converse(cli, ["hi"]) == ["hi"]
            cli.end_input()
            assert cli.wait() == 0
        finally:
            cli.close()
    assert "connected, subprotocol chat" in cli.stderr


def test_connection_refused_exits_non_zero() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        code, _, stderr = run_cli(f"ws://127.0.0.1:{port}/")
    assert code == 1
    assert f"error: connection refused by 127.0.0.1:{port}" in stderr


def test_invalid_url_exits_non_zero() -> None:
    code, _, stderr = run_cli("http://127.0.0.1/")
    assert code == 1
    assert "expected the scheme ws:// or wss://" in stderr


def test_wss_with_a_ca_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    with TubeServer(tls=server_tls_context(ca), ping_interval=None) as server:
        cli = Cli(server.url(), "--cafile", str(cafile))
        try:
            assert converse(cli, ["secure"]) == ["secure"]
            cli.end_input()
            assert cli.wait() == 0
        finally:
            cli.close()
        # Without the CA the certificate cannot be verified...
        code, _, stderr = run_cli(server.url(), stdin="secure\n")
        assert code == 1
        assert "certificate verify failed" in stderr
        # ... unless verification is switched off.
        cli = Cli(server.url(), "--insecure")
        try:
            assert converse(cli, ["unverified"]) == ["unverified"]
            cli.end_input()
            assert cli.wait() == 0
        finally:
            cli.close()


def test_describe_binary() -> None:
    assert describe_binary(b"") == "<binary 0 bytes: >"
    assert describe_binary(b"\x01") == "<binary 1 byte: 01>"
    assert describe_binary(bytes(40)) == f"<binary 40 bytes: {'00' * 32}...>"


def test_describe_close() -> None:
    assert describe_close(1000, "") == "closed: 1000 (NORMAL_CLOSURE)"
    assert describe_close(4000, "bye") == "closed: 4000 'bye'"


@pytest.mark.parametrize("no_speedups", [None, "1"])
def test_version_names_the_implementation_in_use(no_speedups: str | None) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TUBE_NO_SPEEDUPS", None)
    if no_speedups is not None:
        env["TUBE_NO_SPEEDUPS"] = no_speedups
    result = subprocess.run(
        [sys.executable, "-m", "tube.websocket", "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    # Without TUBE_NO_SPEEDUPS, the C accelerator whenever it was built.
    built = importlib.util.find_spec("tube.websocket.core._speedups") is not None
    implementation = "c" if built and not no_speedups else "python"
    assert re.fullmatch(rf"tube \S+ \(implementation: {implementation}\)\n", result.stdout)


def test_every_reply_in_flight_is_printed_at_the_end_of_input(server: TubeServer) -> None:
    # Issue 8 §4: closing at once at the end of input lost the replies still in flight (the
    # server stops sending once it has received the close frame).
    lines = [f"line {i}" for i in range(1000)]
    code, stdout, stderr = run_cli(server.url(), stdin="".join(line + "\n" for line in lines))
    assert code == 0, stderr
    assert stdout.splitlines() == lines
    assert stderr.strip().endswith("closed: 1000 (NORMAL_CLOSURE)")
    assert server.next_close() == (1000, "")


def test_linger_0_closes_at_once(server: TubeServer) -> None:
    code, _, stderr = run_cli(server.url(), "--linger", "0", stdin="one\n")
    assert code == 0, stderr
    code, _, stderr = run_cli(server.url(), "--linger", "-1")
    assert code == 2
    assert "--linger" in stderr


def test_server_text_is_escaped_on_stderr() -> None:
    # A refusal body with terminal escapes (clear screen, set title) reaches stderr escaped.
    body = b"\x1b[2J\x1b]0;owned\x07 go away"
    response = (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:
            sock, _ = listener.accept()
            with sock:
                sock.settimeout(TIMEOUT)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                sock.sendall(response)

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            code, _, stderr = run_cli(f"ws://127.0.0.1:{port}/")
        finally:
            thread.join(TIMEOUT)
    assert code == 1
    assert "\x1b" not in stderr and "\x07" not in stderr
    assert "403 Forbidden" in stderr
    assert "\\x1b[2J" in stderr


def test_linger_0_loses_no_reply_from_a_tube_server(server: TubeServer) -> None:
    # Issue 22 §6: a Tube server answers our close frame only once its handler asked for the
    # message after the last one, so the replies to every line go out before its close frame.
    lines = [f"line {i}" for i in range(1000)]
    code, stdout, stderr = run_cli(
        server.url(), "--linger", "0", stdin="".join(line + "\n" for line in lines)
    )
    assert code == 0, stderr
    assert stdout.splitlines() == lines
