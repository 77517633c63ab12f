"""Tube's uvicorn protocol class with the Origin check on, as the README shows it.

``uvicorn tests.integrations.asgi_starlette_app:app
--ws tests.integrations.asgi_origin_protocol:OriginChecking``
"""

from __future__ import annotations

from tube.websocket.asgi import UvicornProtocol

#: The one origin allowed besides the server's own host.
ALLOWED = "https://allowed.example"

OriginChecking = UvicornProtocol.with_options(check_origin=True, origins=[ALLOWED])
