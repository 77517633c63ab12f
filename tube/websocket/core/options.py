"""The options of a connection: one frozen object, validated once, shared by every transport.

:class:`ConnectionOptions` holds every option that :func:`~tube.websocket.create_connection`,
:func:`~tube.websocket.connect`, the asyncio transport and the integrations accept. It is
created once per connection (or once per server and shared by all its connections), checked
when it is created (``ValueError``/``TypeError`` at once, never at first use), and never
changes afterwards. Times are in seconds (``float``), sizes in bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from .deflate import DeflateOptions, DeflateParameters, compression_options
from .handshake import Negotiated, accept_request
from .handshake_checks import (
    SubprotocolSelector,
    check_extra_headers,
    check_origins,
    check_subprotocols,
)
from .http import Request, Response
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, Protocol, Role

__all__ = ["CLOSE_REPLY_TIME", "DEFAULTS", "ConnectionOptions"]


#: Seconds a peer's close frame waits at most for the application to take the messages before
#: it (see :attr:`ConnectionOptions.close_reply_time`).
CLOSE_REPLY_TIME = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionOptions:
    """Every option of a WebSocket connection, checked when created.

    Attributes:
        close_retry_time: After the application starts the closing handshake, send the close
            frame once more if none came back within this time (the Go package's
            ``closeRetryTime``).
            ``None``: no retry, the strict RFC 6455 behaviour (one close frame per side).
        close_give_up_time: Once the closing handshake has started (by either side, or by a
            failure), close the TCP connection after this time whatever happens (the Go package's
            ``closeGiveUpTime``). It also bounds the wait for the peer's EOF afterwards.
        max_message_size: The largest message accepted; a larger one fails the connection
            with 1009. ``None`` removes the limit: only for trusted peers.
        max_fragments: The most frames one message may be split into (1009 beyond);
            ``"auto"`` is ``max(1024, max_message_size // 64)`` (no limit without a size limit).
        incoming_size: The bound of the incoming channel in messages: reading stops at this
            count and resumes at half of it.
        incoming_bytes: The bound of the incoming channel in bytes (UTF-8 bytes for text):
            reading stops at this size and resumes at a quarter of it.
        ping_interval: Send a keepalive ping after this much silence from the peer; ``None``
            disables keepalive.
        ping_timeout: Fail the connection with 1011 when nothing at all has arrived within
            this time after a keepalive ping; ``None`` never fails.
        send_timeout: Abort the connection (1006 locally) when a send makes no progress for
            this long: no byte could be written although the peer was given this much time.
            ``None`` waits forever for a peer that does not read.
        open_timeout: The bound of the whole opening handshake (the client's ``connect()``,
            the asyncio server's handshake).
        subprotocols: Supported subprotocols in order of preference, or a function choosing
            one from the client's list; ``None`` selects none (on a client: those offered).
        origins: Origins allowed besides the server's own host (``"https://example.com"``).
        check_origin: Refuse (403) browser requests whose ``Origin`` is neither the server's
            own host nor in :attr:`origins`.
        extra_headers: Headers added to the 101 response, as ``(name, value)`` pairs.
        compression: permessage-deflate (RFC 7692): ``"deflate"`` (stored as the default
            :class:`~tube.websocket.DeflateOptions`), a ``DeflateOptions``, or ``None`` (no
            compression, the default here; ``connect()`` passes ``"deflate"`` unless told
            otherwise). A server accepts offers with these options, a client makes one.

    Raises:
        ValueError: An option is out of range.
        TypeError: An option has the wrong type (a single string for a sequence, ...).
    """

    close_retry_time: float | None = 2.0
    close_give_up_time: float = 10.0
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_fragments: int | Literal["auto"] | None = "auto"
    incoming_size: int = 16
    incoming_bytes: int = 4 * 1024 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    send_timeout: float | None = 10.0
    open_timeout: float | None = 10.0
    subprotocols: Sequence[str] | SubprotocolSelector | None = None
    origins: tuple[str, ...] | None = None
    check_origin: bool = True
    extra_headers: tuple[tuple[str, str], ...] = ()
    compression: DeflateOptions | Literal["deflate"] | None = None

    def __post_init__(self) -> None:
        _check_seconds("close_retry_time", self.close_retry_time, allow_none=True)
        _check_seconds("close_give_up_time", self.close_give_up_time, allow_none=False)
        _check_size("max_message_size", self.max_message_size, allow_none=True)
        if self.max_fragments != "auto":
            _check_size("max_fragments", self.max_fragments, allow_none=True)
        _check_size("incoming_size", self.incoming_size, allow_none=False)
        _check_size("incoming_bytes", self.incoming_bytes, allow_none=False)
        _check_seconds("ping_interval", self.ping_interval, allow_none=True)
        _check_seconds("ping_timeout", self.ping_timeout, allow_none=True)
        _check_seconds("send_timeout", self.send_timeout, allow_none=True)
        _check_seconds("open_timeout", self.open_timeout, allow_none=True)
        if not isinstance(self.check_origin, bool):
            raise TypeError(f"check_origin must be a bool, got {self.check_origin!r}")
        # Normalised (tuples) so that the object is hashable and shared safely; checked the way
        # the handshake uses them, so that a bad value fails here rather than on every peer.
        object.__setattr__(self, "subprotocols", check_subprotocols(self.subprotocols))
        object.__setattr__(self, "origins", check_origins(self.origins))
        object.__setattr__(self, "extra_headers", check_extra_headers(self.extra_headers))
        object.__setattr__(self, "compression", compression_options(self.compression))

    @property
    def close_reply_time(self) -> float:
        """Seconds a peer's close frame waits at most for the application before it is
        answered: ``CLOSE_REPLY_TIME`` (1 s), or half of ``close_give_up_time`` if shorter (the
        give-up timer, started by the peer's close frame, leaves the rest to the teardown).

        A peer's close frame is answered when the application asks ``incoming`` for the item
        after the last message received before it, so that its replies to those messages go
        out first (RFC 6455 §5.5.1 allows sending until the answer); an application that does
        not come back gets its answer sent after this bound.
        """
        return min(CLOSE_REPLY_TIME, self.close_give_up_time / 2)

    @property
    def deflate_options(self) -> DeflateOptions | None:
        """:attr:`compression` as checked: ``DeflateOptions`` or ``None`` (never a string)."""
        compression = self.compression
        return compression if isinstance(compression, DeflateOptions) else None

    @classmethod
    def from_kwargs(cls, **options: Any) -> ConnectionOptions:
        """Build the options from keyword arguments, naming any unknown one.

        Raises:
            TypeError: An unknown option name (with the list of known ones).
        """
        unknown = sorted(set(options) - _FIELD_NAMES)
        if unknown:
            raise TypeError(f"unknown connection options {unknown}; known: {sorted(_FIELD_NAMES)}")
        return cls(**options)

    def replace(self, **changes: Any) -> ConnectionOptions:
        """A copy with some options changed (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def accept(self, request: Request) -> tuple[Response, str | None, DeflateParameters | None]:
        """Validate an opening handshake request under these options (the server's side).

        :func:`~.handshake.accept_request` with this object's subprotocols, origin policy,
        extra headers and compression: one place for every server transport and integration.

        Returns:
            The 101 response to send, the selected subprotocol, and the negotiated
            permessage-deflate parameters (for :meth:`make_protocol`), or ``None``.

        Raises:
            HandshakeError: The request is refused; answer with its ``rejection_response``.
        """
        negotiated = Negotiated()
        response, subprotocol = accept_request(
            request,
            subprotocols=self.subprotocols,
            origins=self.origins,
            check_origin=self.check_origin,
            extra_headers=self.extra_headers,
            compression=self.deflate_options,
            negotiated=negotiated,
        )
        return response, subprotocol, negotiated.deflate

    def make_protocol(self, role: Role, deflate: DeflateParameters | None = None) -> Protocol:
        """The sans-I/O protocol for one connection in ``role``, with these limits.

        Args:
            role: This end's role.
            deflate: The permessage-deflate parameters the handshake negotiated
                (``Negotiated.deflate``), or None for no compression.
        """
        # Every transport answers a peer's close frame once the application reached it (or a
        # bound expired), so that its replies to the messages before it go out first.
        if self.max_fragments == "auto":
            return Protocol(
                role,
                max_message_size=self.max_message_size,
                deflate=deflate,
                reply_close_later=True,
            )
        return Protocol(
            role,
            max_message_size=self.max_message_size,
            max_fragments=self.max_fragments,
            deflate=deflate,
            reply_close_later=True,
        )


_FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(ConnectionOptions))


def _check_seconds(name: str, value: object, *, allow_none: bool) -> None:
    """A wrong type (``"20"``, ``True``) is a ``TypeError``, a number out of range a
    ``ValueError`` (README, Options), and so is ``None`` where the option needs a value."""
    if value is None and allow_none:
        return
    expected = "a positive number of seconds" + (" or None" if allow_none else "")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if value is None or not value > 0:  # also NaN
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_size(name: str, value: object, *, allow_none: bool) -> None:
    """As :func:`_check_seconds`, for a size in bytes or a count (an int: ``1.5`` and
    ``"64k"`` are ``TypeError``)."""
    if value is None and allow_none:
        return
    expected = "a positive int" + (" or None" if allow_none else "")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if value is None or value <= 0:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


#: The default options, shared by every connection created without any.
DEFAULTS = ConnectionOptions()
