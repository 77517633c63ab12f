"""The state of a :class:`~.connection.Connection`: its fields and its life cycle.

:class:`ConnectionState` declares every field of a connection (``__slots__``, with their
types) and the helpers that only read them. The connection is built in layers, each a class
in its own module and each a subclass of the one before, so that every method is found on the
class itself with no extra call or indirection on the hot paths::

    ConnectionState (state)  ->  ConnectionWriter (writer: queue, flush, abort)
        ->  ConnectionTimers (keepalive: keepalive, close retry, give-up)
        ->  Connection (connection: attaching, public methods, the reader thread)

The fields are documented in :class:`~.connection.Connection`'s docstring, which also states
the concurrency contract; only :class:`~.connection.Connection` sets them up.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Literal

from ..core.errors import ConnectionClosed
from ..core.frames import Buffer
from ..core.protocol import Protocol
from .channel import Incoming
from .io import BaseIO
from .options import SubprotocolSelector
from .timers import Timer

__all__ = ["ConnectionState"]

# Life cycle of a Connection (``_state``).
_NEW = 0  # created, not attached to a socket yet
_OPEN = 1  # attached: the reader thread runs (the WebSocket may be closing)
_ENDED = 2  # the TCP connection is closed and the reader thread is done
_FAILED = 3  # the opening handshake failed: it will never be attached


class ConnectionState:
    """The fields of a connection and the helpers that read them (see ``Connection``)."""

    __slots__ = (
        "_abort_reason",
        "_aborted",
        "_claimed",
        "_close_initiator",
        "_give_up_at",
        "_give_up_timer",
        "_io",
        "_keepalive_timer",
        "_last_received",
        "_out",
        "_ping_sent_at",
        "_protocol",
        "_reader",
        "_retry_timer",
        "_state",
        "_write_lock",
        "check_origin",
        "close_code",
        "close_give_up_time",
        "close_reason",
        "close_retry_time",
        "closing",
        "conn",
        "connected",
        "extra_headers",
        "incoming",
        "lock",
        "max_fragments",
        "max_message_size",
        "open_timeout",
        "origins",
        "ping_interval",
        "ping_timeout",
        "send_timeout",
        "status_changed",
        "subprotocol",
        "subprotocols",
    )

    _abort_reason: str
    _aborted: bool
    _claimed: bool
    _close_initiator: str | None
    _give_up_at: float | None
    _give_up_timer: Timer | None
    _io: BaseIO | None
    _keepalive_timer: Timer | None
    _last_received: float
    _out: list[Buffer]
    _ping_sent_at: float | None
    _protocol: Protocol | None
    _reader: threading.Thread | None
    _retry_timer: Timer | None
    _state: int
    _write_lock: threading.Lock
    check_origin: bool
    close_code: int | None
    close_give_up_time: float
    close_reason: str
    close_retry_time: float | None
    closing: bool
    conn: socket.socket | None
    connected: bool
    extra_headers: tuple[tuple[str, str], ...]
    incoming: Incoming
    lock: threading.RLock
    max_fragments: int | Literal["auto"] | None
    max_message_size: int | None
    open_timeout: float | None
    origins: tuple[str, ...] | None
    ping_interval: float | None
    ping_timeout: float | None
    send_timeout: float | None
    status_changed: threading.Condition
    subprotocol: str | None
    subprotocols: Sequence[str] | SubprotocolSelector | None

    def _closed_error(self) -> ConnectionClosed:
        """The exception for an operation on a connection that is closing or closed."""
        if self._state == _ENDED and self.close_code is not None:
            return ConnectionClosed(self.close_code, self.close_reason, self._close_initiator)
        if self._aborted:
            return ConnectionClosed(1006, self._abort_reason, None)
        if self._protocol is None:
            return ConnectionClosed(1006, "the connection is not connected yet")
        return self._protocol.closed_error()

    def _peer_name(self) -> str:
        try:
            peer = self.conn.getpeername() if self.conn is not None else None
        except OSError:
            peer = None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return "(unknown peer)"
