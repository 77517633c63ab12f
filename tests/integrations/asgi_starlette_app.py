"""A Starlette application for tests/integrations/test_asgi.py
(``uvicorn tests.integrations.asgi_starlette_app:app``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from .asgi_handlers import WEBSOCKET_ROUTES, closed, health

app = Starlette(
    routes=[
        *(WebSocketRoute(path, endpoint) for path, endpoint in WEBSOCKET_ROUTES),
        Route("/closed/{key}", closed),
        Route("/health", health),
    ]
)
