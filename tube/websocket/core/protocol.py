"""The sans-I/O WebSocket connection: frames in, events out; API calls in, bytes out.

:class:`Protocol` implements RFC 6455 after the opening handshake, for either role. It owns no
socket, thread or clock: the transport feeds it received bytes (:meth:`Protocol.receive_data`,
:meth:`Protocol.receive_eof`), asks it to send (:meth:`Protocol.send_text` and friends), writes
what :meth:`Protocol.data_to_send` returns, and closes the TCP connection when
:meth:`Protocol.should_close_transport` says so. Timers (keepalive, close timeouts) belong to the
transport too.

The state machine::

    OPEN --send_close()---------> CLOSING --close frame received--> CLOSED
    OPEN --close frame received--> CLOSED  (the echo is queued at once)
    OPEN --close frame received--> CLOSING --reply_close()--> CLOSED  (with ``reply_close_later``)
    any  --protocol violation, fail() or EOF--> CLOSED

CLOSED means that no frame will be sent or accepted any more; the TCP connection may still be
open (a client waits for the server to close it first, RFC 6455 §7.1.1).

The receiving half (frame parsing, message assembly, UTF-8 checks, inflating with
permessage-deflate) is a composed :class:`~.receiver.Receiver`; this module keeps the state
machine, the sending half and the close bookkeeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .codes import Opcode, is_valid_received_close_code
from .deflate import DeflateParameters, PerMessageDeflate
from .errors import ConnectionClosed, ProtocolError, closed_error
from .events import (
    CloseReceived,
    Event,
)
from .frames import (
    FIN,
    MAX_CONTROL_PAYLOAD,
    UINT16,
    Buffer,
    byte_payload,
    serialize_frame,
)
from .masking import MaskKeySource
from .receiver import Receiver, opcode_name

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Protocol", "Role", "State"]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

# RFC 6455 §5.5.1: a close frame holds a 2-byte code and a reason in at most 125 bytes.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

# The opcodes as plain ints, compared and combined per message (see the names of the states
# below on why not the enum's members).
_TEXT = Opcode.TEXT.value
_BINARY = Opcode.BINARY.value
_CONTINUATION = Opcode.CONTINUATION.value
_CLOSE = Opcode.CLOSE.value
_PING = Opcode.PING.value
_PONG = Opcode.PONG.value

_UNSET: object = object()

# The two-byte headers of unmasked, unfragmented text and binary frames of 0-125 bytes, by
# length: the small-message paths look their header up instead of building it.
_SMALL_TEXT_HEADERS = tuple(bytes((_TEXT | FIN, n)) for n in range(126))
_SMALL_BINARY_HEADERS = tuple(bytes((_BINARY | FIN, n)) for n in range(126))
_SMALL_HEADERS = {_TEXT: _SMALL_TEXT_HEADERS, _BINARY: _SMALL_BINARY_HEADERS}


class Role(enum.Enum):
    """Which end of the connection this is; it decides masking and who closes TCP first."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """Connection states (RFC 6455 §4 and §7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# On CPython 3.11 an enum member looked up through its class costs about 75 ns (a plain class
# attribute about 18): the per-message and per-read paths compare with these names instead.
_CLOSED = State.CLOSED
_SERVER = Role.SERVER


class Protocol:
    """One WebSocket connection's protocol state, after a successful opening handshake.

    Args:
        role: :attr:`Role.SERVER` or :attr:`Role.CLIENT`.
        max_message_size: The largest message accepted, in bytes, checked against each frame's
            declared length before its payload arrives and cumulatively across fragments
            (close code 1009 beyond it). ``None`` removes the limit, which lets a peer make the
            connection buffer without bound: only for trusted peers.
        max_fragments: The most frames one message may be split into (1009 beyond it), which
            stops floods of tiny fragments. Defaults to ``max(1024, max_message_size // 64)``,
            or no limit when ``max_message_size`` is ``None``.
        mask_key_source: In the client role, a callable returning 4 fresh random bytes per
            frame (tests inject a fixed key); defaults to a batched ``os.urandom``.
        deflate: The permessage-deflate parameters negotiated in the opening handshake
            (:class:`~.deflate.DeflateParameters`, from :func:`~.handshake.accept_request` or
            :func:`~.handshake.validate_response`), or a ready codec; ``None`` (default): no
            compression, and RSV1 is a protocol error.
        reply_close_later: False (default): a peer's close frame is answered as it is parsed.
            True: it is answered only by :meth:`reply_close` (or :meth:`send_close`, or
            :meth:`fail`); until then the state is CLOSING and messages can still be sent, as
            RFC 6455 §5.5.1 allows ("an endpoint MAY delay sending a Close frame until its
            current message is sent"). The transports use it so that the application's replies
            to the messages received before the close go out before the answer.

    Raises:
        ValueError: If a limit is not a positive integer or ``None``.

    Concurrency: not thread-safe. A transport serialises every call with one lock.
    """

    __slots__ = (
        "_deflate",
        "_eof",
        "_failed",
        "_mask_key",
        "_outgoing",
        "_receiver",
        "_reply_close_later",
        "close_initiator",
        "close_received",
        "close_sent",
        "role",
        "state",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_fragments: int | object | None = _UNSET,
        mask_key_source: Callable[[], bytes] | None = None,
        deflate: DeflateParameters | PerMessageDeflate | None = None,
        reply_close_later: bool = False,
    ) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, got {role!r}")
        if max_message_size is not None and (
            not isinstance(max_message_size, int) or max_message_size <= 0
        ):
            error: type[Exception] = ValueError if isinstance(max_message_size, int) else TypeError
            raise error(
                f"max_message_size must be a positive int or None, got {max_message_size!r}"
            )
        if max_fragments is _UNSET:
            # 64-byte fragments are the smallest that conformance suites send for large
            # messages; each fragment costs CPU (about a microsecond), never an object.
            max_fragments = None if max_message_size is None else max(1024, max_message_size // 64)
        if max_fragments is not None and (not isinstance(max_fragments, int) or max_fragments <= 0):
            error = ValueError if isinstance(max_fragments, int) else TypeError
            raise error(f"max_fragments must be a positive int or None, got {max_fragments!r}")
        self.role = role
        self.state = State.OPEN
        self.close_sent: tuple[int, str] | None = None
        self.close_received: tuple[int, str] | None = None
        self.close_initiator: str | None = None
        self._mask_key: Callable[[], bytes] | None = None
        if role is Role.CLIENT:
            self._mask_key = mask_key_source if mask_key_source is not None else MaskKeySource()
        self._outgoing: list[Buffer] = []
        self._failed = False
        self._eof = False
        self._reply_close_later = reply_close_later
        if isinstance(deflate, DeflateParameters):
            deflate = PerMessageDeflate(deflate, is_server=role is Role.SERVER)
        elif deflate is not None and not isinstance(deflate, PerMessageDeflate):
            raise TypeError(f"deflate must be DeflateParameters or None, got {deflate!r}")
        self._deflate = deflate
        # RFC 6455 §5.1: a server MUST reject unmasked frames, a client MUST reject masked ones.
        self._receiver = Receiver(
            0x80 if role is Role.SERVER else 0,
            max_message_size,
            max_fragments if isinstance(max_fragments, int) else None,
            deflate,
            self._receive_ping,
            self._receive_close,
        )

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: Buffer) -> list[Event]:
        """Parse received bytes and return the events they complete.

        Any split of the byte stream gives the same events. A protocol violation never raises:
        a :class:`ProtocolFailure` event is returned after the events that preceded it, and all
        later input is discarded. The close frame is not queued yet: the transport calls
        :meth:`fail` with the error's ``close_code`` and ``reason`` once the application has
        taken the messages before the violation, so that its replies to them go out first.
        Pings are answered (a pong queued) and a close frame echoed as they are parsed.

        Args:
            data: The bytes just received. The caller may reuse this buffer after the call: what
                the protocol keeps, it copies.

        Returns:
            The events, in order.
        """
        return self._receiver.receive_data(data)

    def receive_buffer(self) -> memoryview | None:
        """Where to read the next bytes when a large message is arriving, to save two copies.

        While the payload of a large binary frame (64 KiB or more, single-frame, uncompressed)
        is arriving, returns a writable view of the rest of it (or of a first part of the rest:
        the buffer grows with what arrives, so a peer that declares a large frame and sends
        little gets little memory); the transport reads into it (``sock.recv_into``, or from
        :meth:`asyncio.BufferedProtocol.get_buffer`) and reports the count with
        :meth:`received_into`. The bytes land in the ``bytes`` object the application
        receives: no copy from a receive buffer, none at the end (with the C accelerator; one
        copy at the end in pure Python). Returns None otherwise: read into your own buffer and
        call :meth:`receive_data`. Reading into the view is optional: :meth:`receive_data`
        gives the same events, so a transport may mix both.

        The view must not be written after :meth:`received_into` (or :meth:`receive_data`) is
        called: drop it then, as asyncio's transports drop the one from ``get_buffer``.
        """
        return self._receiver.receive_buffer()

    def received_into(self, count: int) -> list[Event]:
        """``count`` bytes were read into the last :meth:`receive_buffer` view: their events.

        Raises:
            ValueError: ``count`` is larger than the view was, negative, or not 0 while no view
                was handed out (:meth:`receive_buffer` returned ``None``).
        """
        return self._receiver.received_into(count, [])

    def _receive_ping(self, payload: bytes) -> None:
        # RFC 6455 §5.5.2: answer with a pong carrying the same payload, unless we already sent
        # a close frame (nothing may follow it).
        if self.close_sent is None:
            serialize_frame(self._outgoing, _PONG, payload, mask_key=self._mask_key)

    def _receive_close(self, payload: bytes) -> CloseReceived:
        if len(payload) == 1:
            raise ProtocolError("close frame with a 1-byte payload (a close code takes 2)")
        if payload:
            code = UINT16.unpack_from(payload)[0]
            if not is_valid_received_close_code(code):
                raise ProtocolError(f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise ProtocolError("invalid UTF-8 in the close reason", 1007) from None
        else:
            code, reason = 1005, ""
        self.close_received = (code, reason)
        if self.close_sent is None:
            self.close_initiator = "remote"
            if self._reply_close_later:
                # Nothing more is received; sending goes on until reply_close().
                self.state = State.CLOSING
                return CloseReceived(code, reason)
            self._queue_close(None if code == 1005 else code, "")
        self.state = State.CLOSED
        return CloseReceived(code, reason)

    @property
    def close_reply_pending(self) -> bool:
        """True while a peer's close frame waits for :meth:`reply_close` (``reply_close_later``)."""
        return self.close_received is not None and self.close_sent is None and not self._eof

    def reply_close(self) -> None:
        """Answer the peer's close frame now (``reply_close_later``); the state becomes CLOSED.

        RFC 6455 §5.5.1: the answer echoes the status code received. Does nothing unless an
        answer is pending (:attr:`close_reply_pending`).
        """
        if self.close_reply_pending and self.state is not _CLOSED:
            assert self.close_received is not None
            code = self.close_received[0]
            self._queue_close(None if code == 1005 else code, "")
            self.state = State.CLOSED

    def receive_eof(self) -> list[Event]:
        """Record that the peer closed the TCP connection (no more bytes will arrive).

        Returns:
            An empty list (kept for symmetry with :meth:`receive_data`).
        """
        self._eof = True
        self._receiver.stop()
        self.state = State.CLOSED
        return []

    # ------------------------------------------------------------------ sending

    def _check_can_send(self) -> None:
        # RFC 6455 §5.5.1: after sending a close frame, an endpoint sends no more data frames.
        if self.close_sent is not None or self.state is _CLOSED:
            raise self.closed_error()

    def frame_message(self, message: bytes | str) -> bytes | None:
        """Frame a small message and return the frame instead of queuing it, when that is simple.

        The fast path of :meth:`send_binary` (``bytes``) and :meth:`send_text` (``str``) for the
        commonest message of all: a server's (so unmasked) message of at most 125 bytes, with
        no compression negotiated and nothing queued before it. The caller writes the frame
        before anything this protocol queues later.

        Returns:
            The frame; or None when the message is not such a case, or the connection cannot
            send any more: then :meth:`send_binary` or :meth:`send_text` does the work (and
            raises what it raises).

        Raises:
            UnicodeEncodeError: ``message`` is a ``str`` with lone surrogates.
        """
        if (
            self._mask_key is not None
            or self._deflate is not None
            or self._outgoing
            or self.close_sent is not None
            or self.state is _CLOSED
        ):
            return None
        length = len(message)
        if length >= 126:  # a longer str cannot encode to fewer bytes: not encoded for nothing
            return None
        if isinstance(message, bytes):
            return _SMALL_BINARY_HEADERS[length] + message
        payload = message.encode()
        length = len(payload)
        return _SMALL_TEXT_HEADERS[length] + payload if length < 126 else None

    def send_text(
        self, text: str, *, fragment_size: int | None = None, compress: bool | None = None
    ) -> None:
        """Queue a text message.

        Args:
            text: The message.
            fragment_size: Split the encoded message into frames of at most this many bytes
                (a character may be split across frames, as RFC 6455 allows); with
                compression, the compressed payload is split.
            compress: With permessage-deflate negotiated: ``None`` (default) compresses
                messages of at least ``min_size`` bytes, ``True`` every message, ``False``
                none. Without the extension, messages are never compressed.

        Raises:
            ConnectionClosed: If a close frame was already sent or the connection is closed.
            TypeError: If ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"send_text takes a str, got {type(text).__name__}")
        self._check_can_send()
        self._send_message(_TEXT, text.encode(), fragment_size, compress)

    def send_binary(
        self, data: Buffer, *, fragment_size: int | None = None, compress: bool | None = None
    ) -> None:
        """Queue a binary message.

        Args:
            data: The message; a ``memoryview`` or ``bytearray`` is not copied in the server
                role, so it must not change until :meth:`data_to_send` has been written.
            fragment_size: Split the message into frames of at most this many bytes.
            compress: As for :meth:`send_text`.

        Raises:
            ConnectionClosed: If a close frame was already sent or the connection is closed.
            TypeError: If ``data`` is not bytes-like.
        """
        if type(data) is not bytes:
            data = byte_payload(data, "send_binary")
        self._check_can_send()
        self._send_message(_BINARY, data, fragment_size, compress)

    def _send_message(
        self, opcode: int, payload: Buffer, fragment_size: int | None, compress: bool | None
    ) -> None:
        if (
            len(payload) < 126
            and fragment_size is None
            and self._mask_key is None
            and self._deflate is None
        ):
            # A server's small message, the most common case: one frame with a two-byte
            # header and no mask (what serialize_frame builds, without its general cases).
            self._outgoing.append(_SMALL_HEADERS[opcode][len(payload)] + payload)
            return
        if self._deflate is not None and compress is not False:
            opcode, payload = self._compress(opcode, payload, compress)
        if fragment_size is None or len(payload) <= fragment_size:
            serialize_frame(self._outgoing, opcode, payload, mask_key=self._mask_key)
            return
        if fragment_size <= 0:
            raise ValueError(f"fragment_size must be positive, got {fragment_size}")
        view = memoryview(payload)
        total = len(view)
        for start in range(0, total, fragment_size):
            stop = start + fragment_size
            serialize_frame(
                self._outgoing,
                opcode if start == 0 else _CONTINUATION,
                view[start:stop],
                fin=stop >= total,
                mask_key=self._mask_key,
            )

    def _compress(self, opcode: int, payload: Buffer, compress: bool | None) -> tuple[int, Buffer]:
        """Compress a message unless it is too short (``compress`` None) or we cannot."""
        deflate = self._deflate
        assert deflate is not None
        if deflate.can_compress and (compress or len(payload) >= deflate.min_size):
            # RFC 7692 §6: RSV1 (0x40) on the first frame only, which is where `opcode` goes.
            return opcode | 0x40, deflate.compress(payload)
        return opcode, payload

    def send_ping(self, payload: Buffer = b"") -> None:
        """Queue a ping.

        Raises:
            ValueError: If the payload is longer than 125 bytes (RFC 6455 §5.5).
            ConnectionClosed: If a close frame was already sent or the connection is closed.
        """
        self._send_control(_PING, payload)

    def send_pong(self, payload: Buffer = b"") -> None:
        """Queue an unsolicited pong (pings are answered automatically).

        Raises:
            ValueError: If the payload is longer than 125 bytes (RFC 6455 §5.5).
            ConnectionClosed: If a close frame was already sent or the connection is closed.
        """
        self._send_control(_PONG, payload)

    def _send_control(self, opcode: int, payload: Buffer) -> None:
        payload = byte_payload(payload, f"send_{opcode_name(opcode).lower()}")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"{opcode_name(opcode)} payload of {len(payload)} bytes: at most 125 are allowed"
            )
        self._check_can_send()
        serialize_frame(self._outgoing, opcode, payload, mask_key=self._mask_key)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake: queue a close frame; the state becomes CLOSING.

        While a peer's close frame waits for its answer (:attr:`close_reply_pending`), the
        answer is sent instead (:meth:`reply_close`: the peer's code) and the state becomes
        CLOSED: the closing handshake is the peer's.

        Args:
            code: The close code: 1000-1003, 1007-1014 or 3000-4999.
            reason: A short explanation, at most 123 bytes once encoded as UTF-8.

        Raises:
            ValueError: If the code may not be sent or the reason is too long.
            ConnectionClosed: If a close frame was already sent or the connection is closed.
        """
        _check_close_arguments(code, reason)
        self._check_can_send()
        if self.close_received is not None:
            self.reply_close()
            return
        self.close_initiator = "local"
        self._queue_close(code, reason)
        self.state = State.CLOSING

    def resend_close(self) -> None:
        """Queue the close frame already sent once more (the transport's close retry).

        RFC 6455 expects a single close frame; the Go package resends it when the peer stays
        silent, in case the first one was lost in a broken intermediary. Peers ignore the
        duplicate because they have stopped reading after the first. Does nothing unless this
        side started the close and no answer has come.
        """
        if self.state is State.CLOSING and self.close_sent is not None:
            code, reason = self.close_sent
            self._outgoing.append(_close_frame(code, reason, self._mask_key))

    def fail(self, code: int = 1011, reason: str = "") -> None:
        """Fail the connection for a local reason (for example a keepalive timeout, 1011).

        Also commits a peer's violation reported by a :class:`ProtocolFailure` event, with the
        error's ``close_code`` and ``reason``. Queues a close frame with ``code`` unless one was
        already sent; the state becomes CLOSED and :meth:`should_close_transport` true. A reason
        longer than 123 bytes of UTF-8 is cut on a character boundary.

        Raises:
            ValueError: ``code`` may not be sent.
        """
        _check_close_arguments(code, "")
        self._fail(code, reason)

    def _fail(self, code: int, reason: str) -> None:
        if self.close_sent is None and self.state is not State.CLOSED:
            if self.close_initiator is None:
                self.close_initiator = "local"
            self._queue_close(code, _truncate_reason(reason))
        self._failed = True
        self._receiver.stop()
        self.state = State.CLOSED

    def _queue_close(self, code: int | None, reason: str) -> None:
        self.close_sent = (1005, "") if code is None else (code, reason)
        self._outgoing.append(_close_frame(code, reason, self._mask_key))

    def data_to_send(self) -> list[Buffer]:
        """Return, and forget, every buffer queued for the network, in order."""
        outgoing = self._outgoing
        if outgoing:
            self._outgoing = []
        return outgoing

    def should_close_transport(self) -> bool:
        """Tell whether the transport should now close the TCP connection.

        The server closes first once the closing handshake is complete (RFC 6455 §7.1.1); the
        client waits for the server to do so, so it is told to close only after a failure or
        once the peer's EOF has arrived. Either side closes at once after a failure.
        """
        if self._failed or self._eof:
            return True
        return self.role is _SERVER and self.state is _CLOSED

    # ------------------------------------------------------------------ close bookkeeping

    @property
    def close_code(self) -> int:
        """The code that ended (or is ending) the connection, as the application sees it.

        The code of the close frame received (1005 if it carried none); else, after this side
        failed the connection, the code it sent; else 1006 (no close frame arrived).
        """
        if self.close_received is not None:
            return self.close_received[0]
        if self._failed and self.close_sent is not None:
            return self.close_sent[0]
        return 1006

    @property
    def close_reason(self) -> str:
        """The reason that came with :attr:`close_code` (may be empty)."""
        if self.close_received is not None:
            return self.close_received[1]
        if self._failed and self.close_sent is not None:
            return self.close_sent[1]
        return ""

    def closed_error(self) -> ConnectionClosed:
        """Build the :class:`ConnectionClosed` to raise to callers once the connection ends."""
        return closed_error(self.close_code, self.close_reason, self.close_initiator)


def _check_close_arguments(code: int, reason: str) -> None:
    if not is_valid_received_close_code(code):
        raise ValueError(
            f"close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"
        )
    if len(reason.encode()) > MAX_CLOSE_REASON:
        raise ValueError(f"close reason is {len(reason.encode())} bytes of UTF-8: at most 123")


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return reason
    # Cut on a character boundary so the reason stays valid UTF-8.
    return encoded[:MAX_CLOSE_REASON].decode(errors="ignore")


def _close_frame(code: int | None, reason: str, mask_key: Callable[[], bytes] | None) -> Buffer:
    payload = b"" if code is None else UINT16.pack(code) + reason.encode()
    out: list[Buffer] = []
    serialize_frame(out, _CLOSE, payload, mask_key=mask_key)
    return out[0]
