"""Interop: Node's ``ws`` client (tests/interop/node/ws_client.mjs) against Tube's server."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from .conftest import EchoServer, NodeWs

pytestmark = pytest.mark.interop

SIZES = [0, 125, 126, 65535, 65536, 4 * 1024 * 1024]
# The script has its own 20 s watchdog; this bound only catches a hung process.
PROCESS_TIMEOUT = 30.0


def run_client(node_ws: NodeWs, url: str, scenario: str) -> list[dict[str, Any]]:
    """Run the Node client to completion and return its reports (one dict per line)."""
    sizes = ",".join(map(str, SIZES))
    with subprocess.Popen(
        [node_ws.node, str(node_ws.script), url, scenario, sizes],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"node client hung; stdout:\n{stdout}\nstderr:\n{stderr}")
    reports = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    errors = [report for report in reports if report["event"] == "error"]
    assert not errors, f"node client failed: {errors}\nstderr:\n{stderr}"
    assert process.returncode == 0, f"exit {process.returncode}\nstderr:\n{stderr}"
    assert reports[-1] == {"event": "done"}
    return reports


def check_exchange(reports: list[dict[str, Any]], server: EchoServer) -> None:
    """Every size went through both ways, byte for byte, and both pings got their pong."""
    echoes = [report for report in reports if report["event"] == "echo"]
    assert all(report["ok"] for report in echoes)
    expected = [(kind, size) for size in SIZES for kind in ("text", "binary")]
    assert [(report["kind"], report["size"]) for report in echoes[:-1]] == expected
    # The last one is the multi-byte text.
    assert echoes[-1]["kind"] == "text"
    assert echoes[-1]["size"] > 65536
    # What the server received is exactly what the client sent (hashes computed on each side).
    assert server.received == [
        (report["kind"], report["size"], report["sha256"]) for report in echoes
    ]
    pongs = [report["payload"] for report in reports if report["event"] == "pong"]
    assert pongs == [b"ping-from-node".hex(), ""]


def test_client_closes_first(node_ws: NodeWs, echo_server: EchoServer) -> None:
    reports = run_client(node_ws, echo_server.url, "client-close")
    check_exchange(reports, echo_server)
    # The server echoed the client's close code (RFC 6455 §5.5.1; the reason need not be).
    assert [r["code"] for r in reports if r["event"] == "close"] == [1000]
    assert echo_server.wait_closed(1)
    assert echo_server.closed == [(1000, "client bye")]


def test_server_closes_first(node_ws: NodeWs, echo_server: EchoServer) -> None:
    reports = run_client(node_ws, echo_server.url, "server-close")
    check_exchange(reports, echo_server)
    assert [r for r in reports if r["event"] == "close"] == [
        {"event": "close", "code": 1000, "reason": "server bye"}
    ]
    assert echo_server.wait_closed(1)
    assert echo_server.closed == [(1000, "server bye")]
