"""The C accelerator's parser of whole data messages (``_speedups.parse_messages``) against the
pure-Python parse loop it shortcuts.

The receiver hands every read to the C parser first, which takes the frames that need no state
(a whole TEXT or BINARY message in one frame, the right mask bit, no RSV bit, within the size
limit) and stops at anything else, where the general loop goes on and refuses what is wrong.
So the property: for any byte stream, valid or hostile, cut anywhere, a protocol with the C
parser gives exactly the events (and the same failure, word for word) and the same bytes to
send as one without it.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tube.websocket.core import receiver
from tube.websocket.core.accelerator import speedups
from tube.websocket.core.events import (
    BinaryMessage,
    ProtocolFailure,
    TextMessage,
)
from tube.websocket.core.protocol import Protocol, Role

from .test_protocol_properties import feed_in_chunks
from .wsframes import frame, mask, parse_frames

requires_c = pytest.mark.skipif(speedups is None, reason="the C accelerator is not in use")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY = b"\x37\xfa\x21\x3d"


def long_form(payload: bytes, declared: int, key: bytes | None) -> bytes:
    """A binary frame whose length is written in the 64-bit form, whatever it is."""
    header = struct.pack("!BBQ", 0x82, (0x80 if key else 0) | 127, declared)
    if key is None:
        return header + payload
    return header + key + mask(payload, key)


@st.composite
def hostile_streams(draw: st.DrawFn) -> tuple[Role, int | None, bytes]:
    """A stream of frames of every kind the C parser must take or leave, in any order."""
    role = draw(st.sampled_from([Role.SERVER, Role.CLIENT]))
    limit = draw(st.sampled_from([None, 1, 5, 200, 70_000]))
    right_key = None if role is Role.CLIENT else os.urandom(4)
    wrong_key = KEY if role is Role.CLIENT else None
    stream = b""
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(
                [
                    "text",
                    "binary",
                    "binary",
                    "bad-utf8",
                    "fragmented",
                    "ping",
                    "close",
                    "rsv",
                    "wrong-mask",
                    "long-length",
                    "reserved-opcode",
                    "continuation",
                ]
            )
        )
        key = right_key
        if kind == "text":
            stream += frame(1, draw(st.text(max_size=200)).encode(), key=key)
        elif kind == "binary":
            size = draw(st.sampled_from([0, 1, 3, 125, 126, 300, 65_535, 65_536, 66_000]))
            stream += frame(2, os.urandom(size), key=key)
        elif kind == "bad-utf8":
            payload = draw(st.sampled_from([b"\xff", b"ok\xed\xa0\x80", b"\xc3", b"a\x80b"]))
            stream += frame(1, payload, key=key)
        elif kind == "fragmented":
            opcode = draw(st.sampled_from([1, 2]))
            stream += frame(opcode, b"fir", fin=False, key=key)
            if draw(st.booleans()):
                stream += frame(9, b"in between", key=key)
            stream += frame(0, b"st", key=key)
        elif kind == "ping":
            stream += frame(9, draw(st.binary(max_size=125)), key=key)
        elif kind == "close":
            stream += frame(8, struct.pack("!H", 1000) + b"bye", key=key)
        elif kind == "rsv":
            stream += frame(2, b"rsv", rsv=draw(st.sampled_from([1, 2, 4])), key=key)
        elif kind == "wrong-mask":
            stream += frame(2, b"masked wrongly", key=wrong_key)
        elif kind == "long-length":
            # A short payload declared in the 64-bit form (not minimal: accepted by both), or
            # a length with its most significant bit set (refused by the general loop).
            payload = draw(st.binary(max_size=20))
            declared = len(payload) if draw(st.booleans()) else 1 << 63
            stream += long_form(payload, declared, key)
        elif kind == "reserved-opcode":
            stream += frame(draw(st.sampled_from([3, 7, 11, 15])), b"?", key=key)
        else:
            stream += frame(0, b"stray", key=key)
    return role, limit, stream


def events_of(
    role: Role, limit: int | None, stream: bytes, cuts: list[int]
) -> tuple[list[object], list[tuple[int, int, bytes]]]:
    """What a protocol reports and queues for ``stream`` fed in pieces cut at ``cuts``."""
    protocol = Protocol(role, max_message_size=limit)
    described: list[object] = []
    for event in feed_in_chunks(protocol, stream, cuts):
        if isinstance(event, ProtocolFailure):
            error = event.error
            described.append((type(error).__name__, str(error), error.close_code))
        else:
            described.append(event)
    # Unmasked: a client masks its pongs and close frames with random keys.
    return described, parse_frames(b"".join(protocol.data_to_send()))


@requires_c
@SETTINGS
@given(hostile_streams(), st.lists(st.integers(min_value=0), max_size=12))
def test_the_c_parser_gives_what_the_python_loop_gives(
    stream: tuple[Role, int | None, bytes], cuts: list[int]
) -> None:
    role, limit, data = stream
    with_c = events_of(role, limit, data, cuts)
    saved = receiver._parse_messages
    receiver._parse_messages = None
    try:
        without_c = events_of(role, limit, data, cuts)
    finally:
        receiver._parse_messages = saved
    assert with_c == without_c


@requires_c
def test_whole_messages_are_parsed_in_one_call_up_to_an_incomplete_frame() -> None:
    assert speedups is not None
    stream = frame(1, "héllo".encode()) + frame(2, bytes(70_000)) + frame(2, b"abc")
    tail = frame(2, b"incomplete")[:-3]
    events: list[object] = []
    stop = speedups.parse_messages(
        stream + tail, 0, len(stream + tail), 0x80, -1, events, BinaryMessage, TextMessage
    )
    assert stop == len(stream)
    assert events == [TextMessage("héllo"), BinaryMessage(bytes(70_000)), BinaryMessage(b"abc")]


@requires_c
def test_the_c_parser_leaves_every_other_frame_to_the_loop() -> None:
    assert speedups is not None
    first = frame(2, b"taken")
    for other in (
        frame(9, b"ping"),
        frame(1, b"\xff"),  # not UTF-8: the loop refuses it with 1007
        frame(2, b"x", fin=False),
        frame(2, b"x", rsv=4),
        frame(2, b"unmasked", key=None),
        frame(2, b"too long for the limit"),
    ):
        events: list[object] = []
        data = first + other
        stop = speedups.parse_messages(
            data, 0, len(data), 0x80, 10, events, BinaryMessage, TextMessage
        )
        assert stop == len(first), other
        assert events == [BinaryMessage(b"taken")]


@requires_c
def test_the_c_parser_unmasks_past_the_gil_threshold_and_starts_where_told() -> None:
    assert speedups is not None
    payload = os.urandom(200_000)
    data = b"junk" + frame(2, payload, key=KEY)
    events: list[object] = []
    assert speedups.parse_messages(
        data, 4, len(data), 0x80, -1, events, BinaryMessage, TextMessage
    ) == len(data)
    assert events == [BinaryMessage(payload)]


@requires_c
def test_the_c_parser_refuses_bad_arguments() -> None:
    assert speedups is not None
    parse = speedups.parse_messages
    with pytest.raises(TypeError, match="events must be a list, not tuple"):
        parse(b"", 0, 0, 0, -1, (), BinaryMessage, TextMessage)
    with pytest.raises(ValueError, match="masked must be 0x80 or 0, got 1"):
        parse(b"", 0, 0, 1, -1, [], BinaryMessage, TextMessage)
    with pytest.raises(ValueError, match=r"expected 0 <= start <= end <= 3, got 2 and 4"):
        parse(b"abc", 2, 4, 0, -1, [], BinaryMessage, TextMessage)
    with pytest.raises(TypeError, match="takes exactly 8 arguments"):
        parse(b"abc", 0, 3)


def test_the_receiver_uses_the_c_parser_exactly_when_the_accelerator_is_in_use() -> None:
    expected = None if speedups is None else speedups.parse_messages
    assert receiver._parse_messages is expected
