"""Issue 22's closing measurements: the asyncio server under a deflate-bomb loop (§1) and under
clients dribbling large request heads (§2), for one source tree or several.

Usage::

    python3 bench/issue22.py                                  # this checkout
    git worktree add --detach /tmp/tube-before e4395b0        # main before 8077056 / b432239
    python3 bench/issue22.py --tree before=/tmp/tube-before --tree now=.

For each tree, the server is ``aio.serve`` with an echo handler, ``max_message_size=16 MiB``
(uvicorn's default, as in the issue) and permessage-deflate, run from that tree in a process of
its own (``PYTHONPATH``), so the load runs the same client code against each. Measured from
``/proc``: the server's RSS (and its peak, ``VmHWM``) and the CPU seconds it used.

* **bombs**: one client after another sends a compressed message that inflates past the limit
  (17 MiB of zeros in about 17 KB); the server refuses each with 1009. The RSS after each bomb
  is sampled; the cyclic garbage collector runs when it likes, as in production.
* **dribble**: ``--dribblers`` clients send a valid 944 KB upgrade request (118 header lines of
  8,000 bytes, within the limits) in 100-byte writes, one every millisecond (about 10 s a
  head), again and again, while an honest client echoes a 16-byte message every 10 ms and
  times it. Before it, the honest client alone gives the baseline. Reported: the server's CPU
  share over the run and its CPU seconds per MB of head received, the honest round trip.

Not a timed test: numbers depend on the machine and its load (the other engineers' jobs share
the cores here); compare trees within one run. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 16 << 20

SERVER = """
import asyncio, gc, os
from tube.websocket import aio

if os.environ.get("ISSUE22_NO_GC"):
    gc.disable()  # what happens between two runs of the cyclic collector, made to last

async def echo(connection):
    async for message in connection.incoming:
        await connection.send(message)

async def main():
    async with aio.serve(echo, "127.0.0.1", 0, max_message_size=LIMIT, compression="deflate",
                         open_timeout=300) as server:
        print(server.port, flush=True)
        await server.serve_forever()

asyncio.run(main())
""".replace("LIMIT", str(LIMIT))

HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


# ---------------------------------------------------------------------- the server process


@dataclass
class Server:
    """One tree's asyncio server, in its own process."""

    tree: Path
    collector: bool = True
    process: subprocess.Popen[str] = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        env.pop("TUBE_NO_SPEEDUPS", None)
        if not self.collector:
            env["ISSUE22_NO_GC"] = "1"
        # cwd too: ``python -c`` puts the working directory first on sys.path.
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=self.tree,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def _status(self, name: str) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])  # KiB
        raise KeyError(name)

    def rss_mib(self) -> float:
        return self._status("VmRSS") / 1024

    def peak_mib(self) -> float:
        return self._status("VmHWM") / 1024

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ---------------------------------------------------------------------- clients


def mask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    xored = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return xored.to_bytes(len(payload), "big")


def frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """A masked client frame."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    key = os.urandom(4)
    return header + key + mask(payload, key)


def open_websocket(port: int, extra: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(HANDSHAKE.format(key=key, extra=extra).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"no answer to the handshake: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101 "):
        raise ConnectionError(f"refused: {head!r}")
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def bomb_payload() -> bytes:
    """Raw DEFLATE of 17 MiB of zeros, without RFC 7692's 00 00 FF FF tail."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(bytes(LIMIT + (1 << 20))) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def bombs(server: Server, count: int) -> dict[str, float]:
    """``count`` clients connect, then all send their bomb at once (an attacker does not wait),
    then read the server's answers; the RSS is sampled every 10 ms meanwhile."""
    payload = bomb_payload()
    bomb = frame(0x2, payload, rsv1=True)
    rss_before, cpu_before = server.rss_mib(), server.cpu_seconds()
    offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    socks = [open_websocket(server.port, offer) for _ in range(count)]
    samples = [rss_before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.01):
            samples.append(server.rss_mib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for sock in socks:
            sock.sendall(bomb)
        for sock in socks:
            with sock:
                answer = read_to_end(sock)  # the server's close frame 1009, then its FIN
                assert answer[:1] == b"\x88" and answer[2:4] == b"\x03\xf1", answer[:8]
        time.sleep(0.5)
    finally:
        sampling.set()
        sampler.join()
    return {
        "bomb_kb": len(payload) / 1000,
        "rss_before": rss_before,
        "rss_max": max(samples),
        "rss_after": server.rss_mib(),
        "peak": server.peak_mib(),
        "cpu": server.cpu_seconds() - cpu_before,
    }


def big_head() -> bytes:
    pads = "".join(f"X-Pad-{i:03}: {'a' * 7988}\r\n" for i in range(118))
    key = base64.b64encode(os.urandom(16)).decode()
    return HANDSHAKE.format(key=key, extra=pads).encode()


async def _dribble_all(port: int, clients: int, seconds: float) -> tuple[int, int]:
    head = big_head()
    stop = time.monotonic() + seconds
    heads = sent = 0

    async def dribbler() -> None:
        nonlocal heads, sent
        while time.monotonic() < stop:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for start in range(0, len(head), 100):
                    if time.monotonic() >= stop:
                        return
                    writer.write(head[start : start + 100])
                    await writer.drain()
                    sent += 100
                    await asyncio.sleep(0.001)
                await reader.readuntil(b"\r\n\r\n")
                heads += 1
            finally:
                writer.close()

    await asyncio.gather(*(dribbler() for _ in range(clients)))
    return heads, sent


def dribblers_main(port: int, clients: int, seconds: float) -> None:
    """Entry of the dribbling process (``--dribble-process``): prints heads and bytes sent."""
    heads, sent = asyncio.run(_dribble_all(port, clients, seconds))
    print(heads, sent, flush=True)


def honest_echo(port: int, seconds: float) -> list[float]:
    """Round trips (ms) of a 16-byte text message, one every 10 ms."""
    sock = open_websocket(port)
    times = []
    message = frame(0x1, b"0123456789abcdef")
    stop = time.monotonic() + seconds
    with sock:
        while time.monotonic() < stop:
            start = time.perf_counter()
            sock.sendall(message)
            got = b""
            while len(got) < 18:
                got += sock.recv(64)
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)
    return times


