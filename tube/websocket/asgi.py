"""ASGI: Tube as uvicorn's WebSocket protocol (FastAPI, Starlette, Django Channels).

``uvicorn app:app --ws tube.websocket.asgi:UvicornProtocol``; see
:mod:`tube.websocket.integrations.uvicorn`. Importing this module imports uvicorn (an optional
dependency: ``pip install tube-websocket[uvicorn]``); importing :mod:`tube.websocket` never does.
"""

from __future__ import annotations

from .integrations.uvicorn import UvicornProtocol

__all__ = ["UvicornProtocol"]
