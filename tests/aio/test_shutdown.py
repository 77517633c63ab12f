"""``aio.serve`` stopped by SIGTERM and Ctrl-C, as a user runs it (issue 23).

The README's asyncio server and its ``reuse_port`` example, run as scripts (``python
script.py``, the example's port replaced by a free one): a client's WebSocket is closed with
1001 (going away), the process exits with status 0, nothing on stderr.

The bound, 5 s from the signal to the process's exit: the server sends 1001 as soon as the loop
sees the signal and exits once the handlers have ended, which here takes our client's close
reply and the TCP teardown (milliseconds; measured 0.03-0.07 s for one process, 1.1 s for the
multiprocessing example, whose workers also wait for the test's five other clients, read only
afterwards); the rest is margin for a loaded 2-core machine. It is far below what a stuck
shutdown takes (close_give_up_time, 10 s).
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from ..shutdown import (
    assert_clean,
    free_port,
    open_client,
    readme_section,
    started,
    stop_and_watch,
)

BOUND = 5.0
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def server_script(port: int) -> str:
    """The README's asyncio server block, on ``port``."""
    block = readme_section("asyncio")[0]
    assert "8765" in block and 'if __name__ == "__main__":' in block
    return block.replace("8765", str(port))


def reuse_port_script(port: int) -> str:
    """The README's reuse_port block, after the server block's imports and handler (its
    ``__main__`` part left out), on 127.0.0.1:``port``."""
    blocks = readme_section("asyncio")
    preamble = blocks[0].split("\n\nasync def main()")[0]
    example = blocks[3]
    assert '("0.0.0.0", 8765)' in example
    return preamble + "\n\n" + example.replace('("0.0.0.0", 8765)', f'("127.0.0.1", {port})')


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_the_asyncio_example_stops_cleanly(signum: signal.Signals, tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(server_script(port), encoding="utf-8")
    log = tmp_path / "server.log"
    with started([sys.executable, str(script)], tmp_path, log) as process:
        client = open_client(process, log, f"ws://127.0.0.1:{port}/")
        stopped = stop_and_watch(process, log, client, signum)
    assert_clean(stopped, BOUND)
    assert stopped.close_reason == "server shutting down"


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_the_reuse_port_example_stops_its_workers(signum: signal.Signals, tmp_path: Path) -> None:
    """SIGTERM to the parent (or Ctrl-C to the group): every worker closes its clients with
    1001 and exits, then the parent; nothing is left serving the port."""
    port = free_port()
    script = tmp_path / "workers.py"
    script.write_text(reuse_port_script(port), encoding="utf-8")
    log = tmp_path / "workers.log"
    with started([sys.executable, str(script)], tmp_path, log) as process:
        # Several clients, so that (most likely) every worker holds one.
        clients = [open_client(process, log, f"ws://127.0.0.1:{port}/") for _ in range(6)]
        first = stop_and_watch(process, log, clients[0], signum)
        others = []
        for client in clients[1:]:
            with client:
                for _ in client.incoming:
                    pass
            others.append(client.close_code)
    assert_clean(first, BOUND)
    assert others == [1001] * 5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
