"""Experiment, not Tube's API: Tube's sans-I/O core with a reader thread and an application thread.

The shape of Tube's transport reduced to its bones, to split the cost of small messages between
the hand-off from the reader thread to the application thread and the write per message:

* the handler thread validates the handshake, starts a reader thread and runs the echo loop;
* the reader thread loops ``recv_into`` -> ``Protocol.receive_data`` (under the connection
  lock), writes what the protocol queued (pongs, close), and appends the messages to a deque,
  waking the application thread with a condition when it waits;
* the application thread takes messages and echoes them: with ``--batch``, it takes every
  message waiting, queues them all and writes them with one ``sendall``; without, one message,
  one ``sendall``, like ``Connection.send``.

Used by ``bench/run.py --servers tube-2thread,tube-2thread-batch`` (opt-in).
"""

import contextlib
import socket
import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import ready

from tube.websocket.core.errors import HandshakeError
from tube.websocket.core.events import BinaryMessage, TextMessage
from tube.websocket.core.handshake import accept_request, rejection_response
from tube.websocket.core.http import Request
from tube.websocket.core.protocol import Protocol, Role

RECV_MIN = 4096
RECV_MAX = 65536
BATCH = "--batch" in sys.argv


def write(sock, out):
    if not out:
        return
    if len(out) == 1:
        sock.sendall(out[0])
    elif sum(map(len, out)) <= 65536:
        sock.sendall(b"".join(out))
    else:
        for chunk in out:
            sock.sendall(chunk)


class Channel:
    def __init__(self):
        self.cond = threading.Condition(threading.Lock())
        self.messages = deque()
        self.closed = False
        self.waiting = False

    def put(self, batch):
        with self.cond:
            self.messages.extend(batch)
            if self.waiting:
                self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()

    def take(self, everything):
        with self.cond:
            while not self.messages:
                if self.closed:
                    return None
                self.waiting = True
                self.cond.wait()
                self.waiting = False
            if everything:
                batch = list(self.messages)
                self.messages.clear()
                return batch
            return [self.messages.popleft()]


def reader(sock, protocol, lock, write_lock, channel):
    buffer = bytearray(RECV_MIN)
    view = memoryview(buffer)
    try:
        while True:
            received = sock.recv_into(buffer)
            with lock:
                if not received:
                    protocol.receive_eof()
                    break
                events = protocol.receive_data(view[:received])
                out = protocol.data_to_send()
                done = protocol.should_close_transport()
                if out:
                    with write_lock:
                        write(sock, out)
            messages = [e.data for e in events if type(e) in (BinaryMessage, TextMessage)]
            if messages:
                channel.put(messages)
            if done:
                break
            if received == len(buffer) and received < RECV_MAX:
                buffer = bytearray(RECV_MAX)
                view = memoryview(buffer)
    except OSError:
        pass
    finally:
        channel.close()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


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
        lock, write_lock, channel = threading.Lock(), threading.Lock(), Channel()
        thread = threading.Thread(
            target=reader, args=(sock, protocol, lock, write_lock, channel), daemon=True
        )
        thread.start()
        try:
            while (batch := channel.take(BATCH)) is not None:
                with lock:
                    for message in batch:
                        if isinstance(message, str):
                            protocol.send_text(message)
                        else:
                            protocol.send_binary(message)
                    out = protocol.data_to_send()
                    with write_lock:
                        write(sock, out)
        except Exception:
            pass  # closed under us
        thread.join()


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


def main():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-message-size", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--batch", action="store_true")
    args = parser.parse_args()
    server = Server((args.host, args.port), Handler)
    server.max_message_size = args.max_message_size
    ready(args.host, server.socket.getsockname()[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
