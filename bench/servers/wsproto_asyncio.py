"""Echo server: wsproto driven by a raw asyncio Protocol (no streams)."""

import asyncio

from _common import parse_args, ready
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)


class EchoProtocol(asyncio.Protocol):
    def __init__(self, max_message_size):
        self.max_message_size = max_message_size
        self.ws = WSConnection(ConnectionType.SERVER)
        self.parts = []
        self.size = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        ws = self.ws
        ws.receive_data(data)
        out = []
        for event in ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                # wsproto hands out partial messages as data arrives: reassemble before echoing
                self.parts.append(event.data)
                self.size += len(event.data)
                if self.size > self.max_message_size:
                    out.append(ws.send(CloseConnection(code=1009)))
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        message = TextMessage(data="".join(self.parts))
                    else:
                        message = BytesMessage(data=b"".join(self.parts))
                    self.parts = []
                    self.size = 0
                    out.append(ws.send(message))
            elif isinstance(event, Request):
                out.append(ws.send(AcceptConnection()))
            elif isinstance(event, Ping):
                out.append(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                out.append(ws.send(event.response()))
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        if out:
            self.transport.write(b"".join(out))

    def eof_received(self):
        return False


async def main():
    args = parse_args(__doc__)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoProtocol(args.max_message_size), args.host, args.port, backlog=1024
    )
    ready(args.host, server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
