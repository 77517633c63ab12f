"""Raw asyncio TCP splice: the ceiling for a relay written in Python on asyncio.

Pairs two TCP connections by their first line, ``pair <token>\\n``: the first to arrive waits,
the second is paired with it and both get ``ok\\n``; from then on every byte read on one side
is written to the other, with ``asyncio.Protocol`` callbacks and nothing else (no parsing, no
copies beyond the transport's). Flow control as a relay needs it: when the destination's write
buffer passes the high-water mark (1 MiB, low-water 256 KiB, the Tube relay's watermarks of
TRP/1 §5.6) the source stops reading until it drains. bench/relay.py sends it the very
WebSocket frames it sends through the other relays.

Prints ``listening on HOST:PORT`` on stdout once it accepts connections.
"""

import argparse
import asyncio

HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
MAX_LINE = 256


class Splice(asyncio.Protocol):
    def __init__(self, waiting: dict[bytes, "Splice"]) -> None:
        self.waiting = waiting
        self.peer: Splice | None = None
        self.token: bytes | None = None
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)

    def data_received(self, data):
        peer = self.peer
        if peer is not None:
            peer.transport.write(data)
            return
        if self.token is not None:  # waiting for its partner: nothing may come before "ok"
            self.transport.close()
            return
        self.head += data
        end = self.head.find(b"\n")
        if end < 0:
            if len(self.head) > MAX_LINE:
                self.transport.close()
            return
        line, rest = self.head[:end], self.head[end + 1 :]
        self.head = b""
        if not line.startswith(b"pair ") or rest:
            self.transport.close()
            return
        token = line[5:]
        other = self.waiting.pop(token, None)
        if other is None:
            self.token = token
            self.waiting[token] = self
            return
        self.peer, other.peer = other, self
        self.transport.write(b"ok\n")
        other.transport.write(b"ok\n")

    # the destination's buffer is full: stop reading its source (the peer)
    def pause_writing(self):
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        if self.token is not None and self.waiting.get(self.token) is self:
            del self.waiting[self.token]
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer.transport.close()  # after its buffered bytes are written


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    waiting: dict[bytes, Splice] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Splice(waiting), args.host, args.port, backlog=1024)
    print(f"listening on {args.host}:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
