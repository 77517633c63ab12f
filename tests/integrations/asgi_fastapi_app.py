"""A FastAPI application for tests/integrations/test_asgi.py
(``uvicorn tests.integrations.asgi_fastapi_app:app``).

The shared endpoints of tests/integrations/asgi_handlers.py, plus one written the FastAPI way (a
path parameter and a query parameter injected by FastAPI).
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from .asgi_handlers import WEBSOCKET_ROUTES, closed, health

app = FastAPI()
for _path, _endpoint in WEBSOCKET_ROUTES:
    app.add_api_websocket_route(_path, _endpoint)
app.add_api_route("/closed/{key}", closed)
app.add_api_route("/health", health)


@app.websocket("/rooms/{room}")
async def room(websocket: WebSocket, room: str, prefix: str = ">") -> None:
    """Echo with the room name and a prefix: FastAPI's own parameter injection."""
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{prefix}{room}:{text}")
    except WebSocketDisconnect:
        pass
