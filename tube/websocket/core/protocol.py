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
    any  --protocol violation, fail() or EOF--> CLOSED

CLOSED means that no frame will be sent or accepted any more; the TCP connection may still be
open (a client waits for the server to close it first, RFC 6455 §7.1.1).

With permessage-deflate negotiated (RFC 7692, ``deflate=`` at construction), a frame with RSV1
starts a compressed message. Such frames leave the main parse loop at its one existing RSV
check for :meth:`Protocol._parse_compressed`, so uncompressed traffic runs exactly the code it
ran before; decompressed bytes count against ``max_message_size`` as they are produced.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .codes import Opcode, is_valid_received_close_code
from .deflate import DeflateParameters, PerMessageDeflate
from .errors import ConnectionClosed, MessageTooBig, ProtocolError, closed_error
from .events import (
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
)
from .frames import (
    MAX_CONTROL_PAYLOAD,
    UINT16,
    UINT64,
    Buffer,
    byte_payload,
    serialize_frame,
)
from .masking import MaskKeySource, apply_mask, unmask_in_place
from .utf8 import Utf8Validator

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Protocol", "Role", "State"]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

# RFC 6455 §5.5.1: a close frame holds a 2-byte code and a reason in at most 125 bytes.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

_TEXT = Opcode.TEXT.value
_BINARY = Opcode.BINARY.value
_CONTINUATION = Opcode.CONTINUATION.value
_CLOSE = Opcode.CLOSE.value
_PING = Opcode.PING.value
_PONG = Opcode.PONG.value
_OPCODE_NAMES = {opcode.value: opcode.name for opcode in Opcode}

_UNSET: object = object()

# Above this payload size, a masked frame held in the receive buffer is unmasked in place.
_IN_PLACE_THRESHOLD = 4096


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


