"""Memory of idle server connections with and without permessage-deflate.

Usage::

    python3 bench/deflate_memory.py [--connections 1000]

For each mode it opens N threaded server connections over ``socket.socketpair()`` (the other
end is a sans-I/O client protocol, so no extra thread), exchanges one 1 KiB text message each
way (so that zlib's state exists where context takeover keeps it), takes the message out of
``incoming``, drops the client side, and reports the memory held per server connection: Python
and zlib allocations (``tracemalloc``, which sees zlib's ``PyMem_RawMalloc``) and the process
RSS growth (lower than allocated when zlib has not touched all of its buffers yet).

Modes: ``off`` (no extension), ``never-used`` (negotiated, no message compressed yet),
``takeover`` (the defaults: 12-bit windows, memLevel 5), ``no-takeover`` (both sides reset
after each message), ``zlib-defaults`` (15-bit windows, memLevel 8, as zlib's defaults).
"""

from __future__ import annotations

import argparse
import gc
import resource
import socket
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tube.websocket.core.deflate import DeflateOptions, DeflateParameters
from tube.websocket.core.options import ConnectionOptions
from tube.websocket.core.protocol import Protocol, Role
from tube.websocket.threads.connection import open_connection

MODES: dict[str, DeflateOptions | None] = {
    "off": None,
    "never-used": DeflateOptions(),
    "takeover": DeflateOptions(),
    "no-takeover": DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
    "zlib-defaults": DeflateOptions(
        server_max_window_bits=15, client_max_window_bits=15, memory_level=8
    ),
}
MESSAGE = ("tube " * 205)[:1024]


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(mode: str, count: int) -> tuple[float, float]:
    options = MODES[mode]
    parameters = (
        None
        if options is None
        else DeflateParameters(
            options.server_no_context_takeover,
            options.client_no_context_takeover,
            options.server_max_window_bits,
            options.client_max_window_bits,
            options,
        )
    )
    gc.collect()
    rss_before = rss_kib()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = []
    for _ in range(count):
        ours, theirs = socket.socketpair()
        connection = open_connection(
            ours, Role.SERVER, ConnectionOptions(ping_interval=None), deflate=parameters
        )
        peer = Protocol(Role.CLIENT, deflate=parameters)
        if mode != "never-used":
            peer.send_text(MESSAGE)
            theirs.sendall(b"".join(bytes(b) for b in peer.data_to_send()))
            assert connection.incoming.get(timeout=10) == MESSAGE
            connection.send(MESSAGE)
            received = b""
            events: list[object] = []
            while not events:
                received = theirs.recv(65536)
                events = list(peer.receive_data(received))
        # Only the server side is measured: the peer protocol (and its zlib state) goes.
        del peer
        kept.append((connection, theirs))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss_after = rss_kib()
    for connection, theirs in kept:
        connection.close(wait=False)
        theirs.close()
    for connection, _ in kept:
        connection.close()
    return (after - before) / count / 1024, (rss_after - rss_before) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("modes", nargs="*", default=list(MODES))
    args = parser.parse_args()
    print(f"{args.connections} idle server connections per mode (KiB per connection)")
    for mode in args.modes:
        traced, rss = run(mode, args.connections)
        print(f"  {mode:14s} tracemalloc {traced:7.1f} KiB   RSS growth {rss:7.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
