"""The receiving half of the sans-I/O protocol: frames in, messages and control events out.

:class:`Receiver` parses every complete frame of what it is fed (a loop over integer offsets
into one buffer, header bytes by index), checks each header before its payload arrives (so an
absurd declared length is refused at once), unmasks, assembles fragmented messages, validates
UTF-8 as early as possible (inside a frame still arriving, too) and inflates compressed
messages within the size budget (RFC 7692). It reports control frames to its
:class:`~.protocol.Protocol` through two callbacks, which answer pings and close frames; a
violation ends receiving with a :class:`~.events.ProtocolFailure` event.

With permessage-deflate negotiated, a frame with RSV1 starts a compressed message. Such frames
leave the main parse loop at its one existing RSV check for :meth:`Receiver._parse_compressed`,
so uncompressed traffic runs exactly the code it ran before; decompressed bytes count against
``max_message_size`` as they are produced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from .accelerator import speedups
from .codes import Opcode
from .deflate import PerMessageDeflate
from .errors import MessageTooBig, ProtocolError
from .events import BinaryMessage, CloseReceived, Event, Ping, Pong, ProtocolFailure, TextMessage
from .frames import MAX_CONTROL_PAYLOAD, UINT16, UINT64, Buffer
from .masking import apply_mask, unmask_in_place
from .payload import PayloadBuffer, first_size, new_payload_buffer
from .utf8 import Utf8Validator

__all__ = ["Receiver", "opcode_name"]

_TEXT = Opcode.TEXT.value
_BINARY = Opcode.BINARY.value
_CONTINUATION = Opcode.CONTINUATION.value
_PING = Opcode.PING.value
_PONG = Opcode.PONG.value
_OPCODE_NAMES = {opcode.value: opcode.name for opcode in Opcode}

# The C accelerator's parser of whole single-frame data messages (None in pure Python): it
# gives the events the loop of Receiver._parse gives for those frames, and stops at any other.
_parse_messages = None if speedups is None else speedups.parse_messages

# Above this payload size, a masked frame held in the receive buffer is unmasked in place.
_IN_PLACE_THRESHOLD = 4096

# A single-frame binary message of at least this size, whose payload is still arriving, is
# received into a payload buffer of its own (see .payload): read there in place by transports
# that ask (Protocol.receive_buffer), copied there once by the others, never kept in _buffer.
_LARGE_FRAME = 64 * 1024


def opcode_name(opcode: int) -> str:
    """The RFC name of an opcode (``"TEXT"``), or a description of a reserved one."""
    name = _OPCODE_NAMES.get(opcode)
    return name if name is not None else f"reserved opcode {opcode:#x}"


_opcode_name = opcode_name


class Receiver:
    """Parses what one connection receives (see the module docstring).

    Args:
        masked_bit: ``0x80`` in the server role (RFC 6455 §5.1: a server MUST reject unmasked
            frames), 0 in the client role (a client MUST reject masked ones).
        max_message_size: The largest message, in bytes (decompressed), or ``None``.
        max_fragments: The most frames per message, or ``None``.
        deflate: The permessage-deflate codec, or ``None``.
        on_ping: Called with a ping's payload (the protocol queues the pong).
        on_close: Called with a close frame's payload; returns the event (or raises
            :class:`ProtocolError` for an invalid payload). Receiving ends after it.

    Concurrency: not thread-safe; called under the transport's lock, like the protocol.
    """

    __slots__ = (
        "_buffer",
        "_deflate",
        "_fragment_count",
        "_inflated",
        "_large",
        "_large_filled",
        "_large_key",
        "_large_length",
        "_masked_bit",
        "_max_fragments",
        "_max_message_size",
        "_message_buffer",
        "_message_opcode",
        "_messages_limit",
        "_on_close",
        "_on_ping",
        "_partial_checked",
        "_partial_validator",
        "_receiving_done",
        "_utf8",
    )

    def __init__(
        self,
        masked_bit: int,
        max_message_size: int | None,
        max_fragments: int | None,
        deflate: PerMessageDeflate | None,
        on_ping: Callable[[bytes], None],
        on_close: Callable[[bytes], CloseReceived],
    ) -> None:
        self._masked_bit = masked_bit
        self._max_message_size = max_message_size
        # The limit as the C parser of whole messages takes it (-1: none).
        self._messages_limit = -1 if max_message_size is None else max_message_size
        self._max_fragments = max_fragments
        self._deflate = deflate
        self._on_ping = on_ping
        self._on_close = on_close
        self._buffer = bytearray()
        self._message_opcode = 0  # 0: no fragmented message open; else TEXT or BINARY
        self._message_buffer = bytearray()
        self._fragment_count = 0
        self._utf8: Utf8Validator | None = None
        # A text frame still waiting for the rest of its payload: how many of its payload bytes
        # were already unmasked in place and validated, and the validator holding that state.
        self._partial_checked = 0
        self._partial_validator: Utf8Validator | None = None
        self._receiving_done = False
        # The decompressed part of a compressed message being received (None when no
        # compressed message is open); its frames' compressed payloads are never kept.
        self._inflated: bytearray | None = None
        # A large binary frame being received into a payload buffer of its own (None when
        # there is none): its payload's length, how much of it arrived (unmasked already), and
        # its masking key (None when unmasked).
        self._large: PayloadBuffer | None = None
        self._large_length = 0
        self._large_filled = 0
        self._large_key: bytes | None = None

    def receive_data(self, data: Buffer) -> list[Event]:
        """Parse received bytes; the events they complete (see :meth:`.Protocol.receive_data`)."""
        if self._receiving_done:
            return []
        events: list[Event] = []
        if self._large is not None:
            # Into the large frame's payload buffer; once complete, what follows as usual.
            taken = self._fill_large(data, events)
        else:
            kind = type(data)
            if not (
                _parse_messages is not None
                and (kind is memoryview or kind is bytes or kind is bytearray)
                and not self._buffer
                and not self._message_opcode
                and not self._partial_checked
            ):
                return self._receive(data, events)
            # Most reads hold whole single-frame messages and nothing else: one C call, without
            # the general path's view and bookkeeping. It stops at anything else (a control
            # frame, a fragment, an incomplete tail), which the general path takes from there.
            taken = _parse_messages(
                data,
                0,
                len(data),
                self._masked_bit,
                self._messages_limit,
                events,
                BinaryMessage,
                TextMessage,
            )
            if not taken:
                return self._receive(data, events)
        if taken == len(data):
            return events
        rest = memoryview(data)[taken:]
        try:
            return self._receive(rest, events)
        finally:
            rest.release()  # the caller may resize its buffer once we return

    def _receive(self, data: Buffer, events: list[Event]) -> list[Event]:
        """Parse ``data`` after what is buffered; append the events to ``events``."""
        buffer = self._buffer
        if buffer:
            buffer += data
            source: Buffer = buffer
        else:
            # Fast path: nothing left over from last time, so parse the caller's buffer directly
            # and copy only an incomplete tail, if any.
            source = data
        position = 0
        end = len(source)
        with memoryview(source) as view:
            try:
                position = self._parse(view, end, events, source is buffer)
            except ProtocolError as error:
                events.append(self._fail_from_peer(error))
                position = end
            # An incomplete frame is left: a large one moves to a payload buffer.
            if (
                end - position >= 4
                and not self._receiving_done
                and self._start_large(view, position, end)
            ):
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

    # ------------------------------------------------------------------ large frames

    def _start_large(self, view: memoryview, position: int, end: int) -> bool:
        """Move the incomplete frame at ``position`` to a payload buffer, if it is a large one.

        Only an uncompressed single-frame binary message whose header passed :meth:`_parse`'s
        checks qualifies (the common large message; text needs its UTF-8 checked as it
        arrives, fragments and compressed frames are assembled elsewhere).
        """
        if view[position] != 0x82:  # FIN, no RSV bit, BINARY
            return False
        second = view[position + 1]
        length = second & 0x7F
        if length < 126:
            return False
        masked = second & 0x80
        header_length = (4 if length == 126 else 10) + (4 if masked else 0)
        if end - position < header_length:
            return False  # _parse checked the header only if it is all there
        length = (UINT16 if length == 126 else UINT64).unpack_from(view, position + 2)[0]
        if length < _LARGE_FRAME or self._message_opcode:
            return False
        start = position + header_length
        self._large_key = bytes(view[start - 4 : start]) if masked else None
        self._large_length = length
        self._large_filled = 0
        self._large = new_payload_buffer(first_size(length, end - start))
        # Never complete here (_parse would have taken a complete frame).
        self._fill_large(view[start:end], [])
        return True

    def _fill_large(self, data: Buffer, events: list[Event]) -> int:
        """Copy the next bytes of the large frame's payload; return how many of ``data``."""
        filled = self._large_filled
        with memoryview(data) as view:
            count = min(len(view), self._large_length - filled)
            self._reserve(filled + count)
            # Only now: _reserve() may have replaced the buffer (a view of the old one held).
            large = self._large
            assert large is not None
            with memoryview(large) as target:
                target[filled : filled + count] = view[:count]
        self.received_into(count, events)
        return count

    def _reserve(self, needed: int) -> None:
        """Make the payload buffer hold at least ``needed`` bytes, growing it by doubling."""
        large = self._large
        assert large is not None
        size = len(large)
        if needed <= size:
            return
        size = min(self._large_length, max(needed, 2 * size))
        try:
            large.resize(size)
        except BufferError:
            # A view of it is still held (a transport kept the last one): grow a new one.
            fresh = new_payload_buffer(size)
            with memoryview(large) as old, memoryview(fresh) as new:
                new[: self._large_filled] = old[: self._large_filled]
            self._large = fresh

    def receive_buffer(self) -> memoryview | None:
        """Where a large frame's next payload bytes go (see :meth:`.Protocol.receive_buffer`)."""
        large = self._large
        if large is None:
            return None
        filled = self._large_filled
        if filled == len(large):
            self._reserve(filled + 1)
            large = self._large
            assert large is not None
        return memoryview(large)[filled:]

    def received_into(self, count: int, events: list[Event]) -> list[Event]:
        """``count`` more payload bytes are in the payload buffer: unmask; complete the message."""
        large = self._large
        if count <= 0:
            if count < 0:
                raise ValueError(f"a negative count of bytes received: {count}")
            return events
        if large is None:
            # Bytes a transport read somewhere we did not hand out: never dropped silently.
            raise ValueError(f"{count} bytes received into no buffer (none was handed out)")
        filled = self._large_filled
        stop = filled + count
        if stop > len(large) or stop > self._large_length:
            raise ValueError(f"{count} bytes received into a buffer with room for fewer")
        key = self._large_key
        if key is not None:
            # Unmasked while the bytes are still in the cache; the key's phase at `filled`.
            phase = filled & 3
            # (cast: the C function takes any writable buffer; the pure-Python payload buffer
            # is a bytearray)
            target = cast(bytearray, large)
            unmask_in_place(target, key[phase:] + key[:phase] if phase else key, filled, stop)
        self._large_filled = stop
        if stop == self._large_length:
            self._large = None
            self._large_key = None
            events.append(BinaryMessage(large.take()))
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
        if _parse_messages is not None and not self._message_opcode and not self._partial_checked:
            # The commonest frames, whole single-frame data messages, parsed in one C call; the
            # loop below takes whatever it stops at (and refuses what is wrong with it).
            position = _parse_messages(
                view,
                0,
                end,
                masked_bit,
                self._messages_limit,
                events,
                BinaryMessage,
                TextMessage,
            )
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
                self._on_ping(payload)
                events.append(Ping(payload))
            elif opcode == _PONG:
                events.append(Pong(payload))
            else:
                events.append(self._on_close(payload))
                # RFC 6455 §5.5.1: nothing that follows a close frame is processed.
                self._receiving_done = True
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

    def _fail_from_peer(self, error: ProtocolError) -> ProtocolFailure:
        # Stop receiving at the violation: nothing after it is parsed or kept. The close frame
        # (RFC 6455 §7.1.7, _Fail the WebSocket Connection_) is not queued here: the messages
        # returned before the failure must reach the application, and its replies to them the
        # peer, first. The transport calls fail() with the error's code once the application
        # has taken those messages (or a bound expired); until then sending stays possible.
        # The error outlives this call (the transport keeps it until it commits it) but its
        # traceback must not: it holds the frames of the parse, among them inflating's output
        # (up to the size limit) and receive_data's event list, which holds this failure: a
        # cycle that only the cyclic collector would free, so that memory (up to the size
        # limit) would stay held until it runs.
        error.__traceback__ = None
        self.stop()
        return ProtocolFailure(error)

    def stop(self) -> None:
        """Receive nothing more (a failure, a close frame or EOF): drop what is buffered."""
        self._receiving_done = True
        self._buffer = bytearray()
        self._message_buffer = bytearray()
        self._inflated = None
        self._partial_validator = None
        self._large = None
        self._large_key = None
