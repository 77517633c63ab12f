"""Socket options every transport sets on a WebSocket's TCP connection (threads and asyncio).

Shared by :mod:`tube.websocket.threads` and :mod:`tube.websocket.aio`, so both tune sockets
the same way; the rules (TCP keepalive from the ping options) come from the core.
"""

from __future__ import annotations

import contextlib
import socket

from .core.keepalive import tcp_keepalive

__all__ = ["tune_socket"]


def tune_socket(
    sock: socket.socket, ping_interval: float | None, ping_timeout: float | None
) -> None:
    """TCP_NODELAY, and TCP keepalive derived from the ping options (not TCP: nothing to do)."""
    with contextlib.suppress(OSError):
        # Frames are written whole; Nagle's algorithm would only delay small ones.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    settings = tcp_keepalive(ping_interval, ping_timeout)
    if settings is None or not hasattr(socket, "TCP_KEEPIDLE"):
        return
    # The kernel keeps probing a silent peer while our reader is paused by a full channel
    # (WebSocket pings are suspended then): a vanished peer fails the socket all the same.
    idle, interval, count = settings
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
