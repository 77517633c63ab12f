"""Socket options every transport sets on a WebSocket's TCP connection (threads and asyncio),
and what the kernel tells about a socket's send queue.

Shared by :mod:`tube.websocket.threads` and :mod:`tube.websocket.aio`, so both tune sockets
the same way; the rules (TCP keepalive from the ping options) come from the core.
"""

from __future__ import annotations

import array
import contextlib
import socket
import ssl
import sys
import warnings
from typing import Protocol

from .core.keepalive import tcp_keepalive

__all__ = ["explain_tls_error", "listen_error", "tune_socket", "unsent_bytes"]

# Linux's SIOCOUTQ (the same number as the terminal's TIOCOUTQ): for a TCP socket, the bytes
# in the send queue the peer has not acknowledged; for a Unix socket, those it has not read.
_SIOCOUTQ = 0x5411 if sys.platform.startswith("linux") else None


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def unsent_bytes(sock: _HasFileno | None) -> int | None:
    """How many bytes the kernel still holds in ``sock``'s send queue, or None where it
    cannot be told (not Linux, no socket, a closed one).

    A peer that reads, however slowly, makes this number fall byte by byte, long before the
    kernel reports the socket writable again (Linux: once a third of the buffer is free), so
    a transport that polls it sees a slow reader's progress, which ``send_timeout`` (time
    without progress) must not take for a stalled peer.
    """
    if _SIOCOUTQ is None or sock is None:
        return None
    import fcntl  # POSIX only: imported where it is known to exist

    value = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), _SIOCOUTQ, value, True)
    except (OSError, ValueError):
        return None
    return value[0]


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


#: OpenSSL's reasons for a first TLS record that is not TLS at all: the server answered the
#: ClientHello in plain text (an HTTP server, a ``ws://`` WebSocket server on that port).
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


def client_tls_context(
    secure: bool, ssl_context: ssl.SSLContext | None, alias: ssl.SSLContext | None
) -> ssl.SSLContext | None:
    """The TLS context a client's ``connect()`` was given: ``ssl=`` or its deprecated alias
    ``ssl_context=`` (both transports take both names; ``ssl=`` is the name ``serve()`` takes on
    both; :func:`warn_ssl_context_alias` warns about the alias).

    Args:
        secure: The URL is ``wss://``.
        ssl_context: What ``ssl=`` was given.
        alias: What ``ssl_context=`` was given.

    Returns:
        The context, or None for the default (``ssl.create_default_context()`` for ``wss://``).

    Raises:
        TypeError: Both names were given.
        ValueError: A context with a ``ws://`` URL (the message uses the name given).
    """
    if ssl_context is not None and alias is not None:
        raise TypeError("connect() takes ssl= or its alias ssl_context=, not both")
    name, context = ("ssl", ssl_context) if alias is None else ("ssl_context", alias)
    if context is not None and not secure:
        raise ValueError(f"{name} is only used with wss:// URLs, got a ws:// URL")
    return context


def warn_ssl_context_alias(alias: ssl.SSLContext | None) -> None:
    """Warn (``DeprecationWarning``) that ``connect(ssl_context=)`` is the old spelling of
    ``ssl=``, when it was given. Called by each transport's ``connect()`` itself, so that the
    warning points at the application's call (also on asyncio, where the context is checked
    only once the connection is awaited).
    """
    if alias is not None:
        warnings.warn(
            "connect(ssl_context=...) is deprecated: pass the same context as ssl=",
            DeprecationWarning,
            stacklevel=3,  # this function, connect(), the application's call
        )


def explain_tls_error(error: ssl.SSLError, where: str) -> ssl.SSLError:
    """``error`` from a client's TLS handshake with ``where`` (``host:port``), with a hint when
    the server does not speak TLS (OpenSSL only says ``WRONG_VERSION_NUMBER``).

    Returns:
        A new ``ssl.SSLError`` (same ``errno``, ``reason`` and ``library``) whose message says
        so, or ``error`` itself for other failures (a certificate, a protocol version, ...).
    """
    if getattr(error, "reason", None) not in _NOT_TLS_REASONS:
        return error
    message = (
        f"{error.strerror or error}: the server at {where} does not speak TLS "
        "(a plain ws:// or HTTP server? try ws://)"
    )
    explained = ssl.SSLError(error.errno, message)
    explained.reason = error.reason
    explained.library = error.library
    return explained


def listen_error(error: OSError, host: str, port: int) -> OSError:
    """``error`` from binding or listening on ``(host, port)``, naming the address.

    ``[Errno 98] Address already in use`` alone does not say which address: the result reads
    ``[Errno 98] cannot listen on 127.0.0.1:8080: Address already in use``, with the same type
    (``OSError`` subclass) and ``errno``.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = error.strerror or str(error)
    return type(error)(error.errno, f"cannot listen on {where}: {reason}")
