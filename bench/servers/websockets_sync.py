"""Echo server: websockets' threading server (websockets.sync.server)."""

from _common import parse_args, ready
from websockets.sync.server import serve


def echo(ws):
    for message in ws:  # str for text, bytes for binary
        ws.send(message)


def main():
    args = parse_args(__doc__)
    with serve(
        echo,
        args.host,
        args.port,
        compression=None,
        max_size=args.max_message_size,
        ping_interval=None,
    ) as server:
        ready(args.host, server.socket.getsockname()[1])
        server.serve_forever()


if __name__ == "__main__":
    main()
