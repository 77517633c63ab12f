"""The relay's asyncio adapter, driven over real sockets on 127.0.0.1 by TRP/1 clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tube.relay.limits import Limits
from tube.relay.server import RelayConfig, RelayServer
from tube.websocket import ConnectionClosed, HandshakeRejected, aio

SUBPROTOCOLS = ["tube.relay.v1"]
FRAME = 262_169


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 60))


@asynccontextmanager
async def relay(**config: Any) -> AsyncIterator[RelayServer]:
    server = RelayServer(RelayConfig(host="127.0.0.1", port=0, **config))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def request(
    server: RelayServer, method: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    def call() -> tuple[int, dict[str, str], bytes]:
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            body = b"" if method == "POST" else None
            client.request(method, target, body=body, headers=headers or {})
            response = client.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            client.close()

    return await asyncio.to_thread(call)


async def allocate(server: RelayServer, headers: dict[str, str] | None = None) -> str:
    status, _, body = await request(server, "POST", "/v1/nameplates", headers)
    assert status == 201, body
    return str(json.loads(body)["nameplate"])


async def client(
    server: RelayServer, nameplate: str | None, role: str, **options: Any
) -> aio.Connection:
    path = "/v1/relay" if nameplate is None else f"/v1/relay/{nameplate}"
    options.setdefault("subprotocols", SUBPROTOCOLS)
    connection = await aio.connect(
        f"ws://127.0.0.1:{server.port}{path}",
        compression=None,
        max_message_size=2 << 20,
        **options,
    )
    await connection.send(json.dumps({"t": "hello", "v": 1, "role": role}))
    welcome = json.loads(await connection.incoming.get(timeout=5))
    assert welcome["t"] == "welcome" and welcome["limits"]["frame"] == 1_048_640
    return connection


async def control(connection: aio.Connection) -> dict[str, Any]:
    message = await connection.incoming.get(timeout=10)
    assert isinstance(message, str), message
    return dict(json.loads(message))


async def pair(server: RelayServer) -> tuple[aio.Connection, aio.Connection, str]:
    nameplate = await allocate(server)
    sender = await client(server, nameplate, "send")
    receiver = await client(server, nameplate, "recv")
    await sender.send('{"t":"wait"}')
    await receiver.send('{"t":"claim"}')
    paired_s, paired_r = await control(sender), await control(receiver)
    assert paired_s["t"] == "paired" and paired_s == paired_r
    return sender, receiver, paired_s["pair_id"]


async def closed_with(connection: aio.Connection) -> tuple[int | None, list[Any]]:
    """Read until the end; the close code and every message seen."""
    seen: list[Any] = []
    try:
        while True:
            seen.append(await connection.incoming.get(timeout=20))
    except ConnectionClosed:
        pass
    return connection.close_code, seen


def errors(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in messages if isinstance(m, str) and '"error"' in m]


# ------------------------------------------------------------------ plain HTTP


def test_page_assets_and_security_headers() -> None:
    async def main() -> None:
        async with relay() as server:
            status, headers, page = await request(server, "GET", "/")
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Content-Type-Options"] == "nosniff"
            links = re.findall(rb'href="(/s/([0-9a-f]{16})/[^"]+)" integrity="([^"]+)"', page)
            assert links, page
            for url, digest, integrity in links:
                status, headers, body = await request(server, "GET", url.decode())
                assert status == 200
                assert hashlib.sha256(body).hexdigest()[:16] == digest.decode()
                expected = base64.b64encode(hashlib.sha384(body).digest()).decode()
                assert integrity.decode() == f"sha384-{expected}"
                assert "immutable" in headers["Cache-Control"]
            head = await request(server, "HEAD", "/")
            assert head[0] == 200 and head[2] == b""
            assert (await request(server, "GET", "/healthz"))[:1] == (200,)
            assert (await request(server, "GET", "/nope"))[0] == 404
            assert (await request(server, "GET", "/metrics"))[0] == 404  # off by default
            assert (await request(server, "DELETE", "/"))[0] == 405
            assert (await request(server, "GET", "/v1/nameplates"))[0] == 405
            assert (await request(server, "GET", "/v1/relay/1234"))[0] == 426
            assert (await request(server, "GET", "/v1/relay/01234"))[0] == 404

    run(main)


def test_every_static_file_is_served_under_its_hash() -> None:
    server = RelayServer(RelayConfig())
    on_disk = {
        path.relative_to(server.assets.root).as_posix()
        for path in server.assets.root.rglob("*")
        if path.is_file() and path.name != "index.html"
    }
    served = {url.split("/", 3)[3] for url in server.assets.urls()}
    assert served == on_disk


def test_page_modules_import_map_and_service_worker() -> None:
    # The page's modules live under their own hashes and import each other by bare name
    # (tube/x.js) through an inline import map: the CSP allows exactly that script by its hash.
    async def main() -> None:
        async with relay() as server:
            status, headers, page = await request(server, "GET", "/")
            match = re.search(rb'<script type="importmap">(.*?)</script>', page, re.DOTALL)
            assert match, page
            import_map = json.loads(match.group(1))
            digest = base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode()
            csp = headers["Content-Security-Policy"]
            assert f"script-src 'self' 'sha256-{digest}'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            root = server.assets.root
            on_disk = {p.name for p in (root / "js").glob("*.js")}
            on_disk |= {f"vendor/{p.name}" for p in (root / "vendor").glob("*.js")}
            assert "vendor/qrcodegen.js" in on_disk
            assert {name.removeprefix("tube/") for name in import_map["imports"]} == on_disk
            for url in import_map["imports"].values():
                status, _, body = await request(server, "GET", url)
                assert status == 200
                expected = base64.b64encode(hashlib.sha384(body).digest()).decode()
                assert import_map["integrity"][url] == f"sha384-{expected}"
                assert f'<link rel="modulepreload" href="{url}"'.encode() in page
            status, headers, body = await request(server, "GET", "/sw.js")
            assert status == 200 and b"ReadableStream" in body
            assert headers["Cache-Control"] == "no-cache"
            assert headers["Content-Type"].startswith("text/javascript")

    run(main)


def test_allocation_and_its_rate_limit() -> None:
    async def main() -> None:
        async with relay() as server:
            names = {await allocate(server) for _ in range(8)}
            assert len(names) == 8 and all(re.fullmatch(r"[1-9][0-9]{3}", n) for n in names)
            status, headers, body = await request(server, "POST", "/v1/nameplates")
            # 8 codes outstanding from one address: the ninth waits.
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert json.loads(body)["retry_after"] >= 1

    run(main)


def test_allocation_answers_cors_only_to_allowed_origins() -> None:
    # A page on an origin in --allow-origin (a copy of the page, or another relay's page with
    # ?relay=) may read the allocation; no other origin is given any CORS header.
    async def main() -> None:
        allowed = "https://tube.example"
        async with relay(allowed_origins=(allowed,)) as server:
            status, headers, body = await request(
                server, "POST", "/v1/nameplates", {"Origin": allowed}
            )
            assert status == 201, body
            assert headers["Access-Control-Allow-Origin"] == allowed
            assert headers["Access-Control-Expose-Headers"] == "Retry-After"
            assert headers["Vary"] == "Origin"
            for origin in ("https://evil.example", "null", None):
                sent = {"Origin": origin} if origin else {}
                status, headers, _ = await request(server, "POST", "/v1/nameplates", sent)
                assert status == 201 and headers["Vary"] == "Origin"
                assert not any(name.startswith("Access-Control") for name in headers), headers

            # The preflight: 204 for the allowed origin asking for POST, 403 otherwise.
            preflight = {"Origin": allowed, "Access-Control-Request-Method": "POST"}
            status, headers, body = await request(server, "OPTIONS", "/v1/nameplates", preflight)
            assert status == 204 and body == b""
            assert headers["Access-Control-Allow-Origin"] == allowed
            assert headers["Access-Control-Allow-Methods"] == "POST"
            assert "Access-Control-Allow-Headers" not in headers
            for asked in (
                {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
                {"Origin": allowed, "Access-Control-Request-Method": "DELETE"},
                {"Origin": allowed},
            ):
                status, headers, _ = await request(server, "OPTIONS", "/v1/nameplates", asked)
                assert status == 403, asked
                assert "Access-Control-Allow-Origin" not in headers

            # Only the allocation answers CORS: the page and its assets do not.
            status, headers, _ = await request(server, "GET", "/", {"Origin": allowed})
            assert status == 200 and "Access-Control-Allow-Origin" not in headers
            status, headers, _ = await request(server, "GET", "/v1/nameplates")
            assert status == 405 and headers["Allow"] == "POST, OPTIONS"

            # A refusal is readable too: its Retry-After is exposed.
            for _ in range(4):  # 8 at once per address: 4 are out already
                await allocate(server, {"Origin": allowed})
            status, headers, _ = await request(
                server, "POST", "/v1/nameplates", {"Origin": allowed}
            )
            assert status == 429 and headers["Access-Control-Allow-Origin"] == allowed

    run(main)


def test_metrics_are_aggregates_only() -> None:
    async def main() -> None:
        async with relay(metrics=True) as server:
            sender, receiver, _ = await pair(server)
            await sender.send(os.urandom(FRAME))
            assert len(await receiver.incoming.get(timeout=5)) == FRAME
            status, _, body = await request(server, "GET", "/metrics")
            text = body.decode()
            assert status == 200
            assert 'tube_relay_pairs{state="paired"} 1' in text
            assert f"tube_relay_bytes_forwarded_total {FRAME}" in text
            assert "127.0.0.1" not in text
            await sender.close()
            await receiver.close()

    run(main)


# ------------------------------------------------------------------ the upgrade


def test_without_the_subprotocol_the_relay_closes_with_4001() -> None:
    async def main() -> None:
        async with relay() as server:
            connection = await aio.connect(
                f"ws://127.0.0.1:{server.port}/v1/relay", compression=None
            )
            code, _ = await closed_with(connection)
            assert code == 4001

    run(main)


def test_a_foreign_origin_is_refused_403_and_an_allowed_one_accepted() -> None:
    async def main() -> None:
        async with relay(allowed_origins=("https://tube.example",)) as server:
            with pytest.raises(HandshakeRejected) as refused:
                await client(server, None, "send", origin="https://evil.example")
            assert refused.value.status == 403
            ok = await client(server, None, "send", origin="https://tube.example")
            same = await client(server, None, "send", origin=f"http://127.0.0.1:{server.port}")
            await ok.close()
            await same.close()

    run(main)


# ------------------------------------------------------------------ forwarding


def test_frames_are_forwarded_unchanged_one_for_one_both_ways() -> None:
    async def main() -> None:
        async with relay() as server:
            sender, receiver, _ = await pair(server)
            frames = [os.urandom(n) for n in (0, 1, 125, 126, 65536, FRAME, 1_048_640)]
            for frame in frames:
                await sender.send(frame)
            assert [await receiver.incoming.get(timeout=5) for _ in frames] == frames
            await receiver.send(b"ack")
            assert await sender.incoming.get(timeout=5) == b"ack"
            await sender.send('{"t":"bye","mood":"happy"}')
            await receiver.send('{"t":"bye","mood":"happy"}')
            assert (await closed_with(sender))[0] == 1000
            assert (await closed_with(receiver))[0] == 1000

    run(main)


def test_oversize_frames_and_control_messages_close_with_1009() -> None:
    async def main() -> None:
        async with relay() as server:
            sender, receiver, _ = await pair(server)
            await sender.send(bytes(1_048_641))
            assert (await closed_with(sender))[0] == 1009
            lone = await client(server, None, "send")
            await lone.send(json.dumps({"t": "bye", "pad": "x" * 5000}))
            assert (await closed_with(lone))[0] == 1009
            await receiver.close()

    run(main)


def test_a_stalled_receiver_gets_4008_and_the_relay_holds_a_bounded_queue() -> None:
    async def main() -> None:
        limits = Limits(idle_s=1.0)
        async with relay(limits=limits, metrics=True) as server:
            nameplate = await allocate(server)
            sender = await client(server, nameplate, "send")
            # A receiver that reads nothing once paired: its own channel holds little.
            receiver = await client(server, nameplate, "recv", incoming_bytes=65536)
            await sender.send('{"t":"wait"}')
            await receiver.send('{"t":"claim"}')
            await control(sender)
            await control(receiver)
            frame = os.urandom(FRAME)
            peak = 0

            async def push() -> None:
                for _ in range(200):  # 50 MiB offered; TCP backpressure stops us first
                    await sender.send(frame)

            pusher = asyncio.create_task(push())
            while not pusher.done() and sender.close_code is None:
                peak = max(peak, server.bytes_queued())
                await asyncio.sleep(0.01)
                if server.core.stats()["closes"].get(4008):
                    break
            code, messages = await closed_with(sender)
            assert code == 4008
            assert errors(messages)[-1]["code"] == 4008
            pusher.cancel()
            # Per direction: incoming (1 MiB high water + a read), a frame in hand, the write
            # buffer (64 KiB + a frame).
            assert peak <= 2.2 * (1 << 20) + FRAME, peak
            receiver.transport.abort() if receiver.transport else None

    run(main)


def test_max_bytes_closes_both_sides_with_4007() -> None:
    async def main() -> None:
        async with relay(limits=Limits(max_bytes=3 * FRAME)) as server:
            sender, receiver, _ = await pair(server)
            for _ in range(4):
                await sender.send(bytes(FRAME))
            code_s, _ = await closed_with(sender)
            code_r, _ = await closed_with(receiver)
            assert (code_s, code_r) == (4007, 4007)

    run(main)


# ------------------------------------------------------------------ limits and clients


def test_hello_timeout_and_nobody_came() -> None:
    async def main() -> None:
        async with relay(limits=Limits(hello_s=0.3, wait_s=0.5)) as server:
            silent = await aio.connect(
                f"ws://127.0.0.1:{server.port}/v1/relay", subprotocols=SUBPROTOCOLS
            )
            assert (await closed_with(silent))[0] == 4000
            nameplate = await allocate(server)
            sender = await client(server, nameplate, "send")
            await sender.send('{"t":"wait"}')
            code, messages = await closed_with(sender)
            assert code == 4005 and errors(messages)[0]["reason"] == "nobody came"

    run(main)


def test_forged_forwarded_headers_change_nothing_without_trust_proxy() -> None:
    async def main() -> None:
        async with relay() as server:
            codes = []
            for i in range(11):
                headers = {"X-Forwarded-For": f"203.0.113.{i}"}
                guess = await client(server, "9999999", "recv", headers=headers)
                await guess.send('{"t":"claim"}')
                code, messages = await closed_with(guess)
                codes.append(code)
            assert codes == [4002] * 10 + [4004]
            assert errors(messages)[-1]["retry_after"] == 600

    run(main)


def test_with_trust_proxy_only_the_proxys_right_most_entry_counts() -> None:
    async def main() -> None:
        async with relay(trusted_proxies=frozenset({"127.0.0.1"})) as server:
            # A client behind the proxy forging the left part: its real address is the last.
            for _ in range(10):
                headers = {"X-Forwarded-For": "1.2.3.4, 203.0.113.9"}
                guess = await client(server, "9999999", "recv", headers=headers)
                await guess.send('{"t":"claim"}')
                assert (await closed_with(guess))[0] == 4002
            blocked = await client(
                server, "9999999", "recv", headers={"X-Forwarded-For": "203.0.113.9"}
            )
            await blocked.send('{"t":"claim"}')
            assert (await closed_with(blocked))[0] == 4004
            other = await client(
                server, "9999999", "recv", headers={"X-Forwarded-For": "203.0.113.10"}
            )
            await other.send('{"t":"claim"}')
            assert (await closed_with(other))[0] == 4002  # another client: not blocked

    run(main)


def test_too_many_pairs_from_one_address() -> None:
    async def main() -> None:
        # Both sides of a pair from one address (here 127.0.0.1) are one transfer for it.
        async with relay(limits=Limits(pairs_per_ip=1)) as server:
            first = await pair(server)
            nameplate = await allocate(server)
            third = await client(server, nameplate, "send")
            await third.send('{"t":"wait"}')
            code, messages = await closed_with(third)
            assert code == 4004 and errors(messages)[0]["reason"] == "too many transfers at once"
            for connection in first[:2]:
                await connection.close()

    run(main)


def test_a_wrong_code_burns_the_nameplate_for_a_second_claimant() -> None:
    async def main() -> None:
        async with relay() as server:
            sender, receiver, _ = await pair(server)  # the first claimant (wrong words)
            await sender.send('{"t":"bye","mood":"scary"}')
            second = await client(server, sender.request.target.rsplit("/", 1)[1], "recv")  # type: ignore[union-attr]
            await second.send('{"t":"claim"}')
            assert (await closed_with(second))[0] == 4002
            await receiver.close()

    run(main)


# ------------------------------------------------------------------ resume and drain


def test_a_cut_receiver_resumes_within_grace_and_frames_flow_again() -> None:
    async def main() -> None:
        async with relay() as server:
            sender, receiver, pair_id = await pair(server)
            rid = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
            for side in (sender, receiver):
                await side.send(json.dumps({"t": "resumable", "rid": rid}))
            await sender.send(b"before")
            assert await receiver.incoming.get(timeout=5) == b"before"
            assert receiver.transport is not None
            receiver.transport.abort()  # the receiver's network goes away
            assert await control(sender) == {"t": "peer", "state": "lost"}
            back = await client(server, None, "recv")
            await back.send(json.dumps({"t": "resume", "rid": rid, "role": "recv"}))
            assert await control(back) == {"t": "paired", "pair_id": pair_id}
            assert await control(sender) == {"t": "peer", "state": "back"}
            await sender.send(b"after")
            assert await back.incoming.get(timeout=5) == b"after"
            await sender.close()
            await back.close()

    run(main)


def test_draining_closes_every_websocket_with_1001() -> None:
    async def main() -> None:
        server = RelayServer(RelayConfig(host="127.0.0.1", port=0))
        await server.start()
        sender, receiver, _ = await pair(server)
        lone = await client(server, None, "send")
        await server.close()
        for connection in (sender, receiver, lone):
            assert (await closed_with(connection))[0] == 1001

    run(main)
