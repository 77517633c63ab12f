"""Tube: a WebSocket library for Python (RFC 6455) built on the standard library only.

The library lives in :mod:`tube.websocket`; ``python -m tube`` runs the file relay of
:mod:`tube.relay`, and ``python -m tube.demo`` the chat demo of :mod:`tube.demo`.
"""

__version__ = "0.1.0"
