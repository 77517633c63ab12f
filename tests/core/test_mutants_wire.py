"""Frames, the state machine and deflate negotiation: edges that mutation testing found untested
(issue 24, docs/mutation.md).
"""

from __future__ import annotations

import array
import os
import zlib

import pytest

from tube.websocket.core.deflate import (
    DeflateOptions,
    DeflateParameters,
    client_accept,
    server_negotiate,
)
from tube.websocket.core.events import BinaryMessage, ProtocolFailure, TextMessage
from tube.websocket.core.frames import byte_payload
from tube.websocket.core.masking import MaskKeySource
from tube.websocket.core.protocol import Protocol, Role, State

from .wsframes import frame, parse_frames

PING, PONG, CLOSE = 9, 10, 8
KEY = b"\x01\x02\x03\x04"


def sent(protocol: Protocol) -> bytes:
    return b"".join(bytes(chunk) for chunk in protocol.data_to_send())


# ------------------------------------------------------------------ payloads of any buffer


@pytest.mark.parametrize(
    "view",
    [
        memoryview(array.array("h", [1, -2, 3])),  # 2-byte items: 6 bytes, not 3
        memoryview(bytes(range(6))).cast("B", (2, 3)),  # two dimensions: 6 bytes, not 2
        memoryview(array.array("b", [1, -2, 3])),  # signed bytes
    ],
)
def test_a_memoryview_is_sent_as_its_bytes(view: memoryview) -> None:
    for role in (Role.CLIENT, Role.SERVER):
        protocol = Protocol(role, mask_key_source=lambda: KEY)
        protocol.send_binary(view)
        [(fin, opcode, payload)] = parse_frames(sent(protocol))
        assert (fin, opcode, payload) == (1, 2, view.tobytes())
    assert len(byte_payload(view, "send_binary")) == view.nbytes


@pytest.mark.parametrize(("data", "name"), [("text", "str"), (3, "int"), (None, "NoneType")])
def test_a_payload_that_is_not_bytes_like_is_named_in_the_error(data: object, name: str) -> None:
    with pytest.raises(TypeError, match=f"^send_binary takes bytes-like data, got {name}$"):
        byte_payload(data, "send_binary")


# ------------------------------------------------------------------ control frames


def test_ping_and_pong_without_payload_are_empty() -> None:
    protocol = Protocol(Role.SERVER)
    protocol.send_ping()
    protocol.send_pong()
    assert parse_frames(sent(protocol)) == [(1, PING, b""), (1, PONG, b"")]


def test_reply_close_does_nothing_without_a_close_received() -> None:
    protocol = Protocol(Role.SERVER)
    protocol.reply_close()
    assert protocol.state is State.OPEN
    assert protocol.data_to_send() == []


def test_a_client_resends_its_close_frame_masked() -> None:
    protocol = Protocol(Role.CLIENT, mask_key_source=lambda: KEY)
    protocol.send_close(1000, "bye")
    first = sent(protocol)
    protocol.resend_close()
    again = sent(protocol)
    assert again[1] & 0x80  # the mask bit: RFC 6455 §5.1, every client frame is masked
    assert parse_frames(again) == parse_frames(first) == [(1, CLOSE, b"\x03\xe8bye")]


def test_rsv1_on_a_reserved_opcode_is_named_in_the_failure() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    [failure] = protocol.receive_data(frame(3, b"", rsv=4))
    assert isinstance(failure, ProtocolFailure)
    assert failure.error.reason == "RSV1 set on a reserved opcode 0x3 frame"


# ------------------------------------------------------------------ deflate negotiation


def test_an_answer_naming_other_extensions_lists_them() -> None:
    with pytest.raises(ValueError, match=r"got x-webkit-deflate-frame, permessage-deflate$"):
        client_accept(
            [("x-webkit-deflate-frame", []), ("permessage-deflate", [])], DeflateOptions()
        )


def test_window_bits_of_8_are_offered_and_held_as_9() -> None:
    # zlib has no 8-bit raw deflate window: 8 is offered as 9, and an answer may not exceed 9.
    options = DeflateOptions(server_max_window_bits=8, client_max_window_bits=8)
    accepted = client_accept(
        [
            (
                "permessage-deflate",
                [("server_max_window_bits", "9"), ("client_max_window_bits", "9")],
            )
        ],
        options,
    )
    assert (accepted.server_max_window_bits, accepted.client_max_window_bits) == (9, 9)
    with pytest.raises(ValueError, match="server_max_window_bits=10 is larger than the 9 offered"):
        client_accept([("permessage-deflate", [("server_max_window_bits", "10")])], options)
    with pytest.raises(ValueError, match="client_max_window_bits=10 is larger than the 9 offered"):
        client_accept(
            [
                (
                    "permessage-deflate",
                    [("server_max_window_bits", "9"), ("client_max_window_bits", "10")],
                )
            ],
            options,
        )


