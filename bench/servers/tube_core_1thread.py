"""Experiment, not Tube's API: Tube's sans-I/O core driven by one thread per connection.

What the threaded design could reach if the application's handler ran in the thread that reads
the socket: ``ThreadingHTTPServer``'s handler thread validates the handshake with the core,
then loops ``recv_into`` -> ``Protocol.receive_data`` -> one ``send_*`` per message -> one
``sendall`` for everything the batch produced. No second thread, no lock, no channel, no
hand-off between threads. Used by ``bench/run.py --servers ...,tube-1thread`` (opt-in) to
compare with ``tube`` (the real transport).
"""

import contextlib
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import parse_args, ready

from tube.websocket.core.errors import HandshakeError
from tube.websocket.core.events import BinaryMessage, TextMessage
from tube.websocket.core.handshake import accept_request, rejection_response
from tube.websocket.core.http import Request
from tube.websocket.core.protocol import Protocol, Role

RECV_MIN = 4096
RECV_MAX = 65536
JOIN_LIMIT = 65536
PER_MESSAGE = False  # --message: one sendall per echo, as the seed's API does


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.close_connection = True
        headers = [(name, str(value)) for name, value in self.headers.items()]
        request = Request(self.command, self.path, self.request_version, headers)
        try:
            response, _ = accept_request(request)
        except HandshakeError as error:
            self.wfile.write(rejection_response(error).to_bytes())
            return
        sock = self.connection
        sock.sendall(response.to_bytes())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol = Protocol(Role.SERVER, max_message_size=self.server.max_message_size)
        # bytes http.server read ahead of the request head (none with the load generator,
        # which waits for the 101): hand them over like upgrade_connection does
        sock.setblocking(False)
        try:
            early = self.rfile.read1(65536) or b""
        except (BlockingIOError, OSError):
            early = b""
        sock.setblocking(True)
        buffer = bytearray(RECV_MIN)
        view = memoryview(buffer)
        data = early
        while True:
            if not data:
                received = sock.recv_into(buffer)
                if not received:
                    protocol.receive_eof()
                    break
                data = view[:received]
                if received == len(buffer) and received < RECV_MAX:
                    buffer = bytearray(RECV_MAX)
                    view = memoryview(buffer)
            for event in protocol.receive_data(data):
                kind = type(event)
                if kind is BinaryMessage:
                    protocol.send_binary(event.data)
                elif kind is TextMessage:
                    protocol.send_text(event.data)
                else:
                    continue
                if PER_MESSAGE:
                    for chunk in protocol.data_to_send():
                        sock.sendall(chunk)
            data = b""
            out = protocol.data_to_send()
            if out:
                if len(out) == 1:
                    sock.sendall(out[0])
                elif sum(map(len, out)) <= JOIN_LIMIT:
                    sock.sendall(b"".join(out))
                else:
                    for chunk in out:
                        sock.sendall(chunk)
            if protocol.should_close_transport():
                break
        # RFC 6455 7.1.1: the server closes TCP first; socketserver closes the socket on return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


def main():
    global PER_MESSAGE
    PER_MESSAGE = "--message" in sys.argv
    if PER_MESSAGE:
        sys.argv.remove("--message")
    args = parse_args(__doc__)
    server = Server((args.host, args.port), Handler)
    server.max_message_size = args.max_message_size
    ready(args.host, server.socket.getsockname()[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
