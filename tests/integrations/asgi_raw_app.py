"""A raw ASGI application for tests/integrations/test_asgi.py
(``uvicorn tests.integrations.asgi_raw_app:app``): what no framework lets through. Starlette
and FastAPI drop an endpoint's return value.

* WebSocket ``/returns-a-value``: accepts, receives one message, then returns a value other than
  ``None`` (the ASGI contract says ``None``).
* The lifespan protocol, answered so that uvicorn starts and stops quietly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> object:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None
    assert scope["type"] == "websocket", scope["type"]
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await receive()
    return "a value the ASGI contract does not allow"
