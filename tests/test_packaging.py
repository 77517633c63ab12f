"""Packaging as users install it: ``python -m build``, then the wheel alone in a fresh venv.

Builds the sdist and the wheel of a clean copy of the project, checks what they hold (the C
source in the sdist, the compiled accelerator in the wheel when a compiler is there, the demo's
page), installs the wheel with ``--no-deps --no-index`` into a new virtual environment, and runs
there, outside the checkout, the demo's start-up (its page is served) and one echo round trip
(the echo server and the command-line client, both from the wheel). A module or data file left
out of the package fails here.
"""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .core.test_speedups import clean_env, compiler_available, copy_project
from .integrations.test_demo import read_line

pytestmark = pytest.mark.slow

BUILD_TIMEOUT = 180
TIMEOUT = 30


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built by ``python -m build`` from a clean copy of the project."""
    base = tmp_path_factory.mktemp("packaging")
    source = copy_project(base / "src")
    out = base / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=clean_env(),
        cwd=base,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("tube_websocket-*.tar.gz")
    (wheel,) = out.glob("tube_websocket-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def venv_python(
    dist: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The python of a fresh venv holding the wheel and nothing else of ours."""
    base = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", base / "venv"], check=True, capture_output=True, timeout=120
    )
    python = base / "venv" / "bin" / "python"
    result = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", str(dist[1])],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=base,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield python


def test_the_distributions_hold_what_users_need(dist: tuple[Path, Path]) -> None:
    sdist, wheel = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert "tube/websocket/core/_speedups.c" in names
    assert {"setup.py", "pyproject.toml", "README.md", "tube/demo/index.html"} <= names
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        metadata = archive.read(
            next(name for name in files if name.endswith(".dist-info/METADATA"))
        ).decode()
    assert {"tube/py.typed", "tube/demo/index.html", "tube/websocket/integrations/wsgi.py"} <= files
    # The relay's page, its static files and the code word list are package data.
    assert {
        "tube/relay/static/index.html",
        "tube/relay/static/tube.css",
        "tube/relay/static/wordlist/eff_short_wordlist_1.txt",
        "tube/relay/static/wordlist/LICENSE.md",
    } <= files
    assert "Provides-Extra: relay-cli" in metadata
    assert "Name: tube-websocket" in metadata
    assert "Provides-Extra: flask" in metadata and "Provides-Extra: gunicorn" in metadata
    assert "Requires-Dist: flask" in metadata  # only under the extra
    assert not re.search(r"^Requires-Dist: [^;]*$", metadata, re.M), "a runtime dependency"
    accelerator = [name for name in files if name.startswith("tube/websocket/core/_speedups.")]
    if compiler_available():
        assert any(name.endswith((".so", ".pyd")) for name in accelerator), accelerator


def run_in_venv(python: Path, *args: str, cwd: Path, stdin: str | None = None) -> str:
    result = subprocess.run(
        [python, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=clean_env(),
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start(python: Path, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [python, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=cwd,
    )


def http_get(port: int, path: str) -> tuple[int, bytes]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, response.read()
    finally:
        client.close()


def stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stderr.decode(errors="replace")


def test_the_wheel_alone_runs_the_relay_and_the_demo(venv_python: Path, tmp_path: Path) -> None:
    # Outside the checkout: only the installed wheel can be imported.
    where = run_in_venv(venv_python, "-c", "import tube; print(tube.__file__)", cwd=tmp_path)
    assert str(venv_python.parent.parent) in where
    version = run_in_venv(venv_python, "-m", "tube.websocket", "--version", cwd=tmp_path)
    assert version.startswith("tube 0.1.0 (implementation: ")
    if compiler_available():
        assert version.strip().endswith("(implementation: c)")

    relay = start(venv_python, "-m", "tube", "--port", "0", cwd=tmp_path)
    try:
        line = read_line(relay, TIMEOUT).decode()
        match = re.fullmatch(r"Tube relay on http://127\.0\.0\.1:(\d+)/\n", line)
        assert match, line
        port = int(match.group(1))
        status, page = http_get(port, "/")
        assert status == 200 and b"<title>Tube" in page
        # Every asset the page names is served from the wheel, with its hash.
        assets = re.findall(rb'href="(/s/[^"]+)"', page)
        assert assets, page
        for asset in assets:
            assert http_get(port, asset.decode())[0] == 200, asset
        assert http_get(port, "/healthz")[0] == 200
    finally:
        returncode, stderr = stop(relay)
    assert returncode == 0, stderr

    # Without the relay-cli extra, the peer says what to install (exit 2), not a traceback.
    peer = subprocess.run(
        [str(venv_python), "-m", "tube", "send", "nothing.txt"],
        cwd=tmp_path,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert peer.returncode == 2, peer
    assert b"tube-websocket[relay-cli]" in peer.stderr and b"Traceback" not in peer.stderr

    demo = start(venv_python, "-m", "tube.demo", "--port", "0", cwd=tmp_path)
    try:
        line = read_line(demo, TIMEOUT).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        status, page = http_get(int(match.group(1)), "/")
        assert status == 200
        assert b"new WebSocket(" in page  # the page shipped as package data
    finally:
        returncode, stderr = stop(demo)
    assert returncode == 0, stderr

    echo = start(venv_python, "-m", "tube.websocket.echo", "--port", "0", cwd=tmp_path)
    try:
        line = read_line(echo, TIMEOUT).decode()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        url = f"ws://127.0.0.1:{match.group(1)}/"
        output = run_in_venv(
            venv_python,
            "-m",
            "tube.websocket",
            url,
            "--linger",
            "0.5",
            cwd=tmp_path,
            stdin="hello\n",
        )
        assert output.splitlines() == ["hello"]
    finally:
        returncode, stderr = stop(echo)
    assert returncode == 0, stderr
