"""Forwarding benchmark: the relay's inner loop (issue 25), one command.

Usage (see bench/README.md)::

    python3 bench/forward.py                     # splice, tube-asyncio, tube-threads; 3 rounds
    python3 bench/forward.py --servers tube-asyncio --size 256M -r 5 --strace

A forwarder pairs two WebSocket connections (by their path on asyncio, in order on threads: the
first waits for the second) and sends every binary message received on one to the other, with
Tube's public API:
``async for message in a.incoming: await b.send(message)`` on asyncio (``tube-asyncio``), the
same loop on a thread per connection (``tube-threads``). Against it, the raw asyncio TCP splice
(``bench/servers/splice.py``, ``pair <token>\\n``), which forwards bytes without parsing them.

One pair: a sender writes masked 256 KiB binary frames (``--message-size``) as fast as the
forwarder takes them, a receiver reads them; both in this process, pinned to core 1, the
forwarder (started afresh per run) to core 0. Measured from the pairing until the last byte
arrives: MB/s of message payload (10^6 B), the forwarder's CPU (utime + stime from /proc) per
MB and per message. ``--strace`` runs each forwarder under ``strace -c -f`` (slower: for the
system-call counts only, printed per message, not for the rates).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The peers frame with Tube's masking, from this checkout (also when tube is not installed).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PY = sys.executable
SERVERS = ("splice", "tube-asyncio", "tube-threads")
# Also measurable when named: Tube's asyncio forwarder on uvloop's event loop.
KINDS = (*SERVERS, "tube-asyncio-uvloop")


# ---------------------------------------------------------------------- the forwarders


def _serve_asyncio(host: str, port: int) -> None:
    from tube.websocket import ConnectionClosed, aio

    waiting: dict[str, tuple[aio.Connection, asyncio.Future[aio.Connection]]] = {}

    async def pump(source: aio.Connection, target: aio.Connection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in source.incoming:
                await target.send(message)

    async def handler(connection: aio.Connection) -> None:
        assert connection.request is not None
        token = connection.request.target
        if token in waiting:
            other, partner = waiting.pop(token)
            partner.set_result(connection)
        else:
            partner = asyncio.get_running_loop().create_future()
            waiting[token] = (connection, partner)
            other = await partner
        await pump(connection, other)
        await other.close()

    async def main() -> None:
        server = aio.serve(handler, host, port, ping_interval=None)
        async with server:
            print(f"listening on {host}:{server.sockets[0].getsockname()[1]}", flush=True)
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def _serve_threads(host: str, port: int) -> None:
    from tube.websocket import Connection, ConnectionClosed, serve

    lock = threading.Lock()
    waiting: dict[str, tuple[threading.Event, list[Connection]]] = {}

    def handler(connection: Connection) -> None:
        token = ""  # the threaded Connection does not keep its request: paired in order
        with lock:
            entry = waiting.pop(token, None)
            if entry is None:
                entry = waiting[token] = (threading.Event(), [connection])
                first = True
            else:
                entry[1].append(connection)
                first = False
        if first:
            entry[0].wait()
            other = entry[1][1]
        else:
            entry[0].set()
            other = entry[1][0]
        with contextlib.suppress(ConnectionClosed):
            for message in connection.incoming:
                other.send(message)
        other.close()

    with serve(handler, host, port, ping_interval=None) as server:
        print(f"listening on {host}:{server.socket.getsockname()[1]}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


# ---------------------------------------------------------------------- the peers


def _handshake(sock: socket.socket, token: str) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /{token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the forwarder closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:60]!r}")


def _masked_frame(size: int) -> bytes:
    payload = os.urandom(size)
    header = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
    key = b"\x12\x34\x56\x78"
    from tube.websocket.core.masking import apply_mask

    return header + key + apply_mask(payload, key)


def run_peers(kind: str, port: int, messages: int, size: int, server_pid: int) -> dict[str, float]:
    """Send ``messages`` frames through one pair; the rates and the forwarder's CPU."""
    token = f"t{os.getpid()}{time.monotonic_ns()}"
    frame = _masked_frame(size)
    out_header = 14 if kind == "splice" else 10  # the splice forwards the masked frames as is
    expected = messages * (size + out_header)
    sender = socket.create_connection(("127.0.0.1", port))
    receiver = socket.create_connection(("127.0.0.1", port))
    for sock in (sender, receiver):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "splice":
        sender.sendall(f"pair {token}\n".encode())
        receiver.sendall(f"pair {token}\n".encode())
        for sock in (sender, receiver):
            if sock.recv(3) != b"ok\n":
                raise RuntimeError("the splice did not pair")
    else:
        _handshake(sender, token)
        _handshake(receiver, token)

    def send() -> None:
        for _ in range(messages):
            sender.sendall(frame)

    cpu0 = _cpu(server_pid)
    start = time.perf_counter()
    thread = threading.Thread(target=send)
    thread.start()
    buffer = memoryview(bytearray(1 << 20))
    got = 0
    first = b""
    while got < expected:
        n = receiver.recv_into(buffer)
        if not n:
            raise RuntimeError(
                f"the forwarder closed after {got} of {expected} bytes: {bytes(buffer[:8])!r}"
            )
        if got == 0:
            first = bytes(buffer[:2])
        got += n
    elapsed = time.perf_counter() - start
    cpu = _cpu(server_pid) - cpu0
    thread.join()
    if first != frame[:2] if kind == "splice" else first != b"\x82\x7f":
        raise RuntimeError(f"unexpected first frame header {first!r}")
    for sock in (sender, receiver):
        sock.close()
    megabytes = messages * size / 1e6
    return {
        "mb_per_s": megabytes / elapsed,
        "cpu_s_per_gb": cpu / megabytes * 1000,
        "cpu_us_per_msg": cpu / messages * 1e6,
        "cpu_share": cpu / elapsed,
    }


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- the runner