# ------------------------------------------------------------------ the fast path of small messages


def test_frame_message_leaves_126_bytes_and_more_to_send_binary_and_send_text() -> None:
    protocol = Protocol(Role.SERVER)
    assert protocol.frame_message(bytes(125)) == b"\x82\x7d" + bytes(125)
    assert protocol.frame_message(bytes(126)) is None
    assert protocol.frame_message("a" * 126) is None
    # 63 characters, 126 bytes of UTF-8: too long for a one-byte length once encoded.
    assert protocol.frame_message("é" * 63) is None
    assert protocol.frame_message("é" * 62) == b"\x81\x7c" + ("é" * 62).encode()


# ------------------------------------------------------------------ closing


def test_send_close_and_fail_default_to_1000_and_1011_without_reason() -> None:
    protocol = Protocol(Role.SERVER)
    protocol.send_close()
    assert parse_frames(sent(protocol)) == [(1, CLOSE, b"\x03\xe8")]
    protocol = Protocol(Role.SERVER)
    protocol.fail()
    assert parse_frames(sent(protocol)) == [(1, CLOSE, b"\x03\xf3")]


def test_fail_after_send_close_sends_no_second_close_frame() -> None:
    protocol = Protocol(Role.SERVER)
    protocol.send_close(1000, "bye")
    assert parse_frames(sent(protocol)) == [(1, CLOSE, b"\x03\xe8bye")]
    protocol.fail(1011, "keepalive timeout")
    assert protocol.data_to_send() == []
    assert protocol.state is State.CLOSED


def test_a_local_failure_is_reported_as_closed_locally_with_its_code_and_reason() -> None:
    protocol = Protocol(Role.SERVER)
    protocol.fail(1011, "keepalive timeout")
    error = protocol.closed_error()
    assert (error.code, error.reason, error.initiated_by) == (1011, "keepalive timeout", "local")


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\x03", 1002, "close frame with a 1-byte payload (a close code takes 2)"),
        (b"\x03\xe8\xff", 1007, "invalid UTF-8 in the close reason"),
    ],
)
def test_an_invalid_close_frame_is_refused_saying_why(
    payload: bytes, code: int, reason: str
) -> None:
    [failure] = Protocol(Role.SERVER).receive_data(frame(CLOSE, payload))
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (code, reason)


# ------------------------------------------------------------------ compressed messages


def negotiated() -> DeflateParameters:
    return DeflateParameters(
        server_no_context_takeover=False,
        client_no_context_takeover=False,
        server_max_window_bits=15,
        client_max_window_bits=15,
        options=DeflateOptions(min_size=4),
    )


def deflated(data: bytes, *, final: bool = False) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    if final:  # RFC 7692 §7.2.3.4: a message may end the deflate stream (BFINAL)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_a_message_of_min_size_bytes_is_compressed_and_one_byte_less_is_not() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    protocol.send_binary(b"abcd")
    protocol.send_binary(b"abc")
    data = sent(protocol)
    assert data[0] == 0xC2  # FIN, RSV1, BINARY
    assert data[-5:] == b"\x82\x03abc"


def test_an_uncompressed_fragmented_message_after_a_compressed_one() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    payload = deflated(b"hello, compressed world")
    events = protocol.receive_data(
        frame(1, payload[:5], fin=False, rsv=4)
        + frame(0, payload[5:])
        + frame(1, b"plain, ", fin=False)
        + frame(0, b"in two")
    )
    assert events == [TextMessage("hello, compressed world"), TextMessage("plain, in two")]


def test_a_fragmented_message_that_ends_the_deflate_stream_is_followed_by_another() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    first = deflated(b"first message, ended with BFINAL", final=True)
    second = deflated(b"second message", final=True)
    events = protocol.receive_data(
        frame(2, first[:6], fin=False, rsv=4) + frame(0, first[6:]) + frame(2, second, rsv=4)
    )
    assert events == [
        BinaryMessage(b"first message, ended with BFINAL"),
        BinaryMessage(b"second message"),
    ]


@pytest.mark.parametrize("compressed", [False, True])
def test_invalid_utf8_in_a_fragmented_text_message_is_1007(compressed: bool) -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    if compressed:
        payload = deflated(b"ok \xff")  # split where the first frame inflates to no byte
        data = frame(1, payload[:1], fin=False, rsv=4) + frame(0, payload[1:], fin=False)
    else:
        data = frame(1, b"ok \xff", fin=False)
    [failure] = protocol.receive_data(data)
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (
        1007,
        "invalid UTF-8 in a text message",
    )


