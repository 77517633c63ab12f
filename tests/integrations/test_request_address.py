"""``Request.remote_address``: every server tells ``process_request`` and the handler who asked."""

from __future__ import annotations

import asyncio
import http.client
import threading

from tube.websocket import Request, Response, aio, serve
from tube.websocket.core.http import parse_request_head


def test_parsed_and_built_requests_have_no_address_and_compare_without_it() -> None:
    parsed = parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parsed is not None
    request = parsed[0]
    assert request.remote_address is None
    other = Request(request.method, request.target, request.version, list(request.headers))
    other.remote_address = ("198.51.100.7", 1234)
    assert other == request  # not part of the head
    assert other.to_bytes() == request.to_bytes()


def test_threaded_serve_gives_process_request_the_client_address() -> None:
    seen: list[object] = []

    def process(request: Request) -> Response | None:
        seen.append(request.remote_address)
        return Response(200, "OK", [("Content-Type", "text/plain")], b"ok")

    def handler(connection: object) -> None:
        raise AssertionError("no upgrade expected")

    with serve(handler, "127.0.0.1", 0, process_request=process) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            client = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
            client.request("GET", "/")
            local = client.sock.getsockname()
            assert client.getresponse().read() == b"ok"
            client.close()
        finally:
            server.shutdown()
            thread.join(5)
    assert seen == [local]


def test_aio_serve_gives_process_request_and_handler_the_client_address() -> None:
    seen: list[object] = []

    def process(request: aio.Request) -> aio.Response | None:
        seen.append(request.remote_address)
        return None

    async def handler(connection: aio.Connection) -> None:
        assert connection.request is not None
        await connection.send(repr(connection.request.remote_address))

    async def main() -> None:
        async with (
            aio.serve(handler, "127.0.0.1", 0, process_request=process) as server,
            aio.connect(f"ws://127.0.0.1:{server.port}/") as client,
        ):
            local = client.transport.get_extra_info("sockname") if client.transport else None
            reply = await client.incoming.get(timeout=5)
        assert seen == [local]
        assert reply == repr(local)

    asyncio.run(main())