def _opcode_name(opcode: int) -> str:
    name = _OPCODE_NAMES.get(opcode)
    return name if name is not None else f"reserved opcode {opcode:#x}"


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

    Raises:
        ValueError: If a limit is not a positive integer or ``None``.

    Concurrency: not thread-safe. A transport serialises every call with one lock.
    """

    __slots__ = (
        "_buffer",
        "_deflate",
        "_eof",
        "_failed",
        "_fragment_count",
        "_inflated",
        "_mask_key",
        "_masked_bit",
        "_max_fragments",
        "_max_message_size",
        "_message_buffer",
        "_message_opcode",
        "_outgoing",
        "_partial_checked",
        "_partial_validator",
        "_receiving_done",
        "_utf8",
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
    ) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, got {role!r}")
        if max_message_size is not None and (
            not isinstance(max_message_size, int) or max_message_size <= 0
        ):
            raise ValueError(
                f"max_message_size must be a positive int or None, got {max_message_size!r}"
            )
        if max_fragments is _UNSET:
            # 64-byte fragments are the smallest that conformance suites send for large
            # messages; each fragment costs CPU (about a microsecond), never an object.
            max_fragments = None if max_message_size is None else max(1024, max_message_size // 64)
        if max_fragments is not None and (not isinstance(max_fragments, int) or max_fragments <= 0):
            raise ValueError(f"max_fragments must be a positive int or None, got {max_fragments!r}")
        self.role = role
        self.state = State.OPEN
        self.close_sent: tuple[int, str] | None = None
        self.close_received: tuple[int, str] | None = None
        self.close_initiator: str | None = None
        self._max_message_size = max_message_size
        self._max_fragments = max_fragments if isinstance(max_fragments, int) else None
        # RFC 6455 §5.1: a server MUST reject unmasked frames, a client MUST reject masked ones.
        self._masked_bit = 0x80 if role is Role.SERVER else 0
        self._mask_key: Callable[[], bytes] | None = None
        if role is Role.CLIENT:
            self._mask_key = mask_key_source if mask_key_source is not None else MaskKeySource()
        self._buffer = bytearray()
        self._outgoing: list[Buffer] = []
        self._message_opcode = 0  # 0: no fragmented message open; else TEXT or BINARY
        self._message_buffer = bytearray()
        self._fragment_count = 0
        self._utf8: Utf8Validator | None = None
        # A text frame still waiting for the rest of its payload: how many of its payload bytes
        # were already unmasked in place and validated, and the validator holding that state.
        self._partial_checked = 0
        self._partial_validator: Utf8Validator | None = None
        self._receiving_done = False
        self._failed = False
        self._eof = False
        if isinstance(deflate, DeflateParameters):
            deflate = PerMessageDeflate(deflate, is_server=role is Role.SERVER)
        elif deflate is not None and not isinstance(deflate, PerMessageDeflate):
            raise TypeError(f"deflate must be DeflateParameters or None, got {deflate!r}")
        self._deflate = deflate
        # The decompressed part of a compressed message being received (None when no
        # compressed message is open); its frames' compressed payloads are never kept.
        self._inflated: bytearray | None = None

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: Buffer) -> list[Event]:
        """Parse received bytes and return the events they complete.

        Any split of the byte stream gives the same events. A protocol violation never raises:
        a :class:`ProtocolFailure` event is returned after the events that preceded it, and all
        later input is discarded. The close frame is not queued yet: the transport calls
        :meth:`fail` with the error's ``close_code`` and ``reason`` once the application has
        taken the messages before the violation, so that its replies to them go out first.

        Args:
            data: The bytes just received. The caller may reuse this buffer after the call: what
                the protocol keeps, it copies.

        Returns:
            The events, in order.
        """
        if self._receiving_done:
            return []
        buffer = self._buffer
        if buffer:
            buffer += data
            source: Buffer = buffer
        else:
            # Fast path: nothing left over from last time, so parse the caller's buffer directly
            # and copy only an incomplete tail, if any.
            source = data
        events: list[Event] = []
        position = 0
        end = len(source)
        with memoryview(source) as view:
            try:
                position = self._parse(view, end, events, source is buffer)
            except ProtocolError as error:
                events.append(self._fail_from_peer(error))
                position = end
        if source is buffer:
            del buffer[:position]
        elif position < end:
            buffer += data[position:]
        if buffer and not self._receiving_done:
            try:
                self._check_partial_text()
            except ProtocolError as error:
                events.append(self._fail_from_peer(error))
        return events

    def _check_partial_text(self) -> None:
        """Validate the part already received of an incomplete text frame.

        RFC 6455 §8.1 asks to fail invalid UTF-8 as soon as it is seen; a frame that arrives in
        pieces must not wait for its last byte. The received part is unmasked in place in the
        buffer (so it is never unmasked twice) and fed to a validator that continues the state
        of the message. Header checks already passed in :meth:`_parse`.
        """
        buffer = self._buffer
        if len(buffer) < 2:
            return
        first = buffer[0]
        if first & 0x40 or self._inflated is not None:
            return  # compressed: validated once decompressed, in _receive_compressed
        second = buffer[1]
        opcode = first & 0x0F
        if opcode != _TEXT and not (opcode == _CONTINUATION and self._utf8 is not None):
            return
        length = second & 0x7F
        header_length = 2 if length < 126 else 4 if length == 126 else 10
        if second & 0x80:
            header_length += 4
        if length >= 126:
            if len(buffer) < header_length:
                return
            length = (UINT16 if length == 126 else UINT64).unpack_from(buffer, 2)[0]
        start = header_length + self._partial_checked
        stop = min(len(buffer), header_length + length)
        if stop <= start:
            return
        if second & 0x80:
            key = bytes(buffer[header_length - 4 : header_length])
            phase = self._partial_checked % 4
            buffer[start:stop] = apply_mask(buffer[start:stop], key[phase:] + key[:phase])
        validator = self._partial_validator
        if validator is None:
            validator = Utf8Validator()
            if opcode == _CONTINUATION and self._utf8 is not None:
                validator.resume_from(self._utf8)
            self._partial_validator = validator
        if not validator.feed(buffer[start:stop]):
            raise ProtocolError("invalid UTF-8 in a text message", 1007)
        self._partial_checked = stop - header_length

    def _parse(self, view: memoryview, end: int, events: list[Event], in_buffer: bool) -> int:
        """Parse the complete frames in ``view[:end]``; return the offset of the first byte left."""
        position = 0
        masked_bit = self._masked_bit
        limit = self._max_message_size
        while True:
            available = end - position
            if available < 2:
                return position
            first = view[position]
            second = view[position + 1]
            length = second & 0x7F
            header_length = 2
            if length >= 126:
                if length == 126:
                    if available < 4:
                        return position
                    length = UINT16.unpack_from(view, position + 2)[0]
                    header_length = 4
                else:
                    if available < 10:
                        return position
                    length = UINT64.unpack_from(view, position + 2)[0]
                    header_length = 10
                    # RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
                    if length >> 63:
                        raise ProtocolError("frame length has its most significant bit set")
            masked = second & 0x80
            if masked:
                header_length += 4
            opcode = first & 0x0F
            fin = first & 0x80

            # Header checks come before waiting for the payload, so a declared length that is
            # too large is refused at once and never allocated.
            if first & 0x70:
                # RFC 6455 §5.2: RSV1-3 MUST be 0 unless an extension defines them; RFC 7692
                # §6 defines RSV1 (the first frame of a compressed message). Such a frame is
                # parsed apart, so the common frames pay no extra check.
                stop = self._parse_compressed(
                    view, position, available, first, length, header_length, events, in_buffer
                )
                if stop < 0:
                    return position
                position = stop
                continue
            if masked != masked_bit:
                if masked_bit:
                    raise ProtocolError("frames from a client must be masked")
                raise ProtocolError("frames from a server must not be masked")
            if opcode >= 8:
                if opcode > _PONG:
                    raise ProtocolError(f"unknown opcode {opcode:#x}")
                # RFC 6455 §5.5: control frames are never fragmented and carry <= 125 bytes.
                if not fin:
                    raise ProtocolError(f"fragmented {_opcode_name(opcode)} frame")
                if length > MAX_CONTROL_PAYLOAD:
                    raise ProtocolError(
                        f"{_opcode_name(opcode)} frame with a {length}-byte payload (at most 125)"
                    )
            elif opcode == _CONTINUATION:
                if not self._message_opcode:
                    raise ProtocolError("unexpected continuation frame: no message is open")
                if self._max_fragments is not None and self._fragment_count >= self._max_fragments:
                    raise MessageTooBig(
                        f"message split into more than {self._max_fragments} fragments"
                    )
                if limit is not None and len(self._message_buffer) + length > limit:
                    raise MessageTooBig(f"message larger than the {limit}-byte limit")
            elif opcode <= _BINARY:
                if self._message_opcode:
                    raise ProtocolError(
                        f"expected a continuation frame, got {_opcode_name(opcode)}"
                    )
                if limit is not None and length > limit:
                    raise MessageTooBig(
                        f"message of {length} bytes is larger than the {limit}-byte limit"
                    )
            else:
                raise ProtocolError(f"unknown opcode {opcode:#x}")

            if available < header_length + length:
                return position
            start = position + header_length
            position = start + length
            checked = self._partial_checked
            if checked:
                # Only the first frame of the buffer can have been checked in part (above);
                # that part is already unmasked in place.
                self._partial_checked = 0
                self._partial_validator = None
            if masked:
                key = bytes(view[start - 4 : start])
                if checked:
                    phase = checked % 4
                    payload = bytes(view[start : start + checked]) + apply_mask(
                        view[start + checked : position], key[phase:] + key[:phase]
                    )
                elif in_buffer and length > _IN_PLACE_THRESHOLD:
                    # A large frame sits in our own buffer (it arrived over several reads):
                    # unmask it there and copy once, rather than copy, unmask, copy again.
                    unmask_in_place(self._buffer, key, start, position)
                    payload = bytes(view[start:position])
                else:
                    payload = apply_mask(view[start:position], key)
            else:
                payload = bytes(view[start:position])

            if opcode == _BINARY:
                if fin:
                    events.append(BinaryMessage(payload))
                else:
                    self._start_message(opcode, payload)
            elif opcode == _TEXT:
                if fin:
                    try:
                        events.append(TextMessage(payload.decode()))
                    except UnicodeDecodeError:
                        raise ProtocolError("invalid UTF-8 in a text message", 1007) from None
                else:
                    self._start_message(opcode, payload)
            elif opcode == _CONTINUATION:
                self._continue_message(payload, fin, events)
            elif opcode == _PING:
                # RFC 6455 §5.5.2: answer with a pong carrying the same payload, unless we
                # already sent a close frame (nothing may follow it).
                if self.close_sent is None:
                    serialize_frame(self._outgoing, _PONG, payload, mask_key=self._mask_key)
                events.append(Ping(payload))
            elif opcode == _PONG:
                events.append(Pong(payload))
            else:
                events.append(self._receive_close(payload))
                # RFC 6455 §5.5.1: nothing that follows a close frame is processed.
                return end

    def _parse_compressed(
        self,
        view: memoryview,
        position: int,
        available: int,
        first: int,
        length: int,
        header_length: int,
        events: list[Event],
        in_buffer: bool,
    ) -> int:
        """Check and handle a frame with RSV bits set, at ``position``.

        Returns:
            The offset after the frame, or -1 while its payload is incomplete.

        Raises:
            ProtocolError: RSV bits not allowed here (1002), a frame of the wrong kind, too
                large a message (1009), invalid compressed data or UTF-8.
        """
        opcode = first & 0x0F
        if self._deflate is None:
            raise ProtocolError("reserved bits RSV1-3 set but no extension was negotiated")
        if first & 0x30:
            raise ProtocolError("reserved bits RSV2-3 set (only RSV1 is defined by deflate)")
        if opcode != _TEXT and opcode != _BINARY:
            # RFC 7692 §6.1: RSV1 only on the first frame of a data message; §6: control
            # frames are never compressed.
            raise ProtocolError(f"RSV1 set on a {_opcode_name(opcode)} frame")
        masked = view[position + 1] & 0x80
        if masked != self._masked_bit:
            if self._masked_bit:
                raise ProtocolError("frames from a client must be masked")
            raise ProtocolError("frames from a server must not be masked")
        if self._message_opcode:
            raise ProtocolError(f"expected a continuation frame, got {_opcode_name(opcode)}")
        limit = self._max_message_size
        if limit is not None and length > limit:
            raise MessageTooBig(f"message of {length} bytes is larger than the {limit}-byte limit")
        if available < header_length + length:
            return -1
        start = position + header_length
        stop = start + length
        payload: Buffer
        if masked:
            key = bytes(view[start - 4 : start])
            if in_buffer and length > _IN_PLACE_THRESHOLD:
                unmask_in_place(self._buffer, key, start, stop)
                payload = view[start:stop]
            else:
                payload = apply_mask(view[start:stop], key)
        else:
            payload = view[start:stop]
        fin = bool(first & 0x80)
        try:
            data = self._deflate.decompress(payload, fin=fin, max_size=limit)
        finally:
            # A view into the receive buffer must not outlive this call (an error's traceback
            # would keep it, and the buffer could no longer be resized).
            if isinstance(payload, memoryview):
                payload.release()
        if fin:
            if opcode == _TEXT:
                try:
                    events.append(TextMessage(data.decode()))
                except UnicodeDecodeError:
                    raise ProtocolError("invalid UTF-8 in a text message", 1007) from None
            else:
                events.append(BinaryMessage(data))
            return stop
        self._message_opcode = opcode
        self._inflated = bytearray(data)
        self._fragment_count = 1
        if opcode == _TEXT:
            validator = Utf8Validator()
            if not validator.feed(data):
                raise ProtocolError("invalid UTF-8 in a text message", 1007)
            self._utf8 = validator
        return stop

    def _continue_compressed(self, inflated: bytearray, payload: bytes, fin: int) -> bytes | None:
        """Decompress a continuation frame of a compressed message; return it when complete."""
        assert self._deflate is not None
        limit = self._max_message_size
        data = self._deflate.decompress(
            payload, fin=bool(fin), max_size=None if limit is None else limit - len(inflated)
        )
        validator = self._utf8
        if validator is not None and (not validator.feed(data) or (fin and not validator.finish())):
            raise ProtocolError("invalid UTF-8 in a text message", 1007)
        inflated += data
        if not fin:
            return None
        self._inflated = None
        return bytes(inflated)

    def _start_message(self, opcode: int, payload: bytes) -> None:
        self._message_opcode = opcode
        self._message_buffer = bytearray(payload)
        self._fragment_count = 1
        if opcode == _TEXT:
            validator = Utf8Validator()
            if not validator.feed(payload):
                raise ProtocolError("invalid UTF-8 in a text message", 1007)
            self._utf8 = validator

    def _continue_message(self, payload: bytes, fin: int, events: list[Event]) -> None:
        self._fragment_count += 1
        inflated = self._inflated
        if inflated is not None:
            complete = self._continue_compressed(inflated, payload, fin)
            if complete is None:
                return
            # Validated piece by piece above; the decode cannot fail.
            message: bytes | bytearray = complete
        else:
            self._message_buffer += payload
            validator = self._utf8
            # Fail as soon as the fragments seen so far cannot begin valid UTF-8.
            if validator is not None and (
                not validator.feed(payload) or (fin and not validator.finish())
            ):
                raise ProtocolError("invalid UTF-8 in a text message", 1007)
            if not fin:
                return
            message = self._message_buffer
        if self._utf8 is not None:
            events.append(TextMessage(message.decode()))
        else:
            events.append(BinaryMessage(bytes(message)))
        self._message_opcode = 0
        self._message_buffer = bytearray()
        self._fragment_count = 0
        self._utf8 = None

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
        self._receiving_done = True
        if self.close_sent is None:
            # RFC 6455 §5.5.1: answer with a close frame, echoing the status code received.
            self.close_initiator = "remote"
            self._queue_close(None if code == 1005 else code, "")
        self.state = State.CLOSED
        return CloseReceived(code, reason)

    def _fail_from_peer(self, error: ProtocolError) -> ProtocolFailure:
        # Stop receiving at the violation: nothing after it is parsed or kept. The close frame
        # (RFC 6455 §7.1.7, _Fail the WebSocket Connection_) is not queued here: the messages
        # returned before the failure must reach the application, and its replies to them the
        # peer, first. The transport calls fail() with the error's code once the application
        # has taken those messages (or a bound expired); until then sending stays possible.
        self._receiving_done = True
        self._buffer = bytearray()
        self._message_buffer = bytearray()
        self._inflated = None
        self._partial_validator = None
        return ProtocolFailure(error)

    def receive_eof(self) -> list[Event]:
        """Record that the peer closed the TCP connection (no more bytes will arrive).

        Returns:
            An empty list (kept for symmetry with :meth:`receive_data`).
        """
        self._eof = True
        self._receiving_done = True
        self._buffer = bytearray()
        self._message_buffer = bytearray()
        self._inflated = None
        self.state = State.CLOSED
        return []

    # ------------------------------------------------------------------ sending

    def _check_can_send(self) -> None:
        # RFC 6455 §5.5.1: after sending a close frame, an endpoint sends no more data frames.
        if self.close_sent is not None or self.state is State.CLOSED:
            raise self.closed_error()

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
        data = byte_payload(data, "send_binary")
        self._check_can_send()
        self._send_message(_BINARY, data, fragment_size, compress)

    def _send_message(
        self, opcode: int, payload: Buffer, fragment_size: int | None, compress: bool | None
    ) -> None:
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
        payload = byte_payload(payload, f"send_{_opcode_name(opcode).lower()}")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"{_opcode_name(opcode)} payload of {len(payload)} bytes: at most 125 are allowed"
            )
        self._check_can_send()
        serialize_frame(self._outgoing, opcode, payload, mask_key=self._mask_key)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake: queue a close frame; the state becomes CLOSING.

        Args:
            code: The close code: 1000-1003, 1007-1014 or 3000-4999.
            reason: A short explanation, at most 123 bytes once encoded as UTF-8.

        Raises:
            ValueError: If the code may not be sent or the reason is too long.
            ConnectionClosed: If a close frame was already sent or the connection is closed.
        """
        _check_close_arguments(code, reason)
        self._check_can_send()
        self.close_initiator = "local"
        self._queue_close(code, reason)
        self.state = State.CLOSING

    def resend_close(self) -> None:
        """Queue the close frame already sent once more (the transport's close retry).

        RFC 6455 expects a single close frame; the seed design resends it when the peer stays
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
        self._receiving_done = True
        self._buffer = bytearray()
        self._message_buffer = bytearray()
        self._inflated = None
        self._partial_validator = None
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
        return self.role is Role.SERVER and self.state is State.CLOSED

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