# ------------------------------------------------------------------ masking keys, fragments


def test_mask_keys_are_consecutive_slices_of_urandom_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = [bytes(range(256)), bytes(range(255, -1, -1))]
    calls: list[int] = []

    def urandom(size: int) -> bytes:
        calls.append(size)
        return batches[len(calls) - 1]

    monkeypatch.setattr(os, "urandom", urandom)  # what masking.os.urandom is
    source = MaskKeySource()
    keys = [source() for _ in range(65)]
    assert keys[:64] == [batches[0][i : i + 4] for i in range(0, 256, 4)]
    assert keys[64] == batches[1][:4]
    assert calls == [256, 256]


def test_a_message_of_exactly_fragment_size_bytes_is_one_frame() -> None:
    protocol = Protocol(Role.SERVER)
    protocol.send_binary(b"abcd", fragment_size=4)
    protocol.send_binary(b"abcde", fragment_size=4)
    assert parse_frames(sent(protocol)) == [(1, 2, b"abcd"), (0, 2, b"abcd"), (1, 0, b"e")]


def test_invalid_utf8_in_a_continuation_frame_is_1007() -> None:
    [failure] = Protocol(Role.SERVER).receive_data(frame(1, b"ok", fin=False) + frame(0, b"\xff"))
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (
        1007,
        "invalid UTF-8 in a text message",
    )


def test_compression_uses_the_configured_memory_level() -> None:
    options = DeflateOptions(memory_level=1, min_size=0)
    parameters = DeflateParameters(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=15,
        client_max_window_bits=15,
        options=options,
    )
    data = bytes(range(256)) * 64 + b"".join(b"%d," % n for n in range(20000))
    protocol = Protocol(Role.SERVER, deflate=parameters)
    protocol.send_binary(data)
    [(fin, opcode, payload)] = parse_frames(sent(protocol))
    assert (fin, opcode) == (1, 2)
    reference = zlib.compressobj(options.compression_level, zlib.DEFLATED, -15, 1)
    expected = reference.compress(data) + reference.flush(zlib.Z_SYNC_FLUSH)
    assert payload == expected[:-4]
    # The same bytes with zlib's default memory level differ: the option is not a no-op here.
    default = zlib.compressobj(options.compression_level, zlib.DEFLATED, -15)
    assert (default.compress(data) + default.flush(zlib.Z_SYNC_FLUSH))[:-4] != payload


def test_a_server_answers_window_bits_of_8_as_9() -> None:
    answer, accepted = server_negotiate(
        [("permessage-deflate", [("client_max_window_bits", None)])],
        DeflateOptions(client_max_window_bits=8),
    ) or pytest.fail("no answer")
    assert answer.endswith("; client_max_window_bits=9")
    assert accepted.client_max_window_bits == 9


def test_every_close_frame_of_a_client_is_masked() -> None:
    protocol = Protocol(Role.CLIENT, mask_key_source=lambda: KEY)
    protocol.send_close(1000, "bye")
    assert sent(protocol)[1] & 0x80
    protocol = Protocol(Role.CLIENT, mask_key_source=lambda: KEY)
    protocol.receive_data(frame(CLOSE, b"", key=None))  # the server closes without a code
    reply = sent(protocol)
    assert reply == b"\x88\x80" + KEY  # RFC 6455 §5.5.1: an empty close answered empty, masked
    assert protocol.close_sent == (1005, "")


def test_a_server_with_a_9_bit_window_compresses() -> None:
    parameters = DeflateParameters(
        server_no_context_takeover=False,
        client_no_context_takeover=False,
        server_max_window_bits=9,
        client_max_window_bits=9,
        options=DeflateOptions(min_size=4),
    )
    protocol = Protocol(Role.SERVER, deflate=parameters)
    protocol.send_binary(b"abcd" * 100)
    assert sent(protocol)[0] == 0xC2  # FIN, RSV1, BINARY


def test_compressed_messages_refused_saying_why() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated(), max_message_size=10)
    [failure] = protocol.receive_data(frame(2, deflated(b"x" * 11), rsv=4))
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (
        1009,
        "message larger than the size limit once decompressed",
    )
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    [failure] = protocol.receive_data(frame(2, deflated(b"x", final=True) + b"more", rsv=4))
    assert isinstance(failure, ProtocolFailure)
    assert failure.error.reason == "compressed data continues after the end of the deflate stream"
    [failure] = Protocol(Role.SERVER).receive_data(frame(2, b"x", rsv=4))
    assert isinstance(failure, ProtocolFailure)
    assert failure.error.reason == "reserved bits RSV1-3 set but no extension was negotiated"


