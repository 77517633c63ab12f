"""Raw asyncio TCP echo: the ceiling for any pure-Python asyncio server.

No WebSocket at all: every byte received is written back. The load generator runs it with
``--mode raw``: it skips the handshake and sends the very masked frames it would send to a
WebSocket server, and checks that they come back byte for byte. The bytes on the wire are the
same as in ``ws`` mode (server-to-client frames are 4 bytes longer: they keep the mask).
"""

import asyncio

from _common import parse_args, ready


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def main():
    args = parse_args(__doc__)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, args.host, args.port, backlog=1024)
    ready(args.host, server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
