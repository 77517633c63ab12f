"""``python -m tube send`` / ``receive`` as a user runs them, against ``python -m tube``."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tube.relay.codes import wordlist

from .conftest import ROOT, Proc, RelayProcess, child_env, sha256_of, write_random_file

MIB = 1 << 20
CODE = re.compile(r"^[1-9][0-9]{2,7}-[a-z-]+$")


def metrics(relay: RelayProcess) -> dict[str, float]:
    host, port = relay.url.removeprefix("http://").split(":")
    client = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        client.request("GET", "/metrics")
        body = client.getresponse().read().decode()
    finally:
        client.close()
    return {
        name: float(value)
        for name, value in re.findall(r"^(tube_relay_[a-z_]+) ([0-9.e+]+)$", body, re.M)
    }


def rss(pid: int) -> int:
    """The resident set size of process ``pid``, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) * 1024


class Sampler:
    """Samples the relay's RSS and ``tube_relay_bytes_queued`` every 50 ms in a thread."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay
        self.rss: list[int] = []
        self.queued: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-sampler")

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.rss.append(rss(self.relay.pid))
            self.queued.append(metrics(self.relay)["tube_relay_bytes_queued"])

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def send(spawn: Callable[..., Proc], relay: RelayProcess, path: Path, *args: str) -> Proc:
    return spawn("send", str(path), "--relay", relay.url, *args)


def code_of(sender: Proc) -> str:
    code = sender.wait_for("stdout", r".", timeout=30)
    assert CODE.fullmatch(code), code
    return code


@pytest.mark.slow
def test_256_mib_from_cli_to_cli_with_flat_relay_memory(
    tmp_path: Path, spawn: Callable[..., Proc], relay_process: RelayProcess
) -> None:
    source = tmp_path / "big.bin"
    digest = write_random_file(source, 256 * MIB)
    out = tmp_path / "out"
    out.mkdir()
    baseline = rss(relay_process.pid)
    started = time.monotonic()
    with Sampler(relay_process) as sampler:
        sender = send(spawn, relay_process, source)
        # The receiver finds the relay through $TUBE_RELAY.
        receiver = spawn(
            "receive", code_of(sender), "--yes", "-o", str(out), TUBE_RELAY=relay_process.url
        )
        status_r, stdout_r, stderr_r = receiver.finish(90)
        status_s, stdout_s, stderr_s = sender.finish(30)
    elapsed = time.monotonic() - started
    assert (status_s, status_r) == (0, 0), (stderr_s, stderr_r)
    assert stdout_r == str(out / "big.bin")
    assert len(stdout_s.splitlines()) == 1  # the code, nothing else on stdout
    assert "Delivered big.bin (256.0 MiB)" in stderr_s
    assert sha256_of(out / "big.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["big.bin"]
    assert len(sampler.queued) >= 5, elapsed  # sampled during the transfer
    assert max(sampler.queued) <= 2.2 * MIB, max(sampler.queued)
    assert max(sampler.rss) - baseline < 20 * MIB, (baseline, max(sampler.rss))
    final = metrics(relay_process)
    assert final["tube_relay_bytes_forwarded_total"] >= 256 * MIB
    assert elapsed < 60, elapsed


def test_a_wrong_code_fails_both_sides_and_burns_the_code(
    tmp_path: Path, spawn: Callable[..., Proc], relay_process: RelayProcess
) -> None:
    source = tmp_path / "a.txt"
    write_random_file(source, 1000)
    out = tmp_path / "out"
    out.mkdir()
    sender = send(spawn, relay_process, source)
    code = code_of(sender)
    nameplate, *words = code.split("-")
    other = [w for w in wordlist()[:3] if w not in words][:2]
    wrong = "-".join([nameplate, *other])
    receiver = spawn("receive", wrong, "--relay", relay_process.url, "--yes", "-o", str(out))
    status_r, _, stderr_r = receiver.finish(30)
    status_s, _, stderr_s = sender.finish(30)
    assert (status_s, status_r) == (1, 1), (stderr_s, stderr_r)
    assert "wrong code or interference" in stderr_r
    assert "wrong code or interference" in stderr_s
    assert list(out.iterdir()) == []
    third = spawn("receive", code, "--relay", relay_process.url, "--yes", "-o", str(out))
    status, _, stderr = third.finish(30)
    assert status == 1 and "no such code (already used or expired)" in stderr, stderr


def test_a_declined_offer(
    tmp_path: Path, spawn: Callable[..., Proc], relay_process: RelayProcess
) -> None:
    source = tmp_path / "holiday photos.zip"
    write_random_file(source, 300_000)
    out = tmp_path / "out"
    out.mkdir()
    sender = send(spawn, relay_process, source)
    receiver = spawn(
        "receive", code_of(sender), "--relay", relay_process.url, "-o", str(out), stdin=b"n\n"
    )
    status_r, stdout_r, stderr_r = receiver.finish(30)
    status_s, _, stderr_s = sender.finish(30)
    assert "Incoming file: holiday photos.zip (293.0 KiB, application/zip)" in stderr_r
    assert "Accept? [y/N]" in stderr_r
    assert (status_s, status_r) == (1, 1), (stderr_s, stderr_r)
    assert "declined" in stderr_r and stdout_r == ""
    assert "the receiver declined the file" in stderr_s
    assert list(out.iterdir()) == []


def test_accepting_at_the_prompt_and_comparing_digits(
    tmp_path: Path, spawn: Callable[..., Proc], relay_process: RelayProcess
) -> None:
    source = tmp_path / "a.bin"
    digest = write_random_file(source, 1000)
    out = tmp_path / "out"
    out.mkdir()
    sender = send(spawn, relay_process, source, "--verify", "--link")
    code = code_of_link(sender)
    receiver = spawn("receive", code, "-o", str(out), "--verify", stdin=b"y\n")
    digits = receiver.wait_for("stderr", r"^Verification digits: \d{3} \d{3}$")
    assert sender.wait_for("stderr", r"^Verification digits: ") == digits
    # The offer waits for the sender's answer: the receiver has not seen it yet.
    assert not any("Incoming file" in line for line in receiver.lines["stderr"])
    assert sender.popen.stdin is not None
    sender.popen.stdin.write(b"yes\n")
    sender.popen.stdin.flush()
    status_r, stdout_r, stderr_r = receiver.finish(30)
    status_s, _, stderr_s = sender.finish(30)
    assert (status_s, status_r) == (0, 0), (stderr_s, stderr_r)
    assert sha256_of(Path(stdout_r)) == digest


def code_of_link(sender: Proc) -> str:
    """With --link: line 1 is the code (N.<secret>), line 2 the link; returns the link."""
    sender.wait_for("stdout", r"^[1-9][0-9]{2,7}\.[A-Za-z0-9_-]{22}$")
    return sender.wait_for("stdout", r"^http://127\.0\.0\.1:\d+/#[1-9][0-9]+\.")


def test_an_unknown_code(spawn: Callable[..., Proc], relay_process: RelayProcess) -> None:
    receiver = spawn("receive", "98765432-ahead-zebra", "--relay", relay_process.url, "--yes")
    status, stdout, stderr = receiver.finish(30)
    assert status == 1 and stdout == ""
    last = stderr.splitlines()[-1]
    assert last == "python -m tube receive: no such code (already used or expired)", stderr


def test_no_relay_running(tmp_path: Path, spawn: Callable[..., Proc], unused_port: int) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 10)
    relay = f"http://127.0.0.1:{unused_port}"
    for args in (("send", str(source)), ("receive", "4821-ahead-zebra", "--yes")):
        status, stdout, stderr = spawn(*args, "--relay", relay).finish(30)
        assert status == 1 and stdout == "", stderr
        assert f"cannot reach the relay at {relay}: connection refused" in stderr


def test_usage_errors_exit_2_before_connecting(
    tmp_path: Path, spawn: Callable[..., Proc], unused_port: int
) -> None:
    relay = f"http://127.0.0.1:{unused_port}"  # nothing listens: a connection would say so
    (tmp_path / "a-file").write_bytes(b"")
    cases = [
        (("receive", "4821-ahed-zebra"), "unknown word 'ahed'"),
        (("receive", "4821-ahead-zebra", "-o", str(tmp_path / "a-file")), "not a folder"),
        (("send", str(tmp_path / "missing.bin")), "not a file"),
        (("send", str(tmp_path), "--words", "1"), "invalid choice"),
    ]
    for args, message in cases:
        status, _, stderr = spawn(*args, "--relay", relay).finish(30)
        assert status == 2 and message in stderr and "cannot reach" not in stderr, stderr


def test_a_missing_output_folder_is_made(
    tmp_path: Path, spawn: Callable[..., Proc], unused_port: int
) -> None:
    relay = f"http://127.0.0.1:{unused_port}"
    folder = tmp_path / "Downloads" / "tube"
    status, _, stderr = spawn(
        "receive", "4821-ahead-zebra", "-o", str(folder), "--relay", relay
    ).finish(30)
    assert folder.is_dir()  # made before connecting, as a browser's download folder
    assert status == 1 and "cannot reach the relay" in stderr, stderr


@pytest.mark.parametrize("command", ["send", "receive"])
def test_without_cryptography_the_cli_names_the_extra(tmp_path: Path, command: str) -> None:
    script = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from tube.relay.main import main\n"
        f"sys.exit(main([{command!r}, 'x']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=child_env(tmp_path),
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"python -m tube {command}: needs the cryptography package: "
        "pip install 'tube-websocket[relay-cli]'"
    )


def test_ctrl_c_at_the_prompt_cancels_the_transfer_for_both(
    tmp_path: Path, spawn: Callable[..., Proc], relay_process: RelayProcess
) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 1000)
    out = tmp_path / "out"
    out.mkdir()
    sender = send(spawn, relay_process, source)
    receiver = spawn("receive", code_of(sender), "--relay", relay_process.url, "-o", str(out))
    receiver.wait_for("stderr", r"^Incoming file: a\.bin")  # the question follows, unended
    receiver.signal(signal.SIGINT)
    status_r, _, stderr_r = receiver.finish(30)
    status_s, _, stderr_s = sender.finish(30)
    assert status_r == 130 and "interrupted" in stderr_r, stderr_r
    assert status_s == 1 and "cancelled by the other side: interrupted" in stderr_s, stderr_s
    assert list(out.iterdir()) == []


def test_ctrl_c_while_waiting_for_the_receiver(
    tmp_path: Path, spawn: Callable[..., Proc], relay_process: RelayProcess
) -> None:
    source = tmp_path / "a.bin"
    write_random_file(source, 10)
    sender = send(spawn, relay_process, source)
    code = code_of(sender)
    sender.wait_for("stderr", r"^Waiting for the receiver")
    sender.signal(signal.SIGINT)
    status, _, stderr = sender.finish(30)
    assert status == 130 and stderr.endswith("python -m tube send: interrupted"), stderr
    # The sender said goodbye: its code is dead.
    late = spawn("receive", code, "--relay", relay_process.url, "--yes", "-o", str(tmp_path))
    status, _, stderr = late.finish(30)
    assert status == 1 and "no such code" in stderr
