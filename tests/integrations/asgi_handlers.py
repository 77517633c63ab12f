"""The WebSocket endpoints tests/integrations/test_asgi.py drives, shared by the Starlette and
FastAPI apps.

Written against Starlette's ``WebSocket`` (FastAPI's is the same class), as an application
author writes them; they speak only the ASGI contract, so they run unchanged under uvicorn
with Tube's protocol class and with uvicorn's own ``websockets``/``wsproto`` classes.

* ``/echo`` (and ``/``): accepts (subprotocol ``chat.v2`` when offered, an ``x-tube-test``
  header), echoes text as text and binary as binary; ``"close CODE REASON"`` makes the server
  close. With ``?id=KEY`` the ``websocket.disconnect`` it received is kept under KEY, served by
  ``/closed/KEY`` (HTTP, waits up to 10 s for it).
* ``/json``: ``receive_json`` → ``send_json({"echo": ...})``.
* ``/raise``: accepts, reads one message, then raises.
* ``/reject``: closes before accepting (403); ``/deny``: a denial response (401 with a body).
* ``/scope``: sends the scope's fields as JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

_closed: dict[str, dict[str, Any]] = {}
_closed_events: dict[str, asyncio.Event] = {}


def _closed_event(key: str) -> asyncio.Event:
    event = _closed_events.get(key)
    if event is None:
        event = _closed_events[key] = asyncio.Event()
    return event


async def echo(websocket: WebSocket) -> None:
    offered = websocket.scope["subprotocols"]
    await websocket.accept(
        subprotocol="chat.v2" if "chat.v2" in offered else None,
        headers=[(b"x-tube-test", b"accepted")],
    )
    key = websocket.query_params.get("id")
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            if key is not None:
                _closed[key] = {"code": message.get("code"), "reason": message.get("reason", "")}
                _closed_event(key).set()
            return
        text = message.get("text")
        if text is None:
            await websocket.send_bytes(message["bytes"])
        elif text.startswith("close "):
            code, _, reason = text[6:].partition(" ")
            await websocket.close(int(code), reason)
            return
        else:
            await websocket.send_text(text)


async def json_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"echo": data})
    except WebSocketDisconnect:
        pass


async def fail(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()
    raise RuntimeError("the handler failed on purpose")


async def reject(websocket: WebSocket) -> None:
    await websocket.close()


async def deny(websocket: WebSocket) -> None:
    response = PlainTextResponse(
        "not allowed\n", status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )
    await websocket.send_denial_response(response)


async def scope(websocket: WebSocket) -> None:
    await websocket.accept()
    raw = websocket.scope
    await websocket.send_json(
        {
            "type": raw["type"],
            "http_version": raw["http_version"],
            "spec_version": raw["asgi"].get("spec_version"),
            "scheme": raw["scheme"],
            "path": raw["path"],
            "raw_path": raw["raw_path"].decode("latin-1"),
            "query_string": raw["query_string"].decode("latin-1"),
            "root_path": raw["root_path"],
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in raw["headers"]],
            "subprotocols": raw["subprotocols"],
            "client": list(raw["client"]),
            "server": list(raw["server"]),
            "extensions": sorted(raw.get("extensions", {})),
        }
    )
    await websocket.close()


async def closed(request: Request) -> Response:
    key = request.path_params["key"]
    try:
        async with asyncio.timeout(10):
            await _closed_event(key).wait()
    except TimeoutError:
        return JSONResponse({"error": "no disconnect recorded"}, status_code=404)
    return JSONResponse(_closed[key])


async def health(request: Request) -> Response:
    return PlainTextResponse("ok\n")


WEBSOCKET_ROUTES = [
    ("/", echo),  # for raw peers, which ask for "/"
    ("/echo", echo),
    ("/json", json_echo),
    ("/raise", fail),
    ("/reject", reject),
    ("/deny", deny),
    ("/scope", scope),
]
