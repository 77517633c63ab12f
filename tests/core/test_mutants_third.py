"""Edges that the third mutation run of the core found untested (issue 24, docs/mutation.md).

Each test states the promise it holds; the mutant it was written against is named in
docs/mutation.md, not here, so that the test stays true when the code is renumbered.
"""

from __future__ import annotations

import zlib

import pytest

from tube.websocket.core import payload
from tube.websocket.core.deflate import DeflateOptions, DeflateParameters, PerMessageDeflate
from tube.websocket.core.events import BinaryMessage, ProtocolFailure, TextMessage
from tube.websocket.core.frames import SINGLE_BUFFER_LIMIT
from tube.websocket.core.http import Request, Response
from tube.websocket.core.protocol import Protocol, Role

from .wsframes import frame

MASK = b"\x11\x22\x33\x44"

# ------------------------------------------------------------------ the first payload buffer


def test_with_the_accelerator_a_payload_up_to_16_mib_gets_its_whole_buffer_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the C buffer (allocated uninitialised, so free until written), a payload of up to
    RESERVE_AT_ONCE bytes, that size included, gets its whole buffer from the header on; one
    byte more and it grows with what arrived, like the pure-Python buffer. The rule is asked
    only whether the accelerator is in use, so a stand-in for it shows the rule in a
    pure-Python run as well."""
    monkeypatch.setattr(payload, "speedups", object())
    limit = payload.RESERVE_AT_ONCE
    assert payload.first_size(limit, 6) == limit
    assert payload.first_size(limit - 1, 0) == limit - 1
    assert payload.first_size(limit + 1, 6) == payload.SMALLEST
    assert payload.first_size(limit + 1, payload.SMALLEST) == 2 * payload.SMALLEST
    monkeypatch.setattr(payload, "speedups", None)
    assert payload.first_size(limit, 6) == payload.SMALLEST
    assert payload.first_size(1000, 6) == 1000


# ------------------------------------------------------------------ frames handed to the transport


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_a_frame_of_up_to_64_kib_is_one_buffer_and_a_larger_one_two(role: Role) -> None:
    """Up to SINGLE_BUFFER_LIMIT bytes of payload, that size included, a frame is one buffer
    (one send call); one byte more and the header and the payload are two buffers, so the
    payload is not copied to prepend the header. The bytes are the same frame either way."""
    limit = SINGLE_BUFFER_LIMIT
    for size, count in [(limit, 1), (limit + 1, 2)]:
        protocol = Protocol(role, mask_key_source=lambda: MASK)
        body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        protocol.send_binary(body)
        buffers = protocol.data_to_send()
        assert len(buffers) == count
        key = MASK if role is Role.CLIENT else None
        assert b"".join(buffers) == frame(0x2, body, key=key)


# ------------------------------------------------------------------ partial text frames


@pytest.mark.parametrize("opcode", [0x1, 0x0])
def test_invalid_utf8_in_part_of_a_text_frame_is_refused_with_the_usual_reason(opcode: int) -> None:
    """RFC 6455 §8.1: invalid UTF-8 seen before the frame's end (in a text frame, or in a
    continuation of a text message) fails with the same error as in a whole frame: close code
    1007 and the reason "invalid UTF-8 in a text message", which the close frame carries."""
    body = bytearray(b"a" * 1000)
    body[550] = 0xFF
    data = frame(opcode, bytes(body), key=MASK)
    protocol = Protocol(Role.SERVER)
    if opcode == 0x0:  # a text message left open by a first fragment
        assert protocol.receive_data(frame(0x1, b"ok", fin=False, key=MASK)) == []
    events = protocol.receive_data(data[:700])  # the bad byte, not the end of the frame
    assert len(events) == 1 and isinstance(events[0], ProtocolFailure)
    error = events[0].error
    assert (error.close_code, error.reason) == (1007, "invalid UTF-8 in a text message")
    assert str(error) == "invalid UTF-8 in a text message (close code 1007)"
    protocol.fail(error.close_code, error.reason)
    assert b"".join(protocol.data_to_send()) == frame(
        0x8, b"\x03\xef" + b"invalid UTF-8 in a text message", key=None
    )


# ------------------------------------------------------------------ heads we write


def test_a_head_we_write_is_latin_1_and_names_what_it_cannot_encode() -> None:
    """HTTP heads are ISO-8859-1 (RFC 9110 §5.5): a character of it is one byte on the wire,
    and a head with any other character is refused with a ValueError that quotes the run of
    characters it could not encode, not the whole value."""
    request = Request("GET", "/caf\xe9", "HTTP/1.1", [("X-Name", "\xe9t\xe9")])
    assert request.to_bytes() == b"GET /caf\xe9 HTTP/1.1\r\nX-Name: \xe9t\xe9\r\n\r\n"
    for head in (
        Request("GET", "/", "HTTP/1.1", [("X-Name", "a\u20ac\u20acb")]),
        Request("GET", "/\u20ac\u20ac", "HTTP/1.1", []),
        Response(200, "OK", [("X-Name", "a\u20ac\u20acb")]),
    ):
        with pytest.raises(ValueError) as info:
            head.to_bytes()
        assert str(info.value) == "HTTP heads are ISO-8859-1; cannot encode '\u20ac\u20ac'"


# ------------------------------------------------------------------ the protocol's arguments


def refusal(error: type[Exception], *args: object, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        Protocol(*args, **kwargs)  # type: ignore[arg-type]
    assert type(info.value) is error
    return str(info.value)


def test_the_protocol_refuses_a_bad_argument_naming_it_and_what_it_got() -> None:
    """A wrong type is a TypeError, a value out of range a ValueError; each names the argument,
    what it expects and the value it got."""
    assert refusal(TypeError, "server") == "role must be a Role, got 'server'"
    expected = "max_message_size must be a positive int or None, got"
    assert refusal(ValueError, Role.SERVER, max_message_size=0) == f"{expected} 0"
    assert refusal(TypeError, Role.SERVER, max_message_size="10") == f"{expected} '10'"
    expected = "max_fragments must be a positive int or None, got"
    assert refusal(ValueError, Role.SERVER, max_fragments=0) == f"{expected} 0"
    assert refusal(TypeError, Role.SERVER, max_fragments=1.5) == f"{expected} 1.5"
    assert (
        refusal(TypeError, Role.SERVER, deflate="deflate")
        == "deflate must be DeflateParameters or None, got 'deflate'"
    )


def test_a_limit_of_one_byte_and_one_fragment_is_accepted_and_enforced() -> None:
    """The smallest limits are 1: a 1-byte message in one frame arrives; a 2-byte message,
    or a 1-byte message in two frames, fails with close code 1009 and says which limit."""
    protocol = Protocol(Role.SERVER, max_message_size=1, max_fragments=1)
    assert protocol.receive_data(frame(0x2, b"a", key=MASK)) == [BinaryMessage(b"a")]
    [failure] = protocol.receive_data(frame(0x2, b"ab", key=MASK))
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (
        1009,
        "message of 2 bytes is larger than the 1-byte limit",
    )
    protocol = Protocol(Role.SERVER, max_message_size=1, max_fragments=1)
    data = frame(0x2, b"", fin=False, key=MASK) + frame(0x0, b"a", key=MASK)
    [failure] = protocol.receive_data(data)
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (
        1009,
        "message split into more than 1 fragments",
    )


def test_the_protocol_takes_a_ready_made_deflate_codec() -> None:
    """``deflate`` may be the negotiated parameters or a codec already built for the role;
    such a codec is used as given: it inflates what arrives and deflates what is sent."""
    parameters = DeflateParameters(
        server_no_context_takeover=False,
        client_no_context_takeover=False,
        server_max_window_bits=15,
        client_max_window_bits=15,
        options=DeflateOptions(min_size=0),
    )
    protocol = Protocol(Role.SERVER, deflate=PerMessageDeflate(parameters, is_server=True))
    compressor = zlib.compressobj(wbits=-15)
    deflated = (compressor.compress(b"hello") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert protocol.receive_data(frame(0x1, deflated, rsv=4, key=MASK)) == [TextMessage("hello")]
    protocol.send_text("hello")
    [sent] = protocol.data_to_send()
    assert bytes(sent)[0] == 0xC1  # FIN, RSV1, TEXT: compressed


# ------------------------------------------------------------------ large frames


def test_a_large_frame_gets_its_payload_buffer_once_its_header_is_whole_wherever_it_starts() -> (
    None
):
    """A large binary frame moves to its payload buffer only when its whole header is in hand,
    also when it starts after another frame of the same read (its header's offset in the buffer
    is not 0), and as soon as the header alone has arrived, before any payload byte: the
    transport can then read the payload straight into the buffer."""
    body = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length
    large = frame(0x2, body, key=MASK)
    small = frame(0x2, b"hi", key=MASK)
    for cut in range(1, 14):  # the large frame's header is 14 bytes (2 + 8 + 4)
        protocol = Protocol(Role.SERVER)
        assert protocol.receive_data(small + large[:cut]) == [BinaryMessage(b"hi")]
        assert protocol.receive_buffer() is None
        assert protocol.receive_data(large[cut:]) == [BinaryMessage(body)]
    protocol = Protocol(Role.SERVER)
    assert protocol.receive_data(small + large[:14]) == [BinaryMessage(b"hi")]
    view = protocol.receive_buffer()
    assert view is not None and len(view) > 0
    view[:100] = large[14:114]
    del view
    assert protocol.received_into(100) == []
    assert protocol.receive_data(large[114:]) == [BinaryMessage(body)]
