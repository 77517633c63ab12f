"""Tube: a WebSocket library for Python (RFC 6455) built on the standard library only.

The library lives in :mod:`tube.websocket`; ``python -m tube`` runs the chat demo in
:mod:`tube.demo`.
"""

__version__ = "0.1.0"