@contextmanager
def measuring(server: Server) -> Iterator[dict[str, float]]:
    result: dict[str, float] = {}
    cpu, wall = server.cpu_seconds(), time.monotonic()
    yield result
    result["cpu_share"] = (server.cpu_seconds() - cpu) / (time.monotonic() - wall)


def dribble(server: Server, clients: int, seconds: float) -> dict[str, float]:
    with measuring(server) as baseline:
        alone = honest_echo(server.port, 3.0)
    command = [sys.executable, __file__, "--dribble-process", str(server.port), str(clients)]
    command.append(str(seconds))
    cpu_before = server.cpu_seconds()
    with measuring(server) as loaded:
        dribbling = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)  # let every dribbler get going
        echoes: list[float] = []
        probe = functools.partial(honest_echo, server.port, seconds - 1.5)
        thread = threading.Thread(target=lambda: echoes.extend(probe()))
        thread.start()
        thread.join()
        heads, sent = map(int, dribbling.communicate()[0].split())
    cpu = server.cpu_seconds() - cpu_before
    return {
        "alone_median": statistics.median(alone),
        "alone_cpu_share": baseline["cpu_share"],
        "loaded_median": statistics.median(echoes),
        "loaded_p99": statistics.quantiles(echoes, n=100)[98],
        "loaded_cpu_share": loaded["cpu_share"],
        "heads": heads,
        "mb": sent / 1e6,
        "cpu_per_mb": cpu / (sent / 1e6),
        "rss_after": server.rss_mib(),
    }


# ---------------------------------------------------------------------- the report


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--dribble-process":
        dribblers_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", metavar="NAME=PATH", default=[])
    parser.add_argument("--bombs", type=int, default=30)
    parser.add_argument("--dribblers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="dribbling time")
    parser.add_argument("--no-gc", action="store_true", help="servers without the collector")
    parser.add_argument("--only", choices=["bombs", "dribble"], help="one of the two loads")
    args = parser.parse_args()
    trees = [entry.split("=", 1) for entry in args.tree] or [["this", str(ROOT)]]
    rows = []
    for name, path in trees:
        for part in [args.only] if args.only else ["bombs", "dribble"]:
            # A fresh server for each load.
            server = Server(Path(path).resolve(), collector=not args.no_gc)
            try:
                started = server.rss_mib()
                if part == "bombs":
                    result = bombs(server, args.bombs)
                else:
                    result = dribble(server, args.dribblers, args.seconds)
                rows.append((name, part, started, result))
            finally:
                server.stop()
    collector = "off" if args.no_gc else "on"
    print(
        f"{args.bombs} bombs (16 MiB limit, cyclic collector {collector}); "
        f"{args.dribblers} dribblers for {args.seconds} s\n"
    )
    if any(part == "bombs" for _, part, _, _ in rows):
        print("| tree | bombs: RSS start / max / after, MiB | peak (VmHWM) | server CPU s |")
        print("|---|---|---|---|")
    for name, part, started, r in rows:
        if part == "bombs":
            print(
                f"| {name} | {started:.0f} / {r['rss_max']:.0f} / {r['rss_after']:.0f} "
                f"| {r['peak']:.0f} | {r['cpu']:.2f} |"
            )
    if not any(part == "dribble" for _, part, _, _ in rows):
        return
    print()
    print(
        "| tree | echo alone: median ms (server CPU) | with dribblers: median / p99 ms "
        "| server CPU share | head MB received | server CPU s per MB | RSS after, MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, part, _, r in rows:
        if part == "dribble":
            print(
                f"| {name} | {r['alone_median']:.2f} ({r['alone_cpu_share']:.0%}) "
                f"| {r['loaded_median']:.2f} / {r['loaded_p99']:.2f} "
                f"| {r['loaded_cpu_share']:.0%} | {r['mb']:.1f} | {r['cpu_per_mb']:.3f} "
                f"| {r['rss_after']:.0f} |"
            )


if __name__ == "__main__":
    main()
