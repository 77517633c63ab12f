"""Echo server: websockets' asyncio server (websockets.asyncio.server)."""

import asyncio

from _common import parse_args, ready
from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:  # str for text, bytes for binary
        await ws.send(message)


async def main():
    args = parse_args(__doc__)
    async with serve(
        echo,
        args.host,
        args.port,
        compression=None,
        max_size=args.max_message_size,
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        ready(args.host, port)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