def _start(kind: str, strace: str | None) -> tuple[subprocess.Popen[str], int]:
    if kind == "splice":
        cmd = [PY, str(BENCH / "servers" / "splice.py"), "--port", "0"]
    else:
        cmd = [PY, str(Path(__file__)), "--serve", kind]
    if strace:
        cmd = ["strace", "-f", "-c", "-o", strace, *cmd]
    cmd = ["taskset", "-c", "0", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on .*:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"{kind} did not start: {line!r}")
    return proc, int(match.group(1))


def _stop(proc: subprocess.Popen[str], pid: int) -> None:
    """Stop the forwarder ``pid``; under strace (``proc``), strace first (SIGINT: it detaches
    and writes its summary)."""
    if pid != proc.pid:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _syscalls(path: str, messages: int) -> str:
    counts = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    keys = ("sendto", "sendmsg", "writev", "write", "recvfrom", "epoll_wait")
    return ", ".join(f"{k} {counts[k] / messages:.2f}" for k in keys if k in counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--size", default="256M", help="bytes per run (K, M, G suffixes)")
    parser.add_argument("--message-size", type=int, default=256 * 1024)
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--strace", action="store_true", help="count system calls instead")
    parser.add_argument(
        "--json", action="store_true", help="print each run as a JSON line (for bench/run.py)"
    )
    parser.add_argument("--serve", choices=KINDS[1:], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        # As the relay does (python -m tube): freed 256 KiB messages are reused, not faulted
        # in afresh (tube.websocket.keep_freed_memory, the relay's 16 MiB).
        from tube.websocket import keep_freed_memory

        keep_freed_memory(16 * 1024 * 1024)
    if args.serve == "tube-asyncio-uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        args.serve = "tube-asyncio"
    if args.serve == "tube-asyncio":
        _serve_asyncio("127.0.0.1", 0)
        return 0
    if args.serve == "tube-threads":
        _serve_threads("127.0.0.1", 0)
        return 0
    total = int(args.size[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[args.size[-1]]
    messages = total // args.message_size
    servers = args.servers.split(",")
    for name in servers:
        if name not in KINDS:
            parser.error(f"unknown forwarder {name!r} (from: {', '.join(KINDS)})")
    os.sched_setaffinity(0, {1})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for rep in range(args.repeat):
        for name in servers[rep % len(servers) :] + servers[: rep % len(servers)]:
            trace = tempfile.mktemp(prefix="forward-strace-") if args.strace else None
            proc, port = _start(name, trace)
            pid = proc.pid
            if trace:  # the traced forwarder, not strace
                pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
            try:
                data = run_peers(name, port, messages, args.message_size, pid)
            finally:
                _stop(proc, pid)
            if trace:
                data["syscalls"] = _syscalls(trace, messages)  # type: ignore[assignment]
                os.unlink(trace)
            results[name].append(data)
            if args.json:
                print("json " + json.dumps({"forwarder": name, **data}), flush=True)
                continue
            print(
                f"  {name:14} {data['mb_per_s']:8,.0f} MB/s {data['cpu_s_per_gb']:6.2f} CPU s/GB "
                f"{data['cpu_us_per_msg']:6.0f} µs/msg  cpu {data['cpu_share']:.2f}"
                + (f"  [{data['syscalls']} per msg]" if trace else ""),
                flush=True,
            )
    if args.json:
        return 0
    print(f"\nmedians of {args.repeat}, {messages} messages of {args.message_size} B per run")
    print("| forwarder | MB/s | x splice | CPU s/GB | CPU µs/msg |")
    print("|---|---|---|---|---|")
    base = (
        statistics.median(r["mb_per_s"] for r in results["splice"]) if "splice" in results else None
    )
    for name, runs in results.items():
        med: dict[str, Any] = {
            k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "syscalls"
        }
        rel = f"{med['mb_per_s'] / base:.2f}x" if base else "—"
        print(
            f"| {name} | {med['mb_per_s']:,.0f} | {rel} | {med['cpu_s_per_gb']:.2f} "
            f"| {med['cpu_us_per_msg']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
