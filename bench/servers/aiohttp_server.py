"""Echo server: aiohttp (web.Application + WebSocketResponse), access log off."""

import asyncio

from _common import parse_args, ready
from aiohttp import WSMsgType, web


def make_app(max_message_size):
    async def echo(request):
        ws = web.WebSocketResponse(max_msg_size=max_message_size, compress=False, heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    return app


async def main():
    args = parse_args(__doc__)
    runner = web.AppRunner(make_app(args.max_message_size), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    ready(args.host, port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
