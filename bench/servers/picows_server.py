"""Echo server: picows (Cython, asyncio). Frame-level API: the load generator sends unfragmented
messages, so echoing each data frame echoes each message."""

import asyncio

from _common import parse_args, ready
from picows import WSListener, WSMsgType, ws_create_server


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_memoryview())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def main():
    args = parse_args(__doc__)
    server = await ws_create_server(
        lambda request: Echo(),
        args.host,
        args.port,
        max_frame_size=args.max_message_size,
        enable_auto_ping=False,
        use_aiofastnet=False,
        backlog=1024,
    )
    ready(args.host, server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
