"""Property-based tests of the core: the parser takes bytes from the network, so hypothesis
checks it against arbitrary splits, arbitrary frames and arbitrary garbage."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tube.websocket.core.deflate import DeflateOptions, DeflateParameters
from tube.websocket.core.errors import ConnectionClosed
from tube.websocket.core.events import (
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolFailure,
    TextMessage,
)
from tube.websocket.core.protocol import Protocol, Role, State

from .wsframes import frame, parse_frames

LENGTHS = st.sampled_from([0, 1, 2, 3, 4, 5, 124, 125, 126, 127, 65535, 65536, 70000])
ROLES = st.sampled_from([Role.SERVER, Role.CLIENT])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed_in_chunks(protocol: Protocol, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    previous = 0
    for point in [*points, len(data)]:
        events += protocol.receive_data(memoryview(data)[previous:point])
        previous = point
    return events


@st.composite
def frame_streams(draw: st.DrawFn) -> tuple[Role, bytes]:
    """A valid stream of messages, some fragmented, with control frames in between."""
    role = draw(ROLES)
    key = None if role is Role.CLIENT else os.urandom(4)
    stream = b""
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            stream += frame(9 if kind == "ping" else 10, draw(st.binary(max_size=125)), key=key)
            continue
        if kind == "text":
            payload = draw(st.text(max_size=300)).encode()
            opcode = 1
        else:
            payload = draw(st.binary(max_size=300))
            opcode = 2
        cuts = sorted(set(draw(st.lists(st.integers(0, len(payload)), max_size=4))))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for index, piece in enumerate(pieces):
            stream += frame(
                opcode if index == 0 else 0, piece, fin=index == len(pieces) - 1, key=key
            )
            if draw(st.booleans()):
                stream += frame(9, b"between", key=key)
    return role, stream


@SETTINGS
@given(frame_streams(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_a_stream_gives_the_same_events(
    stream: tuple[Role, bytes], cuts: list[int]
) -> None:
    role, data = stream
    whole = Protocol(role).receive_data(data)
    assert not any(isinstance(event, ProtocolFailure) for event in whole)
    assert feed_in_chunks(Protocol(role), data, cuts) == whole


@SETTINGS
@given(frame_streams())
def test_byte_by_byte_gives_the_same_events(stream: tuple[Role, bytes]) -> None:
    role, data = stream
    whole = Protocol(role).receive_data(data)
    protocol = Protocol(role)
    single: list[Event] = []
    for index in range(len(data)):
        single += protocol.receive_data(data[index : index + 1])
    assert single == whole


@SETTINGS
@given(
    ROLES,
    st.sampled_from(["text", "binary"]),
    LENGTHS,
    st.none() | st.integers(1, 70000),
)
def test_serialise_parse_round_trip(
    role: Role, kind: str, length: int, fragment_size: int | None
) -> None:
    sender = Protocol(role)
    receiver = Protocol(Role.CLIENT if role is Role.SERVER else Role.SERVER, max_message_size=None)
    if kind == "text":
        message: str | bytes = "é" * (length // 2) + "a" * (length % 2)
        sender.send_text(message, fragment_size=fragment_size)  # type: ignore[arg-type]
        expected: Event = TextMessage(message)  # type: ignore[arg-type]
    else:
        message = os.urandom(length)
        sender.send_binary(message, fragment_size=fragment_size)
        expected = BinaryMessage(message)
    wire = b"".join(bytes(b) for b in sender.data_to_send())
    assert receiver.receive_data(wire) == [expected]


@SETTINGS
@given(
    ROLES,
    st.binary(max_size=140) | st.text(max_size=140),
    st.booleans(),
    st.sampled_from(["open", "pong queued", "close sent", "close received"]),
)
def test_frame_message_is_send_and_data_to_send_or_declines(
    role: Role, message: bytes | str, deflate: bool, situation: str
) -> None:
    # The fast path must give exactly the bytes of the general one, or decline and change
    # nothing; it frames only a server's small message without compression or queued output.
    def protocol() -> Protocol:
        parameters = DeflateParameters(False, False, 15, 15, DeflateOptions())
        made = Protocol(role, deflate=parameters if deflate else None)
        if situation == "pong queued":
            made.receive_data(frame(9, b"hi", key=None if role is Role.CLIENT else b"abcd"))
        elif situation == "close sent":
            made.send_close(1000)
            made.data_to_send()
        elif situation == "close received":
            made.receive_data(frame(8, b"\x03\xe8", key=None if role is Role.CLIENT else b"abcd"))
            made.data_to_send()
        return made

    fast = protocol()
    framed = fast.frame_message(message)
    payload = message.encode() if isinstance(message, str) else message
    simple = role is Role.SERVER and not deflate and situation == "open" and len(payload) < 126
    if not simple:
        assert framed is None
        queued = sum(len(chunk) for chunk in fast.data_to_send())
        assert queued == sum(len(chunk) for chunk in protocol().data_to_send())  # unchanged
        return
    general = protocol()
    if isinstance(message, str):
        general.send_text(message)
    else:
        general.send_binary(message)
    assert framed == b"".join(bytes(chunk) for chunk in general.data_to_send())
    assert fast.data_to_send() == []  # nothing queued: the caller writes the frame


@SETTINGS
@given(ROLES, st.binary(max_size=125))
def test_control_frames_round_trip(role: Role, payload: bytes) -> None:
    sender = Protocol(role)
    receiver = Protocol(Role.CLIENT if role is Role.SERVER else Role.SERVER)
    sender.send_ping(payload)
    sender.send_pong(payload)
    wire = b"".join(bytes(b) for b in sender.data_to_send())
    assert receiver.receive_data(wire) == [Ping(payload), Pong(payload)]


@SETTINGS
@given(ROLES, st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10))
def test_random_bytes_never_raise_and_stay_bounded(
    role: Role, data: bytes, cuts: list[int]
) -> None:
    protocol = Protocol(role, max_message_size=512)
    events = feed_in_chunks(protocol, data, cuts)  # must not raise anything
    for event in events:
        assert isinstance(
            event, TextMessage | BinaryMessage | Ping | Pong | CloseReceived | ProtocolFailure
        )
    # Never more buffered than one maximal frame (14-byte header + 512 bytes).
    assert len(protocol._receiver._buffer) <= 14 + 512
    assert len(protocol._receiver._message_buffer) <= 512
    failures = [event for event in events if isinstance(event, ProtocolFailure)]
    if failures:
        # The failure is the last event, reported once; nothing after it was parsed.
        assert len(failures) == 1 and events[-1] is failures[0]
        assert protocol.receive_data(data) == []
        error = failures[0].error
        protocol.fail(error.close_code, error.reason)
        assert protocol.state is State.CLOSED
        assert protocol.should_close_transport()


@SETTINGS
@given(
    st.binary(min_size=1, max_size=40),
    st.lists(st.integers(min_value=0, max_value=40), max_size=5),
)
def test_text_split_anywhere_is_accepted_exactly_when_valid(
    payload: bytes, cuts: list[int]
) -> None:
    try:
        payload.decode()
        valid = True
    except UnicodeDecodeError:
        valid = False
    points = sorted({c % (len(payload) + 1) for c in cuts})
    pieces = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    protocol = Protocol(Role.SERVER)
    events: list[Event] = []
    failed_at = None
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        events += protocol.receive_data(frame(1 if index == 0 else 0, piece, fin=last))
        if failed_at is None and any(isinstance(e, ProtocolFailure) for e in events):
            failed_at = index
    if valid:
        assert events == [TextMessage(payload.decode())]
        return
    assert failed_at is not None
    assert isinstance(events[-1], ProtocolFailure) and events[-1].error.close_code == 1007
    # Rejected no later than the first fragment holding a byte that makes the prefix invalid.
    received = b""
    for index, piece in enumerate(pieces):
        received += piece
        if _prefix_is_impossible(received):
            assert failed_at <= index
            break


def _prefix_is_impossible(data: bytes) -> bool:
    """Brute force oracle: can some continuation make ``data`` valid UTF-8?

    A possible prefix is valid UTF-8 followed by at most 3 bytes of an unfinished character.
    Only the byte right after a lead byte is constrained (E0, ED, F0, F4 narrow it); later
    continuation bytes may be anything in 80-BF, so one searched byte plus 80 padding suffices.
    """
    for tail_length in range(min(3, len(data)) + 1):
        head, tail = data[: len(data) - tail_length], data[len(data) - tail_length :]
        try:
            head.decode()
        except UnicodeDecodeError:
            continue
        if not tail:
            return False
        for missing in range(1, 4):
            for searched in range(0x80, 0xC0):
                try:
                    (tail + bytes([searched]) + b"\x80" * (missing - 1)).decode()
                    return False
                except UnicodeDecodeError:
                    pass
    return True


class ProtocolMachine(RuleBasedStateMachine):
    """Random interleavings of sends, receives, closes and EOF, in the server role."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol = Protocol(Role.SERVER)
        self.close_frames_sent = 0
        self.data_after_close = False

    def _collect(self) -> None:
        for _, opcode, _payload in parse_frames(
            b"".join(bytes(b) for b in self.protocol.data_to_send())
        ):
            if opcode == 8:
                self.close_frames_sent += 1
            elif self.close_frames_sent:
                self.data_after_close = True

    @rule(data=st.binary(max_size=20))
    def send_binary(self, data: bytes) -> None:
        try:
            self.protocol.send_binary(data)
        except ConnectionClosed:
            assert self.protocol.close_sent is not None or self.protocol.state is State.CLOSED
        self._collect()

    @rule()
    def send_close(self) -> None:
        try:
            self.protocol.send_close()
        except ConnectionClosed:
            assert self.protocol.close_sent is not None or self.protocol.state is State.CLOSED
        self._collect()

    @rule(payload=st.binary(max_size=10))
    def receive_ping(self, payload: bytes) -> None:
        self.protocol.receive_data(frame(9, payload))
        self._collect()

    @rule()
    def receive_text(self) -> None:
        self.protocol.receive_data(frame(1, b"hello"))
        self._collect()

    @rule()
    def receive_close(self) -> None:
        self.protocol.receive_data(frame(8, b"\x03\xe8"))
        self._collect()

    @rule(data=st.binary(max_size=30))
    def receive_garbage(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._collect()

    @precondition(lambda self: not self.protocol._eof)
    @rule()
    def receive_eof(self) -> None:
        self.protocol.receive_eof()
        self._collect()

    @invariant()
    def never_two_close_frames_nor_data_after_close(self) -> None:
        assert self.close_frames_sent <= 1
        assert not self.data_after_close


TestProtocolMachine = ProtocolMachine.TestCase
TestProtocolMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