def test_a_deflate_stream_that_ends_inside_a_fragment_then_an_empty_last_fragment() -> None:
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    ended = deflated(b"all of it in the first frame", final=True)
    events = protocol.receive_data(frame(2, ended, fin=False, rsv=4) + frame(0, b""))
    assert events == [BinaryMessage(b"all of it in the first frame")]


def test_a_compressed_message_of_exactly_the_size_limit_keeps_the_stream_in_step() -> None:
    # The 00 00 ff ff tail must be inflated after a message that filled the limit exactly, or
    # the next message of the same deflate stream (context takeover) would be read as its end.
    protocol = Protocol(Role.SERVER, deflate=negotiated(), max_message_size=40)
    compressor = zlib.compressobj(wbits=-15)
    first = (compressor.compress(b"a" * 40) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    second = (compressor.compress(b"abc") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    events = protocol.receive_data(frame(2, first, rsv=4) + frame(2, second, rsv=4))
    assert events == [BinaryMessage(b"a" * 40), BinaryMessage(b"abc")]


# ------------------------------------------------------------------ the first compressed frame


def test_invalid_utf8_in_the_first_fragment_of_a_compressed_text_is_1007() -> None:
    payload = deflated(b"ok \xff and more")
    for data in (frame(1, payload, fin=False, rsv=4), frame(1, payload, rsv=4)):
        [failure] = Protocol(Role.SERVER, deflate=negotiated()).receive_data(data)
        assert isinstance(failure, ProtocolFailure)
        assert (failure.error.close_code, failure.error.reason) == (
            1007,
            "invalid UTF-8 in a text message",
        )


@pytest.mark.parametrize(
    ("role", "data", "reason"),
    [
        (
            Role.SERVER,
            frame(2, b"x", rsv=6),
            "reserved bits RSV2-3 set (only RSV1 is defined by deflate)",
        ),
        (Role.SERVER, frame(2, b"x", rsv=4, key=None), "frames from a client must be masked"),
        (Role.CLIENT, frame(2, b"x", rsv=4), "frames from a server must not be masked"),
        (
            Role.SERVER,
            frame(2, bytes(11), rsv=4),
            "message of 11 bytes is larger than the 10-byte limit",
        ),
    ],
)
def test_a_compressed_frame_refused_before_inflating_says_why(
    role: Role, data: bytes, reason: str
) -> None:
    protocol = Protocol(role, deflate=negotiated(), max_message_size=10)
    [failure] = protocol.receive_data(data)
    assert isinstance(failure, ProtocolFailure)
    assert (failure.error.close_code, failure.error.reason) == (
        1009 if "limit" in reason else 1002,
        reason,
    )


def test_a_compressed_frame_as_long_as_the_limit_is_inflated() -> None:
    data = os.urandom(20)  # incompressible: its deflate stream is longer than itself
    payload = deflated(data)
    protocol = Protocol(Role.SERVER, deflate=negotiated(), max_message_size=len(payload))
    assert protocol.receive_data(frame(2, payload, rsv=4)) == [BinaryMessage(data)]


def test_a_large_masked_compressed_frame_in_the_buffer_is_unmasked_alone() -> None:
    # Over 4 KiB and arriving in two reads: unmasked in place in the receive buffer, which also
    # holds the next frame; that one must stay as it came.
    data = os.urandom(6000)  # incompressible: the compressed payload stays over 4 KiB
    first = frame(2, deflated(data), rsv=4)
    protocol = Protocol(Role.SERVER, deflate=negotiated())
    assert protocol.receive_data(first[:100]) == []
    events = protocol.receive_data(first[100:] + frame(1, b"after"))
    assert events == [BinaryMessage(data), TextMessage("after")]


def test_a_compressed_message_may_have_exactly_max_fragments_frames() -> None:
    payload = deflated(b"fragmented and compressed")
    pieces = [payload[:3], payload[3:6], payload[6:]]
    data = frame(1, pieces[0], fin=False, rsv=4) + frame(0, pieces[1], fin=False)
    protocol = Protocol(Role.SERVER, deflate=negotiated(), max_fragments=3)
    events = protocol.receive_data(data + frame(0, pieces[2]))
    assert events == [TextMessage("fragmented and compressed")]
    protocol = Protocol(Role.SERVER, deflate=negotiated(), max_fragments=2)
    [failure] = protocol.receive_data(data + frame(0, pieces[2]))
    assert isinstance(failure, ProtocolFailure) and failure.error.close_code == 1009
