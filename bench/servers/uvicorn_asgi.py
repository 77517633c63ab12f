"""Echo server: a plain ASGI application on uvicorn, with a choice of WebSocket protocol class.

``--ws tube`` is Tube's ``tube.websocket.asgi.UvicornProtocol``; ``websockets`` is uvicorn's
default class (``websockets-sansio``: what ``--ws auto`` picks), ``wsproto`` uvicorn's wsproto
class. The application is raw ASGI (no framework), so that the protocol layer is what differs.
Plain ``asyncio`` event loop and h11 for the HTTP head, as for the other asyncio servers here.
"""

import argparse
import asyncio
import socket

import uvicorn
from _common import ready

WS = {
    "tube": "tube.websocket.asgi:UvicornProtocol",
    "websockets": "websockets-sansio",
    "websockets-legacy": "websockets",
    "wsproto": "wsproto",
}


async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def main(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(
        app,
        ws=WS[args.ws],
        ws_max_size=args.max_message_size,
        ws_per_message_deflate=False,  # compression off, as every server of the suite
        ws_ping_interval=None,  # keepalive off, likewise
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # bounded: serve() either starts or ends
        if serving.done():
            await serving
            raise SystemExit("uvicorn did not start")
        await asyncio.sleep(0.01)
    ready(args.host, sock.getsockname()[1])
    await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ASGI echo on uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-message-size", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--ws", choices=sorted(WS), default="tube")
    asyncio.run(main(parser.parse_args()))
